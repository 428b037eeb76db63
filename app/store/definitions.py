"""Versioned definitions: when a pack changes, rebuild exactly the measures whose definition hash
changed and restate the closed snapshots whose numbers moved (issue 11, DESIGN.md).

``apply_definitions`` compares every measure's definition hash (``Pack.measure_hash``) with the
one the stored rollups follow (table ``definition_state``), rebuilds the changed measures from
raw events over all retained time (``app.store.rebuild``, online and resumable), records the new
hashes, then runs the snapshot restatement pass: a cut period whose KPIs' definitions changed is
re-cut, and a new version stored when its numbers moved, with the cause
``definition changed: <pack/measure>: <old hash> → <new hash>`` (``app.snapshots.cut.restate``).

It runs at start (before the snapshot scheduler, ``PULSEBOARD_REBUILD_ON_START``), on
``pulseboard packs reload`` against a stopped server's store, and on SIGHUP in a running server
(``app.main``).  A store that has never recorded hashes records them without a rebuild: its
rollups were built with the definitions it runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from app.config import Settings
from app.metrics.pack import Pack
from app.store.rebuild import (
    RebuildRefused,
    Summary,
    changed_gauges,
    changed_measures,
    rebuild,
    record_definitions,
    stored_definitions,
    target_of,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DefinitionReport:
    """What applying the packs did: measures changed ``(pack/measure, old, new)``, the rebuild's
    summary, the restated snapshots ``(dashboard, grain, period, version)``, and whether this was
    the store's first record of hashes (``baseline``: nothing rebuilt)."""

    changed: list[tuple[str, str | None, str]] = field(default_factory=list)
    rebuilt: Summary | None = None
    restated: list[tuple[str, str, str, int]] = field(default_factory=list)
    baseline: bool = False

    def lines(self) -> list[str]:
        """The report a person reads."""
        if self.baseline:
            return ["definitions recorded (first run on this store: nothing rebuilt)"]
        if not self.changed:
            return ["no definition changed: nothing rebuilt, nothing restated"]
        out = [f"definition changed: {key}: {old or 'new'} → {new}" for key, old, new in self.changed]
        if self.rebuilt is not None:
            out += self.rebuilt.lines()
        out += [f"restated {d} {g} {p} as version {v}" for d, g, p, v in self.restated]
        out.append(f"snapshots restated: {len(self.restated)}")
        return out


def rebuild_changed(engine: Engine, settings: Settings, packs: Mapping[str, Pack], now_us: int) -> DefinitionReport:
    """Rebuild the measures whose definition hash changed and record the new hashes (blocking).

    Returns:
        the ``DefinitionReport`` (without restatements).
    """
    report = DefinitionReport()
    with engine.begin() as conn:
        stored = stored_definitions(conn)
    current: dict[str, str] = {}
    for pack in packs.values():
        current |= pack.definitions()
    if not stored:
        report.baseline = True
    else:
        changes = changed_measures(packs.values(), stored)
        gauges = changed_gauges(packs.values(), stored)
        report.changed = [(p.measure_key(m), old, new) for p, m, old, new in changes]
        report.changed += [(p.gauge_key(g), old, new) for p, g, old, new in gauges]
        if changes or gauges:
            try:
                report.rebuilt = rebuild(
                    engine,
                    target_of(changes, gauges),
                    now_us=now_us,
                    retention_days=settings.raw_retention_days,
                    chunk_s=settings.rebuild_chunk_s,
                )
            except RebuildRefused as exc:  # no stored event of their types: nothing to recompute
                log.info("definition change without events to rebuild: %s", exc)
    with engine.begin() as conn:
        record_definitions(conn, current, now_us)
    return report


async def apply_definitions(
    engine: Engine, settings: Settings, packs: Mapping[str, Pack], snapshots: Any, now_us: int
) -> DefinitionReport:
    """``rebuild_changed`` (in a worker thread), then ``snapshots.restate_pending`` (a
    ``SnapshotService`` over the same packs) when a measure changed."""
    report = await asyncio.to_thread(rebuild_changed, engine, settings, packs, now_us)
    if report.changed:
        rows = await snapshots.restate_pending(now_us, reloading=True)
        report.restated = [(r.dashboard, r.grain, r.period, r.version) for r in rows]
    for line in report.lines():
        log.info("%s", line)
    return report


async def apply_definitions_now(settings: Settings, packs: Mapping[str, Pack]) -> DefinitionReport:
    """``apply_definitions`` on the configured store, now (``pulseboard packs reload``)."""
    from app.clock import EventClock, SystemClock
    from app.metrics.calendar import to_us
    from app.snapshots.service import SnapshotService
    from app.store.db import create_engine_for, create_writer_engine, migrate_async

    await migrate_async(settings)
    engine = create_engine_for(settings)
    writer = create_writer_engine(settings)
    try:
        clock: SystemClock | EventClock = SystemClock()
        if settings.clock == "event":
            from app.cli.snapshot import _event_clock

            clock = await _event_clock(engine)
        service = SnapshotService(engine, packs, settings, clock)
        now = service.now_us()
        return await apply_definitions(
            writer, settings, packs, service, now if now is not None else to_us(SystemClock().now())
        )
    finally:
        writer.dispose()
        await engine.dispose()
