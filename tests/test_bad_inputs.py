"""Every row of ``shared/BAD_INPUTS.md`` is a test, on both stores (issue 4, "Ingest you can retry blindly").

Each test below runs on SQLite and on PostgreSQL (``store_kind`` through ``make_settings``) unless
it says otherwise; rows already pinned elsewhere on both stores are only listed.  Where a row
is covered (``file::test``):

===  ===================================================================================================
row  tests
===  ===================================================================================================
 1   test_ingest_errors.py::test_malformed_requests_store_nothing (b"" -> 400 "empty")
 2   test_bad_inputs.py::test_row02_malformed_json_names_the_byte_offset_and_ndjson_the_line;
     test_ingest_errors.py::test_malformed_requests_store_nothing (NDJSON "line 2")
 3   test_ingest_errors.py::test_malformed_requests_store_nothing (none / text/plain -> 415 naming the types)
 4   test_ingest_errors.py::test_ndjson_quirks_accepted
 5   test_ingest_errors.py::test_content_length_over_limit_is_413_before_the_body_is_read
 6   test_ingest_errors.py::test_chunked_body_growing_past_the_limit_is_413_and_closed (413, Connection: close);
     test_bad_inputs.py::test_row06_chunked_body_past_the_limit_is_413_and_the_socket_is_closed (EOF seen)
 7   test_ingest_errors.py::test_gzip_bomb_and_unknown_encoding
 8   test_ingest_errors.py::test_batch_cap_is_413_stating_the_cap
 9   test_ingest_errors.py::test_invalid_event_is_422_naming_the_field (type, ts)
10   test_ingest_errors.py::test_invalid_event_is_422_naming_the_field ("12", true, []);
     test_ingest_errors.py::test_one_bad_event_among_1000_stores_none_and_names_its_index
11   test_bad_inputs.py::test_row11_non_finite_numbers_are_422_naming_the_field (every spelling, value and dims,
     JSON and NDJSON); test_cases.py::test_c11_non_finite_numbers_never_get_in
12   test_bad_inputs.py::test_row12_a_100000_digit_integer_is_4xx_never_500 (422 naming the field, 9 placements);
     test_ingest_errors.py::test_malformed_requests_store_nothing (value)
13   test_bad_inputs.py::test_row13_100000_levels_of_nesting_are_400_never_500 (400; a deep NDJSON array line:
     422 naming its line, refused before its nesting is read)
14   test_ingest_errors.py::test_duplicate_keys_are_422
15   test_ingest_errors.py::test_invalid_event_is_422_naming_the_field (no offset, not RFC 3339, epoch)
16   test_bad_inputs.py::test_row16_future_skew_is_422_past_the_configured_limit_only
17   test_bad_inputs.py::test_row17_older_than_the_lateness_limit_is_422_within_it_accepted_and_marked_late;
     test_ingest_errors.py::test_lateness_limit_configurable
18   test_bad_inputs.py::test_row18_invalid_utf8_lone_surrogates_and_nul_are_refused_naming_the_field;
     test_ingest_errors.py::test_invalid_utf8_is_rejected; test_fuzz.py::test_nul_in_stored_text_is_422_on_both_stores
19   test_bad_inputs.py::test_row19_string_dims_and_name_limits_are_422_stating_the_limit;
     test_ingest_errors.py::test_invalid_event_is_422_naming_the_field (21 dims, 2000 chars, id, source)
20   test_ingest_errors.py::test_invalid_event_is_422_naming_the_field ("colour")
21   test_idempotency.py::test_malformed_keys_are_400
22   test_idempotency.py::test_replay_returns_the_same_answer (422), ::test_in_flight_duplicate_gets_409
23   test_bad_inputs.py::test_row23_every_bad_key_gets_the_same_401_with_www_authenticate (incl. expired);
     test_auth.py::test_every_failure_does_the_same_work (same work, so same timing);
     test_auth.py::test_scope_by_route_matrix (SQLite only, every route)
24   test_bad_inputs.py::test_row24_a_valid_key_of_the_wrong_scope_is_403; test_auth.py::test_scope_by_route_matrix
     (SQLite only); test_auth.py::test_ingest_key_is_bound_to_its_source_and_types
25   test_auth.py::test_key_in_the_url_is_refused
26   test_auth.py::test_over_the_per_key_rate_is_429_with_retry_after;
     test_overload.py::test_over_the_global_admission_limit_is_503_with_retry_after
27   test_security.py::test_traversal_is_404
28   test_bad_inputs.py::test_row28_guessed_ids_are_404, ::test_row28_ids_of_shared_things_are_random_128_bits,
     ::test_row28_another_dashboard_is_404_for_a_display_key;
     test_fuzz.py::test_revoking_a_malformed_key_id_is_422_and_an_unknown_one_404
29   test_bad_inputs.py::test_row29_markup_and_formulas_are_stored_as_text_and_csv_neutralised,
     ::test_row29_pages_carry_no_inline_script_and_csp_forbids_it,
     ::test_row29_the_scorecard_page_shows_markup_as_text (Chromium; browser marker);
     test_security.py::test_security_headers_on_pages_and_api; test_snapshots.py::test_csv_cells_are_neutralised
30   test_ws.py::test_foreign_origin_is_refused_at_the_handshake (403), ::test_inbound_limits_size_and_rate
     (1009, 1008 flooding, error frame); test_auth.py::test_sockets_need_a_key_of_the_right_dashboard_and_close_on_revocation
     (no token 401, other dashboard 403); test_bad_inputs.py::test_row30_websocket_bad_token_unknown_message_and_scope
===  ===================================================================================================

Issue 10 (hardening round 2), store side: the attack of each item reproduced, on both stores, in
``tests/test_hardening_store.py``:

====  ==================================================================================================
item  tests (test_hardening_store.py)
====  ==================================================================================================
 1    test_item01_values_past_the_bound_are_422_and_the_bound_is_configurable (1.7e308 -> 422 ``value``);
      test_item01_a_poisoning_request_fails_alone_in_its_group (one group: 9 x 202, the overflow 422,
      Python and SQL side); test_item01_legitimate_requests_are_all_served_while_an_attacker_loops
      (60 / 60 x 202, bound on and off); test_item01_a_store_holding_non_finite_partials_is_flagged_never_a_500
      (NaN / inf partials: 200, values null, reconciliation names the cause)
 2    test_item02_instants_outside_the_supported_range_are_422 (year 1 with offset, 1969, 9999; configurable);
      test_item02_one_ancient_stored_period_fails_its_dashboard_only (counted, ``job_failed`` notices,
      other dashboards cut and restated)
 6    test_item06_gzip_members_all_decoded_incomplete_streams_refused (flushed stream, cut trailer,
      trailing bytes, bad CRC / length -> 400, nothing stored; two members -> 1000 accepted; bomb limit
      over all members)
10    test_item10_catch_up_starts_at_the_horizon_not_at_a_1970_event;
      test_item10_late_data_is_found_by_a_constant_number_of_queries (2 statements per dashboard a pass
      at 10 and at 30 snapshots)
11    test_item11_extreme_dates_are_422_problems_in_series_snapshots_reconciliation_cuts;
      test_item11_an_unexpected_error_is_a_500_problem_without_internals
12    test_item12_month_labels_are_zero_padded_for_every_year; test_item12_a_stored_month_label_is_readable_by_the_api
17    test_item17_values_past_the_cap_roll_up_as_other (``__other__``, raw kept, 422 on a folded filter,
      reloaded at restart)
18    test_item18_late_events_every_minute_make_one_version_per_interval (12 late minutes: 2 versions)
====  ==================================================================================================
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from app.clock import ManualClock
from app.metrics.calendar import to_us
from app.store.reads import event_count
from tests.helpers import PACKS_DIR, sample, strict_json

JSON = {"content-type": "application/json"}
NDJSON = {"content-type": "application/x-ndjson"}
NOW = datetime(2024, 7, 1, 1, 0, tzinfo=UTC)  # June 2024 is over: its days and month can be cut
FRONTEND = Path(__file__).resolve().parents[1] / "frontend"


@pytest.fixture
async def srv(make_settings, start_server):
    """A server on the generic test pack with the default limits and a fixed clock (``NOW``)."""
    return await start_server(make_settings(packs_dir=PACKS_DIR), clock=ManualClock(NOW))


async def stored(srv) -> int:
    async with srv.runtime.engine.connect() as conn:
        return await event_count(conn)


def problem_of(resp, *statuses: int) -> dict:
    """The problem+json body of ``resp``, asserting its status is one of ``statuses``."""
    assert resp.status_code in statuses, (resp.status_code, resp.text[:300])
    assert resp.headers["content-type"] == "application/problem+json"
    body = strict_json(resp.text)
    assert body["status"] == resp.status_code and body["title"] and body["detail"]
    return body


def fields_of(body: dict) -> list[str]:
    return [e["field"] for e in body.get("errors", [])]


# --- 2: malformed JSON names the byte offset; NDJSON the line --------------------------------------


async def test_row02_malformed_json_names_the_byte_offset_and_ndjson_the_line(srv, client_for):
    truncated = b'{"type": "sample", "ts": '
    cut_array = b'[{"type":"sample","ts":"2024-06-10T10:00:00Z"},'
    bad_char = b'{"type" "sample"}'
    async with client_for(srv) as client:
        for body, offset in ((truncated, len(truncated)), (cut_array, len(cut_array)), (bad_char, 8)):
            problem = problem_of(await client.post("/api/v1/events", content=body, headers=JSON), 400)
            assert f"byte {offset}" in problem["detail"], (body, problem["detail"])
        lines = b'{"type":"sample","ts":"2024-06-10T10:00:00Z"}\n\n{"type":"sample","ts":"2024-06-10T10:0\n'
        problem = problem_of(await client.post("/api/v1/events", content=lines, headers=NDJSON), 400)
        assert "line 3" in problem["detail"]
    assert await stored(srv) == 0


# --- 6: a chunked body growing past the limit ------------------------------------------------------


async def test_row06_chunked_body_past_the_limit_is_413_and_the_socket_is_closed(make_settings, start_server):
    """The 413 comes once the limit is crossed (not after the whole body), and the server closes
    the connection: the reader sees EOF, no keep-alive on a half-read body."""
    srv = await start_server(make_settings(packs_dir=PACKS_DIR, max_body_bytes=64 * 1024))
    host, port = srv.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {srv.keys.ingest['default']}\r\n".encode()
        + b"Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b" " * 8192
    chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
    sent, answer = 0, b""
    try:
        writer.write(head)
        for _ in range(1000):  # up to 8 MB, far past the 64 KiB limit; the server stops us long before
            try:
                writer.write(chunk)
                await writer.drain()
            except ConnectionError:
                break
            sent += len(piece)
            try:  # a chunk every 20 ms at most, until the answer starts (so "sent" is not just buffered)
                answer = await asyncio.wait_for(reader.read(65536), 0.02)
                break
            except TimeoutError:
                pass
            except ConnectionError:
                break
        while answer:  # read until the server closes: EOF (b"") or a reset both mean closed
            try:
                data = await asyncio.wait_for(reader.read(65536), 10)
            except ConnectionError:
                break
            except TimeoutError:
                pytest.fail(f"the server kept the connection open 10 s after its answer: {answer[:120]!r}")
            if not data:
                break
            answer += data
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"connection: close" in answer.lower()
    assert b"limit of 65536 bytes" in answer.split(b"\r\n\r\n", 1)[1]  # the body states the limit
    assert sent < 1024 * 1024, f"{sent} bytes sent before the server refused (limit 64 KiB)"
    assert await stored(srv) == 0


# --- 11: non-finite numbers ------------------------------------------------------------------------

_NON_FINITE = [b'"NaN"', b'"Infinity"', b'"-Infinity"', b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"]


@pytest.mark.parametrize("token", _NON_FINITE, ids=[t.decode() for t in _NON_FINITE])
async def test_row11_non_finite_numbers_are_422_naming_the_field(srv, client_for, token):
    in_value = b'{"type":"sample","ts":"2024-06-10T10:00:00Z","value":' + token + b"}"
    in_dims = b'{"type":"sample","ts":"2024-06-10T10:00:00Z","value":1,"dims":{"host":' + token + b"}}"
    cases = [(in_value, "value")]
    if not token.startswith(b'"'):  # a dim may be the string "NaN" (text); as a number it is refused
        cases.append((in_dims, "dims.host"))
    async with client_for(srv) as client:
        for body, field in cases:
            for media, content in ((JSON, body), (JSON, b"[" + body + b"]"), (NDJSON, body + b"\n")):
                problem = problem_of(await client.post("/api/v1/events", content=content, headers=media), 422)
                # 1e400 in a dim: msgspec refuses the number while decoding the dims map, naming "dims"
                assert {field, field.split(".")[0]} & set(fields_of(problem)), (content, problem)
    assert await stored(srv) == 0


# --- 12: an integer of 100,000 digits --------------------------------------------------------------

HUGE = b"9" * 100_000


@pytest.mark.parametrize(
    "body, media, field",
    [
        (b'{"type":"sample","ts":"2024-06-10T10:00:00Z","value":' + HUGE + b"}", JSON, "value"),
        (b'{"type":"sample","ts":"2024-06-10T10:00:00Z","value":-' + HUGE + b"}", JSON, "value"),
        (b'{"type":"sample","ts":"2024-06-10T10:00:00Z","value":' + HUGE + b"." + HUGE[:10] + b"}", JSON, "value"),
        (b'[{"type":"sample","ts":"2024-06-10T10:00:00Z","dims":{"host":' + HUGE + b"}}]", JSON, "dims"),
        (b'{"type":"sample","ts":"2024-06-10T10:00:00Z","id":' + HUGE + b"}", JSON, "id"),
        (b'{"type":"sample","ts":' + HUGE + b"}", JSON, "ts"),
        (b"[" + HUGE + b"]", JSON, "$"),
        (HUGE, JSON, "$"),
        (b'{"type":"sample","ts":"2024-06-10T10:00:00Z","value":' + HUGE + b"}\n", NDJSON, "value"),
    ],
    ids=["value", "negative", "fraction", "dim", "id", "ts", "array-item", "bare", "ndjson"],
)
async def test_row12_a_100000_digit_integer_is_4xx_never_500(srv, client_for, body, media, field):
    """422 naming the field ("Number out of range"), never 500: the number is not even converted."""
    async with client_for(srv) as client:
        problem = problem_of(await client.post("/api/v1/events", content=body, headers=media), 422)
    assert fields_of(problem) == [field], problem
    assert "out of range" in problem["errors"][0]["message"]
    assert await stored(srv) == 0


# --- 13: 100,000 levels of nesting -----------------------------------------------------------------

DEEP = 100_000


@pytest.mark.parametrize(
    "body, media",
    [
        (b"[" * DEEP + b"]" * DEEP, JSON),
        (b'{"a":' * DEEP + b"1" + b"}" * DEEP, JSON),
        (b'{"type":"sample","ts":"2024-06-10T10:00:00Z","value":' + b"[" * DEEP + b"]" * DEEP + b"}", JSON),
        (b'[{"type":"sample","ts":"2024-06-10T10:00:00Z","dims":' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}]", JSON),
        (b'{"type":"sample","ts":"2024-06-10T10:00:00Z"}\n' + b"[" * DEEP + b"]" * DEEP + b"\n", NDJSON),
        (b"[" * DEEP, JSON),
    ],
    ids=["arrays", "objects", "in-value", "in-dims", "ndjson-line", "unclosed"],
)
async def test_row13_100000_levels_of_nesting_are_400_never_500(srv, client_for, body, media):
    """400 "nested too deeply".  One exception: an NDJSON line that is a deep array is refused as
    soon as its first character shows it is not an event object, before any nesting is read:
    422 naming its index and line (a 4xx, never 500, as the row asks, with more detail than a 400)."""
    async with client_for(srv) as client:
        problem = problem_of(await client.post("/api/v1/events", content=body, headers=media), 400, 422)
        assert (await client.get("/healthz")).status_code == 200  # the process survived
    if media == NDJSON:
        assert problem["status"] == 422 and problem["errors"] == [
            {"index": 1, "line": 2, "field": "$", "message": "Expected `object`, got `array`"}
        ], problem
    else:
        assert problem["status"] == 400 and "nested too deeply" in problem["detail"], problem
    assert await stored(srv) == 0


# --- 16: future skew ---------------------------------------------------------------------------------


@pytest.mark.parametrize("skew_s", [None, 60.0])
async def test_row16_future_skew_is_422_past_the_configured_limit_only(make_settings, start_server, client_for, skew_s):
    settings = make_settings(packs_dir=PACKS_DIR, **({} if skew_s is None else {"max_future_skew_s": skew_s}))
    limit_s = settings.max_future_skew_s
    assert limit_s == (300.0 if skew_s is None else skew_s)
    srv = await start_server(settings, clock=ManualClock(NOW))

    def stamp(s: float) -> str:
        return (NOW + timedelta(seconds=s)).isoformat().replace("+00:00", "Z")

    async with client_for(srv) as client:
        ahead = problem_of(
            await client.post(
                "/api/v1/events", json=[sample(stamp(limit_s - 1), id="ok"), sample(stamp(limit_s + 1), id="ahead")]
            ),
            422,
        )
        assert ahead["errors"] == [
            {"index": 1, "field": "ts", "message": f"ts is more than {limit_s:g} s in the future"}
        ]
        assert await stored(srv) == 0
        ok = await client.post("/api/v1/events", json=sample(stamp(limit_s - 1), id="ok"))
        assert ok.status_code == 202 and ok.json() == {"accepted": 1, "duplicates": 0}
    assert await stored(srv) == 1


# --- 17: lateness ----------------------------------------------------------------------------------


async def test_row17_older_than_the_lateness_limit_is_422_within_it_accepted_and_marked_late(
    make_settings, start_server, client_for
):
    """``PULSEBOARD_MAX_LATENESS_S`` = 3 days: an event 4 days old is refused saying so; one a day old,
    for a day already cut, is accepted, and the day's snapshot is restated counting it as late."""
    srv = await start_server(make_settings(packs_dir=PACKS_DIR, max_lateness_s=3 * 86400), clock=ManualClock(NOW))
    async with client_for(srv) as client:
        resp = await client.post("/api/v1/events", json=sample("2024-06-30T10:00:00Z", 4, id="on-time"))
        assert resp.status_code == 202
        await srv.runtime.snapshots.run_due()
        first = (await client.get("/api/v1/snapshots/generic-wall/day/2024-06-30")).json()
        assert (first["version"], first["status"], first["late_events"]) == (1, "final", 0)
        too_old = problem_of(await client.post("/api/v1/events", json=sample("2024-06-26T23:59:59Z", 9, id="old")), 422)
        assert too_old["errors"][0]["field"] == "ts"
        assert "older than the lateness limit of 259200 s" in too_old["errors"][0]["message"]
        late = await client.post("/api/v1/events", json=sample("2024-06-30T11:00:00Z", 6, id="late"))
        assert late.status_code == 202 and late.json() == {"accepted": 1, "duplicates": 0}
        assert await srv.runtime.snapshots.restate_pending() != []
        now = (await client.get("/api/v1/snapshots/generic-wall/day/2024-06-30")).json()
        assert (now["version"], now["status"], now["late_events"]) == (2, "restated", 1)
        assert "late events: 1 arrived after version 1 was cut" in now["cause"]
        assert now["kpis"]["sample_count"]["value"] == 2
    assert await stored(srv) == 2


