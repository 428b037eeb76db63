"""KPI packs: measures, gauges, KPIs and dashboards, loaded from YAML.

A pack file looks like this (see ``app/packs/contact-centre.yaml``)::

    pack: contact-centre
    dimensions: [queue, priority]        # rolled up per value for dims.KEY=VALUE reads
    measures:                            # what is counted per 1-minute bucket
      answered: {event: call.answered, sketch: true}
      answered_within_20s: {event: call.answered, where: {value: {le: 20}}}
    gauges:                              # open/close pairs, e.g. calls in queue
      queue: {open: call.queued, close: [call.answered, call.abandoned], pair_on: call}
    kpis:
      offered: {formula: {count: [answered, abandoned]}, unit: calls}
      service_level_20s:
        formula: {ratio: {numerator: {count: answered_within_20s},
                          denominator: {count: [answered, abandoned]}}}
        unit: ratio
        target: 0.8
        targets: {month: 0.8}              # optional per-grain targets (day, month)
        direction: higher
        amber_band: 0.05
        owner: {role: Operations manager, person: Dana}
        weight: 3                          # agenda weight
    dashboards:
      contact-centre:
        tiles: [{id: sl20_today, kpi: service_level_20s, window: today}]

Formulas: ``count`` / ``sum`` of one measure or a list, ``mean`` (sum/count of
a measure), ``min`` / ``max``, ``ratio`` of two count/sum expressions,
``percentile`` (``{measure, p}``, nearest rank over a sketch) and ``gauge``
(``{gauge, aggregate: open_count | oldest_age_s}``).  Measure filters:
``where.value`` with ``lt/le/gt/ge/eq/ne`` and ``where.dims`` equality.

The format is defined by typed models (``app.metrics.pack_format``), from which the JSON Schema
for pack authors is generated (``docs/pack.schema.json``, served at ``/api/v1/schemas/pack.json``).
``parse_pack`` raises ``PackError`` listing every problem as ``FILE: PATH: REASON``, the path as
in ``kpis.offered.formula.count[1]``.  The objects built here (``Pack``, ``Measure``, ``Gauge``,
``Kpi``, ``Formula``, ``Dashboard``, ``Tile``) are what the engine reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path as FilePath
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from app import resources
from app.metrics import PackError
from app.metrics.pack_format import (
    NAME_PATTERN,
    DashboardSpec,
    FormulaSpec,
    KpiSpec,
    PackSpec,
    Path,
    problems_of,
    report,
)

log = logging.getLogger(__name__)
NAME_RE = re.compile(NAME_PATTERN)
Direction = Literal["higher", "lower"]


def dim_text(value: object) -> str:
    """Canonical text of a dimension value: ``true``/``false``, ``2`` for 2.0, else ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True, slots=True)
class Measure:
    """What one 1-minute partial counts.

    Attributes:
        name: pack-unique name.
        event_type: the event ``type`` matched.
        value_filter: ``(op, threshold)`` pairs, all must hold (events without value never match).
        dims_filter: ``dims`` that must equal these texts.
        sketch: keep a quantile sketch of the values.
        distinct: the dimension whose distinct values are counted (``app.metrics.hll``), or ``None``.
    """

    name: str
    event_type: str
    value_filter: tuple[tuple[str, float], ...] = ()
    dims_filter: tuple[tuple[str, str], ...] = ()
    sketch: bool = False
    dims_exclude: tuple[tuple[str, tuple[str, ...]], ...] = ()
    lifecycle: str | None = None
    stage: str | None = None
    distinct: str | None = None  # count distinct values of dims[distinct] (HyperLogLog, app.metrics.hll)

    def matches(self, event_type: str, value: float | None, dims: dict[str, Any] | None) -> bool:
        """True when an event of ``event_type`` with ``value`` and ``dims`` counts here.

        A lifecycle measure (``lifecycle`` set) is matched by ``app.metrics.lifecycle`` against the
        item's stage, its value (seconds since the open) and the item's dims at that instant."""
        if event_type != self.event_type:
            return False
        for op, threshold in self.value_filter:
            if value is None or not _compare(op, value, threshold):
                return False
        for key, text in self.dims_filter:
            if dims is None or key not in dims or dim_text(dims[key]) != text:
                return False
        for key, texts in self.dims_exclude:
            if dims is not None and key in dims and dim_text(dims[key]) in texts:
                return False
        return True


