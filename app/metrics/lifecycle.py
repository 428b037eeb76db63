"""Item lifecycles (alarms): raised, acknowledged, cleared, updated, paired on a key.  Pure.

An item (an alarm) is named by ``dims[pair_on]`` (``dims.alarm``).  Its **state** is a pure,
order-free fold of its events (``AlarmState.merge``: the same set of events gives the same state
whatever order they arrive in, and a repeated event changes nothing):

- ``raised``: the earliest open (raise) and the dims it carries (ties: the smallest dims text);
- ``acked``: the earliest acknowledge; ``cleared``: the earliest close (clear);
- ``updates``: the distinct updates ``(ts, dims)``, the earliest ``max_updates`` of them.

What counts (``derive``), with R the raise, A the earliest ack, C the earliest clear:

- nothing before the item has a raise: an ack, a clear or an update of an unknown item waits for
  its raise (a clear that arrives first is counted when the raise arrives);
- a second raise of an item counts nothing (the earliest raise is the item's raise);
- the item is cleared at ``C' = max(C, R)``: a clear stamped before its raise clears the item at
  the raise (duration 0, never negative); a second clear counts nothing (the earliest is kept);
- it is acknowledged at ``A' = max(A, R)`` only if ``A' <= C'`` (an ack stamped after the clear is
  not an acknowledge: the alarm cleared unacknowledged); a second ack counts nothing;
- its dims at instant ``t`` are the raise's dims with the updates stamped in ``[R, t]`` laid over
  them in time order (an update stamped before the raise or at/after the clear changes nothing;
  ``pair_on`` never changes); the dims of acks and clears are not read (a clear often names only
  its alarm);
- an item open longer than ``max_open_s`` is dropped from gauges at ``R + max_open_s`` and an
  ack or clear later than that does not count (its clear was lost, as for gauges).

Each counted stage is one contribution ``(stage, ts, value, dims)`` to the lifecycle's measures:
``open`` at R (no value), ``acknowledge`` at A' with value ``A' - R`` s, ``close`` at C' with
value ``C' - R`` s, each with the item's dims at that instant (for the close: just before it).
Gauge items are the intervals of the item per dimension key (``""`` for all, ``KEY=VALUE`` for the
pack's rolled-up dims): one ``[R, C')`` for keys whose value never changes, one per stretch of a
value that an update changes.  ``affecting`` gauges keep only the stretches where the item is
service-affecting (``Lifecycle.affecting``).

The stored aggregates are sums over items of ``derive(state)``: when an item's state changes, the
write path subtracts the old derivation and adds the new (counts, sums and sketch bins are
exact under subtraction), so they stay exact whatever order the events come in, and rebuilding
from raw events (``derive_all``) gives the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec

from app.metrics.calendar import minute_floor_us
from app.metrics.pack import Lifecycle, Pack, dim_text
from app.metrics.partials import Partial
from app.metrics.rollup import EventRow, PartialKey, dim_keys
from app.metrics.sketch import Sketch

SEVERITIES = ("critical", "major", "minor", "warning", "indeterminate")  # ITU-T X.733, most severe first
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
_encode = msgspec.json.Encoder(order="sorted")
_decode = msgspec.json.Decoder()


def dims_text(dims: Mapping[str, Any] | None) -> str:
    """Canonical JSON of ``dims`` (sorted keys): how dims are compared and stored."""
    return _encode.encode(dict(dims or {})).decode()


@dataclass(frozen=True, slots=True)
class AlarmState:
    """The merged events of one item (see the module docstring).  Immutable: ``merge`` returns a
    new state, equal to this one when the event changes nothing.

    Attributes:
        raised: ``(ts_us, dims text)`` of the earliest raise, or ``None``.
        acked, cleared: earliest ack / clear instant (UTC µs), or ``None``.
        updates: ``(ts_us, dims text)`` of the updates, sorted, at most the lifecycle's ``max_updates``.
    """

    raised: tuple[int, str] | None = None
    acked: int | None = None
    cleared: int | None = None
    updates: tuple[tuple[int, str], ...] = ()

    def merge(self, lc: Lifecycle, ev: EventRow) -> AlarmState:
        """The state after ``ev`` (an event of one of ``lc``'s types for this item)."""
        ts = ev.ts_us
        if ev.type == lc.open_type:
            mine = (ts, dims_text(ev.dims))
            if self.raised is None or mine < self.raised:
                return AlarmState(mine, self.acked, self.cleared, self.updates)
        elif ev.type == lc.close_type:
            if self.cleared is None or ts < self.cleared:
                return AlarmState(self.raised, self.acked, ts, self.updates)
        elif ev.type == lc.ack_type:
            if self.acked is None or ts < self.acked:
                return AlarmState(self.raised, ts, self.cleared, self.updates)
        elif ev.type == lc.update_type:
            mine = (ts, dims_text(ev.dims))
            if mine not in self.updates:
                kept = tuple(sorted((*self.updates, mine))[: lc.max_updates])
                if kept != self.updates:
                    return AlarmState(self.raised, self.acked, self.cleared, kept)
        return self

    def to_row(self) -> dict[str, Any]:
        """The stored columns of this state (``alarm_state``)."""
        return {
            "raised_us": self.raised[0] if self.raised else None,
            "raise_dims": self.raised[1] if self.raised else None,
            "acked_us": self.acked,
            "cleared_us": self.cleared,
            "updates": _encode.encode([list(u) for u in self.updates]).decode() if self.updates else None,
        }

    @classmethod
    def from_row(
        cls,
        raised_us: int | None,
        raise_dims: str | None,
        acked_us: int | None,
        cleared_us: int | None,
        updates: str | None,
    ) -> AlarmState:
        """Inverse of ``to_row``."""
        raised = (int(raised_us), raise_dims or "{}") if raised_us is not None else None
        ups = tuple((int(ts), str(d)) for ts, d in _decode.decode(updates)) if updates else ()
        return cls(raised, acked_us, cleared_us, ups)


class Contribution(NamedTuple):
    """One counted stage of an item: ``stage`` at ``ts_us`` with ``value_s`` (time since the raise,
    s; ``None`` for the open) and the item's ``dims`` then."""

    stage: str
    ts_us: int
    value_s: float | None
    dims: dict[str, Any]


GaugeRowKey = tuple[str, str, str]  # (gauge_key, dim_key, item_key)


@dataclass(slots=True)
class Derived:
    """What one item contributes: stage contributions, and gauge rows ``key -> (opened, closed)``."""

    opened_us: int | None = None
    acked_us: int | None = None
    closed_us: int | None = None
    contributions: list[Contribution] = field(default_factory=list)
    gauge_rows: dict[GaugeRowKey, tuple[int, int | None]] = field(default_factory=dict)
    dims: dict[str, Any] = field(default_factory=dict)  # the item's dims now (at its clear, if cleared)


def _stretches(
    lc: Lifecycle, state: AlarmState, start: int, end: int | None
) -> list[tuple[int, int | None, dict[str, Any]]]:
    """The item's dims over ``[start, end)``: ``[(from, to, dims)]``, a new stretch at each update."""
    assert state.raised is not None
    dims: dict[str, Any] = dict(_decode.decode(state.raised[1]))
    key = dims.get(lc.pair_on)
    out: list[tuple[int, int | None, dict[str, Any]]] = []
    at = start
    for ts, text in state.updates:
        if ts < start or (end is not None and ts >= end):
            continue
        changed = {**dims, **_decode.decode(text)}
        if key is not None:
            changed[lc.pair_on] = key
        if changed == dims:
            continue
        if ts > at:
            out.append((at, ts, dims))
        dims, at = changed, ts
    out.append((at, end, dims))
    return out


def _intervals(spans: Iterable[tuple[int, int | None]]) -> list[tuple[int, int | None]]:
    """Adjacent spans joined: ``[(a, b), (b, c)] -> [(a, c)]`` (spans sorted, not overlapping)."""
    out: list[tuple[int, int | None]] = []
    for lo, hi in spans:
        if out and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def derive(pack: Pack, lc: Lifecycle, alarm: str, state: AlarmState) -> Derived:
    """What item ``alarm`` in ``state`` contributes (rules in the module docstring)."""
    out = Derived()
    if state.raised is None:
        return out
    raised = state.raised[0]
    cap = raised + int(lc.max_open_s * 1_000_000)
    cleared = max(state.cleared, raised) if state.cleared is not None else None
    acked = max(state.acked, raised) if state.acked is not None else None
    if acked is not None and (acked > cap or (cleared is not None and acked > cleared)):
        acked = None
    out.opened_us, out.acked_us, out.closed_us = raised, acked, cleared
    stretches = _stretches(lc, state, raised, cleared)

    def dims_at(ts: int) -> dict[str, Any]:
        return next(dims for lo, _, dims in reversed(stretches) if lo <= ts)

    out.dims = stretches[-1][2]  # the stretches end at the clear: the last one holds just before it
    out.contributions.append(Contribution("open", raised, None, stretches[0][2]))
    if acked is not None:
        out.contributions.append(Contribution("acknowledge", acked, (acked - raised) / 1e6, dims_at(acked)))
    if cleared is not None and cleared <= cap:
        out.contributions.append(Contribution("close", cleared, (cleared - raised) / 1e6, out.dims))
    gauges = [g for g in pack.gauges.values() if g.lifecycle == lc.name]
    if not gauges:
        return out
    # Per stretch, once for every gauge: its dimension keys and whether it is service-affecting.
    keyed = [(lo, hi, dim_keys(pack, dims), lc.affecting(dims)) for lo, hi, dims in stretches]
    for gauge in gauges:
        gkey = pack.gauge_key(gauge.name)
        per_key: dict[str, list[tuple[int, int | None]]] = {}
        for lo, hi, keys, affecting in keyed:
            if gauge.affecting and not affecting:
                continue
            for dk in keys:
                per_key.setdefault(dk, []).append((lo, hi))
        for dk, spans in per_key.items():
            kept = [(lo, hi) for lo, hi in _intervals(spans) if hi is None or hi > lo]  # zero-length: never open
            for n, (lo, hi) in enumerate(kept):
                out.gauge_rows[(gkey, dk, alarm if n == 0 else f"{alarm}#{n + 1}")] = (lo, hi)
    return out


def add_contributions(
    pack: Pack, lc: Lifecycle, derived: Derived, partials: dict[PartialKey, Partial], sign: int = 1
) -> None:
    """Add (``sign=1``) or subtract (``-1``) ``derived``'s contributions to the partials of the
    pack's measures of ``lc`` (count, sum and sketch bins; lifecycle measures keep no min/max)."""
    contributions = derived.contributions
    if not contributions:
        return
    keys_of: list[list[str] | None] = [None] * len(contributions)  # each contribution's dim keys, once
    buckets = [minute_floor_us(c.ts_us) for c in contributions]
    for measure in pack.measures.values():
        if measure.lifecycle != lc.name:
            continue
        mkey = pack.measure_key(measure.name)
        for i, c in enumerate(contributions):
            if c.stage != measure.stage or not measure.matches(measure.event_type, c.value_s, c.dims):
                continue
            keys = keys_of[i]
            if keys is None:
                keys = keys_of[i] = dim_keys(pack, c.dims)
            bucket = buckets[i]
            for dk in keys:
                part = partials.get((mkey, dk, bucket))
                if part is None:
                    part = partials[(mkey, dk, bucket)] = Partial(sketch=Sketch() if measure.sketch else None)
                part.count += sign
                if c.value_s is not None:
                    part.sum += sign * c.value_s
                    if part.sketch is not None:
                        part.sketch.add(c.value_s, sign)


def lifecycle_events(pack: Pack, events: Iterable[EventRow]) -> Iterator[tuple[Lifecycle, str, EventRow]]:
    """``(lifecycle, item key, event)`` for every event of ``events`` that a lifecycle of ``pack``
    reads (events without the ``pair_on`` dim are not paired and count nowhere)."""
    by_type: dict[str, list[Lifecycle]] = {}
    for lc in pack.lifecycles.values():
        for t in lc.event_types:
            by_type.setdefault(t, []).append(lc)
    for ev in events:
        for lc in by_type.get(ev.type, ()):
            if ev.dims and lc.pair_on in ev.dims:
                yield lc, dim_text(ev.dims[lc.pair_on]), ev


def fold(pack: Pack, events: Iterable[EventRow]) -> dict[tuple[str, str], AlarmState]:
    """Every item's state from ``events``: ``(lifecycle name, item key) -> AlarmState``."""
    states: dict[tuple[str, str], AlarmState] = {}
    for lc, key, ev in lifecycle_events(pack, events):
        states[(lc.name, key)] = states.get((lc.name, key), AlarmState()).merge(lc, ev)
    return states


def derive_all(
    pack: Pack, events: Iterable[EventRow]
) -> tuple[dict[PartialKey, Partial], dict[GaugeRowKey, tuple[int, int | None]], dict[tuple[str, str], Derived]]:
    """The derived view of ``events`` (all the lifecycle events there are): the partials of the
    pack's lifecycle measures, the gauge rows of its lifecycle gauges, and each item's derivation.
    What the write path keeps incrementally equals this (a rebuild runs it over the raw log)."""
    partials: dict[PartialKey, Partial] = {}
    rows: dict[GaugeRowKey, tuple[int, int | None]] = {}
    items: dict[tuple[str, str], Derived] = {}
    for (name, key), state in fold(pack, events).items():
        lc = pack.lifecycles[name]
        d = derive(pack, lc, key, state)
        add_contributions(pack, lc, d, partials)
        rows.update(d.gauge_rows)
        items[(name, key)] = d
    return partials, rows, items


def severity_rank(dims: Mapping[str, Any]) -> int:
    """Sort rank of an item's ``severity`` (X.733, most severe first; unknown and missing last)."""
    value = dims.get("severity")
    return SEVERITY_RANK.get(dim_text(value), len(SEVERITIES)) if value is not None else len(SEVERITIES) + 1


@dataclass(frozen=True, slots=True)
class OpenItem:
    """An item open at an instant, as an alarm list shows it: key, dims then, raise instant and
    acknowledge instant (``None``: not acknowledged by then)."""

    alarm: str
    dims: dict[str, Any]
    raised_us: int
    acked_us: int | None


def open_item(pack: Pack, lc: Lifecycle, alarm: str, state: AlarmState, at_us: int) -> OpenItem | None:
    """Item ``alarm`` as it stands at ``at_us`` if it is open then (raised at or before it, not
    cleared by then, open less than ``max_open_s``), else ``None``."""
    d = derive(pack, lc, alarm, state)
    if d.opened_us is None or d.opened_us > at_us or at_us - d.opened_us >= lc.max_open_s * 1_000_000:
        return None
    if d.closed_us is not None and d.closed_us <= at_us:
        return None
    stretches = _stretches(lc, state, d.opened_us, d.closed_us)
    dims = next(dims for lo, _, dims in reversed(stretches) if lo <= at_us)
    acked = d.acked_us if d.acked_us is not None and d.acked_us <= at_us else None
    return OpenItem(alarm, dims, d.opened_us, acked)


def alarm_order(item: OpenItem) -> tuple[int, int, str]:
    """Sort key of an alarm list: most severe first (X.733 order, then unknown, then none), then
    the oldest raise, then the key."""
    return (severity_rank(item.dims), item.raised_us, item.alarm)
