"""Body -> validated events (CONTRACT §2).

Accepts ``application/json`` (one object or an array of objects) and
``application/x-ndjson`` (one object a line; blank lines, CRLF, a trailing
newline and a UTF-8 BOM are fine).  Validation is strict: no coercion of
``"12"`` to a number, no non-finite numbers, RFC 3339 timestamps with an offset
only, unknown fields rejected.  Every invalid event is reported, with its
0-based ``index`` (and 1-based ``line`` for NDJSON).

The event contract is written once, here: ``EventIn`` and the ``Meta`` constraints of its
field types are what the parser decodes and checks (``validate``, with the configured limits)
and what ``event_schema`` publishes as the OpenAPI request schema (with the settings' defaults).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import operator
import re
import types
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Union, cast, get_args, get_origin

import msgspec
from msgspec import Meta

from app.config import Settings
from app.ingest import BadRequest, InvalidEvents, PayloadTooLarge
from app.metrics.calendar import from_us, to_us
from app.store.writes import NewEvent

_DEFAULTS = Settings.model_fields
DEFAULT_MAX_DIMS: int = _DEFAULTS["max_dims"].default
DEFAULT_MAX_STRING_CHARS: int = _DEFAULTS["max_string_chars"].default
DEFAULT_MAX_BATCH_EVENTS: int = _DEFAULTS["max_batch_events"].default
DEFAULT_MAX_ABS_VALUE: float = _DEFAULTS["max_abs_value"].default
DEFAULT_MIN_TS_US: int = to_us(_DEFAULTS["min_event_time"].default)
DEFAULT_MAX_TS_US: int = to_us(_DEFAULTS["max_event_time"].default)
ID_MAX_CHARS = 128
SOURCE_MAX_CHARS = 64
DIM_NAME_MAX_CHARS = 64
TYPE_PATTERN = r"^[a-z0-9_.-]{1,128}$"
RFC3339_PATTERN = r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
NO_NUL_PATTERN = "^[^\\u0000]*$"
TYPE_RE = re.compile(TYPE_PATTERN)
RFC3339_RE = re.compile(RFC3339_PATTERN)
_FIELD_RE = re.compile(r"`\$\.([A-Za-z0-9_]+)")
_NAMED_RE = re.compile(r"field `([^`]+)`")

EventType = Annotated[
    str, Meta(pattern=TYPE_PATTERN, description="1-128 characters of [a-z0-9_.-]", examples=["call.answered"])
]
Timestamp = Annotated[
    str,
    Meta(
        pattern=RFC3339_PATTERN,
        description="event time: RFC 3339 with an offset or Z; at most `PULSEBOARD_MAX_FUTURE_SKEW_S` ahead of "
        "the server clock (and, when that is set, at most `PULSEBOARD_MAX_LATENESS_S` old); within "
        "[`PULSEBOARD_MIN_EVENT_TIME`, `PULSEBOARD_MAX_EVENT_TIME`) (default 1970 to 2100)",
        examples=["2024-05-02T09:15:20Z"],
        extra_json_schema={"format": "date-time"},
    ),
]
EventId = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=ID_MAX_CHARS,
        pattern=NO_NUL_PATTERN,
        description="with `source`, the idempotency key of the event: send one, or a retried event counts twice",
    ),
]
Source = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=SOURCE_MAX_CHARS,
        pattern=NO_NUL_PATTERN,
        description="the sending system; default: the ingest key's source",
    ),
]
Value = Annotated[
    float,
    Meta(
        ge=-DEFAULT_MAX_ABS_VALUE,
        le=DEFAULT_MAX_ABS_VALUE,
        description="a finite number of magnitude at most `PULSEBOARD_MAX_ABS_VALUE`",
    ),
]
DimName = Annotated[str, Meta(min_length=1, max_length=DIM_NAME_MAX_CHARS, pattern=NO_NUL_PATTERN)]
DimText = Annotated[str, Meta(max_length=DEFAULT_MAX_STRING_CHARS, pattern=NO_NUL_PATTERN)]
Dims = Annotated[
    dict[DimName, DimText | int | float | bool],
    Meta(
        max_length=DEFAULT_MAX_DIMS,
        description="dimensions: at most `PULSEBOARD_MAX_DIMS` keys; string values of at most "
        "`PULSEBOARD_MAX_STRING_CHARS` characters; numbers finite",
    ),
]


class EventIn(msgspec.Struct, forbid_unknown_fields=True):
    """One event (CONTRACT §2).  Strings hold no NUL; the limits shown are the settings' defaults."""

    type: EventType
    ts: Timestamp
    id: EventId | None = None
    source: Source | None = None
    value: Value | None = None
    dims: Dims | None = None


