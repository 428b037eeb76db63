"""The PCIC 2021 wireless-network alarms -> alarm events (``pulseboard replay pcic-alarms``).

Source: ``data/noc-alarms/pcic2021-wireless-alarms.csv.gz`` (SOURCE.md): 34,838 real alarms of
a telecom wireless network (Huawei Noah's Ark, PCIC 2021 causal-discovery competition; MIT),
one row per alarm: ``alarm_id`` (the alarm type, 0-17), ``device_id`` (55 network elements),
``start_timestamp`` (raise) and ``end_timestamp`` (clear), in integer **seconds from an
unpublished origin**.

Mapping (``source`` = ``pcic2021``), per row:

==================  ===================================  =================================
event               ``ts``                               ``dims``
==================  ===================================  =================================
``alarm.raised``    ``origin + start_timestamp`` s       ``alarm``, ``device``, ``type``
``alarm.cleared``   ``origin + end_timestamp`` s         ``alarm``, ``device``, ``type``
==================  ===================================  =================================

* ``alarm`` = ``DEVICE-TYPE-START`` (unique in the file), ``device`` = ``device_id``, ``type`` =
  ``alarm_id`` (as text); ``id`` = alarm + ``:raised`` / ``:cleared``.
* **origin**: the file's seconds are placed at ``origin`` (``--origin``, default
  ``2021-01-01T00:00:00Z``, ``DEFAULT_ORIGIN``): a documented anchor, not a fact of the data.
* **no severity**: the events carry none, so every alarm is service-affecting (the ``noc`` pack's
  rule for alarms without a severity) and ``open_alarms`` by severity has nothing to split.
* **no acknowledge**, no site: no ``alarm.acknowledged``; MTTA is undefined for this source.
* **zero-length alarms** (977 rows clear at the second they were raised): raised and cleared at
  the same instant; they count as raised and cleared, with duration 0, and are never open.
* a row whose end is before its start (none in the file) is posted as it is and flagged in the
  stats: the lifecycle clears such an alarm at its raise (duration 0, never negative).

Pure: ``map_frame`` turns a DataFrame into events; ``read_frame`` reads the file with pandas.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

SOURCE = "pcic2021"
DEFAULT_ORIGIN = datetime(2021, 1, 1, tzinfo=UTC)
COLUMNS = ("alarm_id", "device_id", "start_timestamp", "end_timestamp")
RAISED, CLEARED = "alarm.raised", "alarm.cleared"


class RowError(ValueError):
    """A file or row that cannot be mapped; the message names the line and column."""


@dataclass(slots=True)
class MappingStats:
    """What the mapping did: rows, alarms, events, and the quirks met."""

    rows: int = 0
    events: int = 0
    zero_length: int = 0
    end_before_start: int = 0
    devices: int = 0
    types: int = 0

    def lines(self, origin: datetime) -> list[str]:
        """The stats as short lines (what the CLI prints on stderr)."""
        return [
            f"{self.rows} alarms ({self.devices} devices, {self.types} alarm types) -> {self.events} events",
            f"times: seconds from the data's unpublished origin, placed at --origin {origin.isoformat()}",
            f"{self.zero_length} zero-length alarms (cleared at their raise: duration 0); "
            f"{self.end_before_start} with end before start",
            "no severity (every alarm is service-affecting), no acknowledge (no MTTA), no site",
        ]


def read_frame(path: Path) -> pd.DataFrame:
    """The alarm file (``.csv`` or ``.csv.gz``) as a DataFrame of integers.

    Raises:
        RowError: a missing column, or a cell that is not an integer (names its line).
    """
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise RowError(f"line 1: missing column(s) {', '.join(missing)}")
    out = pd.DataFrame(index=frame.index)
    for column in COLUMNS:
        numbers = pd.to_numeric(frame[column].str.strip(), errors="coerce")
        bad = numbers.isna() | (numbers != numbers.round())
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise RowError(f"line {row + 2}: column {column}: expected an integer, got {frame[column].iloc[row]!r}")
        out[column] = numbers.astype("int64")
    return out


def map_frame(frame: pd.DataFrame, origin: datetime = DEFAULT_ORIGIN) -> tuple[list[dict[str, Any]], MappingStats]:
    """Every event of ``frame`` (the columns of ``COLUMNS``, integers) sorted by time (ties: file
    order, the raise before its clear), and the stats.

    Raises:
        ValueError: ``origin`` is naive.
    """
    if origin.tzinfo is None:
        raise ValueError("origin must be an aware datetime")
    stats = MappingStats(rows=len(frame))
    stats.devices = int(frame["device_id"].nunique())
    stats.types = int(frame["alarm_id"].nunique())
    starts, ends = frame["start_timestamp"], frame["end_timestamp"]
    stats.zero_length = int((starts == ends).sum())
    stats.end_before_start = int((ends < starts).sum())
    events: list[tuple[int, int, dict[str, Any]]] = []
    for order, (kind, device, start, end) in enumerate(
        zip(frame["alarm_id"], frame["device_id"], starts, ends, strict=True)
    ):
        key = f"{device}-{kind}-{start}"
        dims = {"alarm": key, "device": str(device), "type": str(kind)}
        for seconds, event_type, phase in ((start, RAISED, 0), (end, CLEARED, 1)):
            ev = {
                "id": f"{key}:{event_type.split('.')[1]}",
                "source": SOURCE,
                "type": event_type,
                "ts": origin + timedelta(seconds=int(seconds)),
                "dims": dims,
            }
            events.append((int(seconds), 2 * order + phase, ev))
    events.sort(key=lambda item: (item[0], item[1]))
    stats.events = len(events)
    return [ev for _, _, ev in events], stats


def map_file(path: Path, origin: datetime = DEFAULT_ORIGIN) -> tuple[list[dict[str, Any]], MappingStats]:
    """``map_frame`` of ``read_frame(path)``."""
    return map_frame(read_frame(path), origin)
