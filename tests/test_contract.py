"""The public contract in the repository and on the running server: ``docs/CONTRACT.md`` served
at ``/docs/contract`` and linked from the OpenAPI description, the KPI pack schema at its stable
URL, the ingest request schema generated from the parser's own types (and holding the limits the
parser enforces), and a query instant whose ``+`` was lost in the URL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jsonschema_rs
import pytest

from app.config import Settings
from app.ingest import InvalidEvents
from app.ingest.parse import (
    DEFAULT_MAX_BATCH_EVENTS,
    DEFAULT_MAX_DIMS,
    DEFAULT_MAX_STRING_CHARS,
    DIM_NAME_MAX_CHARS,
    ID_MAX_CHARS,
    SOURCE_MAX_CHARS,
    Limits,
    event_schema,
    parse_events,
)
from app.metrics.calendar import to_us
from app.metrics.pack_format import pack_json_schema
from tests.helpers import PACKS_DIR

REPO = Path(__file__).resolve().parents[1]
TS = "2024-05-02T09:15:20Z"


@pytest.fixture
async def srv(tmp_path, start_server):
    return await start_server(
        Settings(data_dir=tmp_path / "var", tz="UTC", packs_dir=PACKS_DIR, snapshots_enabled=False)
    )


async def test_contract_and_pack_schema_are_served_without_a_key_and_linked_from_openapi(srv):
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as client:
        contract = await client.get("/docs/contract")
        assert contract.status_code == 200
        assert contract.headers["content-type"] == "text/markdown; charset=utf-8"
        assert contract.text == (REPO / "docs" / "CONTRACT.md").read_text(encoding="utf-8")
        assert contract.text.startswith("# Pulseboard public contract")
        schema = await client.get("/api/v1/schemas/pack.json")
        assert schema.status_code == 200 and schema.headers["content-type"] == "application/schema+json"
        assert schema.json() == pack_json_schema()
        assert schema.json() == json.loads((REPO / "docs" / "pack.schema.json").read_text(encoding="utf-8"))
        description = (await client.get("/openapi.json")).json()["info"]["description"]
        assert "[/docs/contract](/docs/contract)" in description
        assert "[/api/v1/schemas/pack.json](/api/v1/schemas/pack.json)" in description


def test_the_readme_points_to_the_contract_in_the_repository():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "## API ([docs/CONTRACT.md](docs/CONTRACT.md) is the reference)" in readme
    assert (REPO / "docs" / "CONTRACT.md").is_file() and (REPO / "docs" / "pack.schema.json").is_file()


async def test_the_ingest_request_schema_is_the_generated_one(srv):
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as client:
        body = (await client.get("/openapi.json")).json()["paths"]["/api/v1/events"]["post"]["requestBody"]
    json_body, ndjson_body = event_schema()
    assert body["content"]["application/json"]["schema"] == json_body
    assert body["content"]["application/x-ndjson"]["schema"] == ndjson_body
    batch, single = json_body["anyOf"]
    assert single == batch["items"] == ndjson_body["items"]
    assert (batch["minItems"], batch["maxItems"]) == (1, DEFAULT_MAX_BATCH_EVENTS) == (1, 10_000)
    fields = single["properties"]
    assert single["required"] == ["type", "ts"] and single["additionalProperties"] is False
    assert fields["id"]["anyOf"][0]["maxLength"] == ID_MAX_CHARS == 128
    assert fields["source"]["anyOf"][0]["maxLength"] == SOURCE_MAX_CHARS == 64
    dims = fields["dims"]["anyOf"][0]
    assert dims["maxProperties"] == DEFAULT_MAX_DIMS == Settings.model_fields["max_dims"].default == 20
    assert dims["propertyNames"]["maxLength"] == DIM_NAME_MAX_CHARS == 64
    assert dims["additionalProperties"]["anyOf"][0]["maxLength"] == DEFAULT_MAX_STRING_CHARS == 1024


LIMITS = Limits(
    now_us=to_us(datetime(2024, 5, 3, tzinfo=UTC)),
    max_future_skew_s=300.0,
    max_lateness_s=None,
    max_string_chars=DEFAULT_MAX_STRING_CHARS,
    max_dims=DEFAULT_MAX_DIMS,
    max_batch_events=DEFAULT_MAX_BATCH_EVENTS,
)
# (event, valid): each limit the schema states, just inside and just outside it.
EVENTS = [
    ({"type": "call.answered", "ts": TS}, True),
    ({"type": "Call Answered", "ts": TS}, False),
    ({"type": "t" * 128, "ts": TS}, True),
    ({"type": "t" * 129, "ts": TS}, False),
    ({"type": "x", "ts": "2024-05-02T09:15:20"}, False),
    ({"type": "x", "ts": "2024-05-02T09:15:20.123456789+05:45"}, True),
    ({"type": "x"}, False),
    ({"type": "x", "ts": TS, "colour": "red"}, False),
    ({"type": "x", "ts": TS, "id": "i" * 128}, True),
    ({"type": "x", "ts": TS, "id": "i" * 129}, False),
    ({"type": "x", "ts": TS, "id": ""}, False),
    ({"type": "x", "ts": TS, "source": "s" * 64}, True),
    ({"type": "x", "ts": TS, "source": "s" * 65}, False),
    ({"type": "x", "ts": TS, "source": "pb\u0000x"}, False),
    ({"type": "x", "ts": TS, "value": "12"}, False),
    ({"type": "x", "ts": TS, "value": 12.5}, True),
    ({"type": "x", "ts": TS, "dims": {f"d{i}": i for i in range(20)}}, True),
    ({"type": "x", "ts": TS, "dims": {f"d{i}": i for i in range(21)}}, False),
    ({"type": "x", "ts": TS, "dims": {"k" * 64: "v"}}, True),
    ({"type": "x", "ts": TS, "dims": {"k" * 65: "v"}}, False),
    ({"type": "x", "ts": TS, "dims": {"": "v"}}, False),
    ({"type": "x", "ts": TS, "dims": {"k": "v" * 1024, "ok": True, "n": 1.5}}, True),
    ({"type": "x", "ts": TS, "dims": {"k": "v" * 1025}}, False),
    ({"type": "x", "ts": TS, "dims": {"k": None}}, False),
    ({"type": "x", "ts": TS, "dims": {"k": ["a"]}}, False),
]


def _parser_accepts(event: dict) -> bool:
    try:
        parse_events(json.dumps(event).encode(), "application/json", LIMITS)
    except InvalidEvents:
        return False
    return True


@pytest.mark.parametrize("event, valid", EVENTS, ids=range(len(EVENTS)))
def test_the_schema_and_the_parser_agree_on_every_stated_limit(event, valid):
    json_body, _ = event_schema()
    assert jsonschema_rs.validator_for(json_body).is_valid(event) is valid
    assert _parser_accepts(event) is valid


async def test_an_offset_that_lost_its_plus_in_the_query_string_says_to_encode_it(srv):
    async with httpx.AsyncClient(base_url=srv.url, timeout=30, headers=srv.auth("read")) as client:
        path = "/api/v1/kpis/sample_count/series?grain=day"
        lost = await client.get(f"{path}&start=2024-01-01T00:00:00+02:00&end=2024-01-03T00:00:00Z")  # + unencoded
        assert lost.status_code == 422 and lost.headers["content-type"] == "application/problem+json"
        message = (
            "'2024-01-01T00:00:00 02:00' lost the '+' of its offset: in a query string '+' means a space, so send "
            "it percent-encoded as %2B (start=2024-01-01T00:00:00%2B02:00)"
        )
        assert lost.json()["errors"] == [{"field": "start", "message": message}]
        assert lost.json()["detail"] == f"start: {message}"
        fixed = await client.get(f"{path}&start=2024-01-01T00:00:00%2B02:00&end=2024-01-03T00:00:00Z")
        assert fixed.status_code == 200, fixed.text
        assert fixed.json()["points"][0]["start"] == "2023-12-31T00:00:00+00:00"  # 2023-12-31T22:00Z: +02:00 held
        no_offset = await client.get(f"{path}&start=2024-01-01T00:00:00&end=2024-01-03T00:00:00Z")
        assert no_offset.json()["errors"] == [
            {
                "field": "start",
                "message": "must be an RFC 3339 timestamp with an offset or Z, e.g. 2024-05-02T09:15:20Z",
            }
        ]
