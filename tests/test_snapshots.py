"""Snapshots on both stores: immutability, one cut per period across instances, restatement,
catch-up at start, the CLI, scorecards (RAG, variance, agenda, commentary, publishing) and CSV."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from app.cli import main as cli
from app.cli.common import store_url
from app.clock import ManualClock
from tests.conftest import settings_to_env
from tests.helpers import PACKS_DIR, sample, wait_until

UTC = UTC
AFTER_JUNE = datetime(2024, 7, 1, 1, 0, tzinfo=UTC)


async def _post(client, events) -> None:
    resp = await client.post("/api/v1/events", json=events)
    assert resp.status_code == 202, resp.text


def month_events(month: int, per_day: int, value: float, days=range(1, 4)) -> list[dict]:
    return [
        sample(f"2024-{month:02d}-{d:02d}T10:{i:02d}:00Z", value, id=f"m{month}-d{d}-{i}")
        for d in days
        for i in range(per_day)
    ]


@pytest.fixture
async def srv(make_settings, start_server):
    return await start_server(make_settings(packs_dir=PACKS_DIR), clock=ManualClock(AFTER_JUNE))


async def test_snapshot_rows_are_immutable(srv, client_for):
    async with client_for(srv) as client:
        await _post(client, month_events(6, 3, 4))
    await srv.runtime.snapshots.run_due()
    async with srv.runtime.engine.connect() as conn:
        count = (await conn.execute(text("SELECT count(*) FROM snapshot"))).scalar_one()
    assert count == 31 - 1 + 1  # days 06-01..06-30 and the month
    for statement in ("UPDATE snapshot SET status = 'final'", "DELETE FROM snapshot"):
        with pytest.raises(Exception, match="immutable"):
            async with srv.runtime.engine.begin() as conn:
                await conn.execute(text(statement))
    async with srv.runtime.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM snapshot"))).scalar_one() == count


async def test_two_instances_cut_each_period_once(make_settings, start_server, client_for):
    settings = make_settings(packs_dir=PACKS_DIR)
    a = await start_server(settings, clock=ManualClock(AFTER_JUNE))
    b = await start_server(settings, clock=ManualClock(AFTER_JUNE))
    async with client_for(a) as client:
        await _post(client, month_events(6, 2, 4, days=range(1, 31)))
    results = await asyncio.gather(*(s.runtime.snapshots.run_due() for s in (a, b, a, b)))
    created = [(g, p) for result in results for _slug, g, p, made in result if made]
    assert len(created) == len(set(created)) == 31  # 30 days + 1 month, each cut by exactly one caller
    async with a.runtime.engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT grain, period, count(*) FROM snapshot GROUP BY grain, period HAVING count(*) > 1")
            )
        ).all()
    assert rows == []


async def test_late_event_restates_and_keeps_the_original_c7(srv, client_for):
    async with client_for(srv) as client:
        await _post(client, [sample(f"2024-06-10T10:{m:02d}:00Z", 10, id=f"c7-{m}") for m in (5, 15, 25, 35, 45)])
        await srv.runtime.snapshots.run_due()
        first = (await client.get("/api/v1/snapshots/generic-wall/day/2024-06-10")).json()
        assert first["kpis"]["sample_sum"]["value"] == 50 and first["status"] == "final"
        await _post(client, [sample("2024-06-10T10:30:00Z", 7, id="c7-late")])
        assert await srv.runtime.snapshots.restate_pending() != []
        now = (await client.get("/api/v1/snapshots/generic-wall/day/2024-06-10")).json()
        assert (now["version"], now["status"]) == (2, "restated")
        assert now["kpis"]["sample_count"]["value"] == 6 and now["kpis"]["sample_mean"]["value"] == 9.5
        assert now["changes"]["sample_sum"] == {**now["changes"]["sample_sum"], "from": 50, "to": 57, "difference": 7}
        assert (
            await client.get("/api/v1/snapshots/generic-wall/day/2024-06-10", params={"version": 1})
        ).json() == first
        month = (await client.get("/api/v1/snapshots/generic-wall/month/2024-06")).json()
        assert month["version"] == 2 and month["kpis"]["sample_count"]["value"] == 6
        assert await srv.runtime.snapshots.restate_pending() == []  # nothing left to restate


async def test_catch_up_at_start_cuts_missed_periods(make_settings, start_server, client_for):
    settings = make_settings(packs_dir=PACKS_DIR)
    down = await start_server(settings, clock=ManualClock(AFTER_JUNE))
    async with client_for(down) as client:
        await _post(client, month_events(6, 1, 4, days=[28, 29, 30]))
    await down.stop()
    up = await start_server(
        settings.model_copy(update={"snapshots_enabled": True}), clock=ManualClock(datetime(2024, 7, 3, 12, tzinfo=UTC))
    )
    async with client_for(up) as client:

        async def cut() -> bool:  # the catch-up job cuts days, then the month (the last thing it cuts)
            day = await client.get("/api/v1/snapshots/generic-wall/day/2024-07-02")
            month = await client.get("/api/v1/snapshots/generic-wall/month/2024-06")
            return day.status_code == month.status_code == 200

        await wait_until(cut, 20, what="the catch-up of 2024-07-02 and 2024-06")
        for day in ("2024-06-28", "2024-06-29", "2024-06-30", "2024-07-01"):
            snap = (await client.get(f"/api/v1/snapshots/generic-wall/day/{day}")).json()
            assert snap["kpis"]["sample_count"]["value"] == (0 if day == "2024-07-01" else 1), day
            assert snap["scheduled_for"].startswith(
                f"{day[:8]}{int(day[8:]) + 1:02d}" if day != "2024-06-30" else "2024-07-01"
            )
        assert (await client.get("/api/v1/snapshots/generic-wall/month/2024-06")).json()["kpis"]["sample_count"][
            "value"
        ] == 3
        assert (await client.get("/api/v1/snapshots/generic-wall/day/2024-07-03")).status_code == 404  # not over yet


async def test_snapshot_cut_cli_uses_the_same_path(make_settings, start_server, client_for, monkeypatch):
    settings = make_settings(packs_dir=PACKS_DIR)
    srv = await start_server(settings, clock=ManualClock(AFTER_JUNE))
    async with client_for(srv) as client:
        await _post(client, month_events(6, 2, 4, days=[5]))
    await srv.stop()
    settings_to_env(settings, monkeypatch)
    runner = CliRunner()

    async def cut(*args: str):
        return await asyncio.to_thread(runner.invoke, cli, ["snapshot", "cut", *args])

    result = await cut("--grain", "day", "--period", "2024-06-05", "--dashboard", "generic-wall")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [f"store: {store_url(settings)}, zone: UTC"]
    assert result.stdout == "generic-wall day 2024-06-05 (UTC): version 1 final (cut)\n"
    again = await cut("--grain", "day", "--period", "2024-06-05", "--dashboard", "generic-wall")
    assert "version 1 final (unchanged)" in again.stdout
    future = await cut("--grain", "month", "--period", "2999-01")
    assert future.exit_code != 0 and "cannot be cut before" in future.output
    # A period with no events says so and cuts nothing (wrong store or zone?), unless asked to.
    empty = await cut("--grain", "day", "--period", "2024-06-06", "--dashboard", "generic-wall")
    assert empty.exit_code == 1 and empty.stdout == ""
    assert "generic-wall day 2024-06-06 (UTC): no events from 2024-06-06T00:00:00+00:00" in empty.stderr
    assert "nothing cut" in empty.stderr
    forced = await cut("--grain", "day", "--period", "2024-06-06", "--dashboard", "generic-wall", "--allow-empty")
    assert forced.exit_code == 0 and "version 1 final (cut)" in forced.stdout
    # Every dashboard: the one with events is cut, the ones without are named.
    every = await cut("--grain", "day", "--period", "2024-06-05")
    assert every.exit_code == 0 and "generic-wall day 2024-06-05 (UTC): version 1 final (unchanged)" in every.stdout
    assert "contact-centre day 2024-06-05 (UTC): no events" in every.stderr


async def test_snapshot_404s(srv, client_for):
    async with client_for(srv) as client:
        assert (await client.get("/api/v1/snapshots/generic-wall/day/2024-06-10")).status_code == 404
        assert (await client.get("/api/v1/snapshots/no-such/day/2024-06-10")).status_code == 404
        assert (await client.get("/api/v1/snapshots/generic-wall/day/June")).status_code == 404
        assert (await client.get("/api/v1/snapshots/generic-wall/month/2024-13")).status_code == 404
        assert (await client.get("/api/v1/scorecards/generic-wall/2024-06")).status_code == 404
        cut = await client.post("/api/v1/snapshots/generic-wall/cut", json={"grain": "day", "period": "2999-01-01"})
        assert cut.status_code == 409


async def test_scorecard_rag_variance_agenda_notes_publish_and_csv(srv, client_for):
    async with client_for(srv) as client:
        # May: 3 days x 2 samples of 8 s -> count 6, mean 8 (green vs month target 12).
        # June: 3 days x 1 sample of 16 s -> count 3 (red vs 5), mean 16 (red vs 12, lower is better).
        await _post(client, month_events(5, 2, 8) + month_events(6, 1, 16))
        await srv.runtime.snapshots.run_due()
        card = (await client.get("/api/v1/scorecards/generic-wall/2024-06")).json()
        rows = {r["kpi"]: r for r in card["kpis"]}
        mean, count = rows["sample_mean"], rows["sample_count"]
        assert (mean["value"], mean["target"], mean["status"]) == (16, 12, "red")
        assert mean["variance_to_target"] == 4 and mean["variance_to_target_ratio"] == pytest.approx(1 / 3)
        assert (mean["previous_value"], mean["variance_to_previous"]) == (8, 8)
        assert (count["value"], count["target"], count["status"], count["variance_to_target"]) == (3, 5, "red", -2)
        assert [p["month"] for p in mean["trend"]][-2:] == ["2024-05", "2024-06"] and len(mean["trend"]) == 12
        assert [p["value"] for p in mean["trend"]][-2:] == [8, 16]
        assert mean["red_streak_months"] == 1 and mean["needs_note"] is True
        # Red first; among reds the larger weighted variance first (3 x 1/3 = 1.0 vs 1 x 0.4 = 0.4).
        assert card["agenda"][:2] == ["sample_mean", "sample_count"]
        assert [r["agenda_rank"] for r in card["kpis"]] == list(range(1, len(card["kpis"]) + 1))
        refused = await client.post("/api/v1/scorecards/generic-wall/2024-06/publish", json={"by": "Dana"})
        assert refused.status_code == 422
        assert {e["message"] for e in refused.json()["errors"]} == {
            "sample_mean is red and has no note",
            "sample_count is red and has no note",
        }
        evil = '=HYPERLINK("http://x","click")'
        for kpi, note in (("sample_mean", evil), ("sample_count", "<script>alert(1)</script>")):
            resp = await client.post(
                "/api/v1/scorecards/generic-wall/2024-06/commentary", json={"kpi": kpi, "text": note, "author": "Dana"}
            )
            assert resp.status_code == 201, resp.text
        bad = await client.post("/api/v1/scorecards/generic-wall/2024-06/commentary", json={"kpi": "nope", "text": "x"})
        assert bad.status_code == 404
        published = await client.post("/api/v1/scorecards/generic-wall/2024-06/publish", json={"by": "Dana"})
        assert published.status_code == 200 and published.json()["published"]["by"] == "Dana"
        locked = await client.post(
            "/api/v1/scorecards/generic-wall/2024-06/commentary", json={"kpi": "sample_mean", "text": "too late"}
        )
        assert locked.status_code == 409
        again = await client.post("/api/v1/scorecards/generic-wall/2024-06/publish", json={"by": "Dana"})
        assert again.status_code == 409
        card = (await client.get("/api/v1/scorecards/generic-wall/2024-06")).json()
        assert {r["kpi"]: r["commentary"][0]["text"] for r in card["kpis"] if r["commentary"]} == {
            "sample_mean": evil,
            "sample_count": "<script>alert(1)</script>",
        }
        exported = await client.get("/api/v1/scorecards/generic-wall/2024-06/export.csv")
        assert exported.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(exported.text)))
        assert [r["kpi"] for r in table] == card["agenda"]
        assert table[0]["commentary"] == "Dana: " + evil  # starts with the author: not a formula
        assert all(
            not cell.startswith(("=", "+", "-", "@")) or cell.startswith("-") and cell[1:2].isdigit()
            for r in table
            for cell in r.values()
        )
        snap_csv = await client.get("/api/v1/snapshots/generic-wall/month/2024-06/export.csv")
        assert snap_csv.status_code == 200 and "sample_mean" in snap_csv.text


def test_csv_cells_are_neutralised():
    from app.snapshots.export import safe_cell

    assert safe_cell("=1+1") == "'=1+1"
    assert safe_cell("+SUM(A1)") == "'+SUM(A1)"
    assert safe_cell("@cmd") == "'@cmd"
    assert safe_cell("-2+3") == "'-2+3"
    assert safe_cell(-2.5) == -2.5 and safe_cell("plain") == "plain" and safe_cell(None) == ""


async def test_reconciliation_catches_rollup_drift(srv, client_for):
    """The self-check can fail: a rollup that no longer matches its raw events is reported."""
    async with client_for(srv) as client:
        await _post(client, [sample("2024-06-10T10:05:00Z", 10, id="d1"), sample("2024-06-10T10:06:00Z", 30, id="d2")])
        clean = (await client.get("/api/v1/reconciliation/generic-wall/day/2024-06-10")).json()
        assert clean["ok"] is True
        for table, where in (("rollup_minute", "minute rollups"), ("rollup_hour", "rollups")):
            async with srv.runtime.engine.begin() as conn:
                await conn.execute(
                    text(
                        f"UPDATE {table} SET count = count + 1, sum = sum + 5 "
                        "WHERE measure = 'generic/sample' AND dim_key = ''"
                        f" AND bucket_us = (SELECT min(bucket_us) FROM {table})"
                    )
                )
            drift = (await client.get("/api/v1/reconciliation/generic-wall/day/2024-06-10")).json()
            assert drift["ok"] is False
            found = {(m["kpi"], m["where"]): (m["expected"], m["found"], m["cause"]) for m in drift["mismatches"]}
            assert found[("measure:sample", f"{where} vs raw events (count)")] == (2, 3, "rollup drift")
            assert found[("measure:sample", f"{where} vs raw events (sum)")] == (40.0, 45.0, "rollup drift")
            async with srv.runtime.engine.begin() as conn:  # undo: the next table's drift is found alone
                await conn.execute(
                    text(
                        f"UPDATE {table} SET count = count - 1, sum = sum - 5 "
                        "WHERE measure = 'generic/sample' AND dim_key = ''"
                        f" AND bucket_us = (SELECT min(bucket_us) FROM {table})"
                    )
                )
