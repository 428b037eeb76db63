"""Half-open WebSocket connections (issue 4, "Live channels that heal"): a screen whose link
goes silent (no FIN, no RST, no close frame) is dropped by the server within ping interval +
ping timeout, its memory is freed, and the other screens keep getting updates meanwhile.

The silent link is real: the screen talks to the server through a TCP relay
(``SilentRelay``) which, at a chosen moment, stops relaying in both directions and keeps
both sockets open.  Neither side's kernel sees anything wrong (the relay's kernel still
acknowledges what the server sends, as a broken NAT or a dead Wi-Fi bridge's buffers would
until they fill up), so TCP never tells the server; only the WebSocket ping the server sends
every ``ws_ping_interval_s`` goes unanswered, and the server must close the socket
``ws_ping_timeout_s`` after it.  The screen, on its side, gets no more frames: after
``stale_after_s`` without a heartbeat its tiles show STALE (the wall page's watchdog).

Pass criteria, per trial: the server's subscription and socket registry entry of the silent
screen are gone, and its server-side objects collected, within ``ws_ping_interval_s +
ws_ping_timeout_s + MARGIN_S`` of the freeze; during that time the two other screens get
every update.  The freeze comes at a random phase of the ping cycle (seeded by the trial
number).  ``PULSEBOARD_HALFOPEN_TRIALS`` (default 1) repeats it; RELIABILITY.md has the figures.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import time
import weakref
from datetime import UTC, datetime

import pytest
from websockets.asyncio.client import connect
from websockets.protocol import State

from app.clock import ManualClock
from tests.conftest import ARTIFACTS
from tests.helpers import PACKS_DIR, sample, wait_until

NOW = datetime(2024, 6, 10, 12, 0, tzinfo=UTC)
WALL = "/ws/dashboards/generic-wall"
CHANNEL = "generic-wall"
PING_INTERVAL_S = 1.0
PING_TIMEOUT_S = 1.0
MARGIN_S = 1.0  # event-loop and scheduling slack on a shared 2-core machine
TRIALS = int(os.environ.get("PULSEBOARD_HALFOPEN_TRIALS", "1"))


@pytest.fixture
def store_kind() -> str:
    """The socket layer does not depend on the store: SQLite only."""
    return "sqlite"


class SilentRelay:
    """A TCP relay ``127.0.0.1:port`` -> ``target``.  ``freeze()`` makes every link it carries
    silent: nothing more is relayed either way, both sockets stay open (no FIN, no RST) and
    are no longer read, so the peers' kernels buffer and acknowledge but nothing arrives."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.frozen = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        s_reader, s_writer = await asyncio.open_connection(*self.target)
        self._writers += [c_writer, s_writer]
        pumps = [
            asyncio.create_task(self._pump(c_reader, s_writer)),
            asyncio.create_task(self._pump(s_reader, c_writer)),
        ]
        self._tasks.update(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = await reader.read(65536)
            if self.frozen.is_set():
                await asyncio.Event().wait()  # hold it (and the sockets) forever; never relay it
            if not data:
                writer.close()  # a real FIN before the freeze is passed on
                return
            writer.write(data)
            await writer.drain()

    def freeze(self) -> None:
        """From now on the links are silent both ways (sockets open, not read, not written)."""
        self.frozen.set()
        for w in self._writers:
            w.transport.pause_reading()

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for w in self._writers:
            w.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def recv_json(ws, timeout_s: float = 10) -> dict:
    """The next frame as JSON (TimeoutError after ``timeout_s``)."""
    return json.loads(await asyncio.wait_for(ws.recv(), timeout_s))


async def next_update(ws, timeout_s: float = 10) -> dict:
    """Skip heartbeats; return the next update."""
    while True:
        msg = await recv_json(ws, timeout_s)
        if msg["type"] == "update":
            return msg
        assert msg["type"] == "heartbeat", msg


def registered(runtime, key_id: str) -> int:
    """Open sockets the server's registry holds for ``key_id``."""
    return len(runtime.sockets._by_key.get(key_id, ()))


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(TRIALS))
async def test_half_open_screen_is_dropped_within_ping_interval_plus_timeout(
    trial, make_settings, start_server, client_for
):
    settings = make_settings(
        packs_dir=PACKS_DIR,
        tile_interval_ms=50,
        heartbeat_interval_s=0.5,
        ws_ping_interval_s=PING_INTERVAL_S,
        ws_ping_timeout_s=PING_TIMEOUT_S,
    )
    srv = await start_server(settings, clock=ManualClock(NOW))
    broker, runtime = srv.runtime.broker, srv.runtime
    host, port = srv.url.removeprefix("http://").split(":")
    relay = SilentRelay(host, int(port))
    await relay.start()
    # The silent screen holds the display key, the others the read key: the registry tells them apart.
    display_id = (await runtime.keys.find(srv.keys.display[CHANNEL])).id
    posted = 0

    async def post_one(client) -> None:
        nonlocal posted
        resp = await client.post(
            "/api/v1/events", json=[sample(f"2024-06-10T11:{posted % 60:02d}:00Z", 1, id=f"h{posted}")]
        )
        assert resp.status_code == 202, resp.text
        posted += 1

    silent = await connect(
        f"ws://127.0.0.1:{relay.port}{WALL}", ping_interval=None, additional_headers=srv.auth("display", CHANNEL)
    )
    others = [await connect(srv.ws_url + WALL, additional_headers=srv.auth("read")) for _ in range(2)]
    try:
        async with client_for(srv) as client:
            for ws in (silent, *others):
                assert (await recv_json(ws))["type"] == "snapshot"
            assert broker.subscriber_count(CHANNEL) == 3 and registered(runtime, display_id) == 1
            server_ws = weakref.ref(next(iter(runtime.sockets._by_key[display_id])))
            await post_one(client)
            for ws in (silent, *others):  # the relay carries the silent screen's traffic until the freeze
                assert (await next_update(ws))["tiles"]["count_today"]["value"] == posted

            # Freeze at a random phase of the server's ping cycle (the bound must hold for any).
            await asyncio.sleep(random.Random(trial).uniform(0, PING_INTERVAL_S))
            relay.freeze()
            frozen_at = time.monotonic()
            bound_s = PING_INTERVAL_S + PING_TIMEOUT_S + MARGIN_S
            dropped_s: float | None = None
            seen = [[], []]

            async def watch_drop() -> None:
                nonlocal dropped_s
                await wait_until(  # cancelled below after 3 bounds at most
                    lambda: broker.subscriber_count(CHANNEL) == 2 and registered(runtime, display_id) == 0,
                    3 * bound_s + 60,
                    interval_s=0.01,
                )
                dropped_s = time.monotonic() - frozen_at

            watcher = asyncio.create_task(watch_drop())
            try:
                # Meanwhile the other screens get every update.
                while dropped_s is None and time.monotonic() - frozen_at < 3 * bound_s:
                    await post_one(client)
                    for i, ws in enumerate(others):
                        upd = await next_update(ws, timeout_s=5)
                        seen[i].append(upd["tiles"]["count_today"]["value"])
                    await asyncio.sleep(0.2)
            finally:
                watcher.cancel()
            assert dropped_s is not None, f"the silent screen was still open {3 * bound_s:.1f} s after the freeze"
            assert dropped_s <= bound_s, (
                f"dropped {dropped_s:.2f} s after the link went silent; bound {bound_s:.1f} s "
                f"(ping interval {PING_INTERVAL_S} + timeout {PING_TIMEOUT_S} + margin {MARGIN_S})"
            )
            assert seen[0] == seen[1] == list(range(2, posted + 1)) and len(seen[0]) >= 2, seen
            # Genuinely half-open: the screen's side never learnt anything.
            assert silent.state is State.OPEN
            # Its memory is freed: nothing on the server still holds its socket.
            await wait_until(lambda: gc.collect() >= 0 and server_ws() is None, 1, fail=False)
            assert server_ws() is None, gc.get_referrers(server_ws())
            # And the others still get updates after the drop.
            await post_one(client)
            for ws in others:
                assert (await next_update(ws))["tiles"]["count_today"]["value"] == posted
            figures = {
                "trial": trial,
                "dropped_after_freeze_s": round(dropped_s, 3),
                "bound_s": bound_s,
                "updates_to_others_meanwhile": len(seen[0]),
                "ping_interval_s": PING_INTERVAL_S,
                "ping_timeout_s": PING_TIMEOUT_S,
            }
            print(f"\n[half-open #{trial}] {json.dumps(figures)}")
            ARTIFACTS.mkdir(exist_ok=True)
            with (ARTIFACTS / "halfopen.jsonl").open("a") as out:
                out.write(json.dumps(figures) + "\n")
    finally:
        silent.transport.abort()
        for ws in others:
            await ws.close()
        await relay.close()