# --- 18: invalid UTF-8, lone surrogates, NUL --------------------------------------------------------

_EV = b'"type":"sample","ts":"2024-06-10T10:00:00Z"'


@pytest.mark.parametrize(
    "body, field",
    [
        (b"{" + _EV + b',"source":"\xff"}', None),
        (b"{" + _EV + b',"dims":{"host":"\xc0\xaf"}}', None),  # overlong encoding of "/"
        (b"{" + _EV + b',"dims":{"host":"caf\xc3"}}', None),  # truncated sequence
        (b"{" + _EV + b',"dims":{"host":"\xed\xa0\x80"}}', None),  # a surrogate encoded in UTF-8
        (b"{" + _EV + b',"source":"\\ud800"}', "source"),
        (b"{" + _EV + b',"id":"x\\udc00"}', "id"),
        (b"{" + _EV + b',"dims":{"host":"\\ud800"}}', "dims.host"),
        (b"{" + _EV + b',"dims":{"\\ud800":"x"}}', "dims.\\ud800"),  # named escaped
        (b"{" + _EV + b',"id":"a\\u0000b"}', "id"),
        (b"{" + _EV + b',"source":"\\u0000"}', "source"),
        (b'{"type":"sam\\u0000ple","ts":"2024-06-10T10:00:00Z"}', "type"),
        (b"{" + _EV + b',"dims":{"ho\\u0000st":"x"}}', None),
        (b"{" + _EV + b',"dims":{"host":"\\u0000"}}', "dims.host"),
    ],
    ids=[
        "ff",
        "overlong",
        "truncated-utf8",
        "utf8-surrogate",
        "surrogate-source",
        "surrogate-id",
        "surrogate-dim",
        "surrogate-dim-name",
        "nul-id",
        "nul-source",
        "nul-type",
        "nul-dim-name",
        "nul-dim",
    ],
)
async def test_row18_invalid_utf8_lone_surrogates_and_nul_are_refused_naming_the_field(srv, client_for, body, field):
    async with client_for(srv) as client:
        for media, content in ((JSON, body), (NDJSON, body + b"\n")):
            problem = problem_of(await client.post("/api/v1/events", content=content, headers=media), 400, 422)
            if field is not None:
                assert problem["status"] == 422 and field in fields_of(problem), problem
        pair = await client.post(
            "/api/v1/events", content=b"{" + _EV + b',"dims":{"host":"\\ud83d\\ude00"}}', headers=JSON
        )  # a valid surrogate pair is fine
        assert pair.status_code == 202
    async with srv.runtime.engine.connect() as conn:
        from sqlalchemy import text

        assert [json.loads(r[0]) for r in await conn.execute(text("SELECT dims FROM event"))] == [
            {"host": "\U0001f600"}
        ]