def _compare(op: str, value: float, threshold: float) -> bool:
    if op == "lt":
        return value < threshold
    if op == "le":
        return value <= threshold
    if op == "gt":
        return value > threshold
    if op == "ge":
        return value >= threshold
    if op == "eq":
        return value == threshold
    return value != threshold


@dataclass(frozen=True, slots=True)
class Gauge:
    """An open/close pairing: items opened by ``open_type``, closed by any ``close_types``,
    paired on ``dims[pair_on]``.  Items open longer than ``max_open_s`` are ignored (lost closes)."""

    name: str
    open_type: str
    close_types: tuple[str, ...]
    pair_on: str
    max_open_s: float
    lifecycle: str | None = None  # items are written by ``app.metrics.lifecycle``, not by ``rollup``
    affecting: bool = False  # lifecycle gauges: only while the item is service-affecting


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """An item lifecycle (an alarm): opened (raised), acknowledged, closed (cleared) and updated,
    paired on ``dims[pair_on]``.  Semantics: ``app.metrics.lifecycle``.

    Attributes:
        not_affecting: ``(dim, values)``: an item whose dim has one of these values is not
            service-affecting (an item without the dim is).
    """

    name: str
    pair_on: str
    open_type: str
    close_type: str
    ack_type: str | None = None
    update_type: str | None = None
    max_open_s: float = 4 * 3600.0
    max_updates: int = 100
    not_affecting: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def event_types(self) -> tuple[str, ...]:
        """The event types this lifecycle reads."""
        return tuple(t for t in (self.open_type, self.ack_type, self.close_type, self.update_type) if t)

    def stage_type(self, stage: str) -> str | None:
        """The event type of ``stage`` (open, acknowledge, close), ``None`` when it has none."""
        return {"open": self.open_type, "acknowledge": self.ack_type, "close": self.close_type}[stage]

    def affecting(self, dims: dict[str, Any]) -> bool:
        """Whether an item with ``dims`` is service-affecting."""
        for key, texts in self.not_affecting:
            if key in dims and dim_text(dims[key]) in texts:
                return False
        return True


@dataclass(frozen=True, slots=True)
class Formula:
    """A parsed KPI formula.

    ``kind`` is one of count, sum, mean, min, max, ratio, percentile, gauge.
    ``measures`` are the measures of count/sum/mean/min/max/percentile;
    ``numerator``/``denominator`` are nested count/sum formulas of a ratio;
    ``p`` the percentile; ``gauge``/``aggregate`` for gauges.
    """

    kind: str
    measures: tuple[str, ...] = ()
    numerator: Formula | None = None
    denominator: Formula | None = None
    p: float | None = None
    gauge: str | None = None
    aggregate: str | None = None
    per_s: float | None = None

    def referenced_measures(self) -> tuple[str, ...]:
        """Every measure this formula reads, without repeats, in order."""
        names = list(self.measures)
        for part in (self.numerator, self.denominator):
            if part is not None:
                names.extend(part.referenced_measures())
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True, slots=True)
class Owner:
    """Who answers for a KPI: a role and, optionally, a person."""

    role: str
    person: str | None = None


@dataclass(frozen=True, slots=True)
class Kpi:
    """One KPI: formula, unit, target, direction, amber band and owner.

    RAG status (see ``app.metrics.evaluate.rag_status``): with direction
    ``higher``, green when value >= target, amber when within ``amber_band``
    below it, red otherwise; mirrored for ``lower``.
    """

    name: str
    title: str
    unit: str
    description: str
    formula: Formula
    target: float | None = None
    direction: Direction = "higher"
    amber_band: float = 0.0
    owner: Owner | None = None
    weight: float = 1.0
    decimals: int = 0
    targets: tuple[tuple[str, float], ...] = ()
    inputs: tuple[tuple[str, str], ...] = ()  # (qualified measure/gauge name, its definition hash)

    def target_for(self, grain: str | None) -> float | None:
        """The target for ``grain`` (``day``/``month``) when the pack sets one, else ``target``."""
        for g, value in self.targets:
            if g == grain:
                return value
        return self.target

    @property
    def is_gauge(self) -> bool:
        """Gauges are point-in-time values, not windowed sums."""
        return self.formula.kind == "gauge"

    @property
    def reads_window(self) -> bool:
        """Time-weighted, rate and peak KPIs read more than merged partials: the window's length,
        the gauge's items over it, or its minute counts (``app.query.timeweighted``)."""
        return self.formula.kind in WINDOW_KINDS

    def definition_hash(self) -> str:
        """Stable hash of everything that determines this KPI's numbers (recorded in snapshots):
        its formula and the definition hashes of the measures and gauges it reads (``inputs``,
        see ``measure_hash`` / ``gauge_hash``).  Targets, owner, titles and weights are kept
        apart: changing them moves no number."""
        return _digest({"formula": _plain(self.formula), "inputs": [list(i) for i in self.inputs]})


