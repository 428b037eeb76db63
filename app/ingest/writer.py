"""Group commit: concurrent ingest requests share one database transaction.

Requests are queued with ``submit``; one writer task takes everything queued
(up to ``max_group_events``), writes it in one transaction and commits, then
answers each request.  The transaction runs on the writer's own thread with a
synchronous connection, so a group costs the event loop one hand-off, not one
per statement, and the loop goes on parsing the next requests meanwhile.  A request is
answered only after the commit returned, so 202 means durable.  While a transaction runs, new requests pile up and
join the next one, which is what keeps many small posts fast.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from app import observability as obs
from app.clock import Clock
from app.ingest import EventConflict, InvalidEvents, Overloaded
from app.metrics.calendar import to_us
from app.metrics.pack import Pack
from app.metrics.rollup import DimensionCap
from app.store import StoreUnavailable, store_down
from app.store.upserts import NonFiniteAggregate
from app.store.writes import (
    GroupResult,
    IdempotencyRecord,
    NewEvent,
    RequestOutcome,
    load_dimension_values,
    write_group,
)

log = logging.getLogger(__name__)
MAX_CONFLICT_RETRIES = 3


@dataclass(slots=True)
class WriterStats:
    """Counters since start: transactions committed, requests and events they carried."""

    groups: int = 0
    requests: int = 0
    events_inserted: int = 0
    failed_groups: int = 0
    failed_requests: int = 0  # requests that failed alone while the rest of their group was stored


@dataclass(slots=True)
class _Pending:
    events: Sequence[NewEvent]
    idempotency: IdempotencyRecord | None = None
    future: asyncio.Future[RequestOutcome] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def _consume(future: asyncio.Future[RequestOutcome]) -> None:
    """Retrieve a late future's exception (so asyncio does not log it as never retrieved)."""
    if not future.cancelled():
        future.exception()


