"""Events -> additive 1-minute partials (the rollup engine's write side).

Each event that a measure matches adds to the partial of
``(measure_key, dim_key, bucket_us)`` where ``bucket_us`` is the UTC minute of
its ``ts`` and ``dim_key`` is ``""`` (all events) plus ``"KEY=VALUE"`` for each
of the pack's rolled-up dimensions present on the event.  Gauge events become
open/close changes of a paired item.  Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple

from app.metrics.calendar import minute_floor_us
from app.metrics.pack import Pack, dim_text
from app.metrics.partials import Partial
from app.metrics.sketch import Sketch

TOTAL = ""


class EventRow(NamedTuple):
    """The part of a stored event the rollup engine reads.

    ``ts_us`` is UTC epoch microseconds; ``dims`` maps names to str/number/bool.
    """

    type: str
    ts_us: int
    value: float | None
    dims: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class GaugeChange:
    """One open or close of a paired gauge item at ``ts_us``."""

    gauge_key: str
    dim_key: str
    item_key: str
    kind: str  # "open" | "close"
    ts_us: int


PartialKey = tuple[str, str, int]  # (measure_key, dim_key, bucket_us)


def dim_keys(pack: Pack, dims: dict[str, Any] | None) -> list[str]:
    """``[""]`` plus ``"KEY=VALUE"`` for every rolled-up dimension on the event."""
    keys = [TOTAL]
    if dims:
        for name in pack.dimensions:
            if name in dims:
                keys.append(f"{name}={dim_text(dims[name])}")
    return keys


def filter_dim_key(filters: Iterable[tuple[str, str]]) -> str | None:
    """The stored ``dim_key`` answering a dims filter, or ``None`` if none does.

    ``()`` -> ``""``; one ``(KEY, VALUE)`` -> ``"KEY=VALUE"``; several -> ``None``
    (such reads are computed from raw events).
    """
    filters = tuple(filters)
    if not filters:
        return TOTAL
    if len(filters) == 1:
        key, value = filters[0]
        return f"{key}={value}"
    return None


def rollup(pack: Pack, events: Iterable[EventRow], partials: dict[PartialKey, Partial] | None = None,
           changes: list[GaugeChange] | None = None) -> tuple[dict[PartialKey, Partial], list[GaugeChange]]:
    """Partials and gauge changes for ``events`` under ``pack``.

    Args:
        partials, changes: accumulate into these (the write path rolls every pack of a
            group into one dict, with no copy); new ones by default.

    Returns:
        ``(partials, changes)``: partials keyed by (measure_key, dim_key,
        bucket_us); changes in input order.
    """
    partials = {} if partials is None else partials
    changes = [] if changes is None else changes
    by_type: dict[str, list] = {}
    for measure in pack.measures.values():
        by_type.setdefault(measure.event_type, []).append(measure)
    gauge_open: dict[str, list] = {}
    gauge_close: dict[str, list] = {}
    for gauge in pack.gauges.values():
        gauge_open.setdefault(gauge.open_type, []).append(gauge)
        for t in gauge.close_types:
            gauge_close.setdefault(t, []).append(gauge)

    for ev in events:
        measures = by_type.get(ev.type)
        opens = gauge_open.get(ev.type)
        closes = gauge_close.get(ev.type)
        if not (measures or opens or closes):
            continue
        keys = dim_keys(pack, ev.dims)
        bucket = minute_floor_us(ev.ts_us)
        for measure in measures or ():
            if not measure.matches(ev.type, ev.value, ev.dims):
                continue
            mkey = pack.measure_key(measure.name)
            for dk in keys:
                part = partials.get((mkey, dk, bucket))
                if part is None:
                    part = partials[(mkey, dk, bucket)] = Partial(sketch=Sketch() if measure.sketch else None)
                part.add(ev.value)
        for gauges, kind in ((opens, "open"), (closes, "close")):
            for gauge in gauges or ():
                if not ev.dims or gauge.pair_on not in ev.dims:
                    continue
                item = dim_text(ev.dims[gauge.pair_on])
                gkey = pack.gauge_key(gauge.name)
                for dk in keys:
                    changes.append(GaugeChange(gkey, dk, item, kind, ev.ts_us))
    return partials, changes


def merge_into(target: dict[PartialKey, Partial], source: dict[PartialKey, Partial]) -> None:
    """Merge every partial of ``source`` into ``target`` (in place)."""
    for key, part in source.items():
        existing = target.get(key)
        if existing is None:
            target[key] = Partial(part.count, part.sum, part.min, part.max,
                                  part.sketch.copy() if part.sketch else None)
        else:
            existing.merge(part)
