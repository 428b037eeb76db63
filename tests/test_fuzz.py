"""API fuzzing (issue 4): schemathesis over every operation of the served OpenAPI document.

A real server (``start_server``, real store) serves ``/openapi.json``; schemathesis loads it
from the URL and, for every operation, draws cases that fit the schema (positive) and cases
that break it (negative), sends them over a real socket with the key a real client of that
route holds, and checks:

* no server error: nothing ≥ 500 except a 503 that carries ``Retry-After`` (overload, store down);
* every negative case is refused with a 4xx (schemathesis' ``negative_data_rejection``, which
  knows the negations that become valid again once serialized).

Every failure of every operation is collected, so one run lists all of them.
``PULSEBOARD_FUZZ_EXAMPLES`` (default 15) bounds the examples per operation and mode.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection

from tests import conftest
from tests.helpers import PACKS_DIR

FUZZ_EXAMPLES = int(os.environ.get("PULSEBOARD_FUZZ_EXAMPLES", "15"))
REJECTED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx, value) -> bytes:
    """NDJSON body: the schema describes it as the sequence of its lines (one event a line)."""
    if isinstance(value, list):
        return b"".join(json.dumps(item).encode() + b"\n" for item in value)
    return json.dumps(value).encode()


@dataclass
class FuzzReport:
    """What one run sent and got: examples per (operation, mode), statuses, failures (text)."""

    examples: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    media_types: Counter = field(default_factory=Counter)  # of the events posted
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.examples.values())


def _key_for(operation, keys: conftest.TestKeys) -> str:
    scopes = operation.definition.raw.get("x-pulseboard-scope", [])
    if "ingest" in scopes:
        return keys.ingest["default"]
    if "read" in scopes and "admin" not in scopes:
        return keys.read
    return keys.admin  # admin routes, and public ones (which must ignore a key they do not need)


def _deliverable(case):
    """The case with its events' ``ts`` in the past and ``source`` the key's: what the schema
    cannot say (no more than ``PULSEBOARD_MAX_FUTURE_SKEW_S`` ahead; an ingest key posts its own
    source), so that positive events also reach the writer and the rollups."""
    events = case.body if isinstance(case.body, list) else [case.body]
    for event in events:
        if isinstance(event, dict):
            event["ts"] = "2024-05-02T09:15:20.123456+02:00"
            event.pop("source", None)
    return case


_INSTANTS = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.timezones()).map(
    datetime.isoformat
)
_DAYS = st.dates(min_value=date(1999, 1, 1), max_value=date(2031, 12, 31))


@st.composite
def _with_known_names(draw, cases, known: dict[str, list[str]]):
    """A case whose path names a real dashboard / KPI and a real period, and whose series query
    has real instants and zones: what random strings almost never hit (they stop at 404/422)."""
    case = draw(cases)
    path, query = case.path_parameters or {}, case.query or {}
    for name in path:
        if name in ("dashboard", "slug"):
            path[name] = draw(st.sampled_from(known["dashboards"]))
        elif name == "name":
            path[name] = draw(st.sampled_from(known["kpis"]))
        elif name == "month":
            path[name] = draw(_DAYS).strftime("%Y-%m")
        elif name == "period":
            path[name] = draw(_DAYS).strftime("%Y-%m-%d" if path.get("grain") == "day" else "%Y-%m")
    if "start" in query and "end" in query:
        query["start"], query["end"] = draw(_INSTANTS), draw(_INSTANTS)
    if query.get("tz") is not None:
        query["tz"] = draw(st.timezone_keys())
    return case


def _strategy(operation, mode, known: dict[str, list[str]]):
    strategy = operation.as_strategy(generation_mode=mode)
    if mode == GenerationMode.POSITIVE:
        if operation.label == "POST /api/v1/events":
            strategy = strategy | strategy.map(_deliverable)
        elif operation.path_parameters or operation.query:
            strategy = strategy | _with_known_names(strategy, known)
    return strategy


def _fuzz_test(
    operation,
    mode,
    base_url: str,
    session: requests.Session,
    headers: dict,
    report: FuzzReport,
    known: dict[str, list[str]],
):
    """A Hypothesis test of one operation in one generation mode."""

    @hypothesis.given(case=_strategy(operation, mode, known))
    def fuzz_one(case):
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
        report.examples[(operation.label, mode.value)] += 1
        report.statuses[response.status_code] += 1
        if operation.label == "POST /api/v1/events":
            report.media_types[case.media_type] += 1
        if response.status_code >= 500:
            assert response.status_code == 503 and "retry-after" in response.headers, (
                f"server error {response.status_code}: {response.text[:500]}\n"
                f"input: path={case.path_parameters} query={case.query} body={case.body!r}"
            )
        case.validate_response(response, checks=[negative_data_rejection], headers=headers)

    return fuzz_one


def run_fuzz(base_url: str, keys: conftest.TestKeys, max_examples: int) -> FuzzReport:
    """Fuzz every operation of ``base_url``'s OpenAPI document (blocking; run it in a thread)."""
    config = schemathesis.Config.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": REJECTED}}})
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config, timeout=30)
    report = FuzzReport()
    session = requests.Session()
    read = {"Authorization": f"Bearer {keys.read}"}
    known = {
        "dashboards": [d["slug"] for d in session.get(f"{base_url}/api/v1/dashboards", headers=read).json()],
        "kpis": [k["name"] for k in session.get(f"{base_url}/api/v1/kpis", headers=read).json()],
    }
    settings = hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        verbosity=hypothesis.Verbosity.quiet,
    )
    for result in schema.get_all_operations():
        operation = result.ok()
        headers = {"Authorization": f"Bearer {_key_for(operation, keys)}"}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                settings(_fuzz_test(operation, mode, base_url, session, headers, report, known))()
            except hypothesis.errors.Unsatisfiable:
                pass  # nothing to negate in this operation (no parameters, no body)
            except Exception as exc:
                report.failures.append(f"{operation.label} [{mode.value}]: {type(exc).__name__}: {exc}")
    session.close()
    return report


