"""``pulseboard replay anonymous-bank`` and ``pulseboard demo`` end to end, against
real servers: the summary and the stored counts, pacing by --speed/--start,
retries that honour Retry-After, a 4xx that stops the replay with the server's
problem detail, and the demo as a real process serving the wall.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from click.testing import CliRunner

from app.cli import main
from app.cli.demo import DEMO_FILE
from app.replay.anonymous_bank import load_events
from app.replay.client import ReplayError, replay_events
from tests.helpers import wait_until_sync

ZONE = ZoneInfo("Asia/Jerusalem")
EXCERPT_EVENTS = 17_088  # app/demo/SOURCE.md
EXCERPT_OFFERED = 4_445 + 2_181  # answered + abandoned


def summary_of(stdout: str) -> dict[str, float]:
    """The ``name value`` lines after ``replay done``."""
    lines = stdout.splitlines()
    assert "replay done" in lines, stdout
    out = {}
    for line in lines[lines.index("replay done") + 1 :]:
        name, value = line.split()
        out[name] = float(value)
    return out


async def invoke(*args: str) -> object:
    """Run the CLI in a worker thread (it runs its own event loop; the server keeps this one)."""
    return await asyncio.to_thread(CliRunner().invoke, main, list(args), catch_exceptions=False)


def small_log(tmp_path: Path, date_text: str, first: str, last: str) -> Path:
    """A .tsv of the excerpt's rows of ``date_text`` whose vru_entry is in [first, last) (H:MM:SS)."""

    def secs(tod: str) -> int:
        h, m, s = tod.split(":")
        return int(h) * 3600 + int(m) * 60 + int(s)

    lines = gzip.open(DEMO_FILE, "rt", encoding="utf-8", newline="").read().splitlines(keepends=True)
    keep = [
        ln for ln in lines[1:] if ln.split("\t")[5] == date_text and secs(first) <= secs(ln.split("\t")[6]) < secs(last)
    ]
    path = tmp_path / f"piece-{date_text}.tsv"
    path.write_text(lines[0] + "".join(keep), encoding="utf-8")
    return path


async def total_offered(srv, first_day: str, days: int) -> int:
    start = datetime.fromisoformat(first_day).replace(tzinfo=ZONE)
    async with httpx.AsyncClient(base_url=srv.url, timeout=30, headers=srv.auth("read")) as c:
        r = await c.get(
            "/api/v1/kpis/offered/series",
            params={"grain": "day", "start": start.isoformat(), "end": (start + timedelta(days=days)).isoformat()},
        )
    assert r.status_code == 200, r.text
    return sum(p["value"] or 0 for p in r.json()["points"])


# ---------------------------------------------------------------------------------------------


async def test_cli_replays_the_excerpt_and_prints_a_summary(make_settings, start_server):
    srv = await start_server(make_settings(tz="Asia/Jerusalem"))
    result = await invoke(
        "replay",
        "anonymous-bank",
        str(DEMO_FILE),
        "--url",
        srv.url,
        "--api-key",
        srv.keys.ingest["anonymous-bank"],
        "--speed",
        "max",
    )
    assert result.exit_code == 0, result.output
    s = summary_of(result.stdout)
    assert (s["events"], s["accepted"], s["duplicates"], s["batches"]) == (EXCERPT_EVENTS, EXCERPT_EVENTS, 0, 18)
    assert s["elapsed_s"] > 0 and s["events_per_s"] > 0
    assert "replay" in result.stderr  # the progress bar goes to stderr, not into the summary
    assert await total_offered(srv, "1999-08-01", 4) == EXCERPT_OFFERED

    again = await invoke(
        "replay",
        "anonymous-bank",
        str(DEMO_FILE),
        "--url",
        srv.url,
        "--api-key",
        srv.keys.ingest["anonymous-bank"],
        "--batch-size",
        "5000",
        "--no-progress",
    )
    assert again.exit_code == 0, again.output
    s2 = summary_of(again.stdout)
    assert (s2["accepted"], s2["duplicates"], s2["batches"]) == (0, EXCERPT_EVENTS, 4)
    assert await total_offered(srv, "1999-08-01", 4) == EXCERPT_OFFERED