WINDOW_KINDS = frozenset({"time_weighted", "rate", "peak"})


def _digest(body: object) -> str:
    """First 16 hex digits of the SHA-256 of ``body`` as canonical JSON."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _lifecycle_plain(lc: Lifecycle | None) -> object:
    if lc is None:
        return None
    return {
        "pair_on": lc.pair_on,
        "types": [lc.open_type, lc.ack_type, lc.close_type, lc.update_type],
        "max_open_s": lc.max_open_s,
        "max_updates": lc.max_updates,
        "not_affecting": [[k, list(v)] for k, v in lc.not_affecting],
    }


def measure_hash(measure: Measure, dimensions: tuple[str, ...], lifecycle: Lifecycle | None = None) -> str:
    """Definition hash of a measure: everything that changes its stored partials (event type,
    value and dims filters, the pack's rolled-up ``dimensions``, sketch settings, distinct-count
    settings, and for a lifecycle measure the lifecycle's pairing and limits).  16 hex digits."""
    from app.metrics.sketch import DEFAULT_RELATIVE_ACCURACY

    return _digest(
        {
            "event": measure.event_type,
            "value": [list(f) for f in measure.value_filter],
            "dims": [list(f) for f in measure.dims_filter],
            "dims_not": [[k, list(v)] for k, v in measure.dims_exclude],
            "rolled_up": list(dimensions),
            "sketch": DEFAULT_RELATIVE_ACCURACY if measure.sketch else None,
            "distinct": measure.distinct,
            "stage": measure.stage,
            "lifecycle": _lifecycle_plain(lifecycle),
        }
    )


def gauge_hash(gauge: Gauge, dimensions: tuple[str, ...], lifecycle: Lifecycle | None = None) -> str:
    """Definition hash of a gauge: its open/close event types, pairing, ``max_open_s``, the
    pack's rolled-up ``dimensions`` and (lifecycle gauges) the lifecycle.  16 hex digits."""
    return _digest(
        {
            "open": gauge.open_type,
            "close": list(gauge.close_types),
            "pair_on": gauge.pair_on,
            "max_open_s": gauge.max_open_s,
            "rolled_up": list(dimensions),
            "affecting": gauge.affecting,
            "lifecycle": _lifecycle_plain(lifecycle),
        }
    )


def _plain(obj: Any) -> Any:
    if isinstance(obj, Formula):
        return {k: _plain(getattr(obj, k)) for k in Formula.__slots__ if getattr(obj, k) not in (None, ())}
    if isinstance(obj, tuple):
        return [_plain(x) for x in obj]
    return obj


@dataclass(frozen=True, slots=True)
class Tile:
    """A dashboard tile: a KPI over a window, optionally for one dimension value."""

    id: str
    kpi: str
    window: str
    title: str | None = None
    dims: tuple[tuple[str, str], ...] = ()
    size: Literal["large", "normal"] = "normal"
    kind: Literal["kpi", "alarm_list"] = "kpi"
    lifecycle: str | None = None
    limit: int = 10


@dataclass(frozen=True, slots=True)
class Feed:
    """A feed a dashboard expects events from (``source`` ``None``: any source), at least one
    every ``every_s`` seconds of wall time; ``tiles``: the tile ids it feeds (``None``: all)."""

    source: str | None
    every_s: float
    tiles: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Dashboard:
    """A named set of tiles over one pack's KPIs, in the pack's (or given) time zone.

    ``feeds``: the feeds it expects events from (feed silence); ``params``: the dimensions a
    screen may narrow it to (``/wall/SLUG?KEY=VALUE``); ``base``: for a narrowed view, the slug
    of the dashboard it narrows (its ``slug`` is then ``BASE?KEY=VALUE``).
    """

    slug: str
    title: str
    pack: str
    tiles: tuple[Tile, ...]
    tz: str | None = None
    feeds: tuple[Feed, ...] = ()
    params: tuple[str, ...] = ()
    base: str | None = None


@dataclass(frozen=True, slots=True)
class Playlist:
    """A rotation of dashboard views shown ``interval_s`` seconds each: ``entries`` are
    ``(slug, ((param, value), ...))`` (checked against every loaded pack by ``load_packs``)."""

    name: str
    title: str
    interval_s: float
    entries: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]