# --- 19: length, size and count limits ---------------------------------------------------------------


async def test_row19_string_dims_and_name_limits_are_422_stating_the_limit(make_settings, start_server, client_for):
    srv = await start_server(make_settings(packs_dir=PACKS_DIR), clock=ManualClock(NOW))
    ts = "2024-06-10T10:00:00Z"
    cases = [
        ({"type": "sample", "ts": ts, "dims": {"host": "x" * 1_000_000}}, "dims.host", "longer than 1024 characters"),
        ({"type": "sample", "ts": ts, "dims": {f"d{i}": i for i in range(21)}}, "dims", "at most 20 allowed"),
        ({"type": "sample", "ts": ts, "dims": {"k" * 65: "x"}}, f"dims.{'k' * 64}", "1-64 characters"),
        ({"type": "s" * 129, "ts": ts}, "type", "1-128 characters"),
        ({"type": "sample", "ts": ts, "id": "i" * 1_000_000}, "id", "1-128 characters"),
        # host is rolled up per value ("host=VALUE" keys of at most 300 characters): was a 503 on every
        # retry on PostgreSQL (value too long for VARCHAR(300), failing the whole shared commit), 202 on SQLite
        ({"type": "sample", "ts": ts, "dims": {"host": "h" * 296}}, "dims.host", "longer than 295 characters"),
    ]
    async with client_for(srv) as client:
        for event, field, says in cases:
            problem = problem_of(await client.post("/api/v1/events", json=event), 422)
            found = [e for e in problem["errors"] if e["field"] == field]
            assert found and says in found[0]["message"], (field, problem["errors"])
        ok = await client.post(
            "/api/v1/events",
            json={
                "type": "sample",
                "ts": ts,
                "id": "fits",
                "dims": {**{f"d{i}": i for i in range(18)}, "note": "x" * 1024, "host": "h" * 295},
            },
        )
        assert ok.status_code == 202, ok.text
        series = await client.get(
            "/api/v1/kpis/sample_count/series",
            params={
                "grain": "day",
                "start": "2024-06-10T00:00:00Z",
                "end": "2024-06-11T00:00:00Z",
                "dims.host": "h" * 295,
            },
        )
        assert series.json()["points"][0]["value"] == 1
    assert await stored(srv) == 1
    small = await start_server(make_settings(packs_dir=PACKS_DIR, max_string_chars=10, max_dims=2))
    async with client_for(small) as client:
        problem = problem_of(
            await client.post(
                "/api/v1/events", json={"type": "sample", "ts": ts, "dims": {"host": "x" * 11, "a": 1, "b": 2}}
            ),
            422,
        )
        assert {(e["field"], e["message"].split(" ", 1)[1]) for e in problem["errors"]} >= {
            ("dims.host", "longer than 10 characters"),
            ("dims", "has 3 keys; at most 2 allowed"),
        }


