"""``/metrics`` (issue 12, item 4): Prometheus text through prometheus_client, readable with a
``read`` or ``admin`` key (or by anyone with ``PULSEBOARD_METRICS_PUBLIC``), 404 when disabled;
and ``pulseboard serve --workers N`` refused where it cannot work (SQLite, no Redis)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from click.testing import CliRunner

from app.cli import main as cli
from tests.cluster_helpers import events

GRAFANA = Path(__file__).resolve().parent.parent / "docs" / "grafana-pulseboard.json"


def _sample(text: str, name: str, labels: str) -> float:
    found = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_metrics_needs_read_or_admin_key(server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        assert (await c.get("/metrics")).status_code == 401
        assert (await c.get("/metrics", headers=server.auth("ingest"))).status_code == 403
        first = await c.get("/metrics", headers=server.auth("read"))
        assert first.status_code == 200
        assert first.headers["content-type"].startswith("text/plain")
        before = _sample(first.text, "pulseboard_ingest_events_total", 'outcome="accepted"')
        body = [{**e, "source": "default"} for e in events(3, "metrics-ev")]
        r = await c.post("/api/v1/events", json=body, headers=server.auth("ingest"))
        assert r.status_code == 202, r.text
        after = (await c.get("/metrics", headers=server.auth("admin"))).text
    assert _sample(after, "pulseboard_ingest_events_total", 'outcome="accepted"') == before + 3
    assert _sample(after, "pulseboard_http_requests_total", 'route="/metrics",status="401"') >= 1
    assert _sample(after, "pulseboard_http_requests_total", 'route="/api/v1/events",status="202"') >= 1
    assert "pulseboard_group_commit_seconds_bucket" in after
    assert "pulseboard_group_commit_events_bucket" in after


async def test_metrics_public_or_disabled(make_settings, start_server) -> None:
    open_srv = await start_server(make_settings(metrics_public=True))
    off_srv = await start_server(make_settings(metrics_enabled=False))
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.get(open_srv.url + "/metrics")
        assert r.status_code == 200 and "pulseboard_leader" in r.text
        off = await c.get(off_srv.url + "/metrics", headers=off_srv.auth("admin"))
        assert off.status_code == 404


def test_workers_refused_without_postgres_or_redis(tmp_path) -> None:
    runner = CliRunner()
    env = {"DATABASE_URL": "", "PULSEBOARD_DATA_DIR": str(tmp_path), "PULSEBOARD_REDIS_URL": ""}
    sqlite = runner.invoke(cli, ["serve", "--workers", "2"], env=env)
    assert sqlite.exit_code == 2
    assert "needs PostgreSQL" in sqlite.output and "one process" in sqlite.output
    env["DATABASE_URL"] = "postgresql://postgres@127.0.0.1:5432/test"
    no_redis = runner.invoke(cli, ["serve", "--workers", "2"], env=env)
    assert no_redis.exit_code == 2 and "needs Redis" in no_redis.output
    bad = runner.invoke(cli, ["serve", "--workers", "0"], env=env)
    assert bad.exit_code == 2 and "--workers" in bad.output


async def test_grafana_dashboard_queries_served_metrics(make_settings, start_server) -> None:
    """Every metric docs/grafana-pulseboard.json plots is one /metrics serves."""
    srv = await start_server(make_settings(metrics_public=True))
    async with httpx.AsyncClient(timeout=30) as c:
        text = (await c.get(srv.url + "/metrics")).text
    served = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    dash = json.loads(GRAFANA.read_text())
    used = {m for p in dash["panels"] for t in p["targets"] for m in re.findall(r"pulseboard_\w+", t["expr"])}
    assert len(used) >= 12
    missing = {m for m in used if m.removesuffix("_bucket").removesuffix("_total") not in served and m not in served}
    assert missing == set()