class GroupCommitWriter:
    """The single writer of one process.

    Args:
        engine: a synchronous engine of the store (``app.store.db.create_writer_engine``),
            owned by the writer from now on: ``stop()`` disposes of it.
        packs: KPI packs whose measures are rolled up on write.
        clock: the wall clock (for ``received_us``).
        on_commit: awaited after each commit with the ``GroupResult``.
        max_group_events: most events in one transaction.
        max_queued_events: admission limit; beyond it ``submit`` raises ``Overloaded``.
        max_wait_s: the longest ``submit`` waits for its commit (``Settings.store_wait_s``); past
            it ``StoreUnavailable`` (503), so a database that hangs instead of refusing cannot
            hang the request.  ``None``: no bound.
        max_dim_values: the cardinality cap per rolled-up dimension (``DimensionCap``); ``None``:
            no cap.

    Lifecycle: ``start()`` then ``submit()`` many times, then ``stop()``.
    """

    def __init__(
        self,
        engine: Engine,
        packs: Sequence[Pack],
        clock: Clock,
        on_commit: Callable[[GroupResult], Awaitable[None]] | None = None,
        max_group_events: int = 20_000,
        max_queued_events: int = 200_000,
        max_wait_s: float | None = None,
        max_dim_values: int | None = None,
    ) -> None:
        self._engine = engine
        self._packs = list(packs)
        self._clock = clock
        self._on_commit = on_commit
        self._max_group = max_group_events
        self._max_queued = max_queued_events
        self._max_wait_s = max_wait_s
        self.dim_cap = DimensionCap(max_dim_values) if max_dim_values is not None else None
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._queued_events = 0
        self._task: asyncio.Task[None] | None = None
        self._thread: ThreadPoolExecutor | None = None
        self.stats = WriterStats()

    @property
    def queued_events(self) -> int:
        """Events submitted and not yet committed (or failed)."""
        return self._queued_events

    def start(self) -> None:
        """Start the writer task (inside a running loop)."""
        if self._task is not None:
            raise RuntimeError("GroupCommitWriter.start() called twice; call stop() first")
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pulseboard-writer")
        if self.dim_cap is not None:  # the writer thread's first job: the cap's values, before any group
            self._thread.submit(self._load_cap)
        self._task = asyncio.create_task(self._run(), name="group-commit-writer")

    def _load_cap(self) -> None:
        """Load the cardinality cap's admitted values (on the writer thread; a failure is retried
        by the first group, ``write_group``)."""
        assert self.dim_cap is not None
        try:
            with self._engine.connect() as conn:
                load_dimension_values(conn, self.dim_cap)
        except Exception as exc:
            log.warning("loading the dimension values of the cardinality cap failed (retried on write): %s", exc)

    async def stop(self) -> None:
        """Finish what is queued, then stop the writer task, its thread and its engine."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.shutdown, wait=True)
        self._engine.dispose()

    async def submit(self, events: Sequence[NewEvent], idempotency: IdempotencyRecord | None = None) -> RequestOutcome:
        """Store ``events`` all-or-nothing; return after commit.

        With ``idempotency``, the answer is remembered under that key in the same transaction.

        Raises:
            Overloaded: more than ``max_queued_events`` are waiting (HTTP 503).
            EventConflict: an event's (source, id) exists with another body (409).
            StoreUnavailable: the database failed the transaction, or gave no answer within
                ``max_wait_s`` (503).  In the second case the transaction may still commit once the
                database answers: the outcome is unknown, as after a lost connection, and a retry
                with the same Idempotency-Key (or event ids) gets the stored answer, never a copy.
        """
        if self._task is None:
            raise RuntimeError("GroupCommitWriter is not running; call start() in the lifespan")
        if self._queued_events + len(events) > self._max_queued:
            raise Overloaded("the ingest queue is full; retry after the indicated delay")
        pending = _Pending(events, idempotency)
        self._queued_events += len(events)
        await self._queue.put(pending)
        try:
            outcome: RequestOutcome = await asyncio.wait_for(asyncio.shield(pending.future), self._max_wait_s)
        except TimeoutError:
            pending.future.add_done_callback(_consume)  # answered already: nobody reads its late outcome
            raise StoreUnavailable(
                f"the database gave no answer within {self._max_wait_s:g} s; the outcome is "
                "unknown: retry with the same Idempotency-Key"
            ) from None
        if outcome.conflict is not None:
            index, source, event_id = outcome.conflict
            raise EventConflict(
                f"event {index}: (source={source!r}, id={event_id!r}) was stored before with a different body; "
                "nothing from this request was stored",
                errors=[{"index": index, "field": "id", "message": "same (source, id), different body"}],
            )
        return outcome

    def _take_group(self, first: _Pending) -> list[_Pending]:
        group = [first]
        size = len(first.events)
        while size < self._max_group:
            try:
                nxt = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            group.append(nxt)
            size += len(nxt.events)
        return group

    async def _commit(self, group: list[_Pending]) -> GroupResult:
        requests = [p.events for p in group]
        keys = [p.idempotency for p in group]
        received_us = to_us(self._clock.now())
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, self._commit_blocking, requests, keys, received_us
        )

    def _commit_blocking(
        self, requests: list[Sequence[NewEvent]], keys: list[IdempotencyRecord | None], received_us: int
    ) -> GroupResult:
        """One group's transaction, on the writer thread.

        When the group fails for a reason that is not the store being down (a value that
        overflows a stored sum, any refusal by the database of one request's rows, a bug on one
        event), each request is retried in a transaction of its own: the ones that fail get
        ``RequestOutcome.failure``, the others are stored and answered as usual.  A failing
        request never fails the others of its group (issue 10 item 1).
        """
        try:
            return self._transaction(requests, keys, received_us)
        except Exception as exc:
            if store_down(exc) or len(requests) == 1:
                raise
            log.warning("group commit of %d requests failed (%s); retrying each on its own", len(requests), exc)
        result = GroupResult([])
        for events, key in zip(requests, keys, strict=True):
            try:
                one = self._transaction([events], [key], received_us)
            except Exception as exc:
                result.outcomes.append(RequestOutcome(failure=exc))
                continue
            result.outcomes.append(one.outcomes[0])
            result.inserted += one.inserted
            result.packs_touched |= one.packs_touched
        return result

    def _transaction(
        self, requests: list[Sequence[NewEvent]], keys: list[IdempotencyRecord | None], received_us: int
    ) -> GroupResult:
        """``write_group`` in a transaction, retried when it raced another writer on a key."""
        for attempt in range(MAX_CONFLICT_RETRIES):
            try:
                with self._engine.begin() as conn:
                    return write_group(conn, requests, self._packs, received_us, keys, self.dim_cap)
            except IntegrityError as exc:
                if not key_race(exc):
                    raise
                # Another instance inserted one of our keys after our check: retry,
                # the next check sees it as a duplicate or a conflict.
                log.info("group commit raced another writer (attempt %d); retrying", attempt + 1)
        raise StoreUnavailable("the write kept racing concurrent writers; retry")

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            group = self._take_group(first)
            started_s = time.perf_counter()
            try:
                result = await self._commit(group)
            except Exception as exc:  # the writer task survives anything one group does
                log.warning("group commit of %d requests failed: %s", len(group), exc)
                self.stats.failed_groups += 1
                obs.STORE_ERRORS.labels("ingest").inc()
                obs.INGEST_EVENTS.labels("failed").inc(sum(len(p.events) for p in group))
                error = request_error(exc)
                for p in group:
                    if not p.future.done():
                        p.future.set_exception(error)
            else:
                obs.GROUP_COMMIT_SECONDS.observe(time.perf_counter() - started_s)
                obs.GROUP_COMMIT_EVENTS.observe(sum(len(p.events) for p in group))
                obs.INGEST_EVENTS.labels("accepted").inc(sum(o.accepted for o in result.outcomes))
                obs.INGEST_EVENTS.labels("duplicate").inc(sum(o.duplicates for o in result.outcomes))
                self.stats.groups += 1
                self.stats.requests += len(group)
                self.stats.events_inserted += result.inserted
                for p, outcome in zip(group, result.outcomes, strict=True):
                    if p.future.done():
                        continue
                    if outcome.failure is not None:
                        self.stats.failed_requests += 1
                        p.future.set_exception(request_error(outcome.failure))
                    else:
                        p.future.set_result(outcome)
                if self._on_commit is not None:
                    try:
                        await self._on_commit(result)
                    except Exception:  # a tile refresh hiccup must never fail acknowledged writes
                        log.exception("on_commit hook failed")
            finally:
                for p in group:
                    self._queued_events -= len(p.events)
                    self._queue.task_done()


RACE_CONSTRAINTS = ("uq_event_source_id", "pk_idempotency_key")
_SQLITE_RACES = (
    "UNIQUE constraint failed: event.source, event.event_id",
    "UNIQUE constraint failed: idempotency_key.owner, idempotency_key.key",
)


def key_race(exc: IntegrityError) -> bool:
    """Whether ``exc`` is a unique violation on an event's ``(source, event_id)`` (or on an
    Idempotency-Key): another writer stored the same key between our check and our insert, and a
    retry sees it as a duplicate.  Any other integrity failure (a NOT NULL refusing a non-finite
    sum, ...) is a refusal of the data, not a race (issue 10 item 1)."""
    orig = exc.orig
    if isinstance(orig, psycopg.errors.UniqueViolation):
        return orig.diag.constraint_name in RACE_CONSTRAINTS
    return any(text in str(orig) for text in _SQLITE_RACES)


def _overflow(exc: BaseException) -> bool:
    if isinstance(exc, NonFiniteAggregate):
        return True
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        if isinstance(orig, (psycopg.errors.NumericValueOutOfRange, psycopg.errors.NotNullViolation)):
            return True
        return "NOT NULL constraint failed: rollup" in str(orig)
    return False


def request_error(exc: BaseException) -> Exception:
    """The exception a request is answered with when its transaction failed with ``exc``:
    ``InvalidEvents`` (422) when its values overflow a rolled-up sum, ``StoreUnavailable`` (503)
    for any other database failure, ``exc`` itself otherwise (a 500 problem)."""
    if _overflow(exc):
        return InvalidEvents(
            "the values of this request overflow a rolled-up sum (float64); nothing of it was stored",
            errors=[
                {"field": "value", "message": str(exc) if isinstance(exc, NonFiniteAggregate) else "overflows a sum"}
            ],
        )
    if isinstance(exc, StoreUnavailable):
        return exc
    if isinstance(exc, (DBAPIError, SQLAlchemyError, OSError)):
        return StoreUnavailable(f"database unavailable: {exc.__class__.__name__}")
    return exc if isinstance(exc, Exception) else RuntimeError(str(exc))
