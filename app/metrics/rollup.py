"""Events -> additive 1-minute partials (the rollup engine's write side).

Each event that a measure matches adds to the partial of
``(measure_key, dim_key, bucket_us)`` where ``bucket_us`` is the UTC minute of
its ``ts`` and ``dim_key`` is ``""`` (all events) plus ``"KEY=VALUE"`` for each
of the pack's rolled-up dimensions present on the event.  Gauge events become
open/close changes of a paired item.  Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from app.metrics.calendar import minute_floor_us
from app.metrics.hll import HyperLogLog, hash64
from app.metrics.pack import Gauge, Measure, Pack, dim_text
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


class GaugeChange(NamedTuple):
    """One open or close of a paired gauge item at ``ts_us`` (a named tuple: the write path makes
    one per gauge event and dimension key, and a frozen dataclass costs 3x as much to create)."""

    gauge_key: str
    dim_key: str
    item_key: str
    kind: str  # "open" | "close"
    ts_us: int


PartialKey = tuple[str, str, int]  # (measure_key, dim_key, bucket_us)


OTHER = "__other__"


class DimensionCap:
    """The cardinality cap of rolled-up dimensions (issue 10 item 17): at most ``max_values``
    distinct values of each dimension of each pack get rows of their own; later new values roll
    up under ``NAME=__other__`` (raw events keep their true values).

    ``values`` holds the admitted values per ``(pack, dimension)``: loaded from the stored rollups
    by the writer (``app.store.writes.load_dimension_values``), then grown as values are admitted.
    Used by one writer thread; reads only ask ``folded``.
    """

    def __init__(self, max_values: int) -> None:
        self.max_values = max_values
        self.values: dict[tuple[str, str], set[str]] = {}
        self._by_pack: dict[str, dict[str, set[str]]] = {}  # the same sets, by pack then dimension
        self.folded_events = 0
        self.overflowed: set[tuple[str, str]] = set()  # dimensions with an ``__other__`` row
        self.loaded = False

    def admit(self, pack: str, name: str, text: str) -> str:
        """``text`` if it has (or now gets) rows of its own, else ``OTHER``."""
        known = self.values.get((pack, name))
        if known is None:
            known = self.values[(pack, name)] = set()
            self._by_pack.setdefault(pack, {})[name] = known
        if text in known:
            return text
        if len(known) < self.max_values:
            known.add(text)
            return text
        self.folded_events += 1
        self.overflowed.add((pack, name))
        return OTHER

    def of_pack(self, pack: str) -> dict[str, set[str]]:
        """The admitted values of ``pack``'s dimensions, by name (live: grows with ``admit``)."""
        return self._by_pack.setdefault(pack, {})

    def add_known(self, pack: str, name: str, text: str) -> None:
        """Record ``text`` as an admitted value (loading from the store)."""
        known = self.values.get((pack, name))
        if known is None:
            known = self.values[(pack, name)] = set()
            self._by_pack.setdefault(pack, {})[name] = known
        known.add(text)

    def folded(self, pack: str, name: str, text: str) -> bool:
        """Whether value ``text`` of ``name`` may be rolled up under ``OTHER``: the dimension
        went past its cap (it has an ``__other__`` row) and ``text`` is not an admitted value.
        (Lifecycle measures, ``app.metrics.lifecycle``, are not capped: their dimensions never
        overflow here.)"""
        return text != OTHER and (pack, name) in self.overflowed and text not in self.values.get((pack, name), set())


def dim_keys(
    pack: Pack,
    dims: dict[str, Any] | None,
    cap: DimensionCap | None = None,
    admitted: dict[str, set[str]] | None = None,
) -> list[str]:
    """``[""]`` plus ``"KEY=VALUE"`` for every rolled-up dimension on the event (``KEY=__other__``
    for a value past ``cap``; ``admitted``: ``cap.of_pack(pack.name)``, taken once per batch)."""
    keys = [TOTAL]
    if dims:
        for name in pack.dimensions:
            if name in dims:
                text = dim_text(dims[name])
                if cap is not None:
                    known = admitted.get(name) if admitted is not None else None
                    if known is None or text not in known:  # the common case (a known value): one set lookup
                        text = cap.admit(pack.name, name, text)
                keys.append(f"{name}={text}")
    return keys


KEY_MAX_CHARS = 300  # rollup_minute / rollup_sketch_bin / gauge_item: dim_key and item_key are VARCHAR(300)
LIFECYCLE_KEY_RESERVE = 8  # a lifecycle gauge's item key is the item's key plus "#N" for a later stretch


