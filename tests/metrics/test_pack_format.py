"""The pack format's typed models: exact error messages (file, path, reason), the JSON Schema
for pack authors (the bundled packs fit it, bad ones do not, ``docs/pack.schema.json`` is the
generated one), and packs built exactly as before the models (same definition hashes)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema_rs
import pytest
import yaml

from app.metrics import PackError
from app.metrics.pack import load_pack, load_packs, parse_pack
from app.metrics.pack_format import WINDOWS, TileSpec, format_path, pack_json_schema
from tests.helpers import PACKS_DIR

REPO = Path(__file__).resolve().parents[2]
MEASURES = {"answered": {"event": "call.answered"}, "abandoned": {"event": "call.abandoned"}}
GAUGES = {"queue": {"open": "call.queued", "close": ["call.answered", "call.abandoned"], "pair_on": "call"}}


def pack(**parts) -> dict:
    """A small valid pack with ``parts`` replacing its sections."""
    return {
        "pack": "ops",
        "measures": MEASURES,
        "gauges": GAUGES,
        "kpis": {
            "offered": {"formula": {"count": ["answered", "abandoned"]}, "unit": "calls"},
            "in_queue": {"formula": {"gauge": {"gauge": "queue"}}},
        },
        **parts,
    }


def error_of(raw: object) -> str:
    with pytest.raises(PackError) as info:
        parse_pack(raw, "ops.yaml")
    return str(info.value)


def test_the_small_pack_loads():
    built = parse_pack(pack(), "ops.yaml")
    assert built.kpis["offered"].formula.measures == ("answered", "abandoned")
    assert built.kpis["in_queue"].is_gauge and built.gauges["queue"].close_types == ("call.answered", "call.abandoned")


@pytest.mark.parametrize(
    "raw, message",
    [
        (  # unknown field
            pack(kpis={"offered": {"formula": {"count": "answered"}, "unti": "calls"}}),
            "ops.yaml: kpis.offered.unti: unknown field (expected one of: formula, title, unit, description, "
            "target, targets, direction, amber_band, owner, weight, decimals)",
        ),
        (  # wrong type: no coercion of "0.8" to a number
            pack(kpis={"sl": {"formula": {"count": "answered"}, "target": "0.8"}}),
            "ops.yaml: kpis.sl.target: expected a number, got a string ('0.8')",
        ),
        (  # missing field
            pack(kpis={"offered": {"unit": "calls"}}),
            "ops.yaml: kpis.offered.formula: required field is missing",
        ),
        (  # reference to an unknown measure, second of a list
            pack(kpis={"offered": {"formula": {"count": ["answered", "abandonned"]}}}),
            "ops.yaml: kpis.offered.formula.count[1]: unknown measure 'abandonned' "
            "(the pack's measures: answered, abandoned)",
        ),
        (
            pack(
                kpis={"sl": {"formula": {"ratio": {"numerator": {"mean": "answered"}, "denominator": {"count": "x"}}}}}
            ),
            "ops.yaml: kpis.sl.formula.ratio.numerator: must be a count or sum (ratios of merged totals, "
            "never of averages)\n"
            "ops.yaml: kpis.sl.formula.ratio.denominator.count: unknown measure 'x' "
            "(the pack's measures: answered, abandoned)",
        ),
        (
            pack(kpis={"wait": {"formula": {"gauge": {"gauge": "queue", "aggregate": "newest"}}}}),
            "ops.yaml: kpis.wait.formula.gauge.aggregate: expected 'open_count' or 'oldest_age_s', "
            "got a string ('newest')",
        ),
        (
            pack(kpis={"wait": {"formula": {"gauge": {"gauge": "queues"}}}}),
            "ops.yaml: kpis.wait.formula.gauge.gauge: unknown gauge 'queues' (the pack's gauges: queue)",
        ),
        (
            pack(kpis={"both": {"formula": {"count": "answered", "sum": "answered"}}}),
            "ops.yaml: kpis.both.formula: a formula is a mapping with exactly one key "
            "(count, sum, mean, min, max, ratio, percentile, gauge, time_weighted, rate, peak)",
        ),
        (
            pack(gauges={"queue": {"open": "Call Queued", "close": "call.answered"}}),
            "ops.yaml: gauges.queue.open: must be an event type: 1-128 characters of [a-z0-9_.-]\n"
            "ops.yaml: gauges.queue.pair_on: required field is missing",
        ),
        (
            pack(measures={"Answered calls": {"event": "call.answered"}}),
            'ops.yaml: measures["Answered calls"]: the name must be 1-128 characters of [a-z0-9_.-], '
            "starting with a letter or digit",
        ),
        ([pack()], "ops.yaml: top level: expected a mapping, got a list"),
    ],
)
def test_a_bad_pack_names_the_file_the_path_and_the_reason(raw, message):
    assert error_of(raw) == message


def test_dashboard_problems_are_all_listed_with_their_tiles():
    raw = pack(
        dashboards={
            "ops": {
                "tz": "Europe/Paris",
                "tiles": [
                    {"kpi": "offered"},
                    {"kpi": "offred", "window": "today"},
                    {"kpi": "offered", "window": "now"},
                    {"kpi": "in_queue", "window": "today"},
                    {"kpi": "offered", "window": "today"},
                ],
            }
        }
    )
    assert error_of(raw).splitlines() == [
        "ops.yaml: dashboards.ops.tiles[1].kpi: unknown kpi 'offred' (the pack's KPIs: offered, in_queue)",
        "ops.yaml: dashboards.ops.tiles[2].window: gauges use window 'now', and only gauges do",
        "ops.yaml: dashboards.ops.tiles[3].window: gauges use window 'now', and only gauges do",
        "ops.yaml: dashboards.ops.tiles[4]: tile id 'offered_today' is used twice (ids are unique)",
    ]
    assert error_of(pack(dashboards={"ops": {"tz": "Mars/Olympus"}})) == (
        "ops.yaml: dashboards.ops.tz: unknown IANA time zone 'Mars/Olympus'"
    )


def test_load_pack_names_the_file_for_yaml_and_model_errors(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("pack: [unclosed\n", encoding="utf-8")
    with pytest.raises(PackError, match=r"broken\.yaml: cannot read pack: "):
        load_pack(broken)
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump(pack(measures={"answered": {"evnet": "call.answered"}})), encoding="utf-8")
    with pytest.raises(PackError) as info:
        load_pack(typo)
    assert str(info.value).splitlines() == [
        f"{typo}: measures.answered.event: required field is missing",
        f"{typo}: measures.answered.evnet: unknown field (expected one of: event, lifecycle, stage, where, sketch, distinct)",
    ]


def test_paths_quote_keys_that_are_not_plain_words():
    assert format_path(("kpis", "offered", "formula", "count", 0)) == "kpis.offered.formula.count[0]"
    assert format_path(("dashboards", "contact-centre", "tiles", 3, "kpi")) == "dashboards.contact-centre.tiles[3].kpi"
    assert format_path(("kpis", "a.b", "unit")) == 'kpis["a.b"].unit'
    assert format_path(()) == "top level"


# Definition hashes of the bundled packs (formula + the hashes of the measures and gauges read,
# issue 11): snapshots store these, and a changed hash restates every period as a "definition change".
HASHES = {
    ("contact-centre", "abandoned"): "2de5cd9b691af51a",
    ("contact-centre", "abandonment_rate"): "c8bb84f0f490e03b",
    ("contact-centre", "aht_s"): "1a736c1ee422787a",
    ("contact-centre", "answered"): "76fff25a62ac104d",
    ("contact-centre", "asa_s"): "87ee21f69870ec1f",
    ("contact-centre", "calls_in_queue"): "8d9b2d49c0672085",
    ("contact-centre", "longest_wait_s"): "b78fdcf8d13a0c96",
    ("contact-centre", "offered"): "cca363be289b07b4",
    ("contact-centre", "service_level_20s"): "7276f0b66fdb3ddc",
    ("contact-centre", "service_level_60s"): "00f05cbe74e71da8",
}


def test_bundled_packs_keep_their_definition_hashes():
    packs = load_packs(PACKS_DIR)
    found = {(p, k): kpi.definition_hash() for p, pk in packs.items() for k, kpi in pk.kpis.items()}
    assert {key: found[key] for key in HASHES} == HASHES
    assert set(packs) == {"contact-centre", "itsm", "noc", "generic"}
    assert packs["contact-centre"].measures["answered"].value_filter == ()
    assert packs["contact-centre"].measures["answered_within_20s"].value_filter == (("le", 20.0),)
    assert packs["itsm"].measures["resolved_made_sla"].dims_filter == (("made_sla", "true"),)
    assert packs["generic"].kpis["sample_mean"].targets == (("month", 12.0),)
    assert packs["generic"].measures["sample"].sketch  # kept for the percentile KPI


def test_docs_pack_schema_is_the_generated_one():
    on_disk = json.loads((REPO / "docs" / "pack.schema.json").read_text(encoding="utf-8"))
    assert on_disk == pack_json_schema(), (
        "docs/pack.schema.json is stale: run `.venv/bin/python -m app.metrics.pack_format > docs/pack.schema.json`"
    )


def test_the_schema_accepts_the_bundled_packs_and_refuses_bad_ones():
    validator = jsonschema_rs.validator_for(pack_json_schema())
    for path in [*sorted((REPO / "app" / "packs").glob("*.yaml")), PACKS_DIR / "generic.yaml"]:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert [str(e) for e in validator.iter_errors(document)] == [], path
    assert validator.is_valid(pack())
    for bad in (
        pack(kpis={"offered": {"formula": {"count": "answered"}, "unti": "calls"}}),
        pack(kpis={"sl": {"formula": {"count": "answered"}, "target": "0.8"}}),
        pack(kpis={"offered": {"unit": "calls"}}),
        pack(kpis={"both": {"formula": {"count": "answered", "sum": "answered"}}}),
        pack(kpis={"p": {"formula": {"percentile": {"measure": "answered", "p": 0}}}}),
        pack(measures={"Answered calls": {"event": "call.answered"}}),
        pack(dashboards={"ops": {"tiles": [{"kpi": "offered", "window": "week"}]}}),
    ):
        assert not validator.is_valid(bad), bad


def test_tile_windows_are_the_engines():
    assert TileSpec.model_fields["window"].annotation.__args__ == WINDOWS