def _unconstrained(tp: Any) -> Any:
    """The type ``tp`` without its ``Meta`` constraints, at any depth."""
    if get_origin(tp) is Annotated:
        return _unconstrained(get_args(tp)[0])
    args = get_args(tp)
    if not args:
        return tp
    inner = tuple(_unconstrained(a) for a in args)
    if get_origin(tp) in (Union, types.UnionType):
        return functools.reduce(operator.or_, inner)
    return get_origin(tp)[inner]


def _decoded_type(struct: type[EventIn]) -> type[EventIn]:
    """A subclass of ``struct`` with the same fields, types and defaults but no ``Meta``
    constraints: what bodies are decoded into.  ``validate`` checks the constraints itself, with
    the configured limits, so that it names every problem of an event in its own words (msgspec
    stops at the first, and knows only the defaults)."""
    fields = [
        (f.name, _unconstrained(f.type)) if f.required else (f.name, _unconstrained(f.type), f.default)
        for f in msgspec.structs.fields(struct)
    ]
    return cast(type[EventIn], msgspec.defstruct(struct.__name__, fields, bases=(struct,), forbid_unknown_fields=True))


DecodedEvent = _decoded_type(EventIn)


def event_schema(max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS) -> tuple[dict[str, Any], dict[str, Any]]:
    """JSON Schemas (2020-12, without ``$ref``) of a request body, generated from ``EventIn``.

    Args:
        max_batch_events: most events in one body (default: the setting's default).

    Returns:
        ``(json_body, ndjson_body)``: one event object or an array of 1-``max_batch_events`` of
        them (``application/json``); the sequence of an NDJSON body's lines, one event a line
        (``application/x-ndjson``).
    """
    batch = Annotated[list[EventIn], Meta(min_length=1, max_length=max_batch_events)]
    (json_body, ndjson_body), components = msgspec.json.schema_components(
        [EventIn | batch, batch], ref_template="#/$defs/{name}"
    )
    return _inline(json_body, components), _inline(ndjson_body, components)


