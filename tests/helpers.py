"""Small helpers shared by tests."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

PACKS_DIR = Path(__file__).resolve().parent / "packs"
REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"  # the real data sets the tests read, each with its SOURCE.md (data/README.md)
AUGUST = DATA / "anonymous-bank" / "august_1999.tsv.gz"
ITSM_LOG = DATA / "itsm-incident-log" / "incident_event_log.csv.gz"
NOC = DATA / "noc-alarms"
PCIC_ALARMS = NOC / "pcic2021-wireless-alarms.csv.gz"


T = TypeVar("T")
POLL_S = 0.02


def _timed_out(what: str | None, timeout_s: float, last: object, error: BaseException | None) -> AssertionError:
    got = f"last error {error!r}" if error is not None else f"last value {last!r}"
    return AssertionError(f"timed out after {timeout_s:g} s waiting for {what or 'the condition'} ({got})")


async def wait_until(
    predicate: Callable[[], T | Awaitable[T]],
    timeout_s: float = 10.0,
    *,
    what: str | None = None,
    interval_s: float = POLL_S,
    ignore: tuple[type[BaseException], ...] = (),
    fail: bool = True,
) -> T:
    """Poll ``predicate`` (a function or a coroutine function) until it returns a truthy value;
    return that value.  The one way tests wait for something (no bare sleeps).

    Args:
        predicate: called with no argument; may be ``async``.
        timeout_s: the deadline, seconds from now (event-loop time).
        what: what is awaited, for the failure message.
        interval_s: pause between polls.
        ignore: exceptions the predicate may raise while the condition is not met yet
            (e.g. ``httpx.TransportError`` while a server starts); others propagate.
        fail: ``False`` returns the last (falsy) value at the deadline instead of raising, for
            tests that record the outcome as a figure and assert on it afterwards.

    Raises:
        AssertionError: the deadline passed (with ``fail``); names ``what`` and the last value
            or error.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: object = None
    error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            last, error = value, None
            if value:
                return value  # type: ignore[return-value]
        except ignore as exc:
            error = exc
        if loop.time() >= deadline:
            if fail:
                raise _timed_out(what, timeout_s, last, error)
            return last  # type: ignore[return-value]
        await asyncio.sleep(interval_s)


def wait_until_sync(
    predicate: Callable[[], T],
    timeout_s: float = 10.0,
    *,
    what: str | None = None,
    interval_s: float = POLL_S,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """``wait_until`` for synchronous tests (subprocesses, Playwright's sync API): same arguments."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    error: BaseException | None = None
    while True:
        try:
            value = predicate()
            last, error = value, None
            if value:
                return value
        except ignore as exc:
            error = exc
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout_s, last, error)
        time.sleep(interval_s)


async def wait_closed(url: str, timeout_s: float = 15.0) -> None:
    """Wait until the server at ``url`` refuses connections (after its ``stop()``).

    Raises:
        AssertionError: it still answers after ``timeout_s``.
    """
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=1) as probe:

        async def refused() -> bool:
            try:
                await probe.get("/healthz")
            except httpx.TransportError:
                return True
            return False

        await wait_until(refused, timeout_s, what=f"{url} to stop answering", interval_s=0.05)


def strict_json(text: str) -> Any:
    """Parse JSON refusing NaN / Infinity (a strict parser, as clients use)."""

    def refuse(token: str) -> Any:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


async def series(client, kpi: str, grain: str, start: str, end: str, **dims: str) -> list[dict]:
    """Points of ``kpi``'s series; asserts 200 and strict JSON."""
    params = {"grain": grain, "start": start, "end": end, **{f"dims.{k}": v for k, v in dims.items()}}
    resp = await client.get(f"/api/v1/kpis/{kpi}/series", params=params)
    assert resp.status_code == 200, resp.text
    return strict_json(resp.text)["points"]


def sample(ts: str, value: float | None = 1, **extra: Any) -> dict:
    """A ``sample`` event of the generic test pack."""
    ev = {"type": "sample", "ts": ts, **extra}
    if value is not None:
        ev["value"] = value
    return ev
