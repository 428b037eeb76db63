"""Pack parsing (including the errors it raises), rollup keys and KPI evaluation."""

import pytest

from app.metrics import PackError
from app.metrics.evaluate import GaugeReading, evaluate, rag_status
from app.metrics.pack import load_packs, parse_pack
from app.metrics.partials import Partial
from app.metrics.rollup import EventRow, rollup

CC = load_packs()["contact-centre"]


def test_contact_centre_pack_shape():
    assert set(CC.kpis) >= {
        "offered",
        "answered",
        "abandoned",
        "abandonment_rate",
        "service_level_20s",
        "service_level_60s",
        "asa_s",
        "aht_s",
        "calls_in_queue",
        "longest_wait_s",
    }
    assert CC.measures["answered"].sketch


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"pack": "x", "kpis": {"k": {"formula": {"count": "nope"}}}}, "unknown measure 'nope'"),
        (
            {
                "pack": "x",
                "measures": {"m": {"event": "e"}},
                "kpis": {"k": {"formula": {"ratio": {"numerator": {"mean": "m"}, "denominator": {"count": "m"}}}}},
            },
            "never of averages",
        ),
        (
            {
                "pack": "x",
                "measures": {"m": {"event": "e"}},
                "kpis": {"k": {"formula": {"percentile": {"measure": "m", "p": 2}}}},
            },
            "(0, 1]",
        ),
        ({"pack": "X!"}, "pack"),
        ({"pack": "x", "measures": {"m": {"event": "e", "where": {"value": {"about": 3}}}}}, "where.value"),
        (
            {
                "pack": "x",
                "measures": {"m": {"event": "e"}},
                "kpis": {"k": {"formula": {"count": "m"}, "direction": "up"}},
            },
            "direction",
        ),
    ],
)
def test_malformed_packs_name_file_and_key(raw, needle):
    with pytest.raises(PackError) as info:
        parse_pack(raw, "my.yaml")
    assert "my.yaml" in str(info.value) and needle in str(info.value)


def test_rollup_by_minute_and_dimension():
    events = [
        EventRow("call.answered", 60_000_000 * 10 + 5, 12.0, {"queue": "PS", "call": "a"}),
        EventRow("call.answered", 60_000_000 * 10 + 9, 30.0, {"queue": "NW", "call": "b"}),
        EventRow("call.queued", 60_000_000 * 9, None, {"queue": "PS", "call": "a"}),
        EventRow("other", 0, 1.0, None),
    ]
    partials, changes = rollup(CC, events)
    total = partials[("contact-centre/answered", "", 600_000_000)]
    assert (total.count, total.sum, total.min, total.max) == (2, 42.0, 12.0, 30.0)
    assert partials[("contact-centre/answered_within_20s", "queue=PS", 600_000_000)].count == 1
    assert ("contact-centre/answered_within_20s", "queue=NW", 600_000_000) not in partials
    kinds = sorted((c.item_key, c.kind, c.dim_key) for c in changes)
    assert ("a", "open", "queue=PS") in kinds and ("a", "close", "queue=PS") in kinds and ("b", "close", "") in kinds


def test_evaluate_formulas_and_null_when_undefined():
    parts = {
        "answered": Partial(8, 160.0),
        "abandoned": Partial(2, 50.0),
        "answered_within_20s": Partial(6, 0.0),
        "ended": Partial(8, 1600.0),
    }
    assert evaluate(CC.kpis["offered"], parts).value == 10
    sl = evaluate(CC.kpis["service_level_20s"], parts)
    assert sl.value == 0.6 and sl.components["numerator"] == 6 and sl.components["denominator"] == 10
    assert evaluate(CC.kpis["asa_s"], parts).value == 20.0
    assert evaluate(CC.kpis["aht_s"], parts).value == 200.0
    assert evaluate(CC.kpis["service_level_20s"], {}).value is None
    assert evaluate(CC.kpis["asa_s"], {}).value is None
    g = GaugeReading(open_count=3, oldest_open_us=1_000_000)
    assert evaluate(CC.kpis["calls_in_queue"], {}, g, 61_000_000).value == 3
    assert evaluate(CC.kpis["longest_wait_s"], {}, g, 61_000_000).value == 60.0
    assert evaluate(CC.kpis["longest_wait_s"], {}, GaugeReading(0, None), 5).value == 0.0


@pytest.mark.parametrize(
    "kpi, value, status",
    [
        ("service_level_20s", 0.85, "green"),
        ("service_level_20s", 0.8, "green"),
        ("service_level_20s", 0.77, "amber"),
        ("service_level_20s", 0.70, "red"),
        ("asa_s", 25, "green"),
        ("asa_s", 40, "amber"),
        ("asa_s", 46, "red"),
        ("asa_s", None, None),
    ],
)
def test_rag_status(kpi, value, status):
    assert rag_status(CC.kpis[kpi], value) == status