def _inline(schema: Any, components: dict[str, Any]) -> Any:
    """``schema`` with each ``{"$ref": "#/$defs/NAME"}`` replaced by that component (the event
    types hold no cycle, so this ends), without ``"default": null`` (an absent field is null)."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(components[ref.removeprefix("#/$defs/")], components)
        return {k: _inline(v, components) for k, v in schema.items() if not (k == "default" and v is None)}
    if isinstance(schema, list):
        return [_inline(v, components) for v in schema]
    return schema


@dataclass(frozen=True, slots=True)
class Limits:
    """Validation limits (all configurable through ``Settings``).

    ``now_us`` is the wall-clock instant checks are made against (UTC µs).
    """

    now_us: int
    max_future_skew_s: float
    max_lateness_s: float | None
    max_string_chars: int
    max_dims: int
    max_batch_events: int
    default_source: str = "default"
    max_abs_value: float = DEFAULT_MAX_ABS_VALUE
    min_ts_us: int = DEFAULT_MIN_TS_US
    max_ts_us: int = DEFAULT_MAX_TS_US


def _field_of(message: str) -> str:
    match = _FIELD_RE.search(message) or _NAMED_RE.search(message)
    return match.group(1) if match else "$"


def parse_ts(text: str) -> datetime:
    """Parse an RFC 3339 timestamp that carries ``Z`` or an offset.

    Fractions beyond microseconds are truncated.

    Raises:
        ValueError: naming the expected form.
    """
    match = RFC3339_RE.match(text)
    if not match:
        raise ValueError("must be an RFC 3339 timestamp with an offset or Z, e.g. 2024-05-02T09:15:20Z")
    frac = (match.group(7) or "")[:7]
    offset = match.group(8)
    offset = "+00:00" if offset in ("Z", "z") else offset
    year, month, day, hour, minute, second = match.group(1, 2, 3, 4, 5, 6)
    normal = f"{year}-{month}-{day}T{hour}:{minute}:{second}{frac}{offset}"
    try:
        return datetime.fromisoformat(normal)
    except ValueError as exc:
        raise ValueError(f"is not a valid instant: {exc}") from exc


def _iso(us: int) -> str:
    return from_us(us).isoformat().replace("+00:00", "Z")


def _check_text(field: str, text: str, limit: int, errors: list[tuple[str, str]], escapes: bool = True) -> None:
    if len(text) > limit:
        errors.append((field, f"longer than {limit} characters"))
    if not escapes:
        return  # a NUL or a lone surrogate can only come from a \u escape, and the body has none
    if "\x00" in text:
        errors.append((field, "contains a NUL character"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        errors.append((field, "contains a lone surrogate (not valid Unicode)"))


def body_hash(
    source: str, event_id: str | None, type_: str, ts_us: int, value: float | None, dims: dict[str, Any] | None
) -> bytes:
    """16-byte BLAKE2b of the event's canonical form: same event, same hash, however formatted."""
    canonical = msgspec.json.encode([source, event_id, type_, ts_us, value, sorted((dims or {}).items())])
    return hashlib.blake2b(canonical, digest_size=16).digest()


def validate(ev: EventIn, limits: Limits, escapes: bool = True) -> tuple[NewEvent | None, list[tuple[str, str]]]:
    """Check one decoded event against the contract and ``limits``.

    ``escapes=False`` asserts that the event's JSON held no ``\\u`` escape, which skips the
    per-string NUL and lone-surrogate checks (only an escape can produce either).

    Returns:
        ``(event, [])`` when valid, else ``(None, [(field, message), ...])``.
    """
    errors: list[tuple[str, str]] = []
    source = ev.source if ev.source is not None else limits.default_source
    if not TYPE_RE.match(ev.type):
        errors.append(("type", "must be 1-128 characters of [a-z0-9_.-]"))
    if not 1 <= len(source) <= SOURCE_MAX_CHARS:
        errors.append(("source", f"must be 1-{SOURCE_MAX_CHARS} characters"))
    _check_text("source", source, SOURCE_MAX_CHARS, errors, escapes)
    if ev.id is not None:
        if not 1 <= len(ev.id) <= ID_MAX_CHARS:
            errors.append(("id", f"must be 1-{ID_MAX_CHARS} characters"))
        _check_text("id", ev.id, ID_MAX_CHARS, errors, escapes)
    if ev.value is not None and not math.isfinite(ev.value):
        errors.append(("value", "must be a finite number"))
    elif ev.value is not None and abs(ev.value) > limits.max_abs_value:
        errors.append(
            ("value", f"has a magnitude over the limit of {limits.max_abs_value:g} (PULSEBOARD_MAX_ABS_VALUE)")
        )
    if ev.dims is not None:
        if len(ev.dims) > limits.max_dims:
            errors.append(("dims", f"has {len(ev.dims)} keys; at most {limits.max_dims} allowed"))
        for key, val in ev.dims.items():
            name = f"dims.{key[:DIM_NAME_MAX_CHARS]}"
            if not 1 <= len(key) <= DIM_NAME_MAX_CHARS:
                errors.append((name, f"dimension names must be 1-{DIM_NAME_MAX_CHARS} characters"))
            _check_text(name, key, DIM_NAME_MAX_CHARS, errors, escapes)
            if isinstance(val, str):
                _check_text(name, val, limits.max_string_chars, errors, escapes)
            elif isinstance(val, float) and not math.isfinite(val):
                errors.append((name, "must be a finite number"))
    ts_us = 0
    try:
        ts_us = to_us(parse_ts(ev.ts))
    except (ValueError, OverflowError) as exc:
        errors.append(("ts", str(exc)))
    else:
        if not limits.min_ts_us <= ts_us < limits.max_ts_us:
            errors.append(
                (
                    "ts",
                    f"is outside the supported range [{_iso(limits.min_ts_us)}, {_iso(limits.max_ts_us)}) "
                    "(PULSEBOARD_MIN_EVENT_TIME, PULSEBOARD_MAX_EVENT_TIME)",
                )
            )
        elif ts_us > limits.now_us + limits.max_future_skew_s * 1e6:
            errors.append(("ts", f"is more than {limits.max_future_skew_s:g} s in the future"))
        elif limits.max_lateness_s is not None and ts_us < limits.now_us - limits.max_lateness_s * 1e6:
            errors.append(("ts", f"is older than the lateness limit of {limits.max_lateness_s:g} s"))
    if errors:
        return None, errors
    event_id = ev.id if ev.id is not None else uuid.uuid4().hex
    dims = ev.dims or None
    return NewEvent(
        source=source,
        event_id=event_id,
        type=ev.type,
        ts_us=ts_us,
        value=float(ev.value) if ev.value is not None else None,
        dims=dims,
        dims_json=msgspec.json.encode(dims).decode() if dims else None,
        body_hash=body_hash(source, ev.id, ev.type, ts_us, ev.value, dims),
    ), []


