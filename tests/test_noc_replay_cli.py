"""``pulseboard replay pcic-alarms`` and ``pulseboard replay github-incidents`` on small slices
(written here), into a running server: what they print, what they post, and the errors they give."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import CliRunner

from app.cli import main
from tests.conftest import keyed_client


def _pcic(path: Path) -> Path:
    path.write_text(
        "alarm_id,device_id,start_timestamp,end_timestamp\n3,7,0,600\n3,7,300,300\n5,8,60,7260\n", encoding="utf-8"
    )
    return path


def _github(folder: Path) -> Path:
    folder.mkdir()
    (folder / "github-incidents.csv").write_text(
        "incident_id,impact,created_at,started_at,first_update_at,second_update_at,identified_at,monitoring_at,"
        "resolved_at,n_updates,components\n"
        "inc1,major,2022-01-01T10:00:00.000Z,2022-01-01T10:00:00.000Z,2022-01-01T10:00:01.000Z,"
        "2022-01-01T10:10:00.000Z,,,2022-01-01T11:00:00.000Z,3,GitHub Actions\n"
        "old1,minor,2015-01-01T10:00:00.000Z,2015-01-01T10:00:00.000Z,,,,,2015-01-01T10:00:00.000Z,1,\n",
        encoding="utf-8",
    )
    (folder / "github-component-status.csv").write_text(
        "incident_id,update_id,update_at,update_status,component,old_status,new_status\n"
        "inc1,u1,2022-01-01T10:00:01.000Z,investigating,GitHub Actions,operational,partial_outage\n"
        "inc1,u2,2022-01-01T10:30:00.000Z,investigating,GitHub Actions,partial_outage,major_outage\n"
        "inc1,u3,2022-01-01T11:00:00.000Z,resolved,GitHub Actions,major_outage,operational\n",
        encoding="utf-8",
    )
    return folder


def _run(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


async def _month(srv, kpi: str, **dims: str) -> dict:
    async with keyed_client(srv, timeout=30) as c:
        params = {"grain": "month", "start": "2021-01-01T00:00:00Z", "end": "2021-02-01T00:00:00Z", "pack": "noc"}
        params.update({f"dims.{k}": v for k, v in dims.items()})
        r = await c.get(f"/api/v1/kpis/{kpi}/series", params=params)
        assert r.status_code == 200, r.text
        return r.json()["points"][0]


async def test_pcic_cli_posts_a_slice(make_settings, start_server, tmp_path: Path) -> None:
    srv = await start_server(make_settings())
    common = ["--url", srv.url, "--api-key", srv.keys.ingest["pcic2021"], "--no-progress", "--batch-size", "2"]
    result = await asyncio.to_thread(_run, ["replay", "pcic-alarms", str(_pcic(tmp_path / "a.csv")), *common])
    assert result.exit_code == 0, result.output
    assert "3 alarms (2 devices, 2 alarm types) -> 6 events" in result.stderr
    assert "placed at --origin 2021-01-01T00:00:00+00:00" in result.stderr
    assert "1 zero-length alarms" in result.stderr
    assert "accepted      6" in result.stdout
    assert (await _month(srv, "alarms_raised"))["value"] == 3
    assert (await _month(srv, "mttr_s"))["value"] == (600 + 0 + 7200) / 3
    assert (await _month(srv, "mttr_s", device="8"))["value"] == 7200
    again = await asyncio.to_thread(_run, ["replay", "pcic-alarms", str(tmp_path / "a.csv"), *common])
    assert again.exit_code == 0 and "duplicates    6" in again.stdout  # safe to repeat
    # another origin moves every event: the same ids with other bodies are refused, never counted twice
    moved = await asyncio.to_thread(
        _run, ["replay", "pcic-alarms", str(tmp_path / "a.csv"), "--origin", "2021-01-01T00:00:01Z", *common]
    )
    assert moved.exit_code == 1 and "409" in moved.stderr
    assert (await _month(srv, "alarms_raised"))["value"] == 3


async def test_github_cli_posts_a_slice(make_settings, start_server, tmp_path: Path) -> None:
    srv = await start_server(make_settings())
    folder = _github(tmp_path / "gh")
    common = ["--url", srv.url, "--api-key", srv.keys.ingest["github-status"], "--no-progress"]
    result = await asyncio.to_thread(_run, ["replay", "github-incidents", str(folder), *common])
    assert result.exit_code == 0, result.output
    assert "MTTA is a PROXY" in result.stderr
    assert "untimed (created_at = resolved_at, no real duration, not in MTTA/MTTR): 1" in result.stderr
    assert "1 component rows renamed" not in result.stderr and "3 component rows renamed" in result.stderr
    async with keyed_client(srv, timeout=30) as c:
        params = {"grain": "month", "start": "2022-01-01T00:00:00Z", "end": "2022-02-01T00:00:00Z", "pack": "noc"}
        r = await c.get("/api/v1/kpis/availability_ratio/series", params={**params, "dims.service": "Actions"})
        point = r.json()["points"][0]
        assert point["components"]["covered_s_sum"] == 3600 - 1  # partial then major outage, 10:00:01-11:00
        r = await c.get("/api/v1/kpis/mtta_s/series", params=params)
        assert r.json()["points"][0]["value"] == 600  # the proxy: second_update_at - started_at


def test_cli_errors_name_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("alarm_id,device_id,start_timestamp,end_timestamp\n3,7,zero,600\n", encoding="utf-8")
    result = CliRunner().invoke(
        main, ["replay", "pcic-alarms", str(bad), "--url", "http://127.0.0.1:9", "--no-progress"]
    )
    assert result.exit_code == 1
    assert "line 2: column start_timestamp: expected an integer, got 'zero'" in result.stderr
    (tmp_path / "only").mkdir()
    result = CliRunner().invoke(main, ["replay", "github-incidents", str(tmp_path / "only"), "--no-progress"])
    assert result.exit_code == 1 and "need both github-incidents.csv and github-component-status.csv" in result.stderr
