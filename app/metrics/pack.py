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

Raises ``PackError`` naming the file and key for anything malformed.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from app.metrics import PackError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")
VALUE_OPS = ("lt", "le", "gt", "ge", "eq", "ne")
WINDOWS = ("15m", "60m", "today", "month", "now")
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
    """

    name: str
    event_type: str
    value_filter: tuple[tuple[str, float], ...] = ()
    dims_filter: tuple[tuple[str, str], ...] = ()
    sketch: bool = False

    def matches(self, event_type: str, value: float | None, dims: dict[str, Any] | None) -> bool:
        """True when an event of ``event_type`` with ``value`` and ``dims`` counts here."""
        if event_type != self.event_type:
            return False
        for op, threshold in self.value_filter:
            if value is None or not _compare(op, value, threshold):
                return False
        for key, text in self.dims_filter:
            if dims is None or key not in dims or dim_text(dims[key]) != text:
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

    def definition_hash(self) -> str:
        """Stable hash of what determines this KPI's value (for snapshots)."""
        body = json.dumps(_plain(self.formula), sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:16]


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


@dataclass(frozen=True, slots=True)
class Dashboard:
    """A named set of tiles over one pack's KPIs, in the pack's (or given) time zone."""

    slug: str
    title: str
    pack: str
    tiles: tuple[Tile, ...]
    tz: str | None = None


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

    def measure_key(self, measure: str) -> str:
        """Storage key of a measure: ``pack/measure``."""
        return f"{self.name}/{measure}"

    def gauge_key(self, gauge: str) -> str:
        """Storage key of a gauge: ``pack/gauge``."""
        return f"{self.name}/{gauge}"

    @property
    def event_types(self) -> frozenset[str]:
        """Every event type any measure or gauge of the pack reads."""
        types = {m.event_type for m in self.measures.values()}
        for g in self.gauges.values():
            types.add(g.open_type)
            types.update(g.close_types)
        return frozenset(types)


class _Ctx:
    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, where: str, why: str) -> PackError:
        return PackError(f"{self.origin}: {where}: {why}")


