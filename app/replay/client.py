"""Post a list of events to a Pulseboard server through its HTTP API, in batches.

``replay_events`` is the engine behind ``pulseboard replay`` and ``pulseboard
demo``; tests call it directly.  Two phases:

* **backfill**: events before the replay start instant (``start``), or every
  event with ``speed=None`` ("max"), are posted as fast as the server accepts,
  with up to ``max_in_flight`` batches in flight;
* **paced**: the rest are posted in real time scaled by ``speed``: an event
  ``t`` seconds after the start instant is posted ``t / speed`` seconds after
  the paced phase began.  The events due in one tick (~100 ms) go in one post
  (split at ``batch_size``).

Every event carries an id, so posting one twice is harmless (the server counts
it as a duplicate); that is what makes retries safe.  Connection errors and
``429``/``502``/``503``/``504`` are retried with exponential backoff, honouring
``Retry-After``, for a bounded number of attempts (tenacity).  Any other error
status stops the replay with a ``ReplayError`` that quotes the problem detail.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from tqdm import tqdm

DEFAULT_URL = "http://127.0.0.1:8000"
EVENTS_PATH = "/api/v1/events"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0


class ReplayError(RuntimeError):
    """The replay cannot go on; the message says why (status, problem detail, attempts)."""


class _Retryable(Exception):
    """A response worth retrying (429/5xx overload) or a transport error, with the server's hint."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class ReplaySummary:
    """What a replay did."""

    events: int = 0
    accepted: int = 0
    duplicates: int = 0
    batches: int = 0
    backfilled: int = 0
    paced: int = 0
    retries: int = 0
    elapsed_s: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def lines(self) -> list[str]:
        """The summary as ``name value`` lines (what the CLI prints)."""
        return [
            f"events        {self.events}",
            f"accepted      {self.accepted}",
            f"duplicates    {self.duplicates}",
            f"batches       {self.batches}",
            f"elapsed_s     {self.elapsed_s:.1f}",
            f"events_per_s  {self.events_per_s:.0f}",
        ]


@dataclass(frozen=True, slots=True)
class PostResult:
    """One successful post: how many events, and what the server said."""

    events: int
    accepted: int
    duplicates: int
    first_ts: datetime
    last_ts: datetime
    posted_at: float  # time.monotonic() when the 202 came back


def _ts(ev: dict[str, Any]) -> datetime:
    ts = ev["ts"]
    if isinstance(ts, datetime):
        return ts
    return datetime.fromisoformat(str(ts).replace("Z", "+00:00"))


def _wire(ev: dict[str, Any]) -> dict[str, Any]:
    ts = ev["ts"]
    return {**ev, "ts": ts.isoformat()} if isinstance(ts, datetime) else ev


def _retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def problem_text(response: httpx.Response) -> str:
    """A one-paragraph account of an error response (problem+json title, detail, first errors)."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return f"{response.status_code} {response.reason_phrase}" + (f": {text[:500]}" if text else "")
    if not isinstance(body, dict):
        return f"{response.status_code}: {json.dumps(body)[:500]}"
    head = f"{response.status_code} {body.get('title') or response.reason_phrase}"
    if body.get("detail"):
        head += f": {body['detail']}"
    errors = body.get("errors") or []
    if errors:
        shown = "; ".join(
            " ".join(f"{k}={e[k]}" for k in ("index", "line", "field") if k in e) + f": {e.get('message', '')}"
            for e in errors[:5]
            if isinstance(e, dict)
        )
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        head += f" [errors: {shown}{more}]"
    return head


class _Wait:
    """tenacity wait: the server's ``Retry-After`` when it gave one, else exponential backoff with jitter."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self._backoff = wait_exponential(multiplier=initial_s, max=max_s) + wait_random(0, initial_s)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after_s is not None:
            return min(exc.retry_after_s, MAX_RETRY_AFTER_S)
        return self._backoff(state)


