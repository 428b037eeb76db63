"""Versioned definitions (issue 11 item 3): definition hashes of measures, gauges and KPIs cover
everything that changes their numbers and nothing else; KPI names are qualified by pack; a bare
name two packs define is refused naming both files."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from app.metrics.pack import AmbiguousName, load_packs, parse_pack, resolve_kpi
from tests.conftest import keyed_client
from tests.crash_client import ServerProcess, free_port
from tests.helpers import wait_until

EXE = Path(sys.executable).parent / "pulseboard"

PACK = {
    "pack": "cc",
    "dimensions": ["queue"],
    "measures": {
        "answered": {"event": "call.answered"},
        "answered_within": {"event": "call.answered", "where": {"value": {"le": 20}}},
    },
    "gauges": {"queue": {"open": "call.queued", "close": ["call.answered"], "pair_on": "call"}},
    "kpis": {
        "sl": {
            "formula": {"ratio": {"numerator": {"count": "answered_within"}, "denominator": {"count": "answered"}}},
            "target": 0.8,
        },
        "answered": {"formula": {"count": "answered"}},
        "in_queue": {"formula": {"gauge": {"gauge": "queue"}}},
    },
}


def _with(path: list[str], value: object) -> dict:
    doc = yaml.safe_load(yaml.safe_dump(PACK))
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def test_a_threshold_changes_the_measure_and_the_kpis_reading_it_only() -> None:
    base = parse_pack(PACK)
    moved = parse_pack(_with(["measures", "answered_within", "where"], {"value": {"le": 30}}))
    assert moved.measure_hash("answered_within") != base.measure_hash("answered_within")
    assert moved.measure_hash("answered") == base.measure_hash("answered")
    assert moved.kpis["sl"].definition_hash() != base.kpis["sl"].definition_hash()
    assert moved.kpis["answered"].definition_hash() == base.kpis["answered"].definition_hash()
    assert dict(moved.kpis["sl"].inputs)["cc/answered_within"] == moved.measure_hash("answered_within")


@pytest.mark.parametrize(
    ("path", "value", "moves"),
    [
        (["kpis", "sl", "target"], 0.9, False),  # targets are kept apart from numbers
        (["kpis", "sl", "title"], "Service level", False),
        (["dimensions"], ["queue", "priority"], True),  # dims rolled up change the stored partials
        (["measures", "answered", "sketch"], True, True),
        (["measures", "answered", "where"], {"dims": {"queue": "PS"}}, True),
        (["measures", "answered", "where"], {"dims_not": {"queue": ["PS"]}}, True),
        (["measures", "answered", "event"], "call.ended", True),
        (["measures", "answered", "distinct"], "customer", True),
    ],
)
def test_what_moves_a_definition_hash(path: list[str], value: object, moves: bool) -> None:
    base, changed = parse_pack(PACK), parse_pack(_with(path, value))
    assert (base.kpis["sl"].definition_hash() != changed.kpis["sl"].definition_hash()) == moves
    assert (base.definitions() != changed.definitions()) == moves


def test_gauge_hash_follows_its_pairing() -> None:
    base = parse_pack(PACK)
    moved = parse_pack(_with(["gauges", "queue", "pair_on"], "caller"))
    assert moved.gauge_hash("queue") != base.gauge_hash("queue")
    assert moved.kpis["in_queue"].definition_hash() != base.kpis["in_queue"].definition_hash()
    assert base.definitions()["kpi:cc/in_queue"] == base.kpis["in_queue"].definition_hash()


def _two_packs(tmp_path: Path) -> Path:
    folder = tmp_path / "packs"
    folder.mkdir()
    for name in ("alpha", "beta"):
        doc = {
            "pack": name,
            "measures": {"hits": {"event": f"{name}.hit"}},
            "kpis": {"hits_total": {"formula": {"count": "hits"}}, f"{name}_only": {"formula": {"count": "hits"}}},
        }
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    return folder


def test_a_bare_name_two_packs_define_is_refused_naming_both_files(tmp_path: Path) -> None:
    folder = _two_packs(tmp_path)
    packs = load_packs(folder)
    with pytest.raises(AmbiguousName) as err:
        resolve_kpi(packs, "hits_total")
    message = str(err.value)
    assert str(folder / "alpha.yaml") in message and str(folder / "beta.yaml") in message
    assert "alpha/hits_total" in message and "beta/hits_total" in message
    pack, kpi = resolve_kpi(packs, "beta/hits_total") or (None, None)
    assert pack is not None and pack.name == "beta" and kpi is not None and kpi.name == "hits_total"
    assert resolve_kpi(packs, "hits_total", "alpha") is not None
    assert resolve_kpi(packs, "alpha_only") is not None  # a bare name one pack defines still works
    assert resolve_kpi(packs, "gamma/hits_total") is None


async def test_the_api_takes_qualified_names_and_refuses_ambiguous_bare_ones(
    make_settings, start_server, tmp_path: Path
) -> None:
    folder = _two_packs(tmp_path)
    srv = await start_server(make_settings(packs_dir=folder))
    params = {"grain": "day", "start": "2024-06-01T00:00:00Z", "end": "2024-06-02T00:00:00Z"}
    async with keyed_client(srv, timeout=30) as client:
        posted = await client.post(
            "/api/v1/events",
            json=[{"type": "beta.hit", "ts": "2024-06-01T10:00:00Z", "source": "default", "id": "b1"}],
        )
        assert posted.status_code == 202, posted.text
        bare = await client.get("/api/v1/kpis/hits_total/series", params=params)
        assert bare.status_code == 422, bare.text
        body = bare.json()
        assert body["errors"][0]["field"] == "name"
        assert str(folder / "alpha.yaml") in body["detail"] and str(folder / "beta.yaml") in body["detail"]
        window = {"start": params["start"], "end": params["end"]}
        drill = await client.get("/api/v1/kpis/hits_total/events", params=window)  # the drill-down too
        assert drill.status_code == 422 and drill.json()["errors"][0]["field"] == "name", drill.text
        drilled = await client.get("/api/v1/kpis/hits_total/events", params={**window, "pack": "beta"})
        assert drilled.status_code == 200 and drilled.json()["count"] == 1, drilled.text
        qualified = await client.get("/api/v1/kpis/beta/hits_total/series", params=params)
        assert qualified.status_code == 200, qualified.text
        assert qualified.json()["pack"] == "beta" and qualified.json()["points"][0]["value"] == 1
        other = await client.get("/api/v1/kpis/alpha/hits_total/series", params=params)
        assert other.status_code == 200 and other.json()["points"][0]["value"] == 0
        listed = (await client.get("/api/v1/kpis")).json()
        assert {"alpha/hits_total", "beta/hits_total"} <= {k["qualified_name"] for k in listed}


async def test_packs_reload_pid_sighups_a_running_pulseboard_serve(tmp_path: Path) -> None:
    """A real ``pulseboard serve`` (SQLite): events counted under ``le: 20``; the pack file is
    changed to ``le: 30`` and ``pulseboard packs reload --pid`` sends SIGHUP; the server rebuilds
    the measure while it serves, and new events are rolled up with the new filter too."""
    folder = tmp_path / "packs"
    folder.mkdir()

    def write(threshold: float) -> None:
        doc = {
            "pack": "hup",
            "measures": {"fast": {"event": "hup.wait", "where": {"value": {"le": threshold}}}},
            "kpis": {"fast_count": {"formula": {"count": "fast"}}},
        }
        (folder / "hup.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")

    write(20)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSEBOARD_") and k != "DATABASE_URL"}
    env |= {
        "PULSEBOARD_DATA_DIR": str(tmp_path / "var"),
        "PULSEBOARD_PACKS_DIR": str(folder),
        "PULSEBOARD_AUTH_DISABLED": "true",
        "PULSEBOARD_SNAPSHOTS_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
    }
    server = ServerProcess(free_port(), env, tmp_path / "server.log")
    server.start()
    try:
        await server.wait_ready(60)
        waits = [5, 15, 25, 25, 40]
        events = [
            {"type": "hup.wait", "ts": f"2024-06-01T10:0{i}:00Z", "value": w, "id": f"w{i}"}
            for i, w in enumerate(waits)
        ]
        params = {"grain": "day", "start": "2024-06-01T00:00:00Z", "end": "2024-06-02T00:00:00Z"}
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            assert (await client.post("/api/v1/events", json=events[:4])).status_code == 202

            async def fast() -> object:
                r = await client.get("/api/v1/kpis/hup/fast_count/series", params=params)
                return r.json()["points"][0]["value"]

            assert await fast() == 2
            write(30)
            sent = await asyncio.to_thread(
                subprocess.run,
                [str(EXE), "packs", "reload", "--pid", str(server.proc.pid)],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert sent.returncode == 0 and f"sent SIGHUP to {server.proc.pid}" in sent.stdout, sent.stderr
            assert await wait_until(lambda: _is(fast, 4), 60, what="the rebuild after SIGHUP")
            assert (await client.post("/api/v1/events", json=events[4:])).status_code == 202
            assert await fast() == 4  # 40 s is over 30 s: the server rolls up with the new filter
            events[4]["value"] = 30
            events[4]["id"] = "w5"
            assert (await client.post("/api/v1/events", json=events[4:])).status_code == 202
            assert await fast() == 5
        assert server.proc.poll() is None  # SIGHUP did not stop it
        assert "packs reloaded (SIGHUP): definition changed: hup/fast" in server.log_tail(2000)
    finally:
        server.stop()


async def _is(read, want: object) -> bool:
    return await read() == want