# --- 23, 24: keys -------------------------------------------------------------------------------------


async def test_row23_every_bad_key_gets_the_same_401_with_www_authenticate(srv, client_for):
    now_us = to_us(NOW)
    revoked, info = await srv.runtime.keys.create("read", "revoked", now_us)
    await srv.runtime.keys.revoke(info["id"], now_us)
    expired, _ = await srv.runtime.keys.create("read", "expired", now_us - 10, expires_us=now_us - 1)
    expired_ingest, _ = await srv.runtime.keys.create(
        "ingest", "expired", now_us - 10, source="default", expires_us=now_us - 1
    )
    presented = {
        "none": None,
        "malformed": "not a key",
        "unknown": "pbr_" + secrets.token_urlsafe(30),
        "revoked": revoked,
        "expired": expired,
        "expired-ingest": expired_ingest,
        "basic": None,
    }
    answers = {}
    async with client_for(srv, auth=False) as client:
        for kind, key in presented.items():
            headers = {} if key is None else {"Authorization": f"Bearer {key}"}
            if kind == "basic":
                headers = {"Authorization": "Basic dXNlcjpwYXNz"}
            for method, path, body in (
                ("GET", "/api/v1/kpis", None),
                ("POST", "/api/v1/events", sample("2024-06-10T10:00:00Z", id=f"k-{kind}")),
            ):
                resp = await client.request(method, path, json=body, headers=headers)
                assert resp.status_code == 401, (kind, path, resp.status_code, resp.text)
                assert resp.headers["www-authenticate"] == 'Bearer realm="pulseboard"'
                assert resp.headers["content-type"] == "application/problem+json"
                answers[(kind, path)] = resp.content
    assert len(set(answers.values())) == 1, answers  # nothing tells the reasons apart
    assert await stored(srv) == 0


