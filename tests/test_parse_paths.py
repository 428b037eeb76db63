"""The one-pass typed decoding of ``parse_events`` answers exactly as the per-event reference
path ``parse_each``: same events, same errors, duplicate keys never slip through."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.ingest import BadRequest, InvalidEvents, PayloadTooLarge
from app.ingest.parse import Limits, _fast_decode, parse_each, parse_events

NOW_US = int(datetime(2026, 11, 29, 12, tzinfo=UTC).timestamp() * 1e6)
LIMITS = Limits(NOW_US, 300.0, None, 64, 4, 50)

names = st.sampled_from(["queue", "priority", "call", "type", "ts", "id", 'we"ird', "x:y", "\u00e9"])
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8) | st.sampled_from(
    ['a":b', '\\":', "\u0000", "=HYPERLINK()", '":']
)
scalars = texts | st.integers(-5, 10**6) | st.floats(allow_nan=False, allow_infinity=False, width=32) | st.booleans()


@st.composite
def event_objects(draw) -> list[tuple[str, object]]:
    """One event as key/value pairs (so a key may repeat), sometimes invalid on purpose."""
    pairs: list[tuple[str, object]] = [
        ("type", draw(st.sampled_from(["call.answered", "call.ended", "Bad Type"]))),
        (
            "ts",
            draw(
                st.sampled_from(
                    ["2026-11-29T11:59:00Z", "2026-11-29T13:59:00+02:00", "2026-11-29 11:59", "2027-01-01T00:00:00Z"]
                )
            ),
        ),
    ]
    if draw(st.booleans()):
        pairs.append(("id", draw(texts)))
    if draw(st.booleans()):
        pairs.append(("value", draw(st.none() | st.floats(-1e6, 1e6) | st.just("12"))))
    if draw(st.booleans()):
        pairs.append(("source", draw(st.sampled_from(["pbx", "", "x" * 70]))))
    if draw(st.booleans()):
        dims = draw(st.lists(st.tuples(names, scalars), max_size=6))
        pairs.append(("dims", dims))
    if draw(st.integers(0, 5)) == 0 and len(pairs) > 1:
        pairs.append(draw(st.sampled_from(pairs)))  # a duplicated key
    return draw(st.permutations(pairs))


def _encode(pairs, spaced: bool) -> str:
    colon = " : " if spaced else ":"
    items = []
    for key, value in pairs:
        if key == "dims":
            value_text = "{" + ",".join(f"{json.dumps(k)}{colon}{json.dumps(v)}" for k, v in value) + "}"
        else:
            value_text = json.dumps(value)
        items.append(f"{json.dumps(key)}{colon}{value_text}")
    return "{" + ",".join(items) + "}"


def _answer(fn, body: bytes, media_type: str):
    try:
        events = fn(body, media_type, LIMITS)
    except InvalidEvents as exc:
        return ("invalid", exc.errors)
    except (BadRequest, PayloadTooLarge) as exc:
        return (type(exc).__name__, str(exc))
    # generated ids are random: compare everything else
    return (
        "ok",
        [
            (e.source, e.type, e.ts_us, e.value, e.dims, e.dims_json)
            + ((e.event_id, e.body_hash) if e.event_id and len(e.event_id) != 32 else ())
            for e in events
        ],
    )


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(event_objects(), min_size=1, max_size=6), st.sampled_from(["array", "ndjson", "object"]), st.booleans())
def test_fast_path_answers_as_the_reference(objects, form, spaced) -> None:
    encoded = [_encode(o, spaced) for o in objects]
    if form == "object":  # one event object, not in an array
        objects, encoded = objects[:1], encoded[:1]
        body, media_type = encoded[0].encode(), "application/json"
    elif form == "ndjson":
        body, media_type = "\n".join(encoded).encode(), "application/x-ndjson"
    else:
        body, media_type = ("[" + ",".join(encoded) + "]").encode(), "application/json"
    assert _answer(parse_events, body, media_type) == _answer(parse_each, body, media_type)
    if any(
        len({k for k, _ in o}) < len(o) or any(len({k for k, _ in v}) < len(v) for k, v in o if k == "dims")
        for o in objects
    ):
        assert _answer(parse_events, body, media_type)[0] == "invalid"  # a duplicated key is a 422


@pytest.mark.parametrize(
    "body",
    [
        b'[{"type":"call.answered","ts":"2026-11-29T11:59:00Z","type":"call.ended"}]',
        b'[{"type":"a","ts":"2026-11-29T11:59:00Z","dims":{"q":"x","q":"y"}}]',
        b'[{"type":"a","ts":"2026-11-29T11:59:00Z","id":"k\\":","dims":{"q":"x","q":"y"}}]',
    ],
)
def test_duplicate_keys_leave_the_fast_path(body: bytes) -> None:
    assert _fast_decode(body, "application/json") is None
    with pytest.raises(InvalidEvents) as exc:
        parse_events(body, "application/json", LIMITS)
    assert "appears twice" in exc.value.errors[0]["message"]


def test_single_object_takes_the_fast_path() -> None:
    body = b'{"type":"call.answered","ts":"2026-11-29T11:59:00Z","id":"a","value":3}'
    assert [e.id for e in _fast_decode(body, "application/json")] == ["a"]
    assert _fast_decode(b'{"type":"a","ts":"2026-11-29T11:59:00Z","type":"b"}', "application/json") is None


def test_clean_batch_takes_the_fast_path() -> None:
    body = (
        b'[{"type":"call.answered","ts":"2026-11-29T11:59:00Z","id":"a","value":3,"dims":{"queue":"PS"}},'
        b'{"type":"call.ended","ts":"2026-11-29T11:59:30Z","id":"b"}]'
    )
    fast = _fast_decode(body, "application/json")
    assert [e.id for e in fast] == ["a", "b"]
    assert [(e.event_id, e.value, e.dims) for e in parse_events(body, "application/json", LIMITS)] == [
        ("a", 3.0, {"queue": "PS"}),
        ("b", None, None),
    ]