@dataclass(slots=True)
class Pack:
    """A loaded KPI pack.  ``dimensions`` are the dims rolled up per value."""

    name: str
    title: str
    dimensions: tuple[str, ...]
    measures: dict[str, Measure]
    gauges: dict[str, Gauge]
    kpis: dict[str, Kpi]
    dashboards: dict[str, Dashboard] = field(default_factory=dict)
    lifecycles: dict[str, Lifecycle] = field(default_factory=dict)
    origin: str = "<pack>"  # the file it was read from (named in errors)
    playlists: dict[str, Playlist] = field(default_factory=dict)

    def measure_hash(self, measure: str) -> str:
        """Definition hash of one of the pack's measures (``app.metrics.pack.measure_hash``)."""
        m = self.measures[measure]
        return measure_hash(m, self.dimensions, self.lifecycles.get(m.lifecycle) if m.lifecycle else None)

    def gauge_hash(self, gauge: str) -> str:
        """Definition hash of one of the pack's gauges (``app.metrics.pack.gauge_hash``)."""
        g = self.gauges[gauge]
        return gauge_hash(g, self.dimensions, self.lifecycles.get(g.lifecycle) if g.lifecycle else None)

    def definitions(self) -> dict[str, str]:
        """Definition hash of every measure, gauge and KPI, keyed ``KIND:pack/name`` (KIND =
        measure, gauge or kpi: a measure and a KPI may share a name)."""
        out = {f"measure:{self.measure_key(n)}": self.measure_hash(n) for n in self.measures}
        out |= {f"gauge:{self.gauge_key(n)}": self.gauge_hash(n) for n in self.gauges}
        out |= {f"kpi:{self.name}/{n}": k.definition_hash() for n, k in self.kpis.items()}
        return out

    def measure_key(self, measure: str) -> str:
        """Storage key of a measure: ``pack/measure``."""
        return f"{self.name}/{measure}"

    def gauge_key(self, gauge: str) -> str:
        """Storage key of a gauge: ``pack/gauge``."""
        return f"{self.name}/{gauge}"

    def lifecycle_key(self, lifecycle: str) -> str:
        """Storage key of a lifecycle: ``pack/lifecycle``."""
        return f"{self.name}/{lifecycle}"

    @property
    def event_types(self) -> frozenset[str]:
        """Every event type any measure, gauge or lifecycle of the pack reads."""
        types = {m.event_type for m in self.measures.values()}
        for g in self.gauges.values():
            types.add(g.open_type)
            types.update(g.close_types)
        for lc in self.lifecycles.values():
            types.update(lc.event_types)
        return frozenset(types)