class _Poster:
    """Posts one batch with retries; counts into the summary."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        summary: ReplaySummary,
        max_attempts: int,
        backoff_initial_s: float,
        backoff_max_s: float,
        on_post: Callable[[PostResult], None] | None,
    ) -> None:
        self._client = client
        self._summary = summary
        self._max_attempts = max_attempts
        self._wait = _Wait(backoff_initial_s, backoff_max_s)
        self._on_post = on_post

    async def _once(self, body: bytes) -> httpx.Response:
        try:
            response = await self._client.post(EVENTS_PATH, content=body, headers={"Content-Type": "application/json"})
        except httpx.TransportError as exc:
            raise _Retryable(f"{exc.__class__.__name__}: {str(exc) or 'no detail'}") from exc
        if response.status_code in RETRY_STATUSES:
            raise _Retryable(problem_text(response), _retry_after_s(response.headers.get("retry-after")))
        return response

    def _count_retry(self, state: RetryCallState) -> None:
        self._summary.retries += 1

    async def post(self, batch: Sequence[dict[str, Any]], first_index: int) -> PostResult:
        """Post ``batch`` (events ``first_index..``); returns the server's counts.

        Raises:
            ReplayError: a non-retryable error status, or retries exhausted.
        """
        body = json.dumps([_wire(ev) for ev in batch], separators=(",", ":")).encode()
        where = f"batch of events {first_index}..{first_index + len(batch) - 1}"
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(_Retryable),
                stop=stop_after_attempt(self._max_attempts),
                wait=self._wait,
                before_sleep=self._count_retry,
                reraise=False,
            ):
                with attempt:
                    response = await self._once(body)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            raise ReplayError(
                f"gave up on the {where} after {self._max_attempts} attempts "
                f"to {self._client.base_url}{EVENTS_PATH}: {last}"
            ) from None
        if response.status_code != 202:
            raise ReplayError(f"the server refused the {where}: {problem_text(response)}")
        try:
            counts = response.json()
            accepted, duplicates = int(counts["accepted"]), int(counts["duplicates"])
        except (ValueError, KeyError, TypeError):
            raise ReplayError(f"unexpected 202 body for the {where}: {response.text[:300]!r}") from None
        self._summary.accepted += accepted
        self._summary.duplicates += duplicates
        self._summary.batches += 1
        result = PostResult(len(batch), accepted, duplicates, _ts(batch[0]), _ts(batch[-1]), time.monotonic())
        if self._on_post is not None:
            self._on_post(result)
        return result


async def replay_events(
    events: Sequence[dict[str, Any]],
    url: str = DEFAULT_URL,
    speed: float | None = None,
    start: datetime | None = None,
    batch_size: int = 1000,
    progress: bool = False,
    *,
    api_key: str | None = None,
    max_in_flight: int = 2,
    max_attempts: int = 8,
    backoff_initial_s: float = 0.5,
    backoff_max_s: float = 10.0,
    tick_s: float = 0.1,
    timeout_s: float = 120.0,
    on_post: Callable[[PostResult], None] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ReplaySummary:
    """Post ``events`` (sorted by ``ts``) to the server at ``url``.

    Args:
        events: event dicts in time order; ``ts`` is an aware ``datetime`` or an RFC 3339 string.
        url: the server's base URL.
        speed: ``None`` = as fast as the server accepts; ``N`` = N seconds of event time per second.
        start: the replay-clock start instant: earlier events are backfilled at once, later ones
            paced by ``speed`` (default: the first event's time).
        batch_size: most events in one post.
        progress: show a tqdm bar on stderr.
        api_key: sent as ``Authorization: Bearer``.
        max_in_flight: concurrent posts while backfilling.
        max_attempts: attempts per batch (connection errors, 429, 502-504) before giving up.
        on_post: called after every successful post (tests observe pacing with it).
        transport: an httpx transport to use instead of the network (tests).

    Raises:
        ReplayError: a batch refused (4xx other than 429, 5xx other than 502-504) or retries exhausted.
        ValueError: bad arguments.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if speed is not None and not speed > 0:
        raise ValueError("speed must be positive (or None for max)")
    if start is not None and start.tzinfo is None:
        raise ValueError("start must be an aware datetime")
    summary = ReplaySummary(events=len(events))
    headers = {"User-Agent": "pulseboard-replay"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    times = [_ts(ev) for ev in events]
    if speed is None:
        n_backfill = len(events)
    elif start is None:
        n_backfill = 0
    else:
        n_backfill = next((i for i, t in enumerate(times) if t >= start), len(events))
    summary.backfilled, summary.paced = n_backfill, len(events) - n_backfill

    bar = tqdm(
        total=len(events),
        unit="ev",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
        desc="replay",
        smoothing=0.1,
    )

    def observed(result: PostResult) -> None:
        bar.update(result.events)
        bar.set_postfix_str(f"at {result.last_ts:%Y-%m-%d %H:%M:%S}", refresh=False)
        if on_post is not None:
            on_post(result)

    began = time.monotonic()
    limits = httpx.Limits(max_connections=max(2, max_in_flight), max_keepalive_connections=max(2, max_in_flight))
    try:
        async with httpx.AsyncClient(
            base_url=url, headers=headers, timeout=timeout_s, limits=limits, transport=transport
        ) as client:
            poster = _Poster(client, summary, max_attempts, backoff_initial_s, backoff_max_s, observed)
            await _backfill(poster, events, n_backfill, batch_size, max(1, max_in_flight))
            if n_backfill < len(events):
                origin = start if start is not None else times[0]
                await _paced(poster, events, times, n_backfill, origin, speed or 1.0, batch_size, tick_s)
    finally:
        bar.close()
        summary.elapsed_s = time.monotonic() - began
    return summary


async def _backfill(
    poster: _Poster, events: Sequence[dict[str, Any]], stop: int, batch_size: int, max_in_flight: int
) -> None:
    """Post ``events[:stop]`` in batches, ``max_in_flight`` at a time; the first failure stops all."""
    if stop == 0:
        return
    pending: set[asyncio.Task[PostResult]] = set()
    try:
        for i in range(0, stop, batch_size):
            if len(pending) >= max_in_flight:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            pending.add(asyncio.create_task(poster.post(events[i : min(i + batch_size, stop)], i)))
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


async def _paced(
    poster: _Poster,
    events: Sequence[dict[str, Any]],
    times: Sequence[datetime],
    begin: int,
    origin: datetime,
    speed: float,
    batch_size: int,
    tick_s: float,
) -> None:
    """Post ``events[begin:]`` in real time: event time ``origin + t`` goes out at ``t / speed`` s."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    due = [max(0.0, (t - origin).total_seconds() / speed) for t in times]
    i = begin
    n = len(events)
    while i < n:
        now = loop.time() - t0
        if due[i] > now:
            # Sleep to the end of the tick that holds the next event, then take all that is due.
            wake = max(due[i], (int(due[i] / tick_s) + 1) * tick_s) if tick_s > 0 else due[i]
            await asyncio.sleep(wake - now)
            now = loop.time() - t0
        j = i
        while j < n and due[j] <= now:
            j += 1
        for k in range(i, j, batch_size):
            await poster.post(events[k : min(k + batch_size, j)], k)
        i = j