class _NonFinite:
    """Marks a bare ``NaN`` / ``Infinity`` token found by the lenient fallback parser."""


_NON_FINITE = _NonFinite()


def _lenient(data: bytes) -> Any:
    """Parse JSON that is valid except for bare NaN/Infinity tokens, or return ``None``.

    Such bodies are not malformed JSON from the sender's point of view but
    non-finite numbers: they get a 422 naming the field (CASES C11), not a 400.
    """
    try:
        return json.loads(data, parse_constant=lambda _token: _NON_FINITE)
    except (ValueError, RecursionError):
        return None


def _nonfinite_fields(obj: Any) -> list[str]:
    def bad(v: Any) -> bool:
        return v is _NON_FINITE or (isinstance(v, float) and not math.isfinite(v))

    if not isinstance(obj, dict):
        return []
    fields = [k for k, v in obj.items() if bad(v)]
    dims = obj.get("dims")
    if isinstance(dims, dict):
        fields += [f"dims.{k}" for k, v in dims.items() if bad(v)]
    return fields


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _surrogate_fields(obj: Any) -> list[str]:
    """Fields of a leniently parsed event holding a lone surrogate (``\\ud800``): msgspec refuses
    the whole body for one, so without this the sender would get a 400 not naming the field.
    The names are escaped (``dims.\\ud800``): a lone surrogate cannot be written in the answer."""

    def bad(key: Any, value: Any) -> bool:
        return _has_surrogate(key) or (isinstance(value, str) and _has_surrogate(value))

    def name(key: str) -> str:
        return key.encode("utf-8", "backslashreplace").decode("utf-8")

    if not isinstance(obj, dict):
        return []
    fields = [name(k) for k, v in obj.items() if k != "dims" and bad(k, v)]
    dims = obj.get("dims")
    if isinstance(dims, dict):
        fields += [f"dims.{name(k)}" for k, v in dims.items() if bad(k, v)]
    return fields


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def duplicate_key(raw: bytes | msgspec.Raw) -> str | None:
    """The first key that appears twice in one object of ``raw`` (at any depth), else ``None``.

    msgspec keeps the last of duplicate keys silently; a sender that writes a key
    twice has a bug whose meaning we must not guess (RFC 8259 §4: names SHOULD be unique).
    """
    try:
        json.loads(bytes(raw), object_pairs_hook=_refuse_duplicates)
    except _DuplicateKey as dup:
        return dup.key
    except (ValueError, RecursionError):
        return None  # not ours to judge here: the strict decoder already accepted it
    return None