async def test_row24_a_valid_key_of_the_wrong_scope_is_403(srv, client_for):
    keys = srv.keys
    display, ingest = keys.display["generic-wall"], keys.ingest["default"]
    wrong = [
        (display, "POST", "/api/v1/events", sample("2024-06-10T10:00:00Z", id="w1")),
        (keys.read, "POST", "/api/v1/events", sample("2024-06-10T10:00:00Z", id="w2")),
        (keys.admin, "POST", "/api/v1/events", sample("2024-06-10T10:00:00Z", id="w3")),
        (display, "GET", "/api/v1/kpis", None),
        (display, "GET", "/api/v1/snapshots/generic-wall/day/2024-06-10", None),
        (ingest, "GET", "/api/v1/kpis", None),
        (ingest, "GET", "/api/v1/dashboards/generic-wall", None),
        (ingest, "GET", "/api/v1/keys", None),
        (ingest, "POST", "/api/v1/keys", {"scope": "admin"}),
        (keys.read, "GET", "/api/v1/keys", None),
        (keys.read, "POST", "/api/v1/keys", {"scope": "admin"}),
        (keys.read, "POST", "/api/v1/snapshots/generic-wall/cut", {"grain": "day", "period": "2024-06-10"}),
        (display, "POST", "/api/v1/scorecards/generic-wall/2024-06/publish", {"by": "x"}),
    ]
    async with client_for(srv, auth=False) as client:
        before = len((await client.get("/api/v1/keys", headers=srv.auth("admin"))).json())
        for key, method, path, body in wrong:
            resp = await client.request(method, path, json=body, headers={"Authorization": f"Bearer {key}"})
            problem = problem_of(resp, 403)
            assert problem["title"] == "Forbidden", (key[:4], method, path)
        assert len((await client.get("/api/v1/keys", headers=srv.auth("admin"))).json()) == before
    assert await stored(srv) == 0