class _Builder:
    """Turns a validated ``PackSpec`` into a ``Pack``, checking what its shape cannot say: that
    every measure, gauge and KPI a formula or a tile names exists, that ratios divide totals,
    that gauges (and only they) use the window ``now``, that tile ids are unique.  Collects every
    such problem with its path."""

    def __init__(self, spec: PackSpec) -> None:
        self.spec = spec
        self.problems: list[tuple[Path, str]] = []
        self.lifecycles: dict[str, Lifecycle] = {
            name: Lifecycle(
                name,
                lc.pair_on,
                lc.open,
                lc.close,
                lc.acknowledge,
                lc.update,
                lc.max_open_s,
                lc.max_updates,
                tuple((k, tuple(dim_text(v) for v in vs)) for k, vs in lc.not_affecting.items()),
            )
            for name, lc in spec.lifecycles.items()
        }
        self.measures: dict[str, Measure] = {}
        for name, m in spec.measures.items():
            event_type = m.event
            if m.lifecycle is not None:
                lc = self.lifecycles.get(m.lifecycle)
                if lc is None:
                    self.fail(("measures", name, "lifecycle"), self._unknown_lifecycle(m.lifecycle))
                    continue
                assert m.stage is not None  # validated with the lifecycle
                event_type = lc.stage_type(m.stage)
                if event_type is None:
                    self.fail(("measures", name, "stage"), f"lifecycle {m.lifecycle!r} has no {m.stage} event")
                    continue
            assert event_type is not None  # an event or a lifecycle, validated
            where = m.where
            self.measures[name] = Measure(
                name,
                event_type,
                tuple((op, float(v)) for op, v in where.value.model_dump(exclude_none=True).items())
                if where is not None and where.value is not None
                else (),
                tuple((k, dim_text(v)) for k, v in where.dims.items()) if where is not None else (),
                m.sketch,
                tuple((k, tuple(dim_text(v) for v in vs)) for k, vs in where.dims_not.items())
                if where is not None
                else (),
                m.lifecycle,
                m.stage,
                m.distinct,
            )
        self.gauges: dict[str, Gauge] = {}
        for name, g in spec.gauges.items():
            if g.lifecycle is None:
                assert g.open is not None and g.close is not None and g.pair_on is not None  # validated
                self.gauges[name] = Gauge(name, g.open, tuple(g.close), g.pair_on, g.max_open_s)
                continue
            lc = self.lifecycles.get(g.lifecycle)
            if lc is None:
                self.fail(("gauges", name, "lifecycle"), self._unknown_lifecycle(g.lifecycle))
                continue
            self.gauges[name] = Gauge(
                name, lc.open_type, (lc.close_type,), lc.pair_on, lc.max_open_s, lc.name, g.affecting
            )

    def _lifecycle_of(self, measure: Measure) -> Lifecycle | None:
        return self.lifecycles.get(measure.lifecycle) if measure.lifecycle else None

    def _unknown_lifecycle(self, name: str) -> str:
        return f"unknown lifecycle {name!r} (the pack's lifecycles: {', '.join(self.lifecycles) or 'none'})"

    def fail(self, path: Path, reason: str) -> None:
        self.problems.append((path, reason))

    def _measure(self, path: Path, name: str) -> bool:
        if name in self.measures:
            return True
        known = ", ".join(self.measures) or "none"
        self.fail(path, f"unknown measure {name!r} (the pack's measures: {known})")
        return False

    def formula(self, path: Path, spec: FormulaSpec) -> Formula | None:
        """The ``Formula`` of ``spec`` at ``path``, or ``None`` (problems recorded)."""
        (kind,) = spec.kinds()
        if kind in ("count", "sum", "mean", "min", "max"):
            raw: str | list[str] = getattr(spec, kind)
            names = (raw,) if isinstance(raw, str) else tuple(raw)
            places: list[Path] = (
                [(*path, kind)] if isinstance(raw, str) else [(*path, kind, i) for i in range(len(raw))]
            )
            found = [self._measure(place, name) for place, name in zip(places, names, strict=True)]
            if kind in ("min", "max") and all(found) and self.measures[names[0]].lifecycle is not None:
                self.fail(
                    places[0], "lifecycle measures keep no min/max (a late open can restate them): use a percentile"
                )
                return None
            return Formula(kind, measures=names) if all(found) else None
        if spec.ratio is not None:
            parts: dict[str, Formula | None] = {}
            for label in ("numerator", "denominator"):
                part = self.formula((*path, "ratio", label), getattr(spec.ratio, label))
                if part is not None and part.kind not in ("count", "sum"):
                    self.fail(
                        (*path, "ratio", label), "must be a count or sum (ratios of merged totals, never of averages)"
                    )
                    part = None
                parts[label] = part
            num, den = parts["numerator"], parts["denominator"]
            if num is None or den is None:
                return None
            return Formula("ratio", numerator=num, denominator=den)
        if spec.percentile is not None:
            measure = spec.percentile.measure
            if not self._measure((*path, "percentile", "measure"), measure):
                return None
            return Formula("percentile", measures=(measure,), p=spec.percentile.p)
        if spec.time_weighted is not None:
            if spec.time_weighted.gauge not in self.gauges:
                known = ", ".join(self.gauges) or "none"
                self.fail(
                    (*path, "time_weighted", "gauge"),
                    f"unknown gauge {spec.time_weighted.gauge!r} (the pack's gauges: {known})",
                )
                return None
            return Formula("time_weighted", gauge=spec.time_weighted.gauge, aggregate=spec.time_weighted.aggregate)
        if spec.rate is not None:
            raw_names = spec.rate.count
            names = (raw_names,) if isinstance(raw_names, str) else tuple(raw_names)
            if not all([self._measure((*path, "rate", "count"), n) for n in names]):
                return None
            return Formula("rate", measures=names, per_s=spec.rate.per_s)
        if spec.peak is not None:
            if not self._measure((*path, "peak", "measure"), spec.peak.measure):
                return None
            return Formula("peak", measures=(spec.peak.measure,))
        assert spec.gauge is not None  # the one kind left
        if spec.gauge.gauge not in self.gauges:
            known = ", ".join(self.gauges) or "none"
            self.fail((*path, "gauge", "gauge"), f"unknown gauge {spec.gauge.gauge!r} (the pack's gauges: {known})")
            return None
        return Formula("gauge", gauge=spec.gauge.gauge, aggregate=spec.gauge.aggregate)

    def kpi(self, name: str, spec: KpiSpec) -> Kpi | None:
        """The ``Kpi`` of ``spec``, or ``None`` (problems recorded)."""
        formula = self.formula(("kpis", name, "formula"), spec.formula)
        if formula is None:
            return None
        if formula.kind == "percentile":  # a percentile reads the measure's sketch: keep one
            self.measures[formula.measures[0]] = replace(self.measures[formula.measures[0]], sketch=True)
        targets = spec.targets.model_dump(exclude_none=True) if spec.targets is not None else {}
        return Kpi(
            name=name,
            title=spec.title if spec.title is not None else name,
            unit=spec.unit,
            description=spec.description,
            formula=formula,
            target=spec.target,
            direction=spec.direction,
            amber_band=spec.amber_band,
            owner=Owner(spec.owner.role, spec.owner.person) if spec.owner is not None else None,
            weight=spec.weight,
            decimals=spec.decimals,
            targets=tuple((grain, float(value)) for grain, value in targets.items()),
        )

    def dashboard(self, slug: str, spec: DashboardSpec, kpis: dict[str, Kpi]) -> Dashboard:
        """The ``Dashboard`` of ``spec`` (tiles with problems are recorded and left out)."""
        tiles: list[Tile] = []
        seen: set[str] = set()
        for i, tile in enumerate(spec.tiles):
            path: Path = ("dashboards", slug, "tiles", i)
            if tile.kind == "alarm_list":
                assert tile.lifecycle is not None  # validated with the kind
                if tile.lifecycle not in self.lifecycles:
                    self.fail((*path, "lifecycle"), self._unknown_lifecycle(tile.lifecycle))
                    continue
                if tile.window != "now":
                    self.fail((*path, "window"), "an alarm list is read at an instant: window 'now'")
                    continue
                tile_id = tile.id or f"{tile.lifecycle}_list"
                if tile_id in seen:
                    self.fail((*path, "id") if tile.id else path, f"tile id {tile_id!r} is used twice (ids are unique)")
                    continue
                seen.add(tile_id)
                dims = tuple((k, dim_text(v)) for k, v in tile.dims.items())
                tiles.append(
                    Tile(tile_id, "", "now", tile.title, dims, tile.size, "alarm_list", tile.lifecycle, tile.limit)
                )
                continue
            assert tile.kpi is not None  # validated with the kind
            kpi = kpis.get(tile.kpi)
            if kpi is None:
                if tile.kpi not in self.spec.kpis:  # else the KPI's own problem is reported already
                    self.fail(
                        (*path, "kpi"), f"unknown kpi {tile.kpi!r} (the pack's KPIs: {', '.join(kpis) or 'none'})"
                    )
                continue
            if kpi.is_gauge != (tile.window == "now"):
                self.fail((*path, "window"), "gauges use window 'now', and only gauges do")
                continue
            tile_id = tile.id or f"{tile.kpi}_{tile.window}"
            if tile_id in seen:
                self.fail((*path, "id") if tile.id else path, f"tile id {tile_id!r} is used twice (ids are unique)")
                continue
            seen.add(tile_id)
            dims = tuple((k, dim_text(v)) for k, v in tile.dims.items())
            tiles.append(Tile(tile_id, tile.kpi, tile.window, tile.title, dims, tile.size))
        feeds: list[Feed] = []
        for i, feed in enumerate(spec.feeds):
            unknown = [t for t in feed.tiles or () if t not in seen]
            if unknown:
                self.fail(
                    ("dashboards", slug, "feeds", i, "tiles"), f"unknown tile id(s) {unknown} (tiles: {sorted(seen)})"
                )
                continue
            feeds.append(Feed(feed.source, float(feed.every_s), tuple(feed.tiles) if feed.tiles is not None else None))
        for i, param in enumerate(spec.params):
            if param not in self.spec.dimensions:
                self.fail(
                    ("dashboards", slug, "params", i),
                    f"a parameter narrows tiles by a rolled-up dimension: one of {list(self.spec.dimensions)}",
                )
        params = tuple(p for p in spec.params if p in self.spec.dimensions)
        title = spec.title if spec.title is not None else slug
        return Dashboard(slug, title, self.spec.pack, tuple(tiles), spec.tz, tuple(feeds), params)

    def build(self) -> Pack:
        """The pack; ``self.problems`` lists what is wrong with it (then the pack is incomplete)."""
        kpis = {name: k for name, spec in self.spec.kpis.items() if (k := self.kpi(name, spec)) is not None}
        dims = tuple(self.spec.dimensions)
        for name, k in kpis.items():  # after every KPI: a percentile turns its measure's sketch on
            inputs = [
                (f"{self.spec.pack}/{m}", measure_hash(self.measures[m], dims, self._lifecycle_of(self.measures[m])))
                for m in k.formula.referenced_measures()
            ]
            if k.formula.gauge is not None:
                g = self.gauges[k.formula.gauge]
                lc = self.lifecycles.get(g.lifecycle) if g.lifecycle else None
                inputs.append((f"{self.spec.pack}/{g.name}", gauge_hash(g, dims, lc)))
            kpis[name] = replace(k, inputs=tuple(inputs))
        dashboards = {slug: self.dashboard(slug, d, kpis) for slug, d in self.spec.dashboards.items()}
        spec = self.spec
        title = spec.title if spec.title is not None else spec.pack
        playlists = {
            name: Playlist(
                name,
                p.title if p.title is not None else name,
                float(p.interval_s),
                tuple(
                    (e, ())
                    if isinstance(e, str)
                    else (e.dashboard, tuple(sorted((k, dim_text(v)) for k, v in e.params.items())))
                    for e in p.dashboards
                ),
            )
            for name, p in spec.playlists.items()
        }
        return Pack(
            spec.pack,
            title,
            tuple(spec.dimensions),
            self.measures,
            self.gauges,
            kpis,
            dashboards,
            self.lifecycles,
            playlists=playlists,
        )


