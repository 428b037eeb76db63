"""Machinery of the crash test (tests/test_crash.py): a ``pulseboard serve`` subprocess
that can be killed with SIGKILL and restarted on the same store, retrying ingest
clients that record every acknowledgement, and direct reads of the store.

Nothing here imports the server: the server runs in its own process, exactly as
in production, and is only reached over HTTP (and its database, for counting).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import wait_until

REPO = Path(__file__).resolve().parents[1]
AUGUST = REPO / "data" / "anonymous-bank" / "august_1999.tsv.gz"
TZ = "Asia/Jerusalem"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# The ingest: batches with a fixed Idempotency-Key each.


@dataclass(frozen=True, slots=True)
class Batch:
    """One request body: ``keys`` are the (source, id) of its events, ``types`` their type and
    local day (for the expected series)."""

    index: int
    key: str
    body: bytes
    keys: tuple[tuple[str, str], ...]
    types: tuple[tuple[str, date], ...]


def make_batches(limit: int, batch_size: int, run_id: str) -> list[Batch]:
    """The first ``limit`` events of the August 1999 log, in batches of ``batch_size``.

    The Idempotency-Key of a batch is fixed for the whole trial (``run_id`` keeps keys of
    different trials apart should they ever share a store).
    """
    from zoneinfo import ZoneInfo

    from app.replay.anonymous_bank import load_events, to_wire

    zone = ZoneInfo(TZ)
    events = load_events(AUGUST)[:limit]
    batches = []
    for i in range(0, len(events), batch_size):
        chunk = events[i : i + batch_size]
        body = json.dumps([to_wire(ev) for ev in chunk], separators=(",", ":")).encode()
        batches.append(
            Batch(
                index=len(batches),
                key=f"crash-{run_id}-{len(batches):05d}",
                body=body,
                keys=tuple((ev["source"], ev["id"]) for ev in chunk),
                types=tuple((ev["type"], ev["ts"].astimezone(zone).date()) for ev in chunk),
            )
        )
    return batches


# ---------------------------------------------------------------------------------------------
# The server process.


class ServerProcess:
    """``python -m app.cli serve`` on a fixed port, its output appended to ``log_path``."""

    def __init__(self, port: int, env: dict[str, str], log_path: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    async def wait_ready(self, timeout_s: float) -> float:
        """Seconds from now until ``/readyz`` answers 200.

        Raises:
            TimeoutError: not ready within ``timeout_s``; RuntimeError: the process exited.
        """
        t0 = time.monotonic()
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as client:

            async def ready() -> bool:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"server exited with {self.proc.returncode}; see {self.log_path}\n" + self.log_tail()
                    )
                return (await client.get("/readyz")).status_code == 200

            if not await wait_until(ready, timeout_s, ignore=(httpx.TransportError,), fail=False):
                raise TimeoutError(f"/readyz did not answer 200 within {timeout_s} s\n" + self.log_tail())
        return time.monotonic() - t0

    def kill9(self) -> int:
        """SIGKILL the server; returns its pid."""
        assert self.proc is not None
        pid = self.proc.pid
        os.kill(pid, signal.SIGKILL)
        return pid

    async def reap(self) -> int:
        assert self.proc is not None
        return await asyncio.to_thread(self.proc.wait)

    def stop(self) -> None:
        """SIGTERM (graceful), SIGKILL after 15 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 40, skip: str | None = None) -> str:
        """The last ``lines`` lines of the server's output, without those containing ``skip``."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join([ln for ln in text if skip is None or skip not in ln][-lines:])


# ---------------------------------------------------------------------------------------------
# The clients.


@dataclass(slots=True)
class Answer:
    """The definite answer a batch finally got."""

    batch: int
    client: int
    status: int
    body: Any
    replayed: bool
    attempts: int
    first_sent_s: float
    answered_s: float  # seconds since the ingest started


@dataclass
class IngestLog:
    """What the clients saw: answers, indeterminate outcomes by kind, refusals."""

    t0: float = field(default_factory=time.monotonic)
    answers: dict[int, Answer] = field(default_factory=dict)
    acked_events: int = 0
    indeterminate: Counter = field(default_factory=Counter)
    refused: list[str] = field(default_factory=list)
    in_flight: set[int] = field(default_factory=set)  # batches with a request on the wire
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    def now(self) -> float:
        return time.monotonic() - self.t0


def _retryable(resp: httpx.Response) -> bool:
    """Indeterminate or "try again" answers: 5xx, 429, and 409 "request in flight"
    (a retry of a key whose first request the server is still processing)."""
    if resp.status_code >= 500 or resp.status_code == 429:
        return True
    if resp.status_code == 409:
        try:
            return resp.json().get("title") == "Request in flight"
        except ValueError:
            return False
    return False


def create_key(env: dict[str, str], *args: str) -> str:
    """``pulseboard keys create ARGS`` on the server's store; the key (its last stdout line)."""
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", "create", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return out.strip().splitlines()[-1]