def _names(ctx: _Ctx, where: str, raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        return tuple(raw)
    raise ctx.fail(where, "expected a measure name or a non-empty list of names")


def _parse_formula(ctx: _Ctx, where: str, raw: Any, pack_measures: dict, pack_gauges: dict) -> Formula:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ctx.fail(
            where, "a formula is a mapping with exactly one key (count, sum, mean, min, max, ratio, percentile, gauge)"
        )
    ((kind, arg),) = raw.items()
    if kind in ("count", "sum", "mean", "min", "max"):
        names = _names(ctx, f"{where}.{kind}", arg)
        if kind in ("mean", "min", "max") and len(names) != 1:
            raise ctx.fail(f"{where}.{kind}", f"{kind} takes exactly one measure")
        formula = Formula(kind, measures=names)
    elif kind == "ratio":
        if not isinstance(arg, dict) or set(arg) != {"numerator", "denominator"}:
            raise ctx.fail(f"{where}.ratio", "needs exactly 'numerator' and 'denominator'")
        num = _parse_formula(ctx, f"{where}.ratio.numerator", arg["numerator"], pack_measures, pack_gauges)
        den = _parse_formula(ctx, f"{where}.ratio.denominator", arg["denominator"], pack_measures, pack_gauges)
        for part, label in ((num, "numerator"), (den, "denominator")):
            if part.kind not in ("count", "sum"):
                raise ctx.fail(
                    f"{where}.ratio.{label}", "must be a count or sum (ratios of merged totals, never of averages)"
                )
        formula = Formula("ratio", numerator=num, denominator=den)
    elif kind == "percentile":
        if not isinstance(arg, dict) or "measure" not in arg or "p" not in arg:
            raise ctx.fail(f"{where}.percentile", "needs 'measure' and 'p'")
        p = arg["p"]
        if not isinstance(p, (int, float)) or not 0 < p <= 1:
            raise ctx.fail(f"{where}.percentile.p", "must be a number in (0, 1]")
        formula = Formula("percentile", measures=(str(arg["measure"]),), p=float(p))
    elif kind == "gauge":
        if not isinstance(arg, dict) or "gauge" not in arg:
            raise ctx.fail(f"{where}.gauge", "needs 'gauge' and 'aggregate'")
        aggregate = arg.get("aggregate", "open_count")
        if aggregate not in ("open_count", "oldest_age_s"):
            raise ctx.fail(f"{where}.gauge.aggregate", "must be open_count or oldest_age_s")
        if arg["gauge"] not in pack_gauges:
            raise ctx.fail(f"{where}.gauge", f"unknown gauge {arg['gauge']!r}")
        return Formula("gauge", gauge=arg["gauge"], aggregate=aggregate)
    else:
        raise ctx.fail(where, f"unknown formula kind {kind!r}")
    for name in formula.measures:
        if name not in pack_measures:
            raise ctx.fail(where, f"unknown measure {name!r}")
    return formula


def parse_pack(raw: Any, origin: str = "<pack>") -> Pack:
    """Build a ``Pack`` from the mapping a YAML file holds.

    Args:
        raw: the decoded YAML document.
        origin: file name used in error messages.

    Raises:
        PackError: naming ``origin`` and the key, for any malformed part.
    """
    ctx = _Ctx(origin)
    if not isinstance(raw, dict):
        raise ctx.fail("top level", "expected a mapping")
    name = raw.get("pack")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ctx.fail("pack", "needs a name of [a-z0-9_.-]")
    dimensions = tuple(raw.get("dimensions") or ())
    if not all(isinstance(d, str) for d in dimensions):
        raise ctx.fail("dimensions", "expected a list of dimension names")

    measures: dict[str, Measure] = {}
    for mname, spec in (raw.get("measures") or {}).items():
        where = f"measures.{mname}"
        if not isinstance(spec, dict) or not isinstance(spec.get("event"), str):
            raise ctx.fail(where, "needs 'event' (an event type)")
        unknown = set(spec) - {"event", "where", "sketch"}
        if unknown:
            raise ctx.fail(where, f"unknown keys {sorted(unknown)}")
        cond = spec.get("where") or {}
        vf: list[tuple[str, float]] = []
        for op, threshold in (cond.get("value") or {}).items():
            if op not in VALUE_OPS or isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
                raise ctx.fail(f"{where}.where.value", f"expected {{op: number}} with op in {VALUE_OPS}")
            vf.append((op, float(threshold)))
        df = tuple((str(k), dim_text(v)) for k, v in (cond.get("dims") or {}).items())
        measures[mname] = Measure(mname, spec["event"], tuple(vf), df, bool(spec.get("sketch", False)))

    gauges: dict[str, Gauge] = {}
    for gname, spec in (raw.get("gauges") or {}).items():
        where = f"gauges.{gname}"
        try:
            close = spec["close"]
            gauges[gname] = Gauge(
                gname,
                str(spec["open"]),
                tuple([close] if isinstance(close, str) else close),
                str(spec["pair_on"]),
                float(spec.get("max_open_s", 4 * 3600)),
            )
        except (KeyError, TypeError) as exc:
            raise ctx.fail(where, "needs 'open', 'close' and 'pair_on'") from exc

    kpis: dict[str, Kpi] = {}
    for kname, spec in (raw.get("kpis") or {}).items():
        where = f"kpis.{kname}"
        if not isinstance(spec, dict) or "formula" not in spec:
            raise ctx.fail(where, "needs a 'formula'")
        formula = _parse_formula(ctx, f"{where}.formula", spec["formula"], measures, gauges)
        if formula.kind == "percentile":
            mname = formula.measures[0]
            measures[mname] = Measure(**{**{s: getattr(measures[mname], s) for s in Measure.__slots__}, "sketch": True})
        direction = spec.get("direction", "higher")
        if direction not in ("higher", "lower"):
            raise ctx.fail(f"{where}.direction", "must be 'higher' or 'lower'")
        owner_raw = spec.get("owner")
        owner = Owner(str(owner_raw.get("role")), owner_raw.get("person")) if isinstance(owner_raw, dict) else None
        target = spec.get("target")
        if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float))):
            raise ctx.fail(f"{where}.target", "must be a number")
        per_grain = spec.get("targets") or {}
        if not isinstance(per_grain, dict) or any(
            g not in ("day", "month") or isinstance(v, bool) or not isinstance(v, (int, float))
            for g, v in per_grain.items()
        ):
            raise ctx.fail(f"{where}.targets", "expected {day: number, month: number}")
        kpis[kname] = Kpi(
            name=kname,
            title=str(spec.get("title", kname)),
            unit=str(spec.get("unit", "")),
            description=str(spec.get("description", "")),
            formula=formula,
            target=float(target) if target is not None else None,
            direction=direction,
            amber_band=float(spec.get("amber_band", 0.0)),
            owner=owner,
            weight=float(spec.get("weight", 1.0)),
            decimals=int(spec.get("decimals", 0)),
            targets=tuple((g, float(v)) for g, v in per_grain.items()),
        )

    dashboards: dict[str, Dashboard] = {}
    for slug, spec in (raw.get("dashboards") or {}).items():
        where = f"dashboards.{slug}"
        if not NAME_RE.match(slug):
            raise ctx.fail(where, "slug must be [a-z0-9_.-]")
        tiles = []
        for i, tile in enumerate(spec.get("tiles") or ()):
            twhere = f"{where}.tiles[{i}]"
            if tile.get("kpi") not in kpis:
                raise ctx.fail(twhere, f"unknown kpi {tile.get('kpi')!r}")
            window = tile.get("window", "today")
            if window not in WINDOWS:
                raise ctx.fail(twhere, f"window must be one of {WINDOWS}")
            if kpis[tile["kpi"]].is_gauge != (window == "now"):
                raise ctx.fail(twhere, "gauges use window 'now', and only gauges do")
            dims = tuple((str(k), dim_text(v)) for k, v in (tile.get("dims") or {}).items())
            tid = tile.get("id") or f"{tile['kpi']}_{window}"
            tiles.append(Tile(tid, tile["kpi"], window, tile.get("title"), dims, tile.get("size", "normal")))
        if len({t.id for t in tiles}) != len(tiles):
            raise ctx.fail(where, "tile ids must be unique")
        dashboards[slug] = Dashboard(slug, str(spec.get("title", slug)), name, tuple(tiles), spec.get("tz"))

    return Pack(name, str(raw.get("title", name)), dimensions, measures, gauges, kpis, dashboards)


