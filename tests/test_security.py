"""Security headers and path traversal (BAD_INPUTS 27)."""

import pytest


async def test_security_headers_on_pages_and_api(client):
    for path in ("/wall/contact-centre", "/api/v1/kpis", "/static/wall/wall.js", "/api/v1/nope"):
        resp = await client.get(path)
        assert resp.headers["x-content-type-options"] == "nosniff"
        csp = resp.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-eval" not in csp and "frame-ancestors 'none'" in csp
        assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]


@pytest.mark.parametrize(
    "path",
    [
        "/static/..%2f..%2fetc/passwd",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "/static/%252e%252e/etc/passwd",
        "/wall/..%2fx",
        "/wall/../x",
        "/day/contact-centre/..%2f..%2fetc",
        "/vendor/..%2fapp%2fmain.py",
        "/api/v1/snapshots/..%2f/day/2024-01-01",
    ],
)
async def test_traversal_is_404(client, path):
    resp = await client.get(path)
    assert resp.status_code == 404, (path, resp.status_code, resp.text[:200])
    assert "root:" not in resp.text
