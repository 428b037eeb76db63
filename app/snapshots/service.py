"""The snapshot service: scheduled cuts with catch-up, restatements, on-demand reconciliation.

``run_due(now)`` cuts every period whose scheduled cut time is at or before
``now`` and that has no snapshot yet, for every dashboard: after downtime
each missed period is cut with its own values.  APScheduler fires it at the
schedule's times (``LocalCutTrigger``) and runs ``restate_pending``
periodically; tests call both directly with an injected clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.clock import Clock
from app.config import Settings
from app.metrics.calendar import Period, to_us
from app.metrics.pack import Pack
from app.snapshots import NoSuchPeriod, NotCut
from app.snapshots import cut as cuts
from app.snapshots.reconcile import live_vs_snapshot, month_vs_days, rollups_vs_raw, snapshot_vs_current
from app.snapshots.schedule import CutSchedule, LocalCutTrigger, parse_hhmm
from app.store.schema import event, snapshot

log = logging.getLogger(__name__)


class SnapshotService:
    """Cuts, restatements and reconciliation for every dashboard of the loaded packs.

    Args:
        engine: the store.
        packs: loaded packs.
        settings: schedule times, catch-up bound, restatement interval, business zone.
        clock: the wall clock (cut times; the period covered comes from the schedule).
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
        self._day_close = day_close or {}
        self._on_change = on_change or (lambda _slug: None)
        self.targets: dict[str, cuts.Target] = {
            d.slug: cuts.Target(p, d) for p in packs.values() for d in p.dashboards.values()
        }
        self.schedules = {
            "day": CutSchedule("day", parse_hhmm(settings.snapshot_daily_at)),
            "month": CutSchedule("month", parse_hhmm(settings.snapshot_monthly_at), settings.snapshot_monthly_day),
        }
        self._scheduler: AsyncIOScheduler | None = None

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
        for a bad label."""
        try:
            return self.schedules[grain].period_of_label(label, self.zone(slug))
        except (KeyError, ValueError) as exc:
            raise NoSuchPeriod(
                f"expected grain day with YYYY-MM-DD or month with YYYY-MM, got {grain} {label!r}"
            ) from exc

    async def _first_period(self, target: cuts.Target, grain: str) -> Period | None:
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
        return sched.period_containing(int(first_ts), zone) if first_ts is not None else None

    async def run_due(self, now_us: int | None = None) -> list[tuple[str, str, str, bool]]:
        """Cut every due, uncut period of every dashboard (catch-up included).

        Returns:
            ``(dashboard, grain, period label, created)`` per period handled.
        """
        now_us = to_us(self._clock.now()) if now_us is None else now_us
        done = []
        for target in self.targets.values():
            for grain in ("day", "month"):  # days first: a month's check reads its days
                first = await self._first_period(target, grain)
                if first is None:
                    continue
                sched = self.schedules[grain]
                for period in sched.periods_due(first, now_us, self._settings.snapshot_catchup_max_periods):
                    row, created = await cuts.cut(self._engine, target, grain, period, now_us, sched.fire_us(period))
                    done.append((target.slug, grain, period.label, created))
                    if created:
                        self._on_change(target.slug)
        return done

    async def restate_pending(self, now_us: int | None = None) -> list[Any]:
        """Store a restated version of every cut period that late events or a definition change moved."""
        now_us = to_us(self._clock.now()) if now_us is None else now_us
        rows = []
        for target in self.targets.values():
            async with self._engine.connect() as conn:
                stale = await cuts.stale_periods(conn, target)
            for grain in ("day", "month"):
                for g, label in stale:
                    if g != grain:
                        continue
                    row = await cuts.restate(
                        self._engine, target, grain, self.period(target.slug, grain, label), now_us
                    )
                    if row is not None:
                        rows.append(row)
                        self._on_change(target.slug)
        return rows

    async def cut_period(self, slug: str, grain: str, label: str, now_us: int | None = None) -> tuple[Any, bool]:
        """Cut one period by hand (``pulseboard snapshot cut``); re-cuts a cut period as a new
        version when its numbers changed.  Returns ``(latest row, created)``."""
        now_us = to_us(self._clock.now()) if now_us is None else now_us
        target = self.target(slug)
        period = self.period(slug, grain, label)
        row, created = await cuts.cut(
            self._engine, target, grain, period, now_us, self.schedules[grain].fire_us(period)
        )
        if created:
            self._on_change(slug)
            return row, True
        again = await cuts.restate(self._engine, target, grain, period, now_us, reason="re-cut by hand")
        if again is not None:
            self._on_change(slug)
        return (again, True) if again is not None else (row, False)

    async def reconcile(self, slug: str, grain: str, label: str) -> dict[str, Any]:
        """On-demand reconciliation of a period (CONTRACT §7)."""
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

    async def _tick(self) -> None:
        try:
            await self.run_due()
        except SQLAlchemyError as exc:  # the next fire or restart catches up
            log.warning("scheduled cut failed, will catch up: %s", exc)

    async def _restate_tick(self) -> None:
        try:
            await self.run_due()  # dashboards in other zones than the trigger's get cut here
            await self.restate_pending()
        except SQLAlchemyError as exc:
            log.warning("restatement pass failed, will retry: %s", exc)

    def start(self) -> None:
        """Start APScheduler jobs: the cut schedules (plus a catch-up now) and restatements."""
        if self._scheduler is not None:
            raise RuntimeError("SnapshotService.start() called twice; call stop() first")
        zone = self._settings.zone
        sched = AsyncIOScheduler(timezone=zone)
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
        sched.start()
        self._scheduler = sched

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
