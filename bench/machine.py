"""The machine and software a run measured: cores, memory, versions."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

from bench.paths import REPO


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _pkg(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


def git_revision(repo) -> str:
    """``HEAD`` commit of the product, plus how many files under ``app/`` differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "app", "migrations"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (f" + {len(dirty)} uncommitted file(s) under app/ or migrations/" if dirty else " (clean)")


def describe(pg_version: str | None) -> dict[str, str]:
    """Date, machine and versions, as ``name -> text``."""
    mem = _mem_total_gib()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores ({_cpu_model()}), {mem:.1f} GiB RAM" if mem else f"{os.cpu_count()} cores",
        "kernel": platform.release(),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "product revision": git_revision(REPO),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "postgresql": pg_version or "absent",
        "packages": ", ".join(
            f"{p} {_pkg(p)}"
            for p in (
                "fastapi",
                "uvicorn",
                "starlette",
                "sqlalchemy",
                "aiosqlite",
                "psycopg",
                "msgspec",
                "websockets",
                "uvloop",
                "httptools",
                "psutil",
            )
        ),
    }
