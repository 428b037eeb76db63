"""Graceful shutdown (issue 4, "Live channels that heal"): on SIGTERM the server drains
in-flight requests, closes every screen's WebSocket with 1012 (service restart), exits 0,
and the screens come back when it restarts.

A real ``python -m app.cli serve`` subprocess on SQLite (``tests.crash_client.ServerProcess``),
real keys, real sockets.  Pass criteria, asserted as values and upper bounds:

* every connected screen receives a close frame with code 1012;
* a 10,000-event POST whose body is half sent when SIGTERM arrives (the rest follows after
  the server began shutting down) is answered ``202`` (accepted 10,000), and its events are
  in the store after the restart;
* the process exits with status 0 within ``EXIT_LIMIT_S`` of the signal;
* a screen reconnecting the way the wall does (``?epoch=&since=`` of before, retrying while
  the server is down) gets a ``snapshot`` with a new epoch within ``RECONNECT_LIMIT_S`` of
  the restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.crash_client import AUGUST, TZ, ServerProcess, create_key, free_port, make_batches, stored_keys
from tests.helpers import wait_until

SLUG = "contact-centre"
SCREENS = 4
BATCH_EVENTS = 10_000  # the default PULSEBOARD_MAX_BATCH_EVENTS: ~1 s of server work
SIGNAL_AFTER_S = 0.3  # pauses around SIGTERM while the body is half sent
EXIT_LIMIT_S = 10.0  # uvicorn's graceful timeout (5 s) + lifespan shutdown, with margin
READY_LIMIT_S = 10.0
RECONNECT_LIMIT_S = 10.0
CLOSE_SERVICE_RESTART = 1012

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not AUGUST.exists(), reason=f"no {AUGUST}"),
    pytest.mark.timeout(180),
]


def server_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSEBOARD_") and k != "DATABASE_URL"}
    env.update(
        {
            "PULSEBOARD_DATA_DIR": str(data_dir),
            "PULSEBOARD_TZ": TZ,
            "PULSEBOARD_CLOCK": "event",
            "PULSEBOARD_SNAPSHOTS_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


async def open_screen(server: ServerProcess, read_key: str, query: str = ""):
    """A screen holding ``read_key``; returns the socket and its first frame (the snapshot)."""
    ws = await connect(
        f"ws://127.0.0.1:{server.port}/ws/dashboards/{SLUG}{query}",
        additional_headers={"Authorization": f"Bearer {read_key}"},
        open_timeout=10,
    )
    return ws, json.loads(await asyncio.wait_for(ws.recv(), 10))


async def close_code_of(ws, timeout_s: float) -> int | None:
    """Read until the server closes ``ws``; the code of the close frame it sent (None: no frame)."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else None


async def reconnect_like_the_wall(
    server: ServerProcess, read_key: str, epoch: str, seq: int, timeout_s: float, failed: list[BaseException]
) -> dict:
    """Retry ``?epoch=&since=`` every 0.2 s (the wall backs off from 1 s) until a frame arrives;
    each failed attempt is appended to ``failed``."""

    async def attempt() -> dict | None:
        try:
            ws, first = await open_screen(server, read_key, f"?epoch={epoch}&since={seq}")
        except (OSError, ConnectionClosed, TimeoutError) as exc:
            failed.append(exc)
            return None
        await ws.close()
        return first

    return await wait_until(attempt, timeout_s, what="the wall to resync", interval_s=0.2)


async def test_sigterm_drains_ingest_closes_screens_1012_and_screens_come_back(tmp_path: Path):
    batch = make_batches(BATCH_EVENTS, BATCH_EVENTS, "shutdown")[0]
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    env = server_env(data_dir)
    ingest_key = create_key(env, "--scope", "ingest", "--source", "anonymous-bank")
    read_key = create_key(env, "--scope", "read")
    server = ServerProcess(free_port(), env, tmp_path / "server.log")
    server.start()
    try:
        await server.wait_ready(READY_LIMIT_S)
        opened = [await open_screen(server, read_key) for _ in range(SCREENS)]
        screens = [ws for ws, _ in opened]
        snap = opened[0][1]
        assert snap["type"] == "snapshot"
        closes = [asyncio.create_task(close_code_of(ws, EXIT_LIMIT_S + 5)) for ws in screens]

        signalled = 0.0

        async def body_with_sigterm_midway():
            """Half the body, SIGTERM, the other half: the request is in flight by construction."""
            nonlocal signalled
            half = len(batch.body) // 2
            yield batch.body[:half]
            await asyncio.sleep(SIGNAL_AFTER_S)  # the server has the headers and half the body
            signalled = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            await wait_until(lambda: "Shutting down" in server.log_path.read_text(), 10, what="uvicorn to see SIGTERM")
            yield batch.body[half:]

        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {ingest_key}"}
            resp = await http.post("/api/v1/events", content=body_with_sigterm_midway(), headers=headers)

        assert resp.status_code == 202, resp.text
        assert resp.json() == {"accepted": BATCH_EVENTS, "duplicates": 0}
        assert await asyncio.gather(*closes) == [CLOSE_SERVICE_RESTART] * SCREENS
        returncode = await asyncio.to_thread(server.proc.wait, EXIT_LIMIT_S + 5)
        exit_s = time.monotonic() - signalled
        assert returncode == 0, server.log_tail()
        assert exit_s <= EXIT_LIMIT_S, f"exited {exit_s:.1f} s after SIGTERM"

        first_run = server.log_path.read_text()
        # The server's own log: it began shutting down before it answered the POST.
        assert first_run.index("Shutting down") < first_run.index('"POST /api/v1/events HTTP/1.1" 202')

        rows, _ = stored_keys("sqlite", data_dir)
        assert sorted(rows) == sorted(batch.keys)  # every acknowledged event, once

        # The wall keeps retrying while the server is down, then resyncs on the new epoch.
        restarted = time.monotonic()
        failed: list[BaseException] = []
        back = asyncio.create_task(
            reconnect_like_the_wall(server, read_key, snap["epoch"], snap["seq"], RECONNECT_LIMIT_S, failed)
        )
        await wait_until(lambda: len(failed) >= 2, 10, what="reconnect attempts to find nobody listening")
        server.start()
        fresh = await back
        reconnect_s = time.monotonic() - restarted
        print(
            f"\nshutdown figures: {SCREENS} screens closed 1012, POST 202 accepted {BATCH_EVENTS}, exit 0 "
            f"{exit_s:.2f} s after SIGTERM, wall back on a new epoch {reconnect_s:.2f} s after the restart began"
        )
        assert reconnect_s <= RECONNECT_LIMIT_S
        assert fresh["type"] == "snapshot" and fresh["dashboard"] == SLUG
        assert fresh["epoch"] != snap["epoch"]
        assert fresh["tiles"]["offered_today"]["value"] > 0  # the drained batch is on the wall
    finally:
        server.stop()