def parse_pack(raw: object, origin: str = "<pack>") -> Pack:
    """Build a ``Pack`` from the document a YAML pack file holds (format: ``app.metrics.pack_format``).

    Args:
        raw: the decoded YAML document.
        origin: the file's name, used in error messages.

    Raises:
        PackError: listing every problem found, one line each: ``ORIGIN: PATH: REASON``
            (e.g. ``my.yaml: kpis.offered.formula.count[1]: unknown measure 'abandon' (...)``).
            The shape is checked first (fields, types, names, ranges); the references only once
            it is right.
    """
    try:
        spec = PackSpec.model_validate(raw)
    except ValidationError as exc:
        raise PackError(report(origin, problems_of(exc))) from None
    builder = _Builder(spec)
    pack = builder.build()
    if builder.problems:
        raise PackError(report(origin, builder.problems))
    pack.origin = origin
    return pack


def load_pack(path: FilePath) -> Pack:
    """Read and parse one YAML pack file.  Raises ``PackError`` (also for YAML syntax)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PackError(f"{path}: cannot read pack: {exc}") from exc
    return parse_pack(raw, str(path))


def builtin_packs_dir() -> FilePath:
    """Folder of the packs shipped with Pulseboard (``app.resources.packs_dir``)."""
    return resources.packs_dir()


def load_packs(extra_dir: FilePath | None = None) -> dict[str, Pack]:
    """Load the shipped packs and any ``*.yaml`` in ``extra_dir``.

    Raises:
        PackError: for a malformed pack, a duplicate pack name or dashboard slug.
    """
    packs: dict[str, Pack] = {}
    slugs: set[str] = set()
    files = sorted(builtin_packs_dir().glob("*.yaml"))
    if extra_dir is not None:
        files += sorted(FilePath(extra_dir).glob("*.yaml"))
    for path in files:
        pack = load_pack(path)
        if pack.name in packs:
            raise PackError(f"{path}: pack {pack.name!r} is defined twice")
        dup = slugs & set(pack.dashboards)
        if dup:
            raise PackError(f"{path}: dashboard slug(s) {sorted(dup)} already defined by another pack")
        slugs |= set(pack.dashboards)
        packs[pack.name] = pack
    _check_playlists(packs)
    for name, owners in shared_kpi_names(packs).items():
        log.info(
            "KPI %r is defined by %s: read it by its qualified name (%s); the bare name is refused",
            name,
            " and ".join(p.origin for p in owners),
            ", ".join(f"{p.name}/{name}" for p in owners),
        )
    return packs


def shared_kpi_names(packs: dict[str, Pack]) -> dict[str, list[Pack]]:
    """KPI names that more than one pack defines -> those packs (in load order)."""
    owners: dict[str, list[Pack]] = {}
    for pack in packs.values():
        for name in pack.kpis:
            owners.setdefault(name, []).append(pack)
    return {name: found for name, found in owners.items() if len(found) > 1}


class AmbiguousName(LookupError):
    """A bare KPI name that several packs define (``str(exc)`` names their files)."""


def resolve_kpi(packs: dict[str, Pack], name: str, pack_name: str | None = None) -> tuple[Pack, Kpi] | None:
    """The pack and KPI a name refers to: qualified ``pack/kpi`` (``contact-centre/answered``),
    or a bare name with ``pack_name``, or a bare name only one pack defines.

    Returns:
        ``(pack, kpi)``, or ``None`` when no pack (or not the named one) defines it.

    Raises:
        AmbiguousName: a bare name without ``pack_name`` that two or more packs define; the
            message names every defining file and the qualified names to use instead.
    """
    if "/" in name:
        qualifier, _, name = name.partition("/")
        if pack_name is not None and pack_name != qualifier:
            return None
        pack_name = qualifier
    if pack_name is not None:
        pack = packs.get(pack_name)
        return (pack, pack.kpis[name]) if pack is not None and name in pack.kpis else None
    owners = [p for p in packs.values() if name in p.kpis]
    if len(owners) > 1:
        raise AmbiguousName(
            f"KPI {name!r} is defined by {len(owners)} packs ({' and '.join(p.origin for p in owners)}): "
            f"use a qualified name ({', '.join(f'{p.name}/{name}' for p in owners)})"
        )
    return (owners[0], owners[0].kpis[name]) if owners else None


def _check_playlists(packs: dict[str, Pack]) -> None:
    """Every playlist names loaded dashboards with parameters they declare, and no two packs
    define the same playlist name.

    Raises:
        PackError: naming the pack, the playlist and what is wrong.
    """
    dashboards = {slug: d for p in packs.values() for slug, d in p.dashboards.items()}
    names: set[str] = set()
    for pack in packs.values():
        for name, playlist in pack.playlists.items():
            if name in names:
                raise PackError(f"pack {pack.name!r}: playlist {name!r} is defined by another pack too")
            names.add(name)
            for i, (slug, params) in enumerate(playlist.entries):
                where = f"pack {pack.name!r}: playlists.{name}.dashboards[{i}]"
                dash = dashboards.get(slug)
                if dash is None:
                    raise PackError(
                        f"{where}: unknown dashboard {slug!r} (dashboards: {', '.join(sorted(dashboards))})"
                    )
                bad = [k for k, _ in params if k not in dash.params]
                if bad:
                    raise PackError(
                        f"{where}: dashboard {slug!r} declares no parameter(s) {bad} (its params: {list(dash.params)})"
                    )
