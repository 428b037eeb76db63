"""Load generators of the overload test (tests/test_overload.py): closed-loop clients (one
connection, back to back) and open-loop senders (a fixed schedule whatever the answers), which
record every answer.  Open-loop senders run in separate processes (``run_open_loop``) so the
load is not capped by one Python process.

The connections are bench's lean keep-alive HTTP/1.1 client (``bench.httpload``: raw bytes
out, status line and headers parsed by hand), which costs a fraction of httpx's CPU: on a
2-core machine the load generator must leave the server its core.  Nothing here imports the
server: it is reached over HTTP only.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from bench.httpload import HttpConnection

BATCH_EVENTS = 100
MAX_IN_FLIGHT = 8
REQUEST_TIMEOUT_S = 30.0
SOURCE = "load"
_BATCH = "@@BATCH@@"


@dataclass(slots=True)
class Answer:
    """One request: its batch, phase, send and answer instants (monotonic s), and the answer."""

    batch: str
    phase: str
    sent_s: float
    answered_s: float
    status: int | None  # None: no HTTP answer (see error)
    retry_after: str | None = None
    accepted: int | None = None
    duplicates: int | None = None
    error: str | None = None


class KeyedConnection(HttpConnection):
    """bench's keep-alive connection, posting events with an ingest key and reading the
    answer's ``Retry-After``."""

    async def post_events(self, body: bytes, key: str) -> tuple[int, str | None, bytes]:
        """POST ``body`` to ``/api/v1/events``; ``(status, Retry-After or None, response body)``.

        Raises:
            OSError, asyncio.IncompleteReadError: the connection failed or was closed.
            RuntimeError: an answer without ``Content-Length``.
        """
        head = (
            f"POST /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        lines = header.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = retry_after = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"retry-after":
                retry_after = value.strip().decode()
        if length is None:
            raise RuntimeError(f"answer without Content-Length: {header[:200]!r}")
        return status, retry_after, await self.reader.readexactly(length)


class Load:
    """Every answer of the run, and the bodies: batch ``<phase>.<client>.<seq>`` holds events
    ``<batch>-<i>`` of source ``SOURCE`` (contact-centre ``call.answered`` events)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[Answer] = []
        self.seq: Counter = Counter()
        base = datetime.now(UTC) - timedelta(minutes=5)
        events = [
            {
                "id": f"{_BATCH}-{i}",
                "type": "call.answered",
                "ts": (base + timedelta(milliseconds=i)).isoformat().replace("+00:00", "Z"),
                "value": float(i % 60),
                "dims": {"queue": f"q{i % 4}", "agent": f"a{i % 16}", "call": f"{_BATCH}-{i}"},
            }
            for i in range(BATCH_EVENTS)
        ]
        self.template = msgspec.json.encode(events).decode()  # a body costs one str.replace

    def body(self, client: str, phase: str) -> tuple[str, bytes]:
        """The next batch id of ``client`` in ``phase`` and its body (``BATCH_EVENTS`` events, fresh ids)."""
        seq = self.seq[phase, client]
        self.seq[phase, client] += 1
        batch = f"{phase}.{client}.{seq}"
        return batch, self.template.replace(_BATCH, batch).encode()

    async def post(
        self, conn: KeyedConnection | None, client: str, key: str, phase: str
    ) -> tuple[Answer, KeyedConnection | None]:
        """Post the next batch of ``client`` on ``conn`` (opened when ``None``); the answer and the
        connection to reuse (``None`` after a failure: it is closed)."""
        batch, body = self.body(client, phase)
        sent = time.monotonic()
        try:
            if conn is None:
                conn = await KeyedConnection.open(self.port)
            status, retry_after, text = await asyncio.wait_for(conn.post_events(body, key), REQUEST_TIMEOUT_S)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, RuntimeError, TimeoutError) as exc:
            if conn is not None:
                conn.close()
            answer = Answer(batch, phase, sent, time.monotonic(), None, error=f"{type(exc).__name__}: {exc}")
            self.answers.append(answer)
            return answer, None
        answer = Answer(batch, phase, sent, time.monotonic(), status, retry_after)
        if status == 202:
            counts = msgspec.json.decode(text)
            answer.accepted, answer.duplicates = counts["accepted"], counts["duplicates"]
        self.answers.append(answer)
        return answer, conn

    def acked_events_between(self, start_s: float, end_s: float) -> int:
        """Events acknowledged (202) with the answer between the two instants."""
        return sum(a.accepted or 0 for a in self.answers if a.status == 202 and start_s <= a.answered_s < end_s)


async def closed_loop(load: Load, client: str, key: str, phase: str, stop: asyncio.Event) -> None:
    """Post batches back to back on one connection until ``stop`` is set."""
    conn = None
    while not stop.is_set():
        answer, conn = await load.post(conn, client, key, phase)
        if answer.status is None:
            await asyncio.sleep(0.05)
    if conn is not None:
        conn.close()


async def open_loop(load: Load, client: str, key: str, phase: str, rate_per_s: float, until_s: float) -> None:
    """Post batches on a fixed schedule of ``rate_per_s`` until ``until_s`` (monotonic), whatever the
    answers, on up to ``MAX_IN_FLIGHT`` connections (all busy: the schedule waits for one)."""
    idle: asyncio.Queue = asyncio.Queue()
    for _ in range(MAX_IN_FLIGHT):
        idle.put_nowait(None)  # a connection slot, opened on first use
    tasks: set[asyncio.Task] = set()

    async def one(conn: KeyedConnection | None) -> None:
        _, conn = await load.post(conn, client, key, phase)
        idle.put_nowait(conn)

    next_s = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= until_s:
            break
        if next_s > now:
            await asyncio.sleep(next_s - now)
        conn = await idle.get()
        task = asyncio.create_task(one(conn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        next_s = max(next_s + 1 / rate_per_s, time.monotonic() - 1.0)  # behind by > 1 s: do not burst
    await asyncio.gather(*tasks)
    while not idle.empty():
        conn = idle.get_nowait()
        if conn is not None:
            conn.close()


def run_open_loop(
    port: int, senders: list[tuple[str, str]], phase: str, rate_per_s: float, start_s: float, until_s: float
) -> list[dict]:
    """Process entry: ``open_loop`` for every ``(client, key)`` of ``senders`` from ``start_s``
    to ``until_s`` (``time.monotonic()``, system-wide on Linux); the answers as dicts."""
    import uvloop

    async def main() -> list[dict]:
        load = Load(port)
        await asyncio.sleep(max(0.0, start_s - time.monotonic()))
        await asyncio.gather(*(open_loop(load, c, k, phase, rate_per_s, until_s) for c, k in senders))
        return [asdict(a) for a in load.answers]

    return uvloop.run(main())


def ready() -> float:
    """Process entry that only imports this module (warms a load process up); its clock."""
    time.sleep(0.2)  # keeps each warm-up call in its own process
    return time.monotonic()
