"""Real ``pulseboard serve`` processes sharing PostgreSQL and Redis, and the screens and ingest
clients of the scale-out tests (tests/test_scale_out.py) and bench (bench/scale_out.py).

``Node``: one ``python -m app.cli serve`` subprocess (its log in a temp dir) with its ``/readyz``
and ``/metrics``.  ``Screen``: a wall's WebSocket read by a task that records every frame and,
like the wall page, reconnects with ``?epoch=&since=`` when the server closes it.  ``post``:
events with fresh ids, returning what was acknowledged (202).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.crash_client import REPO, free_port
from tests.helpers import PACKS_DIR, wait_until_sync

WALL = "/ws/dashboards/generic-wall"
SOURCE = "scale"


def cluster_env(
    database_url: str, schema: str | None, redis_url: str, prefix: str, data_dir: Path, **extra: str
) -> dict[str, str]:
    """The environment of every process of one test cluster (the same as compose.yaml's, plus test speed-ups)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PULSEBOARD_", "PROMETHEUS_")) and k != "DATABASE_URL"
    }
    env.update(
        {
            "DATABASE_URL": database_url,
            "PULSEBOARD_REDIS_URL": redis_url,
            "PULSEBOARD_REDIS_PREFIX": prefix,
            "PULSEBOARD_DATA_DIR": str(data_dir),
            "PULSEBOARD_PACKS_DIR": str(PACKS_DIR),
            "PULSEBOARD_TZ": "UTC",
            "PULSEBOARD_AUTH_DISABLED": "true",
            "PULSEBOARD_METRICS_PUBLIC": "true",
            "PULSEBOARD_TILE_INTERVAL_MS": "100",
            "PULSEBOARD_HEARTBEAT_INTERVAL_S": "1",
            "PULSEBOARD_LEADER_LEASE_S": "2",
            "PULSEBOARD_RESTATE_INTERVAL_S": "1",
            "PULSEBOARD_RESTATE_MIN_INTERVAL_S": "0",  # a period restated again at once (no coalescing)
            "PULSEBOARD_DB_START_ATTEMPTS": "30",
            **extra,
        }
    )
    if schema:
        env["PULSEBOARD_DB_SCHEMA"] = schema
    return env


class Node:
    """One ``pulseboard serve`` process on its own port."""

    def __init__(self, env: dict[str, str], log_dir: Path, name: str, *args: str) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        self.env = env
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Node:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout_s: float = 60) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            return httpx.get(self.url + "/readyz", timeout=2).status_code == 200

        wait_until_sync(ready, timeout_s, what=f"{self.name} ready", ignore=(httpx.TransportError,))

    def readyz(self) -> tuple[int, dict]:
        r = httpx.get(self.url + "/readyz", timeout=5)
        return r.status_code, r.json()

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", timeout=5).text

    def metric(self, name: str, labels: str = "") -> float:
        """The value of sample ``name{labels}`` on this node's /metrics (0 when absent)."""
        pattern = re.compile(rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$", re.M)
        found = pattern.search(self.metrics())
        return float(found.group(1)) if found else 0.0

    def leading(self) -> bool:
        try:
            status, body = self.readyz()
        except httpx.TransportError:
            return False
        return status == 200 and body.get("leader") is True

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def tracebacks(self) -> int:
        return self.log_path.read_text(errors="replace").count("Traceback")


@dataclass
class Frame:
    at_s: float
    type: str
    epoch: str
    seq: int
    count_today: float | None


@dataclass
class Screen:
    """A wall screen on one node, read by a task; reconnects (resume) like the wall page."""

    node: Node
    frames: list[Frame] = field(default_factory=list)
    closes: list[int] = field(default_factory=list)
    count_today: float | None = None
    epoch: str | None = None
    seq: int | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def start(self) -> Screen:
        self.task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            url = self.node.ws_url + WALL
            if self.epoch is not None and self.seq is not None:
                url += f"?epoch={self.epoch}&since={self.seq}"
            try:
                async with connect(url, open_timeout=10) as ws:
                    async for raw in ws:
                        if not self._frame(json.loads(raw)):
                            self.closes.append(-1)  # a new epoch under us: reconnect for a snapshot
                            break
                        self.connected.set()
                    else:
                        self.closes.append(ws.close_code or 1006)
                    await asyncio.sleep(0.2)
                    continue
            except ConnectionClosed as exc:
                self.closes.append(exc.rcvd.code if exc.rcvd else 1006)
            except (OSError, InvalidStatus, TimeoutError):
                self.closes.append(0)
            await asyncio.sleep(0.2)

    def _frame(self, msg: dict) -> bool:
        """Record ``msg``; ``False`` when it belongs to another epoch (start over, as the wall does)."""
        kind = msg.get("type")
        if kind not in ("snapshot", "update", "heartbeat"):
            return True
        if kind != "snapshot" and msg["epoch"] != self.epoch:
            self.epoch = self.seq = None
            return False
        tile = (msg.get("tiles") or {}).get("count_today")
        if tile is not None:
            self.count_today = tile["value"]
        self.epoch, self.seq = msg["epoch"], msg["seq"]
        self.frames.append(Frame(time.monotonic(), kind, msg["epoch"], msg["seq"], self.count_today))
        return True

    def updates(self) -> list[Frame]:
        return [f for f in self.frames if f.type == "update"]

    def gaps(self) -> list[tuple[int, int]]:
        """``(previous seq, seq)`` of every update that did not follow the one before it in the
        same epoch (a snapshot starts over): a silent gap, never expected."""
        out = []
        last: Frame | None = None
        for f in self.frames:
            if f.type == "update" and last is not None and f.epoch == last.epoch and f.seq != last.seq + 1:
                out.append((last.seq, f.seq))
            if f.type in ("update", "snapshot"):
                last = f
        return out

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


def events(n: int, tag: str, ts: datetime | None = None) -> list[dict]:
    """``n`` generic ``sample`` events (value 1) with ids ``tag-i``, stamped ``ts`` (default now)."""
    when = (ts or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    return [{"type": "sample", "source": SOURCE, "id": f"{tag}-{i}", "ts": when, "value": 1} for i in range(n)]


async def post(client: httpx.AsyncClient, url: str, body: list[dict]) -> int:
    """POST ``body``; the status (0 for a transport error)."""
    try:
        r = await client.post(url + "/api/v1/events", json=body, timeout=10)
    except httpx.TransportError:
        return 0
    return r.status_code


def unique(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(5)}"


def yesterday() -> datetime:
    return datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=1)
