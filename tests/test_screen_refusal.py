"""An unpaired screen (a wall opened without a display key) is refused at the handshake with
401 and logged as the expected event it is: INFO, never WARNING or ERROR (issue 9, item 0)."""

from __future__ import annotations

import logging

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.helpers import PACKS_DIR


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_an_unpaired_screen_is_refused_at_info_level(make_settings, start_server, caplog):
    srv = await start_server(make_settings(packs_dir=PACKS_DIR))
    uvicorn_log = logging.getLogger("uvicorn.error")  # uvicorn's loggers do not propagate to the root
    uvicorn_log.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="app.ws.routes")
    try:
        for headers in ({}, {"Authorization": "Bearer pbd_not-a-key"}):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(srv.ws_url + "/ws/dashboards/generic-wall", additional_headers=headers):
                    pass
            assert refused.value.response.status_code == 401
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    ours = [r for r in caplog.records if r.name == "app.ws.routes"]
    assert [(r.levelno, r.getMessage()) for r in ours] == [
        (logging.INFO, "refused a screen on generic-wall: missing, unknown, revoked or expired key (Unauthenticated)")
    ] * 2
    loud = [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == []
