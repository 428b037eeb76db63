"""The KPI pack file format: typed models of a pack's YAML document, the JSON Schema for pack
authors generated from them, and error messages that name the path and the reason.

``PackSpec.model_validate(document)`` checks a pack's shape (fields, types, names, ranges);
``app.metrics.pack.parse_pack`` then checks its references (measures, gauges and KPIs named by
formulas and tiles) and builds the ``Pack`` the engine uses.  ``pack_json_schema()`` is served at
``GET /api/v1/schemas/pack.json`` and kept in ``docs/pack.schema.json``
(``python -m app.metrics.pack_format > docs/pack.schema.json`` rewrites it).

Paths name a place in the document the way a reader finds it: mapping keys after dots
(``kpis.offered.formula.count``), list positions in brackets (``dashboards.ops.tiles[3].kpi``),
keys that are not plain words quoted (``kpis["a b"]``).
"""

from __future__ import annotations

import json
import re
import sys
import types
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,127}$"
EVENT_TYPE_PATTERN = r"^[a-z0-9_.-]{1,128}$"  # CONTRACT §2
VALUE_OPS = ("lt", "le", "gt", "ge", "eq", "ne")
WINDOWS = ("15m", "60m", "today", "month", "now")
FORMULA_KINDS = ("count", "sum", "mean", "min", "max", "ratio", "percentile", "gauge", "time_weighted", "rate", "peak")
TILE_KINDS = ("kpi", "alarm_list")
STAGES = ("open", "acknowledge", "close")
DEFAULT_MAX_UPDATES = 100
DEFAULT_MAX_OPEN_S = 4 * 3600.0
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_PATH = "/api/v1/schemas/pack.json"
Path = tuple[str | int, ...]


def _refuse(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message)


_CORE_ERROR_TYPES = frozenset(get_args(core_schema.ErrorType))


def _at(error: Any) -> dict[str, Any]:
    return {"loc": error["loc"], "input": error.get("input")}


def _with_required(
    data: Any,
    handler: Callable[[Any], Any],
    title: str,
    required: Callable[[dict[str, Any]], list[str]],
    fields_in_order: Sequence[str],
) -> Any:
    """Validate ``data`` with ``handler``, reporting the fields ``required(data)`` names as missing
    together with every other problem of the model (as plain required fields are)."""
    missing = required(data) if isinstance(data, dict) else []
    fields = list(fields_in_order)

    def order(error: Any) -> int:  # pydantic's order: the model's fields as declared, unknown fields last
        head = error["loc"][0] if error["loc"] else None
        return fields.index(head) if head in fields else len(fields)

    found: list[Any] = [{"type": "missing", "loc": (name,), "input": data} for name in missing]
    try:
        out = handler(data)
    except ValidationError as exc:
        if not found:
            raise
        others = [
            {k: e[k] for k in ("type", "loc", "input", "ctx") if k in e}
            if e["type"] in _CORE_ERROR_TYPES
            else {"type": PydanticCustomError(e["type"], e["msg"].replace("{", "{{").replace("}", "}}")), **_at(e)}
            for e in exc.errors()
        ]
        raise ValidationError.from_exception_data(title, sorted(others + found, key=order)) from None
    if found:
        raise ValidationError.from_exception_data(title, found)
    return out


def _matching(pattern: str, message: str) -> Callable[[object], object]:
    """A validator refusing a string that does not match ``pattern``, with ``message``."""
    regex = re.compile(pattern)

    def check(value: object) -> object:
        if isinstance(value, str) and not regex.match(value):
            raise _refuse("pattern", message)
        return value

    return check


def _listed(value: object) -> object:
    """One item as a list of one (``close: call.answered`` is ``close: [call.answered]``)."""
    return [value] if isinstance(value, str) else value


def _one_or_more_names(value: object) -> object:
    if isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(x, str) for x in value)):
        return value
    raise _refuse("measure_names", "expected a measure name or a non-empty list of measure names")


def _exactly_one_name(value: object) -> object:
    if isinstance(value, str) or (isinstance(value, list) and len(value) == 1 and isinstance(value[0], str)):
        return value
    raise _refuse("measure_name", "takes exactly one measure (a name, or a list of one name)")


def _scalar(value: object) -> object:
    if isinstance(value, str | int | float):  # bool is an int
        return value
    raise _refuse("scalar", f"expected a string, a number or true/false, got {_kind(value)}")


def _unit_interval(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise _refuse("unit_interval", "must be a number in (0, 1]")
    return value


def _zone(value: object) -> object:
    if isinstance(value, str):
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory ("Etc"), a name too long
            raise _refuse("zone", f"unknown IANA time zone {value!r}") from None
    return value


Name = Annotated[
    str,
    Field(pattern=NAME_PATTERN),
    BeforeValidator(
        _matching(NAME_PATTERN, "must be 1-128 characters of [a-z0-9_.-], starting with a letter or digit")
    ),
]
EventType = Annotated[
    str,
    Field(pattern=EVENT_TYPE_PATTERN),
    BeforeValidator(_matching(EVENT_TYPE_PATTERN, "must be an event type: 1-128 characters of [a-z0-9_.-]")),
]
EventTypes = Annotated[
    list[EventType],
    Field(min_length=1),
    BeforeValidator(_listed),
    WithJsonSchema(
        {
            "description": "an event type, or a list of them",
            "anyOf": [
                {"type": "string", "pattern": EVENT_TYPE_PATTERN},
                {"type": "array", "items": {"type": "string", "pattern": EVENT_TYPE_PATTERN}, "minItems": 1},
            ],
        }
    ),
]
Text = Annotated[str, Field(min_length=1)]
MeasureNames = Annotated[
    str | Annotated[list[str], Field(min_length=1)],
    BeforeValidator(_one_or_more_names),
    Field(description="a measure name, or a list of them (their totals are added)"),
]
OneMeasure = Annotated[
    str | Annotated[list[str], Field(min_length=1, max_length=1)],
    BeforeValidator(_exactly_one_name),
    Field(description="a measure name (or a list of one)"),
]
Scalar = Annotated[str | int | float | bool, BeforeValidator(_scalar)]
Fraction = Annotated[
    float, Field(json_schema_extra={"exclusiveMinimum": 0, "maximum": 1}), BeforeValidator(_unit_interval)
]
Zone = Annotated[str, Field(description="IANA time zone name, e.g. Europe/Paris"), BeforeValidator(_zone)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ValueFilter(_Spec):
    """Thresholds the event's ``value`` must meet, all of them; an event without a value never matches."""

    lt: float | None = None
    le: float | None = None
    gt: float | None = None
    ge: float | None = None
    eq: float | None = None
    ne: float | None = None


ScalarList = Annotated[
    list[Scalar],
    Field(min_length=1),
    BeforeValidator(lambda v: v if isinstance(v, list) else [v]),
    WithJsonSchema(
        {
            "description": "a value, or a list of values",
            "anyOf": [
                {"type": ["string", "number", "boolean"]},
                {"type": "array", "items": {"type": ["string", "number", "boolean"]}, "minItems": 1},
            ],
        }
    ),
]


class Where(_Spec):
    """Which events of the type count."""

    value: ValueFilter | None = None
    dims: dict[str, Scalar] = Field(default_factory=dict, description="dimensions that must equal these values")
    dims_not: dict[str, ScalarList] = Field(
        default_factory=dict,
        description="dimensions that must NOT equal any of these values (an event without the dimension matches)",
    )


class MeasureSpec(_Spec):
    """What one 1-minute partial counts: events of one type, optionally filtered; or one stage of a
    lifecycle (``lifecycle`` + ``stage``), counted once per item at that stage, with the time since
    the item opened as its value (s)."""

    event: EventType | None = Field(default=None, description="the event `type` counted")
    lifecycle: str | None = Field(default=None, description="a lifecycle of the pack (instead of `event`)")
    stage: Literal["open", "acknowledge", "close"] | None = Field(
        default=None, description="with `lifecycle`: the stage counted; value = seconds since the open"
    )
    where: Where | None = None
    sketch: bool = Field(default=False, description="keep a quantile sketch of the values (percentile KPIs)")
    distinct: Text | None = Field(
        default=None,
        description="count the distinct values of this dimension (HyperLogLog; `count: MEASURE` reads the distinct "
        "count, exact up to 10,000 values: app.metrics.hll); events without the dimension are not counted",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _event_required(cls, data: Any, handler: Callable[[Any], Any]) -> Any:
        return _with_required(
            data,
            handler,
            cls.__name__,
            lambda d: [] if "event" in d or "lifecycle" in d else ["event"],
            list(cls.model_fields),
        )

    @model_validator(mode="after")
    def _event_or_stage(self) -> MeasureSpec:
        if self.event is not None and self.lifecycle is not None:
            raise _refuse("measure", "a measure names either an `event` or a `lifecycle` (with its `stage`)")
        if (self.lifecycle is None) != (self.stage is None):
            raise _refuse("measure", "`lifecycle` and `stage` go together")
        return self


class GaugeSpec(_Spec):
    """An open/close pairing (e.g. calls in queue): items opened by one event type and closed by
    any of others, paired on a dimension; or the open items of a lifecycle (``lifecycle``,
    optionally only while they are service-affecting: ``affecting: true``)."""

    open: EventType | None = None
    close: EventTypes | None = None
    pair_on: Text | None = Field(default=None, description="the dimension whose value pairs an open with its close")
    max_open_s: float = Field(
        default=DEFAULT_MAX_OPEN_S, gt=0, description="items open longer are ignored (their close was lost), s"
    )
    lifecycle: str | None = Field(default=None, description="the open items of this lifecycle (instead of open/close)")
    affecting: bool = Field(default=False, description="with `lifecycle`: only while the item is service-affecting")

    @model_validator(mode="wrap")
    @classmethod
    def _pairing_required(cls, data: Any, handler: Callable[[Any], Any]) -> Any:
        return _with_required(
            data,
            handler,
            cls.__name__,
            lambda d: [] if "lifecycle" in d else [n for n in ("open", "close", "pair_on") if n not in d],
            list(cls.model_fields),
        )

    @model_validator(mode="after")
    def _pairing_or_lifecycle(self) -> GaugeSpec:
        if self.lifecycle is None:
            if self.affecting:
                raise _refuse("gauge", "`affecting` goes with `lifecycle`")
        elif self.open is not None or self.close is not None or self.pair_on is not None:
            raise _refuse("gauge", "a lifecycle gauge takes its events from the lifecycle: no `open`/`close`/`pair_on`")
        return self


class LifecycleSpec(_Spec):
    """An item's lifecycle, e.g. an alarm: raised (``open``), acknowledged, cleared (``close``), and
    updated (new dims such as a new severity), paired on ``pair_on``.  Derived from the raw events
    by a pure function (``app.metrics.lifecycle``): the earliest open, acknowledge and close of an
    item count, once."""

    pair_on: Text = Field(description="the dimension naming the item (e.g. `alarm`)")
    open: EventType
    close: EventType
    acknowledge: EventType | None = None
    update: EventType | None = Field(default=None, description="changes the item's dims (e.g. severity) from its ts on")
    max_open_s: float = Field(
        default=DEFAULT_MAX_OPEN_S, gt=0, description="items open longer are dropped (their close was lost), s"
    )
    max_updates: int = Field(default=DEFAULT_MAX_UPDATES, ge=0, le=10_000, description="updates applied per item")
    not_affecting: dict[str, ScalarList] = Field(
        default_factory=dict,
        description="dims values that make an item NOT service-affecting (e.g. severity: [minor, warning]); "
        "an item without the dimension is service-affecting",
    )


class RatioSpec(_Spec):
    """A ratio of two merged totals (counts or sums), never of averages."""

    numerator: FormulaSpec
    denominator: FormulaSpec


class PercentileSpec(_Spec):
    """A percentile of a measure's values (nearest rank over its sketch)."""

    measure: str
    p: Fraction


class GaugeReadingSpec(_Spec):
    """A reading of a gauge now."""

    gauge: str
    aggregate: Literal["open_count", "oldest_age_s"] = "open_count"


class TimeWeightedSpec(_Spec):
    """A time-weighted reading of a gauge over the window: ``available_ratio`` = 1 - time with at
    least one open item / window length, ``covered_ratio`` = that time / window length, ``mean`` =
    the time-weighted average number of open items."""

    gauge: str
    aggregate: Literal["available_ratio", "covered_ratio", "mean"] = "available_ratio"


class RateSpec(_Spec):
    """A count per time: count of the measure(s) / (window length / ``per_s``)."""

    count: MeasureNames
    per_s: float = Field(default=60.0, gt=0, description="the rate's time unit, s (60: per minute)")


class PeakSpec(_Spec):
    """The highest count of a measure in one minute of the window (e.g. an alarm flood's peak)."""

    measure: str


class FormulaSpec(_Spec):
    """A KPI formula: a mapping with exactly one key, the formula's kind."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1, "maxProperties": 1})

    count: MeasureNames | None = None
    sum: MeasureNames | None = None
    mean: OneMeasure | None = Field(default=None, description="sum / count of one measure")
    min: OneMeasure | None = None
    max: OneMeasure | None = None
    ratio: RatioSpec | None = None
    percentile: PercentileSpec | None = None
    gauge: GaugeReadingSpec | None = None
    time_weighted: TimeWeightedSpec | None = None
    rate: RateSpec | None = None
    peak: PeakSpec | None = None

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> FormulaSpec:
        if len(self.kinds()) != 1:
            raise _refuse("formula", f"a formula is a mapping with exactly one key ({', '.join(FORMULA_KINDS)})")
        return self

    def kinds(self) -> list[str]:
        """The formula kinds given (exactly one once validated)."""
        return [kind for kind in FORMULA_KINDS if getattr(self, kind) is not None]


RatioSpec.model_rebuild()


class OwnerSpec(_Spec):
    """Who answers for a KPI."""

    role: Text
    person: str | None = None


class TargetsSpec(_Spec):
    """Targets for one grain, over the KPI's ``target``."""

    day: float | None = None
    month: float | None = None


class KpiSpec(_Spec):
    """One KPI: formula, unit, target, direction, amber band and owner."""

    formula: FormulaSpec
    title: str | None = Field(default=None, description="default: the KPI's name")
    unit: str = ""
    description: str = ""
    target: float | None = None
    targets: TargetsSpec | None = None
    direction: Literal["higher", "lower"] = Field(default="higher", description="which way is better")
    amber_band: float = Field(default=0.0, ge=0, description="how far on the wrong side of the target is amber")
    owner: OwnerSpec | None = None
    weight: float = Field(default=1.0, ge=0, description="weight in the monthly review agenda")
    decimals: int = Field(default=0, ge=0, le=9, description="decimals shown")


class TileSpec(_Spec):
    """A dashboard tile: a KPI over a window, optionally for one dimension value; or
    (``kind: alarm_list``) the ``limit`` open items of a lifecycle with the most severe first, then
    the oldest (window ``now``)."""

    kind: Literal["kpi", "alarm_list"] = "kpi"
    kpi: str | None = Field(default=None, description="the KPI shown (tiles of kind `kpi`)")
    lifecycle: str | None = Field(default=None, description="the lifecycle listed (tiles of kind `alarm_list`)")
    limit: int = Field(default=10, ge=1, le=200, description="`alarm_list`: most items listed")
    window: Literal["15m", "60m", "today", "month", "now"] = Field(
        default="today", description="`now` for gauges and alarm lists, and only for them"
    )
    id: str | None = Field(default=None, description="unique in the dashboard; default: KPI_WINDOW")
    title: str | None = None
    dims: dict[str, Scalar] = Field(default_factory=dict)
    size: Literal["large", "normal"] = "normal"

    @model_validator(mode="after")
    def _kind_fields(self) -> TileSpec:
        if self.kind == "kpi" and (self.kpi is None or self.lifecycle is not None):
            raise _refuse("tile", "a tile of kind `kpi` names its `kpi` (and no `lifecycle`)")
        if self.kind == "alarm_list" and (self.lifecycle is None or self.kpi is not None):
            raise _refuse("tile", "a tile of kind `alarm_list` names its `lifecycle` (and no `kpi`)")
        return self


class FeedSpec(_Spec):
    """A feed the dashboard expects events from: when none of ``source`` (any source of the pack's
    events when left out) arrives for ``every_s`` seconds of wall time, the ``tiles`` it feeds
    (every tile when left out) say STALE, "no events from SOURCE since hh:mm"."""

    source: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="the events' `source`; default: any source"
    )
    every_s: float = Field(gt=0, le=31_536_000, description="seconds of wall time within which an event is expected")
    tiles: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None, description="ids of the tiles this feed feeds (default: every tile)"
    )


class DashboardSpec(_Spec):
    """A named set of tiles over the pack's KPIs."""

    title: str | None = Field(default=None, description="default: the slug")
    tz: Zone | None = Field(default=None, description="the dashboard's own time zone (default: PULSEBOARD_TZ)")
    tiles: list[TileSpec] = Field(default_factory=list)
    feeds: list[FeedSpec] = Field(
        default_factory=list, description="feeds the dashboard expects events from (feed silence: STALE tiles)"
    )
    params: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list,
        description="dimensions a screen may narrow every tile to (`/wall/SLUG?KEY=VALUE`); rolled-up dimensions",
    )


class PlaylistEntrySpec(_Spec):
    """One dashboard of a playlist, optionally narrowed by its declared ``params``."""

    dashboard: Name = Field(description="a dashboard slug (of any loaded pack)")
    params: dict[Annotated[str, Field(min_length=1, max_length=64)], Scalar] = Field(
        default_factory=dict, description="the dashboard's parameters (`site: X`), as on `/wall/SLUG?site=X`"
    )


class PlaylistSpec(_Spec):
    """A rotation of dashboards for a wall (``/wall/playlist/NAME``), one every ``interval_s``."""

    title: str | None = Field(default=None, description="default: the playlist's name")
    interval_s: float = Field(default=30, ge=5, le=86_400, description="seconds each dashboard is shown")
    dashboards: list[Name | PlaylistEntrySpec] = Field(
        min_length=1, description="slugs, or {dashboard, params}; shown in this order, then again"
    )


class PackSpec(_Spec):
    """A Pulseboard KPI pack (one YAML file): measures, gauges, KPIs and dashboards."""

    model_config = ConfigDict(title="Pulseboard KPI pack")

    pack: Name = Field(description="the pack's name")
    title: str | None = Field(default=None, description="default: the pack's name")
    dimensions: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, description="dimensions rolled up per value (for dims.KEY=VALUE reads)"
    )
    lifecycles: dict[Name, LifecycleSpec] = Field(
        default_factory=dict, description="item lifecycles (alarms: raised, acknowledged, cleared, updated)"
    )
    measures: dict[Name, MeasureSpec] = Field(default_factory=dict)
    gauges: dict[Name, GaugeSpec] = Field(default_factory=dict)
    kpis: dict[Name, KpiSpec] = Field(default_factory=dict)
    dashboards: dict[Name, DashboardSpec] = Field(default_factory=dict, description="by slug")
    playlists: dict[Name, PlaylistSpec] = Field(
        default_factory=dict,
        description="wall rotations by name (`/wall/playlist/NAME`); may name any pack's dashboards",
    )


class _PackJsonSchema(GenerateJsonSchema):
    """Pydantic's JSON Schema for authors: no generated field titles, no ``null`` for optional
    fields (leave them out instead), ``propertyNames`` for the keys of named mappings."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        out = super().default_schema(schema)
        if out.get("default", ...) is None:
            del out["default"]
        return out

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        out = super().dict_schema(schema)
        patterns = out.pop("patternProperties", None)
        if patterns:  # a mapping whose keys must match: every key, not "some keys"
            ((pattern, values),) = patterns.items()
            out["propertyNames"] = {"pattern": pattern}
            out["additionalProperties"] = values
        return out


def pack_json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of a pack file, for pack authors and their editors."""
    schema = PackSpec.model_json_schema(schema_generator=_PackJsonSchema)
    return {"$schema": SCHEMA_DIALECT, **schema}


def _kind(value: object) -> str:
    """``value`` as a YAML reader names it, with a short excerpt."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_EXPECTED = {
    "model_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
    "string_type": "a string",
    "float_type": "a number",
    "int_type": "an integer",
    "bool_type": "true or false",
}
_WORD_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def format_path(path: Sequence[str | int]) -> str:
    """``("kpis", "offered", "formula", "count", 0)`` -> ``kpis.offered.formula.count[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _WORD_RE.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out or "top level"


def _fields_at(path: Sequence[str | int]) -> list[str]:
    """The field names of the model at ``path`` in a pack (``[]`` where there is none)."""
    tp: Any = PackSpec
    for part in path:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return []
            tp = field.annotation
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        elif get_origin(tp) is list:
            tp = get_args(tp)[0]
        else:
            return []
    tp = _unwrap(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _unwrap(tp: Any) -> Any:
    """``tp`` without ``Annotated`` and ``None``; of a union, its model, mapping or list member."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (Union, types.UnionType):
        for member in get_args(tp):
            member = _unwrap(member)
            if get_origin(member) in (dict, list) or (isinstance(member, type) and issubclass(member, BaseModel)):
                return member
        return None
    return tp


_MUST_RE = re.compile(r"^(Input|String|List|Dictionary|Value) should ")


def problems_of(exc: ValidationError) -> list[tuple[Path, str]]:
    """Pydantic's errors as ``(path in the document, reason)``, in the document's words."""
    found: list[tuple[Path, str]] = []
    for error in exc.errors(include_url=False):
        path: Path = tuple(error["loc"])
        kind, value = error["type"], error.get("input")
        if path and path[-1] == "[key]":
            path = path[:-1]
            reason = f"the name {error['msg']}"
        elif kind == "missing":
            reason = "required field is missing"
        elif kind == "extra_forbidden":
            allowed = _fields_at(path[:-1])
            reason = "unknown field" + (f" (expected one of: {', '.join(allowed)})" if allowed else "")
        elif kind in _EXPECTED:
            reason = f"expected {_EXPECTED[kind]}, got {_kind(value)}"
        elif kind == "literal_error":
            reason = f"expected {error.get('ctx', {}).get('expected')}, got {_kind(value)}"
        else:
            reason = _MUST_RE.sub("must ", error["msg"], count=1)
        found.append((path, reason))
    return found


def report(origin: str, problems: Sequence[tuple[Path, str]]) -> str:
    """One line per problem: ``FILE: PATH: REASON``."""
    return "\n".join(f"{origin}: {format_path(path)}: {reason}" for path, reason in problems)


def main(write: Callable[[str], object] = sys.stdout.write) -> None:
    """Print the pack JSON Schema (``python -m app.metrics.pack_format > docs/pack.schema.json``)."""
    write(json.dumps(pack_json_schema(), indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
