"""Bad input gets a clear problem+json answer and stores nothing (CONTRACT §2, BAD_INPUTS.md)."""

from __future__ import annotations

import asyncio
import gzip

import pytest

from app.store.reads import event_count
from tests.helpers import PACKS_DIR, sample, strict_json

JSON = {"content-type": "application/json"}
NDJSON = {"content-type": "application/x-ndjson"}


@pytest.fixture
async def srv(make_settings, start_server):
    return await start_server(make_settings(packs_dir=PACKS_DIR, max_body_bytes=512 * 1024, max_batch_events=2000))


async def stored(srv) -> int:
    async with srv.runtime.engine.connect() as conn:
        return await event_count(conn)


def assert_problem(resp, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = strict_json(resp.text)
    assert body["status"] == status and body["title"] and body["detail"]
    return body


@pytest.mark.parametrize(
    "content, headers, status, needle",
    [
        (b"", JSON, 400, "empty"),
        (b'{"type": "sample", "ts": ', JSON, 400, "malformed"),
        (b'{"type":"sample","ts":"2024-01-01T00:00:00Z"}\n{"type": oops}\n', NDJSON, 400, "line 2"),
        (b'{"type":"sample","ts":"2024-01-01T00:00:00Z"}', {}, 415, "application/json"),
        (b'{"type":"sample","ts":"2024-01-01T00:00:00Z"}', {"content-type": "text/plain"}, 415, "application/x-ndjson"),
        (b"[" * 30_000 + b"]" * 30_000, JSON, 400, "deeply"),
        (b'[{"type":"sample","ts":"2024-01-01T00:00:00Z","value":' + b"9" * 100_000 + b"}]", JSON, 422, "invalid"),
    ],
)
async def test_malformed_requests_store_nothing(srv, client_for, content, headers, status, needle):
    async with client_for(srv) as client:
        body = assert_problem(await client.post("/api/v1/events", content=content, headers=headers), status)
        assert needle in body["detail"]
    assert await stored(srv) == 0


def _auth_line(srv) -> bytes:
    return f"Authorization: Bearer {srv.keys.ingest['default']}\r\n".encode()


async def _raw_exchange(srv, head: bytes, chunks: list[bytes]) -> bytes:
    """Send ``head`` then ``chunks`` over a plain socket; return what the server answered."""
    host, port = srv.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head)
        await writer.drain()
        for chunk in chunks:
            if reader.at_eof():
                break
            try:
                writer.write(chunk)
                await writer.drain()
            except ConnectionError:
                break
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


async def test_content_length_over_limit_is_413_before_the_body_is_read(srv):
    head = (
        b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + _auth_line(srv)
        + b"Content-Length: 1000000000\r\n\r\n"
    )
    answer = await _raw_exchange(srv, head, [])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"1000000000 bytes" in answer
    assert await stored(srv) == 0


