"""The snapshot service: scheduled cuts with catch-up, restatements, on-demand reconciliation.

``run_due(now)`` cuts every period whose scheduled cut time is at or before
``now`` and that has no snapshot yet, for every dashboard: after downtime
each missed period is cut with its own values.  APScheduler fires it at the
schedule's times (``LocalCutTrigger``) and runs ``restate_pending``
periodically; tests call both directly with an injected clock.

Event-time mode (the service's clock is an ``EventClock``, ``PULSEBOARD_CLOCK=event``:
replays and the demo): "now" is the event watermark, the newest event time committed.
Cuts, catch-up and restatements follow it instead of wall time: a period is cut once
the watermark passes its scheduled cut time (its end plus the schedule's offset,
00:05 for days), never before, and nothing is due before the first event (the
clock's wall-time fallback is never used for cuts).  The watermark moving past the
next cut time queues a cut pass at once (``EventClock.on_advance``); the restatement
interval still runs on wall time, as a "how often to look".  A replay posting in
time order (what ``pulseboard demo`` does) therefore cuts each day once, after its
last event, as version 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app import observability as obs
from app.clock import Clock, EventClock
from app.config import Settings
from app.metrics.calendar import SUPPORTED_END_YEAR, SUPPORTED_FIRST_YEAR, Period, to_us
from app.metrics.pack import Pack
from app.snapshots import NoSuchPeriod, NotCut, PeriodNotClosed, PeriodOutOfRange
from app.snapshots import breaches as breach_log
from app.snapshots import cut as cuts
from app.snapshots.reconcile import live_vs_snapshot, month_vs_days, rollups_vs_raw, snapshot_vs_current
from app.snapshots.schedule import CutSchedule, LocalCutTrigger, parse_hhmm
from app.store import store_down
from app.store.schema import event, snapshot

log = logging.getLogger(__name__)


class SnapshotService:
    """Cuts, restatements and reconciliation for every dashboard of the loaded packs.

    Args:
        engine: the store.
        packs: loaded packs.
        settings: schedule times, catch-up bound, restatement interval, business zone.
        clock: the clock cuts follow: wall time, or an ``EventClock`` in event-time mode (see the
            module docstring).  Its "now" is also each cut's ``cut_at``.
        day_close: optional ``slug -> day label -> tile id -> tile``, the live wall's last
            "today" tiles of each day (from the tile hub), for ``live_vs_snapshot``.
        on_change: called with a dashboard slug after a cut or restatement (walls re-read notices).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        packs: Mapping[str, Pack],
        settings: Settings,
        clock: Clock,
        day_close: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._day_close = day_close if day_close is not None else {}  # the hub's dict, filled later
        self._on_change = on_change or (lambda _slug: None)
        self.targets: dict[str, cuts.Target] = {
            d.slug: cuts.Target(p, d) for p in packs.values() for d in p.dashboards.values()
        }
        self.schedules = {
            "day": CutSchedule("day", parse_hhmm(settings.snapshot_daily_at)),
            "month": CutSchedule("month", parse_hhmm(settings.snapshot_monthly_at), settings.snapshot_monthly_day),
        }
        self._scheduler: AsyncIOScheduler | None = None
        self._late_checked: dict[str, tuple[int | None, int | None]] = {}  # slug -> (older, last) watermarks
        self._definitions_checked: set[str] = set()
        self._deferred: dict[str, set[tuple[str, str]]] = {}  # slug -> stale periods waiting for their interval
        self.restatements_coalesced = (
            0  # stale periods put off by restate_min_interval_s  # dashboards whose snapshots' definitions were checked
        )
        self.job_failures: dict[tuple[str, str], int] = {}
        """The metric of failed scheduled job steps: ``(dashboard, "cut" | "restate") -> count``."""
        self._failed_jobs: dict[str, dict[tuple[str, str | None, str | None], dict[str, Any]]] = {}
        self._passes = asyncio.Lock()  # one scheduled cut / restatement pass at a time
        self._event_clock = clock if isinstance(clock, EventClock) else None
        self._next_fire_us: int | None = None  # event time of the next scheduled cut (event-time mode)
        self._event_pass_queued = False
        self._held = 0  # pack reloads in progress (``holding_restatements``)
        if self._event_clock is not None:
            self._event_clock.on_advance(self._event_time_moved)

    def now_us(self) -> int | None:
        """The instant cuts are due against (UTC µs): the clock's now; in event-time mode the
        event watermark, ``None`` before any event (then nothing is due)."""
        if self._event_clock is not None:
            return self._event_clock.watermark_us
        return to_us(self._clock.now())

    def zone(self, slug: str) -> ZoneInfo:
        """The zone of a dashboard (its own, else the business zone)."""
        dash = self.targets[slug].dashboard
        return ZoneInfo(dash.tz) if dash.tz else self._settings.zone

    def target(self, slug: str) -> cuts.Target:
        """The target of dashboard ``slug``.  Raises NotCut (-> 404) for an unknown slug."""
        try:
            return self.targets[slug]
        except KeyError:
            raise NotCut(f"no dashboard {slug!r}") from None

    def period(self, slug: str, grain: str, label: str) -> Period:
        """The period ``label`` of ``grain`` in the dashboard's zone.  Raises NoSuchPeriod (a ValueError)
        for a bad label, PeriodOutOfRange (422) for a year outside the supported calendar."""
        if not re.fullmatch(r"\d{4}-\d{2}(-\d{2})?", label, flags=re.ASCII):  # "1-01" (issue 10 item 12) too
            raise NoSuchPeriod(f"expected grain day with YYYY-MM-DD or month with YYYY-MM, got {grain} {label!r}")
        if not SUPPORTED_FIRST_YEAR <= int(label[:4]) < SUPPORTED_END_YEAR:
            raise PeriodOutOfRange(
                f"{grain} {label} is outside the supported calendar [{SUPPORTED_FIRST_YEAR}, {SUPPORTED_END_YEAR})"
            )
        self.target(slug)  # NotCut (404) for an unknown dashboard
        zone = self.zone(slug)  # outside the try: only the grain and label can make "no such period"
        schedule = self.schedules.get(grain)
        if schedule is None:
            raise NoSuchPeriod(f"expected grain day with YYYY-MM-DD or month with YYYY-MM, got {grain} {label!r}")
        try:
            return schedule.period_of_label(label, zone)
        except ValueError as exc:  # an impossible date (2024-02-30): not cut, never an internal error
            raise NoSuchPeriod(
                f"expected grain day with YYYY-MM-DD or month with YYYY-MM, got {grain} {label!r}"
            ) from exc

    async def _first_period(self, target: cuts.Target, grain: str, now_us: int) -> Period | None:
        """The first period catch-up considers: the one after the last cut; with no cut yet, the
        one of the oldest event, but never before the horizon (``snapshot_catchup_horizon_days``
        before ``now_us``), so one 1970 event does not start cutting 50 years of empty periods
        (issue 10 item 10).  After the last cut, catch-up goes on from there (at most
        ``snapshot_catchup_max_periods`` a pass)."""
        zone = self.zone(target.slug)
        sched = self.schedules[grain]
        async with self._engine.connect() as conn:
            t = snapshot.c
            last_end = (
                await conn.execute(
                    select(func.max(t.period_end_us)).where(t.dashboard == target.slug, t.grain == grain)
                )
            ).scalar()
            if last_end is not None:
                return sched.period_containing(int(last_end), zone)
            first_ts = (
                await conn.execute(
                    select(func.min(event.c.ts_us)).where(event.c.type.in_(sorted(target.pack.event_types)))
                )
            ).scalar()
        if first_ts is None:
            return None
        horizon_us = now_us - self._settings.snapshot_catchup_horizon_days * 86_400_000_000
        return sched.period_containing(max(int(first_ts), horizon_us), zone)

    async def run_due(self, now_us: int | None = None) -> list[tuple[str, str, str, bool]]:
        """Cut every due, uncut period of every dashboard (catch-up included).

        A failure is caught per dashboard and grain (finding the periods due) and per period
        (its cut): it is logged, counted (``job_failures``), shown on the dashboard's wall as a
        ``job_failed`` notice until that job next succeeds, and the pass goes on with the other
        periods and dashboards (issue 10 item 2).

        Args:
            now_us: the instant to cut up to (UTC µs); default ``now_us()``.

        Returns:
            ``(dashboard, grain, period label, created)`` per period cut (none in event-time mode
            before the first event).
        """
        now_us = self.now_us() if now_us is None else now_us
        if now_us is None:
            return []
        done = []
        for target in self.targets.values():
            for grain in ("day", "month"):  # days first: a month's check reads its days
                sched = self.schedules[grain]
                try:
                    first = await self._first_period(target, grain, now_us)
                    due = (
                        []
                        if first is None
                        else list(sched.periods_due(first, now_us, self._settings.snapshot_catchup_max_periods))
                    )
                except Exception as exc:
                    self._job_failed(target.slug, "cut", grain, None, exc)
                    continue
                self._job_ok(target.slug, "cut", grain, None)
                for period in due:
                    try:
                        row, created = await cuts.cut(
                            self._engine, target, grain, period, now_us, sched.fire_us(period)
                        )
                    except Exception as exc:
                        self._job_failed(target.slug, "cut", grain, period.label, exc)
                        continue
                    self._job_ok(target.slug, "cut", grain, period.label)
                    obs.cut_succeeded(grain)
                    done.append((target.slug, grain, period.label, created))
                    if created:
                        await self._log_breaches(target.slug, row)
                        self._on_change(target.slug)
        return done

    @contextlib.asynccontextmanager
    async def holding_restatements(self) -> AsyncIterator[None]:
        """Within: the scheduled restatement pass does nothing (a pack reload is rebuilding the
        measures it changed; it runs its own pass with ``reloading=True`` once they are rebuilt)."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1

    async def restate_pending(self, now_us: int | None = None, reloading: bool = False) -> list[Any]:
        """Store a restated version of every cut period that late events or a definition change moved.

        ``now_us`` (UTC µs, default ``now_us()``) is the restated versions' ``cut_at``.  Failures
        are caught per dashboard and per period, as in ``run_due``.  Late data is found by one
        set-based query per dashboard (``cuts.stale_periods``), limited after the first complete
        pass to events stored since the pass before the last; definitions are compared once per
        process.  Returns the new rows.
        """
        now_us = self.now_us() if now_us is None else now_us
        if now_us is None:  # event-time mode before any event: nothing was cut
            return []
        if self._held and not reloading:  # a definition change is being rebuilt: its own pass follows
            return []
        rows = []
        for target in self.targets.values():
            slug = target.slug
            older, last = self._late_checked.get(slug, (None, None))
            try:
                async with self._engine.connect() as conn:
                    watermark = await cuts.event_watermark(conn)
                    stale = await cuts.stale_periods(
                        conn, target, since_seq=older, definitions=slug not in self._definitions_checked
                    )
            except Exception as exc:
                self._job_failed(slug, "restate", None, None, exc)
                continue
            self._job_ok(slug, "restate", None, None)
            all_done = True
            deferred = self._deferred.setdefault(slug, set())
            stale += [p for p in sorted(deferred) if p not in stale]
            deferred.clear()
            stale = await self._coalesce(target, stale, now_us)
            for grain in ("day", "month"):
                for g, label in stale:
                    if g != grain:
                        continue
                    try:
                        row = await cuts.restate(
                            self._engine, target, grain, self.period(target.slug, grain, label), now_us
                        )
                    except Exception as exc:
                        self._job_failed(target.slug, "restate", grain, label, exc)
                        all_done = False
                        continue
                    self._job_ok(target.slug, "restate", grain, label)
                    if row is not None:
                        obs.cut_succeeded(grain)
                        rows.append(row)
                        await self._log_breaches(target.slug, row)
                        self._on_change(target.slug)
            if all_done:
                # Next pass: only events stored after the watermark read one pass before this one (one
                # pass of margin for a transaction whose lower seq committed after a higher one).
                self._late_checked[slug] = (last, watermark)
                self._definitions_checked.add(slug)
        return rows

    async def _coalesce(self, target: cuts.Target, stale: list[tuple[str, str]], now_us: int) -> list[tuple[str, str]]:
        """The stale periods to restate now: those whose latest version is the original cut, or a
        restatement made at least ``restate_min_interval_s`` ago.  The others wait (``_deferred``)
        for a later pass, so late events trickling into a period make at most one version per
        interval, not one per pass (issue 10 item 18: one late event a minute made 60 versions an
        hour)."""
        min_us = int(self._settings.restate_min_interval_s * 1e6)
        if not stale or min_us <= 0:
            return stale
        due: list[tuple[str, str]] = []
        async with self._engine.connect() as conn:
            for grain, label in stale:
                row = await cuts.latest(conn, target.slug, grain, label)
                # The first restatement after the cut is made at once; later ones wait out the interval.
                if row is not None and row.status == "restated" and now_us - int(row.cut_at_us) < min_us:
                    self._deferred[target.slug].add((grain, label))
                    self.restatements_coalesced += 1
                else:
                    due.append((grain, label))
        return due

    def _job_failed(self, slug: str, job: str, grain: str | None, label: str | None, exc: Exception) -> None:
        """Log, count and show (on the wall's notice strip) one failed scheduled job step.

        Raises:
            exc itself when the store is down: every other step would fail (and wait) the same
            way, so the pass ends there and the next one catches up.
        """
        if store_down(exc):
            raise exc
        where = f"{grain} {label}" if label else f"{grain}s due" if grain else "the periods to restate"
        log.warning("scheduled %s of %s %s failed, going on with the others: %r", job, slug, where, exc)
        self.job_failures[(slug, job)] = self.job_failures.get((slug, job), 0) + 1
        key = (job, grain, label)
        fresh = key not in self._failed_jobs.setdefault(slug, {})
        self._failed_jobs[slug][key] = {
            "kind": "job_failed",
            "grain": grain,
            "period": label,
            "version": None,
            "text": f"scheduled {job} of {where} failed ({type(exc).__name__}); retried at the next pass",
        }
        if fresh:
            self._on_change(slug)

    def _job_ok(self, slug: str, job: str, grain: str | None, label: str | None) -> None:
        failed = self._failed_jobs.get(slug)
        if failed and failed.pop((job, grain, label), None) is not None:
            self._on_change(slug)

    def job_notices(self, slug: str) -> list[dict[str, Any]]:
        """The ``job_failed`` notices of dashboard ``slug``: one per scheduled job step (a cut or
        restatement of one period, or finding the periods due) whose last run failed."""
        return list(self._failed_jobs.get(slug, {}).values())

    async def cut_period(self, slug: str, grain: str, label: str, now_us: int | None = None) -> tuple[Any, bool]:
        """Cut one period by hand (``pulseboard snapshot cut``); re-cuts a cut period as a new
        version when its numbers changed.  Returns ``(latest row, created)``.

        Raises:
            NotCut: unknown dashboard.
            ValueError: a bad grain or label.
            PeriodNotClosed: the period has not ended (in event-time mode: on the event clock).
        """
        now_us = self.now_us() if now_us is None else now_us
        target = self.target(slug)
        if now_us is None:
            raise PeriodNotClosed("event-time mode: no event has been stored yet, so no period has ended")
        period = self.period(slug, grain, label)
        row, created = await cuts.cut(
            self._engine, target, grain, period, now_us, self.schedules[grain].fire_us(period)
        )
        if created:
            await self._log_breaches(slug, row)
            self._on_change(slug)
            return row, True
        again = await cuts.restate(self._engine, target, grain, period, now_us, reason="re-cut by hand")
        if again is not None:
            await self._log_breaches(slug, again)
            self._on_change(slug)
        return (again, True) if again is not None else (row, False)

    async def _log_breaches(self, slug: str, row: Any) -> None:
        """The red KPIs of a cut or restated day go to the breach log (``app.snapshots.breaches``)."""
        await breach_log.record_snapshot(
            self._engine,
            slug,
            row.grain,
            row.period,
            row.period_start_us,
            row.period_end_us,
            msgspec.json.decode(row.kpis),
        )

    async def reconcile(self, slug: str, grain: str, label: str) -> dict[str, Any]:
        """On-demand reconciliation of a period (CONTRACT §7).

        Raises:
            NotCut / NoSuchPeriod: 404, only for an unknown dashboard or a period that does not exist
                (a period not cut yet is reconciled with its snapshot checks skipped).
            PeriodOutOfRange: 422.
            Anything else (a store error, a stored row that does not decode) propagates: a 500
            problem+json without the internal message (issue 10 item 20), never a 404.
        """
        target = self.target(slug)
        period = self.period(slug, grain, label)
        checks, mismatches = [], []
        async with self._engine.connect() as conn:
            check, found = await rollups_vs_raw(conn, target.pack, period)
            checks.append(check)
            mismatches += found
            row = await cuts.latest(conn, slug, grain, label)
            if row is None:
                checks.append({"name": "snapshot_vs_current", "ok": None, "detail": "skipped: not cut yet"})
            else:
                current = await cuts.compute_kpis(conn, target.pack, grain, period)
                check, found = await snapshot_vs_current(conn, target.pack, grain, period, row, current)
                checks.append(check)
                mismatches += found
                kpis = msgspec.json.decode(row.kpis)
                if grain == "month":
                    check, found = await month_vs_days(conn, slug, period, kpis)
                    checks.append(check)
                    mismatches += found
                else:
                    tile_kpis = {t.id: t.kpi for t in target.dashboard.tiles if t.window == "today" and not t.dims}
                    live = self._day_close.get(slug, {}).get(label)
                    check, found = live_vs_snapshot(live, tile_kpis, kpis)
                    checks.append(check)
                    mismatches += found
        return {
            "dashboard": slug,
            "grain": grain,
            "period": label,
            "ok": not mismatches,
            "checks": checks,
            "mismatches": mismatches,
        }

    async def _tick(self, now_us: int | None = None) -> None:
        async with self._passes:
            try:
                await self.run_due(now_us)
            except Exception as exc:  # the store is down (run_due goes on past anything else): catch up later
                obs.STORE_ERRORS.labels("cut").inc()
                log.warning("scheduled cut failed, will catch up: %s", exc)

    async def _restate_tick(self) -> None:
        async with self._passes:
            try:
                await self.run_due()  # dashboards in other zones than the trigger's get cut here
                await self.restate_pending()
            except Exception as exc:  # the store is down: the next pass retries
                log.warning("restatement pass failed, will retry: %s", exc)

    def next_fire_us(self, after_us: int) -> int:
        """Event time (UTC µs) of the first scheduled cut of any dashboard and grain after ``after_us``."""
        zones = {str(self.zone(slug)): self.zone(slug) for slug in self.targets} or {"": self._settings.zone}
        return min(s.next_fire_us(after_us, z) for s in self.schedules.values() for z in zones.values())

    def _event_time_moved(self, watermark_us: int) -> None:
        """``EventClock`` listener: queue a cut pass when the watermark reaches the next cut time."""
        if self._scheduler is None or self._event_pass_queued:
            return
        if self._next_fire_us is not None and watermark_us < self._next_fire_us:
            return
        self._queue_event_pass()

    def _queue_event_pass(self) -> None:
        assert self._scheduler is not None
        self._event_pass_queued = True
        self._scheduler.add_job(self._event_pass, id="event-cut", max_instances=1, misfire_grace_time=None)

    async def _event_pass(self) -> None:
        """Cut what the event watermark made due, until it has not passed the next cut time.

        The watermark may move while a pass runs: the pass loops instead of queueing another
        (``_event_pass_queued`` stays set until it returns, with no await between its last
        look at the watermark and the flag's reset)."""
        try:
            while True:
                now_us = self.now_us()
                if now_us is None:
                    return
                await self._tick(now_us)
                self._next_fire_us = self.next_fire_us(now_us)
                latest = self.now_us()
                if latest is None or latest < self._next_fire_us:
                    return
        finally:
            self._event_pass_queued = False

    def start(self) -> None:
        """Start APScheduler jobs: the cut schedules (plus a catch-up now) and restatements.

        In event-time mode there are no wall-time cut jobs: the event clock queues cut passes
        (see the module docstring); the catch-up now cuts what the stored events made due.
        """
        if self._scheduler is not None:
            raise RuntimeError("SnapshotService.start() called twice; call stop() first")
        zone = self._settings.zone
        sched = AsyncIOScheduler(timezone=zone)
        if self._event_clock is None:
            for grain, schedule in self.schedules.items():
                sched.add_job(
                    self._tick,
                    LocalCutTrigger(schedule, zone),
                    id=f"cut-{grain}",
                    coalesce=True,
                    max_instances=1,
                    misfire_grace_time=None,
                )
            sched.add_job(self._tick, id="catch-up", max_instances=1)  # run once now: missed periods
        sched.add_job(
            self._restate_tick,
            IntervalTrigger(seconds=self._settings.restate_interval_s, timezone=zone),
            id="restate",
            coalesce=True,
            max_instances=1,
        )
        self._scheduler = sched
        if self._event_clock is not None:
            self._queue_event_pass()  # catch-up now, on the event clock
        sched.start()

    async def stop(self) -> None:
        """Stop the scheduler with a bounded wait (no-op when not started).

        No job starts from now on; a cut or restatement already running gets
        ``snapshot_stop_wait_s`` seconds to finish, then it is cancelled (its transaction rolls
        back; the next start catches up) and given as long again to end.  Returns once every
        job has ended, or after at most twice ``snapshot_stop_wait_s`` (a job still not ended
        then is logged).
        """
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is None:
            return
        scheduler.pause()  # no new job from here on
        wait_s = self._settings.snapshot_stop_wait_s
        running = _running_jobs(scheduler)
        if running:
            _, running = await asyncio.wait(running, timeout=wait_s)
        if running:
            log.warning("cancelling %d snapshot job(s) still running after %g s at shutdown", len(running), wait_s)
            for job in running:
                job.cancel()
            _, running = await asyncio.wait(running, timeout=wait_s)
            if running:
                log.error("%d snapshot job(s) did not end within %g s of being cancelled", len(running), wait_s)
        scheduler.shutdown(wait=False)  # APScheduler runs it at the loop's next turn: give it that turn
        await asyncio.sleep(0)


def _running_jobs(scheduler: AsyncIOScheduler) -> set[asyncio.Future[Any]]:
    """The job runs in flight of ``scheduler``.

    APScheduler 3 has no public view of them: its asyncio executor keeps them in
    ``_pending_futures`` (tests/test_snapshot_stop.py fails loudly if that moves).
    """
    running: set[asyncio.Future[Any]] = set()
    for executor in scheduler._executors.values():
        running.update(f for f in getattr(executor, "_pending_futures", ()) if not f.done())
    return running
