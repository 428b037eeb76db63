"""Screens: a worker process holding many WebSocket connections (websockets' asyncio client).

Each connection waits for its first frame (Pulseboard's ``snapshot``), then the
worker reports ready; on the start signal every connection counts the
``update`` frames it receives for ``duration_s``.  Optionally it records
``(as_of, receive instant)`` of every update (latency figure) and keeps the
first raw update frames (the frames the bare broadcast baseline replays).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

UPDATE_PREFIX = b'{"type":"update"'
AS_OF_KEY = b'"as_of":"'


@dataclass
class ScreenSpec:
    """What one screen worker does.

    Attributes:
        url: WebSocket URL of the dashboard (or of the bare server).
        connections: screens held by this worker.
        duration_s: counting window after the start signal.
        record_latency: keep ``(as_of text, receive instants)`` of every update.
        keep_frames: raw update frames to keep (for the broadcast baseline).
        connect_parallel: handshakes in flight at once.
    """

    url: str
    connections: int
    duration_s: float
    record_latency: bool = False
    keep_frames: int = 0
    connect_parallel: int = 50


@dataclass
class ScreenResult:
    """What one screen worker saw (``time.monotonic`` instants, system-wide on Linux)."""

    connected: int = 0
    updates: int = 0
    per_screen_updates: list[int] = field(default_factory=list)
    started_s: float = 0.0
    ended_s: float = 0.0
    # per screen: list of (as_of text, receive instant (monotonic), receive wall time (epoch s))
    arrivals: list[list[tuple[bytes, float, float]]] = field(default_factory=list)
    frames: list[bytes] = field(default_factory=list)
    bytes_received: int = 0
    errors: list[str] = field(default_factory=list)
    connect_s: float = 0.0


def as_of_of(frame: bytes) -> bytes | None:
    """The ``as_of`` text of an update frame without decoding the JSON (None when absent)."""
    i = frame.find(AS_OF_KEY)
    if i < 0:
        return None
    j = frame.find(b'"', i + len(AS_OF_KEY))
    return frame[i + len(AS_OF_KEY) : j]


async def _run(spec: ScreenSpec, ready, go) -> ScreenResult:
    from websockets.asyncio.client import connect

    result = ScreenResult()
    gate = asyncio.Semaphore(spec.connect_parallel)
    t_connect = time.monotonic()

    async def open_one():
        async with gate:
            ws = await connect(
                spec.url, compression=None, max_size=2**22, open_timeout=60, ping_interval=None, close_timeout=2
            )
            await asyncio.wait_for(ws.recv(decode=False), 60)  # the snapshot
            return ws

    opened = await asyncio.gather(*(open_one() for _ in range(spec.connections)), return_exceptions=True)
    conns = [c for c in opened if not isinstance(c, BaseException)]
    result.errors += [repr(c) for c in opened if isinstance(c, BaseException)][:5]
    result.connected = len(conns)
    result.connect_s = time.monotonic() - t_connect
    ready()
    await go()
    result.started_s = time.monotonic()
    end = result.started_s + spec.duration_s

    async def listen(ws, index: int) -> None:
        count = 0
        arrivals = result.arrivals[index] if spec.record_latency else None
        try:
            async with asyncio.timeout(max(0.0, end - time.monotonic())):
                while True:
                    frame = await ws.recv(decode=False)
                    now = time.monotonic()
                    result.bytes_received += len(frame)
                    if not frame.startswith(UPDATE_PREFIX):
                        continue
                    count += 1
                    if arrivals is not None:
                        arrivals.append((as_of_of(frame), now, time.time()))
                    if len(result.frames) < spec.keep_frames:
                        result.frames.append(bytes(frame))
        except TimeoutError:
            pass
        finally:
            result.per_screen_updates[index] = count

    result.per_screen_updates = [0] * len(conns)
    result.arrivals = [[] for _ in conns] if spec.record_latency else []
    outcomes = await asyncio.gather(*(listen(ws, i) for i, ws in enumerate(conns)), return_exceptions=True)
    result.errors += [repr(o) for o in outcomes if isinstance(o, BaseException)][:5]
    result.ended_s = time.monotonic()
    result.updates = sum(result.per_screen_updates)
    await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)
    return result


def screen_worker(spec: ScreenSpec, ready_q, go_event, out_q, index: int) -> None:
    """Process entry: connect the screens, report ready, count on the start signal, report."""
    import uvloop

    async def go() -> None:
        await asyncio.get_running_loop().run_in_executor(None, go_event.wait)

    try:
        result = uvloop.run(_run(spec, lambda: ready_q.put(index), go))
    except Exception as exc:  # reported to the parent
        result = ScreenResult(errors=[f"worker crashed: {exc!r}"])
        ready_q.put(index)
    out_q.put((index, result))
