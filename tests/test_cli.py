"""The ``pulseboard`` command as a newcomer runs it (a real process in an empty folder): quiet
by default, ``-v`` for more; every store-touching command names its store and zone on stderr;
the empty cases say so (issue 9, item 0)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXE = Path(sys.executable).parent / "pulseboard"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSEBOARD_") and k != "DATABASE_URL"}
    return {**env, **extra}


def _run(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), *args], cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=120)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An empty working folder: the CLI's default store is ``./var`` in it."""
    return tmp_path


def test_an_empty_store_says_so_and_names_itself(folder: Path) -> None:
    store = f"store: sqlite:///{folder.resolve()}/var/pulseboard.db, zone: UTC\n"
    listed = _run(folder, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == "no keys (create one with: pulseboard keys create --scope ...)\n"
    assert listed.stderr == store  # one line, no migration-tool chatter
    migrated = _run(folder, "migrate")
    assert (migrated.returncode, migrated.stderr) == (0, store)
    assert re.fullmatch(
        rf"store sqlite:///{re.escape(str(folder.resolve()))}/var/pulseboard\.db is up to date \(revision \d{{4}}\)\n",
        migrated.stdout,
    ), migrated.stdout
    cut = _run(folder, "snapshot", "cut", "--grain", "day", "--period", "1999-08-02")
    assert cut.returncode == 1 and cut.stdout == ""
    lines = cut.stderr.splitlines()
    assert lines[0] == store.strip()
    assert "contact-centre day 1999-08-02 (UTC): no events from 1999-08-02T00:00:00+00:00" in lines[1]
    assert lines[-1].startswith("Error: nothing cut: no dashboard has events in day 1999-08-02 on this store")


def test_migrate_says_what_it_did_to_a_new_store(folder: Path) -> None:
    first = _run(folder, "migrate")
    assert first.returncode == 0, first.stderr
    assert re.fullmatch(
        r"store sqlite:///\S+/var/pulseboard\.db created \(migrated to revision \d{4}\)\n", first.stdout
    )
    again = _run(folder, "migrate")
    assert again.stdout.endswith(f"is up to date (revision {first.stdout.strip()[-5:-1]})\n"), again.stdout


def test_the_zone_and_clock_in_use_are_printed(folder: Path) -> None:
    shown = _run(folder, "keys", "list", PULSEBOARD_TZ="Asia/Jerusalem", PULSEBOARD_CLOCK="event")
    assert (
        shown.stderr == f"store: sqlite:///{folder.resolve()}/var/pulseboard.db, zone: Asia/Jerusalem, clock: event\n"
    )


def test_verbose_adds_log_lines(folder: Path) -> None:
    def cut(day: str, *flags: str) -> subprocess.CompletedProcess:
        args = ("snapshot", "cut", "--grain", "day", "--period", day, "--dashboard", "itsm", "--allow-empty")
        return _run(folder, *flags, *args)

    quiet = cut("1999-08-02")
    assert quiet.returncode == 0 and quiet.stdout == "itsm day 1999-08-02 (UTC): version 1 final (cut)\n"
    assert len(quiet.stderr.splitlines()) == 1  # the store line only
    loud = cut("1999-08-03", "-v")
    assert loud.returncode == 0, loud.stderr
    assert "INFO app.snapshots.cut: cut itsm day 1999-08-03" in loud.stderr
    assert "alembic" not in loud.stderr
    debug = _run(folder, "-vv", "keys", "list")
    assert " DEBUG " in debug.stderr and "INFO alembic" in debug.stderr


def test_serve_with_a_bad_notify_file_says_why_without_a_traceback(folder: Path) -> None:
    bad = folder / "notify.yaml"
    bad.write_text("alerts:\n  - id: x\n    kpi: service_level_20s\n    window: 61m\n")
    served = _run(folder, "serve", "--port", "9", PULSEBOARD_NOTIFY_FILE=str(bad))
    assert served.returncode == 1
    assert "Traceback" not in served.stderr
    assert served.stderr.splitlines()[-1].startswith(f"Error: {bad}: alerts.0.window: Input should be '15m'")


def test_cut_of_every_dashboard_skips_one_whose_day_has_not_ended_in_its_zone(folder: Path) -> None:
    """Event clock at 1999-08-03 22:30 UTC: the day has ended in Asia/Jerusalem (UTC+3), not in UTC
    (the itsm dashboard's zone): without --dashboard the first is cut, the second named and skipped."""
    import sqlite3

    assert _run(folder, "migrate").returncode == 0
    newest_us = 933_719_400_000_000  # 1999-08-03T22:30:00Z
    with sqlite3.connect(folder / "var" / "pulseboard.db") as db:
        db.execute(
            "INSERT INTO event (source, event_id, type, ts_us, value, dims, body_hash, received_us)"
            " VALUES ('t', 'e1', 'call.offered', ?, NULL, '{}', x'00', ?)",
            (newest_us, newest_us),
        )
    env = {"PULSEBOARD_CLOCK": "event", "PULSEBOARD_TZ": "Asia/Jerusalem"}
    cut = _run(folder, "snapshot", "cut", "--grain", "day", "--period", "1999-08-03", "--allow-empty", **env)
    assert cut.returncode == 0, cut.stderr
    assert "contact-centre day 1999-08-03 (Asia/Jerusalem): version 1 final (cut)" in cut.stdout
    assert "itsm day 1999-08-03 (UTC): day 1999-08-03 ends at 1999-08-04T00:00:00+00:00" in cut.stderr
    one = _run(folder, "snapshot", "cut", "--grain", "day", "--period", "1999-08-03", "--dashboard", "itsm", **env)
    assert one.returncode == 1 and "it cannot be cut before (event clock" in one.stderr
