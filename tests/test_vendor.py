"""The chart library: from npm (package-lock.json), served pre-compressed under a versioned URL
with immutable cache headers; the pages name that URL; no global response compression."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import httpx
import pytest

from app import resources
from app.api.vendor import IMMUTABLE_CACHE_CONTROL, accepts_gzip, assets, vendor_url

ROOT = Path(__file__).resolve().parent.parent
# The store does not matter here: one store is enough.
one_store = pytest.mark.parametrize("store_kind", ["sqlite"])


def locked_plotly_version() -> str:
    lock = json.loads((ROOT / "package-lock.json").read_text(encoding="utf-8"))
    return lock["packages"]["node_modules/plotly.js-dist-min"]["version"]


def test_the_url_is_the_locked_npm_version():
    version = locked_plotly_version()
    assert vendor_url("plotly") == f"/vendor/plotly-{version}.min.js"
    asset = assets()["plotly"]
    assert (asset.package, asset.version) == ("plotly.js-dist-min", version)
    assert asset.path.parent == resources.vendor_dir()
    assert asset.path.read_bytes().startswith(f"/**\n* plotly.js v{version}\n".encode())
    assert gzip.decompress(asset.gzip_path.read_bytes()) == asset.path.read_bytes()


@one_store
@pytest.mark.parametrize("page", ["/day/contact-centre/1999-08-02", "/scorecard/contact-centre/1999-08"])
async def test_pages_load_the_versioned_chart_url(client, page):
    resp = await client.get(page)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/html; charset=utf-8"
    scripts = re.findall(r'<script src="([^"]+)"', resp.text)
    assert f"/vendor/plotly-{locked_plotly_version()}.min.js" in scripts
    assert "{{" not in resp.text


async def _raw_get(client: httpx.AsyncClient, url: str, accept_encoding: str) -> tuple[httpx.Response, bytes]:
    """GET without decoding the body (httpx would gunzip it): the bytes as sent."""
    async with client.stream("GET", url, headers={"Accept-Encoding": accept_encoding}) as resp:
        raw = b"".join([chunk async for chunk in resp.aiter_raw()])
    return resp, raw


@one_store
async def test_gzip_to_clients_that_accept_it(client):
    asset = assets()["plotly"]
    resp, raw = await _raw_get(client, asset.url, "gzip, deflate, br")
    assert resp.status_code == 200
    assert resp.headers["content-encoding"] == "gzip"
    assert resp.headers["content-type"] == "text/javascript; charset=utf-8"
    assert resp.headers["cache-control"] == "public, max-age=31536000, immutable" == IMMUTABLE_CACHE_CONTROL
    assert resp.headers["vary"] == "Accept-Encoding"
    assert raw == asset.gzip_path.read_bytes()
    assert int(resp.headers["content-length"]) == len(raw) < len(asset.path.read_bytes()) / 3
    assert gzip.decompress(raw) == asset.path.read_bytes()


@one_store
@pytest.mark.parametrize("accept_encoding", ["identity", "gzip;q=0, br", "br", ""])
async def test_plain_to_clients_that_do_not(client, accept_encoding):
    asset = assets()["plotly"]
    resp, raw = await _raw_get(client, asset.url, accept_encoding)
    assert resp.status_code == 200
    assert "content-encoding" not in resp.headers
    assert resp.headers["cache-control"] == IMMUTABLE_CACHE_CONTROL
    assert resp.headers["vary"] == "Accept-Encoding"
    assert raw == asset.path.read_bytes()
    assert int(resp.headers["content-length"]) == len(raw) == 4_834_409


@one_store
async def test_head_answers_without_a_body(client):
    asset = assets()["plotly"]
    resp = await client.head(asset.url, headers={"Accept-Encoding": "gzip"})
    assert resp.status_code == 200
    assert resp.headers["content-encoding"] == "gzip"
    assert int(resp.headers["content-length"]) == asset.gzip_path.stat().st_size
    assert resp.content == b""


@one_store
@pytest.mark.parametrize(
    "name",
    [
        "plotly.min.js",  # the old unversioned name
        "plotly-0.0.1.min.js",  # another version
        f"plotly-{locked_plotly_version()}.min.js.gz",  # the gzip copy is not addressable by name
        "manifest.json",  # in the folder, but not an asset
        "plotly.js-dist-min.LICENSE",
        "..%2fmanifest.json",
    ],
)
async def test_unknown_names_are_404(client, name):
    resp = await client.get(f"/vendor/{name}")
    assert resp.status_code == 404, resp.text[:200]
    assert "cache-control" not in resp.headers or "immutable" not in resp.headers["cache-control"]


@one_store
@pytest.mark.parametrize("path", ["/static/day/day.js", "/wall/contact-centre", "/openapi.json", "/api/v1/kpis"])
async def test_no_global_response_compression(client, path):
    """The gzip middleware is gone: pages, scripts and JSON go as they are, even to gzip clients."""
    resp, raw = await _raw_get(client, path, "gzip")
    assert resp.status_code == 200
    assert "content-encoding" not in resp.headers
    assert len(raw) == int(resp.headers["content-length"])


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("gzip", True),
        ("GZIP", True),
        ("deflate, gzip;q=1.0, *;q=0.5", True),
        ("x-gzip", True),
        ("br;q=1, gzip;q=0.001", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("*;q=0.5, gzip;q=0", False),
        ("gzip; q=0", False),
        ("gzip;q=zero", False),
        ("*;q=0", False),
        ("identity", False),
        ("br, deflate", False),
        ("", False),
        (None, False),
    ],
)
def test_accept_encoding(header, accepted):
    assert accepts_gzip(header) is accepted