_event_decoder = msgspec.json.Decoder(DecodedEvent, strict=True)
_array_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_events_decoder: msgspec.json.Decoder[list[EventIn]] = msgspec.json.Decoder(
    types.GenericAlias(list, (DecodedEvent,)), strict=True
)
_SPACED_COLON_RE = re.compile(rb'"\s+:')


def _keys_decoded(ev: EventIn) -> int:
    """Object keys that ``ev`` was decoded from, counting only fields that are not ``None``."""
    return (
        (ev.id is not None)
        + (ev.source is not None)
        + (ev.value is not None)
        + 2
        + (0 if ev.dims is None else 1 + len(ev.dims))
    )


def _fast_decode(body: bytes, media_type: str) -> list[EventIn] | None:
    """Typed decoding of a whole well-formed body in one pass, or ``None`` to take the
    per-event path (which names every error).

    msgspec keeps the last of duplicate keys silently, so this path also proves there are
    none without re-parsing: every key is a string closed by an unescaped quote and followed
    by its colon, so when no quote is followed by whitespace and a colon, the body's count of
    ``":`` is at least its count of keys, which is at least the count of keys decoded.  If the
    count equals the decoded keys, no object can have held a key twice.
    """
    try:
        if media_type == "application/x-ndjson":
            events = [_event_decoder.decode(line) for line in body.split(b"\n") if line.strip()]
        elif body.lstrip()[:1] == b"[":
            events = _events_decoder.decode(body)
        else:
            events = [_event_decoder.decode(body)]
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    if _SPACED_COLON_RE.search(body) or body.count(b'":') != sum(map(_keys_decoded, events)):
        return None
    return events


def _decode_error(exc: Exception, where: str, size: int | None = None) -> BadRequest:
    """A 400 naming where the JSON broke: msgspec names the byte offset of a bad character, but
    not of a truncation, which is at the end of the ``size`` bytes (BAD_INPUTS 2)."""
    if isinstance(exc, RecursionError):
        return BadRequest(f"{where}: JSON nested too deeply")
    if size is not None and "(byte " not in str(exc):
        return BadRequest(f"{where}: {exc} (at byte {size}, the end of the body)")
    return BadRequest(f"{where}: {exc}")


def parse_events(body: bytes, media_type: str, limits: Limits) -> list[NewEvent]:
    """Decode and validate a whole request body.

    Args:
        body: the (decompressed) body bytes.
        media_type: ``application/json`` or ``application/x-ndjson``.
        limits: validation limits and the wall-clock instant.

    Returns:
        The valid events in body order.

    Raises:
        BadRequest: empty body or malformed JSON (names the byte offset or line).
        PayloadTooLarge: more events than ``limits.max_batch_events``.
        InvalidEvents: listing every invalid event; nothing is stored.
    """
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    if not body.strip():
        raise BadRequest("the request body is empty; send one event object, an array of them, or NDJSON")
    fast = _fast_decode(body, media_type)
    if fast is not None and 0 < len(fast) <= limits.max_batch_events:
        escapes = b"\\u" in body
        events: list[NewEvent] = []
        problems: list[dict[str, Any]] = []
        for index, decoded in enumerate(fast):
            event, errs = validate(decoded, limits, escapes)
            if event is None:
                problems.extend(
                    {"index": index, "field": f, "message": f"{f} {m}" if not m.startswith(f) else m} for f, m in errs
                )
            else:
                events.append(event)
        if not problems:
            return events
        # else the per-event path reports the problems, with their NDJSON line numbers
    return parse_each(body, media_type, limits)