async def test_chunked_body_growing_past_the_limit_is_413_and_closed(srv):
    head = (
        b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + _auth_line(srv)
        + b"Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b" " * 8192
    chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
    answer = await _raw_exchange(srv, head, [chunk] * 80)  # 640 KiB > 512 KiB
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"connection: close" in answer.lower()
    assert await stored(srv) == 0


async def test_gzip_bomb_and_unknown_encoding(srv, client_for):
    bomb = gzip.compress(b"[" + b" " * 10_000_000 + b"]")
    async with client_for(srv) as client:
        assert_problem(
            await client.post("/api/v1/events", content=bomb, headers={**JSON, "content-encoding": "gzip"}), 413
        )
        assert_problem(
            await client.post("/api/v1/events", content=b"{}", headers={**JSON, "content-encoding": "br"}), 415
        )
        ok = gzip.compress(b'{"type":"sample","ts":"2024-01-01T00:00:00Z"}')
        resp = await client.post("/api/v1/events", content=ok, headers={**JSON, "content-encoding": "gzip"})
        assert resp.status_code == 202
    assert await stored(srv) == 1


async def test_batch_cap_is_413_stating_the_cap(srv, client_for):
    async with client_for(srv) as client:
        events = "\n".join('{"type":"sample","ts":"2024-01-01T00:00:00Z"}' for _ in range(2001))
        body = assert_problem(await client.post("/api/v1/events", content=events.encode(), headers=NDJSON), 413)
        assert "2000" in body["detail"]
    assert await stored(srv) == 0


async def test_one_bad_event_among_1000_stores_none_and_names_its_index(srv, client_for):
    events = [sample(f"2024-01-01T00:{i % 60:02d}:00Z", i, id=f"e{i}") for i in range(1000)]
    events[637]["value"] = "12"
    async with client_for(srv) as client:
        body = assert_problem(await client.post("/api/v1/events", json=events), 422)
        assert body["errors"] == [{"index": 637, "field": "value", "message": body["errors"][0]["message"]}]
    assert await stored(srv) == 0


@pytest.mark.parametrize(
    "event, field",
    [
        ({"ts": "2024-01-01T00:00:00Z"}, "type"),
        ({"type": "sample"}, "ts"),
        ({"type": "sample", "ts": "2024-01-01T00:00:00Z", "value": "12"}, "value"),
        ({"type": "sample", "ts": "2024-01-01T00:00:00Z", "value": True}, "value"),
        ({"type": "sample", "ts": "2024-01-01T00:00:00Z", "value": []}, "value"),
        ({"type": "sample", "ts": "2024-01-01T00:00:00"}, "ts"),
        ({"type": "sample", "ts": "01/02/2024 10:00"}, "ts"),
        ({"type": "sample", "ts": 1704067200}, "ts"),
        ({"type": "sample", "ts": "2999-01-01T00:00:00Z"}, "ts"),
        ({"type": "Sample!", "ts": "2024-01-01T00:00:00Z"}, "type"),
        ({"type": "sample", "ts": "2024-01-01T00:00:00Z", "id": ""}, "id"),
        ({"type": "sample", "ts": "2024-01-01T00:00:00Z", "id": "x" * 129}, "id"),
        ({"type": "sample", "ts": "2024-01-01T00:00:00Z", "source": "s" * 65}, "source"),
        ({"type": "sample", "ts": "2024-01-01T00:00:00Z", "dims": {f"k{i}": i for i in range(21)}}, "dims"),
        ({"type": "sample", "ts": "2024-01-01T00:00:00Z", "dims": {"k": "x" * 2000}}, "dims.k"),
        ({"type": "sample", "ts": "2024-01-01T00:00:00Z", "dims": {"k": {"nested": 1}}}, "dims"),
        ({"type": "sample", "ts": "2024-01-01T00:00:00Z", "dims": {"k": "a\u0000b"}}, "dims.k"),
        ({"type": "sample", "ts": "2024-01-01T00:00:00Z", "colour": "red"}, "colour"),
    ],
)
async def test_invalid_event_is_422_naming_the_field(srv, client_for, event, field):
    async with client_for(srv) as client:
        ok = sample("2024-01-01T00:00:00Z", 1, id="fine")
        body = assert_problem(await client.post("/api/v1/events", json=[ok, event]), 422)
        assert [e["index"] for e in body["errors"]] == [1] * len(body["errors"])
        assert field in [e["field"] for e in body["errors"]], body["errors"]
    assert await stored(srv) == 0


@pytest.mark.parametrize(
    "body, field",
    [
        (b'{"type":"sample","ts":"2024-01-01T00:00:00Z","value":1,"value":2}', "value"),
        (b'{"type":"sample","ts":"2024-01-01T00:00:00Z","dims":{"q":"a","q":"b"}}', "q"),
    ],
)
async def test_duplicate_keys_are_422(srv, client_for, body, field):
    async with client_for(srv) as client:
        problem = assert_problem(await client.post("/api/v1/events", content=body, headers=JSON), 422)
        assert problem["errors"][0]["field"] == field and "twice" in problem["errors"][0]["message"]
    assert await stored(srv) == 0


async def test_ndjson_quirks_accepted(srv, client_for):
    lines = [
        '{"type":"sample","ts":"2024-01-01T00:00:00Z","id":"a"}',
        "",
        "   ",
        '{"type":"sample","ts":"2024-01-01T00:01:00Z","id":"b"}',
    ]
    body = "\ufeff" + "\r\n".join(lines) + "\r\n"
    async with client_for(srv) as client:
        resp = await client.post("/api/v1/events", content=body.encode(), headers=NDJSON)
        assert resp.status_code == 202 and resp.json() == {"accepted": 2, "duplicates": 0}
        bad = "\n".join(lines[:1] + ['{"type":"sample"}'])
        problem = assert_problem(await client.post("/api/v1/events", content=bad.encode(), headers=NDJSON), 422)
        assert problem["errors"][0]["index"] == 1 and problem["errors"][0]["line"] == 2


async def test_lateness_limit_configurable(make_settings, start_server, client_for):
    srv = await start_server(make_settings(packs_dir=PACKS_DIR, max_lateness_s=86400))
    async with client_for(srv) as client:
        old = assert_problem(await client.post("/api/v1/events", json=sample("2001-01-01T00:00:00Z")), 422)
        assert "lateness limit" in old["errors"][0]["message"]
    assert await stored(srv) == 0


async def test_invalid_utf8_is_rejected(srv, client_for):
    async with client_for(srv) as client:
        resp = await client.post(
            "/api/v1/events", content=b'{"type":"sample","ts":"2024-01-01T00:00:00Z","source":"\xff"}', headers=JSON
        )
        assert resp.status_code in (400, 422)
        resp = await client.post(
            "/api/v1/events", content=b'{"type":"sample","ts":"2024-01-01T00:00:00Z","source":"\\ud800"}', headers=JSON
        )
        assert resp.status_code in (400, 422)
    assert await stored(srv) == 0