@pytest.mark.slow
@pytest.mark.timeout(1200)  # every operation of the API, more with every route: minutes on a busy machine
async def test_fuzz_every_operation_no_server_error_and_negatives_rejected(make_settings, start_server, store_kind):
    srv = await start_server(make_settings(packs_dir=PACKS_DIR))
    report = await asyncio.to_thread(run_fuzz, srv.url, srv.keys, FUZZ_EXAMPLES)
    print(
        f"\nfuzz {store_kind}: {report.total} examples over {len({op for op, _ in report.examples})} operations; "
        f"statuses {dict(sorted(report.statuses.items()))}; events posted as {dict(report.media_types)}; "
        f"failures {len(report.failures)}"
    )
    assert not report.failures, "\n\n".join(report.failures)
    operations = {op for op, _ in report.examples}
    assert "POST /api/v1/events" in operations and len(operations) >= 20
    assert report.statuses[202] > 0  # some positive events really went in
    assert report.media_types["application/json"] > 0 and report.media_types["application/x-ndjson"] > 0
    assert sum(n for s, n in report.statuses.items() if 400 <= s < 500) > 0
    assert not any(s >= 500 and s != 503 for s in report.statuses)


# The server errors the fuzzer found, as fixed cases (fast, both stores).


async def test_pairing_claim_with_non_ascii_secret_is_404(make_settings, start_server, client_for):
    """Was 500: ``secrets.compare_digest`` raises TypeError on non-ASCII ``str``."""
    srv = await start_server(make_settings(packs_dir=PACKS_DIR))
    async with client_for(srv, auth=False) as client:
        made = (await client.post("/api/v1/pairings")).json()
        resp = await client.post("/api/v1/pairings/claim", json={"secret": "é" * 12})
        assert resp.status_code == 404 and resp.json()["title"] == "Not found"
        assert (await client.post("/api/v1/pairings/claim", json={"secret": made["secret"]})).json()[
            "status"
        ] == "pending"


NUL_CASES = [
    ("/api/v1/keys", {"scope": "read", "name": "a\x00b"}, "name"),
    ("/api/v1/keys", {"scope": "ingest", "source": "pbx\x00"}, "source"),
    ("/api/v1/keys", {"scope": "ingest", "source": "pbx", "event_types": ["call\x00"]}, "event_types.0"),
    ("/api/v1/scorecards/generic-wall/2024-01/commentary", {"kpi": "k", "text": "a\x00"}, "text"),
    ("/api/v1/scorecards/generic-wall/2024-01/publish", {"by": "\x00"}, "by"),
]


async def test_nul_in_stored_text_is_422_on_both_stores(make_settings, start_server, client_for):
    """Was 500 on PostgreSQL (``text`` cannot hold NUL) while SQLite stored it."""
    srv = await start_server(make_settings(packs_dir=PACKS_DIR))
    async with client_for(srv) as client:
        before = len((await client.get("/api/v1/keys", headers=srv.auth("admin"))).json())
        for path, body, field_ in NUL_CASES:
            resp = await client.post(path, json=body, headers=srv.auth("admin"))
            assert resp.status_code == 422, (path, body, resp.text)
            assert resp.headers["content-type"] == "application/problem+json"
            assert [e["field"] for e in resp.json()["errors"]] == [field_]
            assert "NUL" in resp.json()["errors"][0]["message"]
        assert len((await client.get("/api/v1/keys", headers=srv.auth("admin"))).json()) == before


async def test_revoking_a_malformed_key_id_is_422_and_an_unknown_one_404(make_settings, start_server, client_for):
    """``DELETE /api/v1/keys/%00`` was 500 on PostgreSQL; ids are 32 hex characters."""
    srv = await start_server(make_settings(packs_dir=PACKS_DIR))
    async with client_for(srv) as client:
        for bad in ("%00", "%FF", "nope"):
            assert (await client.delete(f"/api/v1/keys/{bad}", headers=srv.auth("admin"))).status_code == 422
        assert (await client.delete(f"/api/v1/keys/{'0' * 32}", headers=srv.auth("admin"))).status_code == 404


async def test_series_with_a_zone_that_is_not_a_zone_file_is_422(make_settings, start_server, client_for):
    """Was 500 for ``Etc`` (a directory: IsADirectoryError) and 300 characters (OSError: name too long)."""
    srv = await start_server(make_settings(packs_dir=PACKS_DIR))
    async with client_for(srv) as client:
        for tz in ("Etc", "a" * 300, "Europe/", "../x"):
            resp = await client.get(
                "/api/v1/kpis/sample_count/series",
                params={"grain": "day", "start": "2024-01-01T00:00:00Z", "end": "2024-01-03T00:00:00Z", "tz": tz},
            )
            assert resp.status_code == 422, (tz, resp.text)
            assert resp.json()["errors"] == [{"field": "tz", "message": f"unknown IANA time zone {tz!r}"}]


@pytest.mark.parametrize("tz", ["Etc", "a" * 300])
def test_settings_refuse_a_zone_that_is_not_a_zone_file(tmp_path, tz):
    """``PULSEBOARD_TZ=Etc`` crashed the start with IsADirectoryError instead of naming the setting."""
    from pydantic import ValidationError

    from app.config import Settings

    with pytest.raises(ValidationError, match="unknown IANA time zone"):
        Settings(data_dir=tmp_path, tz=tz)
