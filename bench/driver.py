"""The event driver of the live-tile figures: posts batches at a fixed rate (or flat out)
through one keep-alive connection, recording when each batch was accepted.

One connection keeps batches committed in order, so "the first tile whose
``as_of`` reaches a batch's newest event time" is the first tile that
reflects that batch (the server's event-time clock moves at commit).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bench.httpload import HttpConnection

LIVE_TS = b"__TS__"


@dataclass
class DriverSpec:
    """Batches to post and their pace.

    Attributes:
        port: Pulseboard port.
        bodies: JSON batch bodies, in event-time order.
        events_per_body: events in each.
        max_ts_us: newest event time (UTC µs) of each body.
        interval_s: one batch every ``interval_s`` (catching up when behind); None = flat out.
        duration_s: stop after this long.
        live: bodies carry ``__TS__`` in place of every ``ts``; it is replaced by the wall-clock
            instant at send time (for a wall-clock server).
    """

    port: int
    bodies: list[bytes]
    events_per_body: list[int]
    max_ts_us: list[int]
    interval_s: float | None
    duration_s: float
    live: bool = False


@dataclass
class DriverResult:
    """``accepted``: ``(max_ts_us, accepted instant)`` per batch (``time.monotonic``)."""

    accepted: list[tuple[int, float]] = field(default_factory=list)
    events: int = 0
    started_s: float = 0.0
    ended_s: float = 0.0
    behind_s: float = 0.0
    errors: list[str] = field(default_factory=list)


async def _run(spec: DriverSpec, ready, go) -> DriverResult:
    conn = await HttpConnection.open(spec.port)
    ready()
    await go()
    result = DriverResult(started_s=time.monotonic())
    end = result.started_s + spec.duration_s
    for i, (body, n, ts) in enumerate(zip(spec.bodies, spec.events_per_body, spec.max_ts_us, strict=True)):
        if spec.interval_s is not None:
            due = result.started_s + i * spec.interval_s
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                result.behind_s = max(result.behind_s, -wait)
        if time.monotonic() >= end:
            break
        if spec.live:
            body = body.replace(LIVE_TS, datetime.now(UTC).isoformat().encode())
        status, text = await conn.post("/api/v1/events", body, "application/json")
        if status != 202:
            result.errors.append(f"{status}: {text[:300]!r}")
            break
        result.accepted.append((ts, time.monotonic()))
        result.events += n
    result.ended_s = time.monotonic()
    conn.close()
    return result


def driver_worker(spec: DriverSpec, ready_q, go_event, out_q, index: int) -> None:
    """Process entry (see ``bench.procs.run_workers``)."""
    import uvloop

    async def go() -> None:
        await asyncio.get_running_loop().run_in_executor(None, go_event.wait)

    try:
        result = uvloop.run(_run(spec, lambda: ready_q.put(index), go))
    except Exception as exc:  # reported to the parent
        result = DriverResult(errors=[f"driver crashed: {exc!r}"])
        ready_q.put(index)
    out_q.put((index, result))