# --- 28: guessed and foreign ids ------------------------------------------------------------------------

HEX128 = re.compile(r"^[0-9a-f]{32}$")


async def _june_with_a_note(srv, client) -> dict:
    """June 2024 cut (days and month) with one note on the scorecard; the note's API answer."""
    events = [sample(f"2024-06-{d:02d}T10:{i:02d}:00Z", 8, id=f"j{d}-{i}") for d in (3, 4) for i in range(3)]
    assert (await client.post("/api/v1/events", json=events)).status_code == 202
    await srv.runtime.snapshots.run_due()
    note = await client.post(
        "/api/v1/scorecards/generic-wall/2024-06/commentary",
        json={"kpi": "sample_mean", "text": "fine", "author": "Ana"},
    )
    assert note.status_code == 201, note.text
    return note.json()


async def test_row28_ids_of_shared_things_are_random_128_bits(srv, client_for):
    """Snapshot, commentary and key ids are 32 hex digits (128 bits) from a CSPRNG; pairing
    secrets (what collects a display key) are >= 256 bits; pairing codes are short by design
    (typed by a person) and only an admin can use one."""
    async with client_for(srv) as client:
        note = await _june_with_a_note(srv, client)
        snaps = [
            (await client.get(f"/api/v1/snapshots/generic-wall/day/2024-06-{d:02d}")).json()["id"] for d in range(3, 31)
        ]  # cut from the first day with events
        snaps.append((await client.get("/api/v1/snapshots/generic-wall/month/2024-06")).json()["id"])
        notes = [note["id"]] + [
            (
                await client.post(
                    "/api/v1/scorecards/generic-wall/2024-06/commentary", json={"kpi": "sample_count", "text": f"n{i}"}
                )
            ).json()["id"]
            for i in range(5)
        ]
        made = [(await client.post("/api/v1/keys", json={"scope": "read", "name": f"k{i}"})).json() for i in range(5)]
        key_ids = [k["id"] for k in (await client.get("/api/v1/keys", headers=srv.auth("admin"))).json()]
        assert {k["id"] for k in made} <= set(key_ids)
        for kind, ids in (("snapshot", snaps), ("commentary", notes), ("key", key_ids)):
            assert all(HEX128.match(i) for i in ids), (kind, ids)
            assert len(set(ids)) == len(ids), kind
            # 128 random bits: every hex digit position varies across the ids (not a counter or a clock).
            if len(ids) >= 20:
                assert all(len({i[p] for i in ids}) > 1 for p in range(32)), (kind, ids)
        for k in made:  # the key itself: typed prefix + >= 160 random bits (base64url: 6 bits a character)
            assert re.fullmatch(r"pbr_[A-Za-z0-9_-]{27,}", k["key"]), k
        pairings = [(await client.post("/api/v1/pairings")).json() for _ in range(3)]
    for p in pairings:
        assert re.fullmatch(r"[A-HJ-NP-Z2-9]{6,}", p["code"]), p  # 5 bits a symbol, no 0/O/1/I
        assert len(p["secret"]) >= 43 and re.fullmatch(r"[A-Za-z0-9_-]+", p["secret"]), p  # >= 256 bits
    assert len({p["secret"] for p in pairings}) == 3 and len({p["code"] for p in pairings}) == 3