def oversized_dims(packs: Iterable[Pack], events: Iterable[Any]) -> list[dict[str, Any]]:
    """Problems ``{index, field, message}`` of events whose rolled-up dimension value (``KEY=VALUE``)
    or gauge pairing value would not fit the rollup key columns (``KEY_MAX_CHARS``).

    Such an event passes ``PULSEBOARD_MAX_STRING_CHARS`` (1024 by default), but PostgreSQL refuses
    the key (SQLite does not check lengths): the shared group commit would fail with 503 for every
    request in the group, on every retry.  Refused up front with 422 instead, on both stores.
    ``events``: objects with ``type`` and ``dims`` (``NewEvent``)."""
    rules = []
    for pack in packs:
        limits = {name: KEY_MAX_CHARS - len(name) - 1 for name in pack.dimensions}
        for gauge in pack.gauges.values():
            limit = KEY_MAX_CHARS - (LIFECYCLE_KEY_RESERVE if gauge.lifecycle else 0)
            limits[gauge.pair_on] = min(limits.get(gauge.pair_on, KEY_MAX_CHARS), limit)
        for lc in pack.lifecycles.values():  # alarm_state.alarm is VARCHAR(300) too
            limits[lc.pair_on] = min(limits.get(lc.pair_on, KEY_MAX_CHARS), KEY_MAX_CHARS - LIFECYCLE_KEY_RESERVE)
        if limits:
            rules.append((pack.event_types, limits))
    problems: list[dict[str, Any]] = []
    seen: set[tuple[int, str]] = set()
    for index, ev in enumerate(events):
        if not ev.dims:
            continue
        for types, limits in rules:
            if ev.type not in types:
                continue
            for name, limit in limits.items():
                value = ev.dims.get(name)
                if value is not None and len(dim_text(value)) > limit and (index, name) not in seen:
                    seen.add((index, name))
                    problems.append(
                        {
                            "index": index,
                            "field": f"dims.{name}",
                            "message": (f"dims.{name} is rolled up per value: longer than {limit} characters"),
                        }
                    )
    return problems


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


def rollup(
    pack: Pack,
    events: Iterable[EventRow],
    partials: dict[PartialKey, Partial] | None = None,
    changes: list[GaugeChange] | None = None,
    cap: DimensionCap | None = None,
) -> tuple[dict[PartialKey, Partial], list[GaugeChange]]:
    """Partials and gauge changes for ``events`` under ``pack``.

    Args:
        partials, changes: accumulate into these (the write path rolls every pack of a
            group into one dict, with no copy); new ones by default.
        cap: the write path's cardinality cap (values past it roll up as ``__other__``);
            ``None`` (recomputations from raw events): every value its own key.

    Returns:
        ``(partials, changes)``: partials keyed by (measure_key, dim_key,
        bucket_us); changes in input order.
    """
    partials = {} if partials is None else partials
    changes = [] if changes is None else changes
    by_type: dict[str, list[Measure]] = {}
    measure_keys = {name: pack.measure_key(name) for name in pack.measures}
    for measure in pack.measures.values():
        if measure.lifecycle is None:  # lifecycle measures and gauges: app.metrics.lifecycle
            by_type.setdefault(measure.event_type, []).append(measure)
    gauge_open: dict[str, list[Gauge]] = {}
    gauge_close: dict[str, list[Gauge]] = {}
    for gauge in pack.gauges.values():
        if gauge.lifecycle is not None:
            continue
        gauge_open.setdefault(gauge.open_type, []).append(gauge)
        for t in gauge.close_types:
            gauge_close.setdefault(t, []).append(gauge)

    admitted = cap.of_pack(pack.name) if cap is not None else None
    for ev in events:
        measures = by_type.get(ev.type)
        opens = gauge_open.get(ev.type)
        closes = gauge_close.get(ev.type)
        if not (measures or opens or closes):
            continue
        keys = dim_keys(pack, ev.dims, cap, admitted)
        bucket = minute_floor_us(ev.ts_us)
        for measure in measures or ():
            if not measure.matches(ev.type, ev.value, ev.dims):
                continue
            mkey = measure_keys[measure.name]
            seen = None
            if measure.distinct is not None and ev.dims and measure.distinct in ev.dims:
                seen = hash64(dim_text(ev.dims[measure.distinct]))  # once per event, for every dim key
            for dk in keys:
                part = partials.get((mkey, dk, bucket))
                if part is None:
                    part = partials[(mkey, dk, bucket)] = Partial(
                        sketch=Sketch() if measure.sketch else None,
                        distinct=HyperLogLog() if measure.distinct is not None else None,
                    )
                part.add(ev.value)
                if seen is not None and part.distinct is not None:
                    part.distinct.add_hash(seen)
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
            target[key] = Partial(
                part.count,
                part.sum,
                part.min,
                part.max,
                part.sketch.copy() if part.sketch else None,
                part.distinct.copy() if part.distinct else None,
            )
        else:
            existing.merge(part)
