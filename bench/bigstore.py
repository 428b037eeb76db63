"""A big embedded store for the snapshot and tile-refresh figures, loaded through the product's
write path (``app.store.writes.write_group``, the group-commit writer's transaction body).

Contents: the real August 1999 month (~96k events), plus a "big day": every
August event moved onto 15 August (time of day kept), ``copies`` times, with
fresh ids.  The big day then holds ``copies × ~96k`` events plus its own real
calls, and August holds both.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec

from bench import data

ZONE = ZoneInfo("Asia/Jerusalem")
BIG_DAY = datetime(1999, 8, 15, tzinfo=ZONE)
BIG_DAY_LABEL = "1999-08-15"
MONTH_LABEL = "1999-08"
GROUP_EVENTS = 20_000  # the writer's default group_commit_max_events


@dataclass(frozen=True)
class BigStore:
    """A loaded SQLite store: its data dir, and how many events the day and month hold."""

    data_dir: Path
    day_events: int
    month_events: int
    load_s: float
    load_events_per_s: float
    loaded_events: int = 0

    @property
    def db_path(self) -> Path:
        return self.data_dir / "pulseboard.db"


def settings_for(data_dir: Path):
    """Pulseboard settings of an embedded store under ``data_dir`` (business zone Asia/Jerusalem)."""
    from app.config import Settings

    return Settings(data_dir=data_dir, tz="Asia/Jerusalem", snapshots_enabled=False, database_url=None)


def copies_for_day(target_events: int) -> int:
    """How many copies of August the big day needs to hold at least ``target_events``."""
    real = data.august_events()
    day_real = sum(1 for ev in real if ev["ts"].astimezone(ZONE).date() == BIG_DAY.date())
    return max(1, math.ceil((target_events - day_real) / len(real)))


def build(data_dir: Path, copies: int) -> BigStore:
    """Load the month and a big day of ``copies`` × August into a new store under ``data_dir``,
    through the write path (parse + validate + ``write_group``) in groups of ``GROUP_EVENTS``,
    streamed so memory stays flat whatever the size."""
    from app.ingest.parse import Limits, parse_events
    from app.metrics.pack import load_packs
    from app.store.db import create_writer_engine, migrate
    from app.store.writes import write_group

    settings = settings_for(data_dir)
    migrate(settings)
    engine = create_writer_engine(settings)
    packs = list(load_packs(settings.packs_dir).values())
    limits = Limits(int(time.time() * 1e6), 300.0, None, 1024, 20, 10**9)
    stream = itertools.chain(data.august_wire(), data.moved_to_day(data.august_events(), BIG_DAY, copies, "big"))
    loaded = 0
    t0 = time.perf_counter()
    try:
        while chunk := list(itertools.islice(stream, GROUP_EVENTS)):
            events = parse_events(msgspec.json.encode(chunk), "application/json", limits)
            with engine.begin() as conn:
                write_group(conn, [events], packs, int(time.time() * 1e6))
            loaded += len(events)
    finally:
        engine.dispose()  # the last close checkpoints the WAL into the main file
    load_s = time.perf_counter() - t0
    real = data.august_events()
    local_days = [ev["ts"].astimezone(ZONE).date() for ev in real]
    day_real = sum(1 for d in local_days if d == BIG_DAY.date())
    month_real = sum(1 for d in local_days if d.month == BIG_DAY.month)
    big = copies * len(real)
    return BigStore(data_dir, big + day_real, big + month_real, load_s, loaded / load_s, loaded)