async def test_row28_guessed_ids_are_404(srv, client_for):
    guess = secrets.token_hex(16)
    async with client_for(srv) as client:
        await _june_with_a_note(srv, client)
        for path in (
            f"/api/v1/snapshots/{guess}/day/2024-06-03",
            f"/api/v1/snapshots/generic-wall/day/{guess}",
            f"/api/v1/snapshots/{guess}/month/2024-06/versions",
            f"/api/v1/scorecards/{guess}/2024-06",
            f"/api/v1/reconciliation/{guess}/day/2024-06-03",
            f"/api/v1/dashboards/{guess}",
            f"/api/v1/kpis/{guess}/series?grain=day&start=2024-06-01T00:00:00Z&end=2024-06-02T00:00:00Z",
            "/api/v1/snapshots/contact-centre/day/2024-06-03",  # another dashboard, never cut
            f"/wall/{guess}",
            f"/day/{guess}/2024-06-03",
            f"/scorecard/{guess}/2024-06",
        ):
            problem_of(await client.get(path), 404)
        problem_of(await client.delete(f"/api/v1/keys/{guess}", headers=srv.auth("admin")), 404)
        problem_of(
            await client.post(
                f"/api/v1/scorecards/{guess}/2024-06/commentary", json={"kpi": "sample_mean", "text": "x"}
            ),
            404,
        )
        problem_of(
            await client.post(
                "/api/v1/scorecards/contact-centre/2024-06/commentary", json={"kpi": "sample_mean", "text": "x"}
            ),
            404,
        )  # its KPI, another card
        problem_of(await client.post("/api/v1/pairings/ZZZZ2222/approve", json={"dashboard": "generic-wall"}), 404)
        problem_of(await client.post("/api/v1/pairings/claim", json={"secret": secrets.token_urlsafe(32)}), 404)


async def test_row28_another_dashboard_is_404_for_a_display_key(srv, client_for):
    async with client_for(srv, auth=False) as client:
        own = await client.get("/api/v1/dashboards/generic-wall", headers=srv.auth("display", "generic-wall"))
        assert own.status_code == 200
        for slug in ("contact-centre", secrets.token_hex(16)):
            problem_of(await client.get(f"/api/v1/dashboards/{slug}", headers=srv.auth("display", "generic-wall")), 404)


# --- 29: markup and formulas ------------------------------------------------------------------------------

PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(2)>",
    "javascript:alert(3)",
    '=HYPERLINK("http://evil.example","click")',
    "+SUM(1,2)",
    "@cmd",
    "-2+3",
]


async def test_row29_markup_and_formulas_are_stored_as_text_and_csv_neutralised(srv, client_for):
    async with client_for(srv) as client:
        await _june_with_a_note(srv, client)
        events = [sample("2024-06-05T10:00:00Z", 1, id=f"x{i}", dims={"host": p}) for i, p in enumerate(PAYLOADS)]
        assert (await client.post("/api/v1/events", json=events)).status_code == 202
        for p in PAYLOADS:  # dims: stored as text, found again by exact value, echoed as JSON text
            resp = await client.get(
                "/api/v1/kpis/sample_count/series",
                params={"grain": "day", "start": "2024-06-05T00:00:00Z", "end": "2024-06-06T00:00:00Z", "dims.host": p},
            )
            assert resp.headers["content-type"] == "application/json"
            assert resp.json()["dims"] == {"host": p} and resp.json()["points"][0]["value"] == 1, p
        for i, p in enumerate(PAYLOADS):  # names and commentary
            made = await client.post("/api/v1/keys", json={"scope": "read", "name": p})
            assert made.status_code == 201 and made.json()["name"] == p
            note = await client.post(
                "/api/v1/scorecards/generic-wall/2024-06/commentary",
                json={"kpi": "sample_mean" if i % 2 else "sample_count", "text": p, "author": p},
            )
            assert note.status_code == 201 and (note.json()["text"], note.json()["author"]) == (p, p)
        lone = await client.post(
            "/api/v1/scorecards/generic-wall/2024-06/commentary",
            json={"kpi": "sample_p95", "text": "x", "author": PAYLOADS[3]},
        )  # alone in its cell
        assert lone.status_code == 201
        listed = {k["name"] for k in (await client.get("/api/v1/keys", headers=srv.auth("admin"))).json()}
        assert set(PAYLOADS) <= listed
        card = (await client.get("/api/v1/scorecards/generic-wall/2024-06")).json()
        texts = [(n["author"], n["text"]) for r in card["kpis"] for n in r["commentary"]]
        assert {(p, p) for p in PAYLOADS} <= set(texts)
        exported = await client.get("/api/v1/scorecards/generic-wall/2024-06/export.csv")
        assert exported.headers["content-type"].startswith("text/csv")
        cells = [c for row in csv.reader(io.StringIO(exported.text)) for c in row]
        notes = [c for c in cells if "alert(" in c or "HYPERLINK" in c or "SUM(" in c or "@cmd" in c]
        assert notes, cells
        for cell in cells:  # no cell a spreadsheet would run: formulas start with = + - @ tab or CR
            assert not cell.startswith(("=", "+", "@", "\t", "\r")), cell
            assert not cell.startswith("-") or re.fullmatch(r"-\d+(\.\d+)?(e-?\d+)?", cell), cell
        assert f"'{PAYLOADS[3]}: x" in cells, notes  # the formula got its quote
        # Markup in a path comes back in a JSON problem, never as HTML.
        for path in ("/wall/<script>alert(1)<%2Fscript>", "/api/v1/dashboards/<img src=x onerror=alert(1)>"):
            resp = await client.get(path)
            assert resp.status_code == 404 and resp.headers["content-type"] == "application/problem+json"
            assert resp.headers["x-content-type-options"] == "nosniff"


