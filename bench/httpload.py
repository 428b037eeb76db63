"""A lean HTTP/1.1 keep-alive load generator, run in separate processes.

Each worker process opens ``connections`` keep-alive connections to the
server and posts pre-encoded bodies from its list, one request in flight per
connection, until the list is used up or ``duration_s`` passed.  Requests are
written as raw bytes and responses parsed by hand (status line,
``Content-Length``), so the client costs a fraction of what httpx would; the
same client drives Pulseboard and every baseline server.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class PostSpec:
    """What one worker process posts.

    Attributes:
        port: server port on 127.0.0.1.
        bodies: request bodies; each is posted once (in order, shared by the connections).
        events_per_body: events in each body (for the events/s figure).
        connections: concurrent keep-alive connections of this worker.
        duration_s: stop starting new requests after this long (None: post every body).
        path: request path.
        content_type: request media type.
    """

    port: int
    bodies: list[bytes]
    events_per_body: list[int]
    connections: int = 1
    duration_s: float | None = None
    path: str = "/api/v1/events"
    content_type: str = "application/json"


@dataclass
class PostResult:
    """What one worker measured (``time.monotonic`` instants, system-wide on Linux)."""

    requests: int = 0
    events: int = 0
    statuses: Counter = field(default_factory=Counter)
    started_s: float = 0.0
    ended_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class HttpConnection:
    """One keep-alive HTTP/1.1 connection with a hand-rolled request/response cycle."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> HttpConnection:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer)

    async def post(self, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        """POST ``body``; return ``(status, response body)``."""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        return await self._response()

    async def _response(self) -> tuple[int, bytes]:
        header = await self.reader.readuntil(b"\r\n\r\n")
        lines = header.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = None
        for line in lines[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:].strip())
                break
        if length is None:
            raise RuntimeError(f"response without Content-Length: {header[:200]!r}")
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def _run(spec: PostSpec, ready, go) -> PostResult:
    conns = [await HttpConnection.open(spec.port) for _ in range(spec.connections)]
    ready()
    await go()
    result = PostResult(started_s=time.monotonic())
    deadline = result.started_s + spec.duration_s if spec.duration_s else float("inf")
    items = iter(zip(spec.bodies, spec.events_per_body, strict=True))

    async def drive(conn: HttpConnection) -> None:
        for body, n in items:
            if time.monotonic() >= deadline:
                return
            t0 = time.monotonic()
            try:
                status, text = await conn.post(spec.path, body, spec.content_type)
            except (OSError, asyncio.IncompleteReadError, RuntimeError) as exc:
                result.errors.append(repr(exc))
                return
            result.latencies_ms.append((time.monotonic() - t0) * 1000)
            result.statuses[status] += 1
            result.requests += 1
            if status == 202:
                result.events += n
            elif len(result.errors) < 5:
                result.errors.append(f"{status}: {text[:300]!r}")

    await asyncio.gather(*(drive(c) for c in conns))
    result.ended_s = time.monotonic()
    for c in conns:
        c.close()
    return result


def post_worker(spec: PostSpec, ready_q, go_event, out_q, index: int) -> None:
    """Process entry: connect, report ready, wait for the start signal, post, report the result."""
    import uvloop

    async def go() -> None:
        await asyncio.get_running_loop().run_in_executor(None, go_event.wait)

    try:
        result = uvloop.run(_run(spec, lambda: ready_q.put(index), go))
    except Exception as exc:  # reported to the parent, which fails the figure loudly
        result = PostResult(errors=[f"worker crashed: {exc!r}"])
        ready_q.put(index)
    out_q.put((index, result))