def load_pack(path: Path) -> Pack:
    """Read and parse one YAML pack file.  Raises ``PackError`` (also for YAML syntax)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PackError(f"{path}: cannot read pack: {exc}") from exc
    return parse_pack(raw, str(path))


def builtin_packs_dir() -> Path:
    """Folder of the packs shipped with Pulseboard."""
    return Path(__file__).resolve().parent.parent / "packs"


def load_packs(extra_dir: Path | None = None) -> dict[str, Pack]:
    """Load the shipped packs and any ``*.yaml`` in ``extra_dir``.

    Raises:
        PackError: for a malformed pack, a duplicate pack name or dashboard slug.
    """
    packs: dict[str, Pack] = {}
    slugs: set[str] = set()
    files = sorted(builtin_packs_dir().glob("*.yaml"))
    if extra_dir is not None:
        files += sorted(Path(extra_dir).glob("*.yaml"))
    for path in files:
        pack = load_pack(path)
        if pack.name in packs:
            raise PackError(f"{path}: pack {pack.name!r} is defined twice")
        dup = slugs & set(pack.dashboards)
        if dup:
            raise PackError(f"{path}: dashboard slug(s) {sorted(dup)} already defined by another pack")
        slugs |= set(pack.dashboards)
        packs[pack.name] = pack
    return packs