def parse_each(body: bytes, media_type: str, limits: Limits) -> list[NewEvent]:
    """``parse_events`` one event at a time (the reference path: it names every error, with its
    index, NDJSON line and field).  Same arguments, result and errors as ``parse_events``;
    ``body`` has no BOM and is not blank."""
    raws: list[tuple[Any, int | None]] = []
    if media_type == "application/x-ndjson":
        for lineno, text in enumerate(body.split(b"\n"), start=1):
            text = text.strip()
            if text:
                raws.append((text, lineno))
    else:
        stripped = body.lstrip()
        try:
            if stripped[:1] == b"[":
                raws = [(raw, None) for raw in _array_decoder.decode(body)]
            else:
                raws = [(msgspec.json.decode(body, type=msgspec.Raw), None)]
        except (msgspec.DecodeError, RecursionError) as exc:
            lenient = _lenient(body) if isinstance(exc, msgspec.DecodeError) else None
            items = lenient if isinstance(lenient, list) else [lenient]
            if lenient is None or not any(_nonfinite_fields(item) or _surrogate_fields(item) for item in items):
                raise _decode_error(exc, "malformed JSON", len(body)) from None
            raws = [(item, None) for item in items]
        except msgspec.ValidationError as exc:
            raise BadRequest(f"malformed JSON: {exc}") from None
    if len(raws) > limits.max_batch_events:
        raise PayloadTooLarge(f"{len(raws)} events in one request; the batch cap is {limits.max_batch_events}")
    if not raws:
        raise BadRequest("the request holds no events")

    events: list[NewEvent] = []
    problems: list[dict[str, Any]] = []
    for index, (raw, line) in enumerate(raws):
        where = {"index": index} if line is None else {"index": index, "line": line}
        if not isinstance(raw, (bytes, msgspec.Raw)):  # came through the lenient parser
            bad = _nonfinite_fields(raw)
            if bad:
                problems.extend({**where, "field": f, "message": f"{f} must be a finite number"} for f in bad)
                continue
            bad = _surrogate_fields(raw)
            if bad:
                problems.extend(
                    {**where, "field": f, "message": f"{f} contains a lone surrogate (not valid Unicode)"} for f in bad
                )
                continue
            try:
                raw = msgspec.json.encode(raw)
            except UnicodeEncodeError:
                problems.append({**where, "field": "$", "message": "contains a lone surrogate (not valid Unicode)"})
                continue
        try:
            decoded = _event_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            problems.append({**where, "field": _field_of(str(exc)), "message": str(exc)})
            continue
        except (msgspec.DecodeError, RecursionError) as exc:
            lenient = _lenient(raw) if line is not None and isinstance(exc, msgspec.DecodeError) else None
            if lenient is not None and _nonfinite_fields(lenient):
                problems.extend(
                    {**where, "field": f, "message": f"{f} must be a finite number"} for f in _nonfinite_fields(lenient)
                )
                continue
            if lenient is not None and _surrogate_fields(lenient):
                problems.extend(
                    {**where, "field": f, "message": f"{f} contains a lone surrogate (not valid Unicode)"}
                    for f in _surrogate_fields(lenient)
                )
                continue
            if line is not None:
                raise _decode_error(exc, f"line {line} is not valid JSON") from None
            problems.append({**where, "field": "$", "message": f"not valid JSON: {exc}"})
            continue
        dup = duplicate_key(raw)
        if dup is not None:
            problems.append({**where, "field": dup, "message": f"key {dup!r} appears twice in one object"})
            continue
        event, errs = validate(decoded, limits)
        if event is None:
            problems.extend({**where, "field": f, "message": f"{f} {m}" if not m.startswith(f) else m} for f, m in errs)
        else:
            events.append(event)
    if problems:
        invalid = len({p["index"] for p in problems})
        raise InvalidEvents(f"{invalid} of {len(raws)} events are invalid; nothing was stored", errors=problems)
    return events