@pytest.mark.parametrize("store_kind", ["sqlite"])
async def test_speed_paces_the_posts_after_start(make_settings, start_server, tmp_path):
    """--start 10:04 at --speed 180: 10:00-10:04 at once, then 10:04-10:10 over about 2 s, never early."""
    srv = await start_server(make_settings(tz="Asia/Jerusalem"))
    events = [
        e
        for e in load_events(small_log(tmp_path, "990802", "9:55:00", "10:10:00"))
        if e["ts"] < datetime(1999, 8, 2, 10, 10, tzinfo=ZONE)
    ]
    start = datetime(1999, 8, 2, 10, 4, tzinfo=ZONE)
    speed = 180.0
    early = [e for e in events if e["ts"] < start]
    assert len(early) > 10 and len(events) - len(early) > 30
    posts = []
    began = time.monotonic()
    summary = await replay_events(
        events, srv.url, speed, start, batch_size=1000, on_post=posts.append, api_key=srv.keys.ingest["anonymous-bank"]
    )
    assert (summary.backfilled, summary.paced) == (len(early), len(events) - len(early))
    assert summary.accepted == len(events)

    backfill = [p for p in posts if p.last_ts < start]
    paced = posts[len(backfill) :]
    assert sum(p.events for p in backfill) == len(early)  # the backfill came first, in one go
    assert all(p.first_ts >= start for p in paced)
    assert len(paced) >= 8, "paced events should go out in many small posts, not one"
    assert all(a.last_ts <= b.first_ts for a, b in zip(posts, posts[1:], strict=False))  # in time order
    t0 = backfill[-1].posted_at  # the paced clock starts when the backfill is done
    for p in paced:  # an event is never posted before its time, scaled
        due = (p.last_ts - start).total_seconds() / speed
        assert p.posted_at - t0 >= due - 0.05, (p, due)
    span = (events[-1]["ts"] - start).total_seconds() / speed
    assert span - 0.1 <= paced[-1].posted_at - t0 <= span + 3.0
    assert time.monotonic() - began >= span - 0.1

    # The same through the command line: the elapsed time follows the speed.
    piece = small_log(tmp_path, "990802", "11:00:00", "11:05:00")
    n = len(load_events(piece))
    result = await invoke(
        "replay",
        "anonymous-bank",
        str(piece),
        "--url",
        srv.url,
        "--api-key",
        srv.keys.ingest["anonymous-bank"],
        "--speed",
        "150",
        "--start",
        "1999-08-02T11:03:00",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    s = summary_of(result.stdout)
    assert s["events"] == s["accepted"] == n
    paced_span = (load_events(piece)[-1]["ts"] - datetime(1999, 8, 2, 11, 3, tzinfo=ZONE)).total_seconds() / 150
    assert paced_span > 0.8
    assert paced_span - 0.1 <= s["elapsed_s"] <= paced_span + 5


@pytest.mark.parametrize("store_kind", ["sqlite"])
async def test_a_4xx_stops_the_replay_with_the_problem_detail(make_settings, start_server):
    # A server that refuses events older than an hour: every 1999 event is invalid (422).
    srv = await start_server(make_settings(tz="Asia/Jerusalem", max_lateness_s=3600))
    result = await invoke(
        "replay",
        "anonymous-bank",
        str(DEMO_FILE),
        "--url",
        srv.url,
        "--api-key",
        srv.keys.ingest["anonymous-bank"],
        "--no-progress",
    )
    assert result.exit_code == 1
    assert "replay done" not in result.stdout
    message = result.stderr
    assert "replay stopped" in message and "422" in message and "Invalid events" in message, message
    assert "events 0..999" in message and "index=0" in message and "field=ts" in message, message
    assert await total_offered(srv, "1999-08-01", 4) == 0

    # A batch over the server's limit: 413, stops at the first batch.
    small = await start_server(make_settings(tz="Asia/Jerusalem", max_batch_events=100))
    with pytest.raises(ReplayError, match=r"413 .*refused|refused.*413"):
        await replay_events(
            load_events(DEMO_FILE), small.url, None, None, batch_size=500, api_key=small.keys.ingest["anonymous-bank"]
        )
    assert await total_offered(small, "1999-08-01", 4) == 0


async def test_overload_is_retried_honouring_retry_after():
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return httpx.Response(
                503,
                headers={"Retry-After": "0.3", "Content-Type": "application/problem+json"},
                json={"title": "Ingest overloaded", "status": 503},
            )
        if len(calls) == 2:
            return httpx.Response(429, headers={"Retry-After": "0"}, json={"title": "Too many requests"})
        assert request.headers["authorization"] == "Bearer k-123"
        return httpx.Response(202, json={"accepted": 3, "duplicates": 0})

    events = load_events(DEMO_FILE)[:3]
    summary = await replay_events(
        events, "http://pulseboard.test", api_key="k-123", transport=httpx.MockTransport(handler)
    )
    assert (summary.accepted, summary.batches, summary.retries) == (3, 1, 2)
    assert calls[1] - calls[0] >= 0.29  # waited as long as Retry-After said

    def always_busy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": "0"}, json={"title": "Ingest overloaded", "status": 503})

    with pytest.raises(ReplayError, match="gave up .* after 3 attempts .*503 Ingest overloaded"):
        await replay_events(
            events, "http://pulseboard.test", max_attempts=3, transport=httpx.MockTransport(always_busy)
        )


async def test_connection_errors_are_retried_then_fail_clearly():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    began = time.monotonic()
    with pytest.raises(
        ReplayError, match=r"gave up .* after 3 attempts to http://127\.0\.0\.1:\d+/api/v1/events: ConnectError"
    ):
        await replay_events(
            load_events(DEMO_FILE)[:10],
            f"http://127.0.0.1:{port}",
            max_attempts=3,
            backoff_initial_s=0.05,
            backoff_max_s=0.2,
        )
    assert time.monotonic() - began < 10


def test_bad_arguments_are_refused():
    runner = CliRunner()
    r = runner.invoke(main, ["replay", "anonymous-bank", str(DEMO_FILE), "--speed", "fast"])
    assert r.exit_code == 2 and "neither 'max' nor a number" in r.output
    r = runner.invoke(main, ["replay", "anonymous-bank", str(DEMO_FILE), "--start", "yesterday"])
    assert r.exit_code == 2 and "not an ISO date-time" in r.output
    r = runner.invoke(main, ["replay", "anonymous-bank", "/nonexistent/august.tsv"])
    assert r.exit_code == 2 and "does not exist" in r.output


# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_demo_serves_the_wall_and_replays_into_it(tmp_path):
    exe = Path(sys.executable).parent / "pulseboard"
    port = _free_port()
    data = tmp_path / "var"
    (data / "demo").mkdir(parents=True)
    (data / "demo" / "pulseboard.db").write_bytes(b"an old demo store, not a database")  # the demo starts afresh
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSEBOARD_") and k != "DATABASE_URL"}
    env.update(PULSEBOARD_DATA_DIR=str(data), DATABASE_URL="postgresql://nobody@127.0.0.1:1/unused")
    proc = subprocess.Popen(
        [str(exe), "demo", "--exit-after-s", "8", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    wall_status = None
    offered = None
    printed: list[str] = []
    try:
        for line in proc.stdout:  # the banner: the one-time wall link and the keys
            printed.append(line)
            if "read key" in line:
                break
        read_key = printed[-1].split()[-1]
        link = next(line.strip() for line in printed if "/pair#s=" in line)
        # The link's secret collects the wall's display key once, as a cookie (it is made at this claim).
        secret = link.split("#s=", 1)[1]
        claimed = httpx.post(f"{base}/api/v1/pairings/claim", json={"secret": secret}, timeout=5)
        assert claimed.json() == {"status": "approved", "dashboard": "contact-centre"}, claimed.text
        assert claimed.cookies["pb_key"].startswith("pbd_") and claimed.cookies["pb_key"] not in claimed.text
        assert httpx.post(f"{base}/api/v1/pairings/claim", json={"secret": secret}, timeout=5).status_code == 404
        wall_status = httpx.get(f"{base}/wall/contact-centre", timeout=5).status_code

        def offered_today() -> float | None:
            dash = httpx.get(
                f"{base}/api/v1/dashboards/contact-centre", timeout=5, headers={"Authorization": f"Bearer {read_key}"}
            ).json()
            return dash["tiles"]["offered_today"]["value"]

        offered = wait_until_sync(
            offered_today, 20, what="calls on the demo's wall", interval_s=0.3, ignore=(httpx.TransportError,)
        )
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert wall_status == 200, err
    assert offered and offered > 0, err
    assert proc.returncode == 0, err
    assert f"{base}/wall/contact-centre" in "".join(printed)
    assert read_key.startswith("pbr_") and link.startswith(f"{base}/pair#s=")
    assert (data / "demo" / "pulseboard.db").stat().st_size > 4096  # the demo's own, embedded store