async def run_client(
    client_no: int,
    url: str,
    batches: list[Batch],
    log: IngestLog,
    deadline: float,
    request_timeout_s: float = 60.0,
    api_key: str = "",
    on_attempt: Callable[[int, float, float, httpx.Response | None, str | None], None] | None = None,
) -> None:
    """Post ``batches`` one after the other; retry each with the same key and body until a
    definite answer (anything but a transport error, 5xx, 429 or 409 in flight).

    ``on_attempt(batch index, sent_s, answered_s, response or None, transport error name or None)``
    is called after every attempt (times in seconds since the ingest started)."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=url, timeout=request_timeout_s, limits=limits) as http:
        for batch in batches:
            headers = {
                "Content-Type": "application/json",
                "Idempotency-Key": batch.key,
                "Authorization": f"Bearer {api_key}",
            }
            attempts, delay, first = 0, 0.05, log.now()
            while True:
                attempts += 1
                log.in_flight.add(batch.index)
                sent_s, error = log.now(), None
                try:
                    resp = await http.post("/api/v1/events", content=batch.body, headers=headers)
                except httpx.TransportError as exc:
                    resp, error = None, type(exc).__name__
                    log.indeterminate[error] += 1
                finally:
                    log.in_flight.discard(batch.index)
                if on_attempt is not None:
                    on_attempt(batch.index, sent_s, log.now(), resp, error)
                if resp is not None:
                    if not _retryable(resp):
                        try:
                            body = resp.json()
                        except ValueError:
                            body = resp.text
                        log.answers[batch.index] = Answer(
                            batch.index,
                            client_no,
                            resp.status_code,
                            body,
                            resp.headers.get("idempotent-replayed") == "true",
                            attempts,
                            first,
                            log.now(),
                        )
                        if resp.status_code == 202:
                            log.acked_events += len(batch.keys)
                        else:
                            log.refused.append(f"batch {batch.index}: {resp.status_code} {body}")
                        log.progress.set()
                        break
                    log.indeterminate[f"HTTP {resp.status_code}"] += 1
                    retry_after = resp.headers.get("retry-after", "")
                    if retry_after.isdigit():
                        delay = max(delay, min(float(retry_after), 2.0))
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"client {client_no}: batch {batch.index} has no definite answer after {attempts} attempts"
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)


# ---------------------------------------------------------------------------------------------
# The store, read directly.


async def start_clients_until(
    url: str, batches: list[Batch], clients: int, log: IngestLog, deadline: float, acked_events: float, **client_kw
) -> list[asyncio.Task]:
    """Start ``clients`` ``run_client`` tasks over ``batches`` (dealt round-robin) and return them
    once ``acked_events`` events are acknowledged (or a client has finished early).

    Raises:
        the exception of a client that failed before the threshold.
    """
    tasks = [
        asyncio.create_task(run_client(c, url, batches[c::clients], log, deadline, **client_kw)) for c in range(clients)
    ]
    while log.acked_events < acked_events and not any(t.done() for t in tasks):
        log.progress.clear()
        try:
            await asyncio.wait_for(log.progress.wait(), 1)
        except TimeoutError:
            pass
    for t in tasks:
        if t.done() and t.exception() is not None:
            raise t.exception()
    return tasks


def stored_keys(
    kind: str, data_dir: Path, pg_url: str | None = None, schema: str | None = None
) -> tuple[list[tuple[str, str]], int]:
    """Every stored (source, event_id), one per row, and the number of remembered Idempotency-Keys."""
    if kind == "sqlite":
        conn = sqlite3.connect(data_dir / "pulseboard.db", timeout=30)
        try:
            rows = conn.execute("SELECT source, event_id FROM event").fetchall()
            keys = conn.execute("SELECT count(*) FROM idempotency_key").fetchone()[0]
        finally:
            conn.close()
        return [tuple(r) for r in rows], keys
    import psycopg

    with psycopg.connect(pg_url, connect_timeout=5) as conn:
        rows = conn.execute(f'SELECT source, event_id FROM "{schema}".event').fetchall()
        keys = conn.execute(f'SELECT count(*) FROM "{schema}".idempotency_key').fetchone()[0]
    return [tuple(r) for r in rows], keys


def kill_in_commit_window(
    kind: str,
    data_dir: Path,
    pg_url: str | None,
    schema: str | None,
    acked: Callable[[], int],
    pid: int,
    timeout_s: float,
    give_up_acked: int,
) -> tuple[bool, int, int]:
    """Poll the store's event count; SIGKILL ``pid`` as soon as more events are committed than the
    clients have had acknowledged (a commit whose answers are not delivered yet), or, not caught,
    at ``timeout_s`` or once ``give_up_acked`` events are acknowledged (so the kill still comes
    during the ingest).

    Runs in a thread while the clients go on in the event loop.  Returns ``(caught, stored, acked)``
    as seen just before the kill.  The SQLite reader is read-only and closed before the kill, so the
    restarted server is the first to open the crashed store (it runs the WAL recovery, not us).
    """
    if kind == "sqlite":
        conn = sqlite3.connect(f"file:{data_dir / 'pulseboard.db'}?mode=ro", uri=True, timeout=5)
        count_sql = "SELECT count(*) FROM event"
    else:
        import psycopg

        conn = psycopg.connect(pg_url, autocommit=True, connect_timeout=5)
        count_sql = f'SELECT count(*) FROM "{schema}".event'
    caught, stored, seen = False, 0, 0
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            stored = conn.execute(count_sql).fetchone()[0]
            seen = acked()  # read after the count: acks only grow, so stored > seen means unanswered commits
            if stored > seen:
                caught = True
                break
            if seen >= give_up_acked:
                break
    finally:
        conn.close()
        os.kill(pid, signal.SIGKILL)
    return caught, stored, seen