async def test_row29_pages_carry_no_inline_script_and_csp_forbids_it(srv, client_for):
    """The HTML pages are static (data arrives as JSON and is put in as text nodes): no inline
    script, no inline event handler, no ``javascript:`` URL; and the CSP would block any."""
    async with client_for(srv) as client:
        await _june_with_a_note(srv, client)
        for path in (
            "/wall/generic-wall",
            "/day/generic-wall/2024-06-03",
            "/scorecard/generic-wall/2024-06",
            "/pair",
            "/login",
        ):
            resp = await client.get(path)
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html"), path
            html = resp.text
            scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, flags=re.S | re.I)
            assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts), (path, scripts)
            assert not re.search(r"\son[a-z]+\s*=", html, flags=re.I), path
            assert "javascript:" not in html.lower(), path
            csp = dict(part.strip().split(" ", 1) for part in resp.headers["content-security-policy"].split(";"))
            assert csp["script-src"] == "'self'", csp
            assert csp["object-src"] == "'none'" and csp["base-uri"] == "'none'"
    for js in FRONTEND.glob("*/*.js"):  # and no script writes markup from data
        assert not re.search(r"\.innerHTML\s*=|insertAdjacentHTML|document\.write", js.read_text()), js


@pytest.mark.browser
async def test_row29_the_scorecard_page_shows_markup_as_text(srv, client_for):
    """Headless Chromium on the scorecard page: notes and authors that look like markup or formulas
    are shown as their literal text; no script runs, no element is injected."""
    from tests.test_pages_browser import CHROMIUM, READY_CARD, _playwright

    async_playwright = _playwright()
    async with client_for(srv) as client:
        await _june_with_a_note(srv, client)
        for i, p in enumerate(PAYLOADS[:4]):
            resp = await client.post(
                "/api/v1/scorecards/generic-wall/2024-06/commentary",
                json={"kpi": "sample_mean", "text": p, "author": PAYLOADS[3 - i]},
            )
            assert resp.status_code == 201
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        try:
            context = await browser.new_context()
            await context.add_cookies([{"name": "pb_key", "value": srv.keys.admin, "url": srv.url}])
            page = await context.new_page()
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), asyncio.ensure_future(d.dismiss())))
            await page.goto(f"{srv.url}/scorecard/generic-wall/2024-06")
            await page.wait_for_function(READY_CARD, timeout=20_000)
            notes = await page.eval_on_selector_all(
                "#kpi-sample_mean li.note",
                """ns => ns.map(n =>
                [n.querySelector('.note-text').textContent, n.querySelector('.note-meta').textContent])""",
            )
            shown = {text: meta.split(", 1 Jul 2024")[0] for text, meta in notes}  # meta: "— author, date"
            assert shown == {"fine": "— Ana", **{p: "— " + PAYLOADS[3 - i] for i, p in enumerate(PAYLOADS[:4])}}, notes
            injected = await page.evaluate("""() => [document.querySelectorAll('#scorecard script, #scorecard img').length,
                document.querySelectorAll('a[href^="javascript:"]').length]""")
            assert injected == [0, 0]
            await page.wait_for_load_state("networkidle")  # every fetch the page started has ended (no onerror left)
            assert dialogs == []
        finally:
            await browser.close()


# --- 30: WebSockets -------------------------------------------------------------------------------------


async def test_row30_websocket_bad_token_unknown_message_and_scope(srv):
    wall = srv.ws_url + "/ws/dashboards/generic-wall"
    for headers in (
        {"Authorization": "Bearer pbr_" + secrets.token_urlsafe(30)},
        {"Authorization": "Bearer x"},
        {"Authorization": f"Bearer {srv.keys.ingest['default']}"},
    ):
        with pytest.raises(InvalidStatus) as info:
            async with connect(wall, additional_headers=headers):
                pass
        assert info.value.response.status_code == (403 if "pbi_" in headers["Authorization"] else 401)
    with pytest.raises(InvalidStatus) as info:  # a display key of another dashboard
        async with connect(
            srv.ws_url + "/ws/dashboards/contact-centre", additional_headers=srv.auth("display", "generic-wall")
        ):
            pass
    assert info.value.response.status_code in (403, 404)
    async with connect(wall, additional_headers=srv.auth("display", "generic-wall")) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "snapshot"
        for message in ('{"type":"nope"}', '{"type":"subscribe","dashboard":"contact-centre"}', "not json"):
            await ws.send(message)
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
            while reply["type"] == "heartbeat":
                reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert reply["type"] == "error", (message, reply)
            assert "tiles" not in reply and "contact-centre" not in json.dumps(reply.get("tiles", {}))
