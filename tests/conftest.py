"""Shared fixtures: a store per test (SQLite file or a fresh PostgreSQL schema),
a real uvicorn server on a free port, and HTTP / WebSocket clients.

PostgreSQL tests skip when no server answers at ``PULSEBOARD_TEST_PG``
(default ``postgresql://postgres@127.0.0.1:5432/test``), except with
``CI=true``, where they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from app.cli import uvicorn_options
from app.clock import Clock
from app.config import Settings
from app.main import create_app

PG_URL = os.environ.get("PULSEBOARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _drop_pg_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Parametrises a test over both stores."""
    if request.param == "postgresql" and not pg_available():
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI but does not answer at {PG_URL}")
        pytest.skip(f"no PostgreSQL at {PG_URL}")
    return request.param


@pytest.fixture
def make_settings(tmp_path: Path, store_kind: str) -> Iterator[Callable[..., Settings]]:
    """Factory of ``Settings`` on a clean store of ``store_kind``; keyword overrides apply.

    PostgreSQL: each test gets its own schema (dropped afterwards), so test runs
    can share one database.
    """
    schema = f"pb_test_{secrets.token_hex(6)}"

    def factory(**overrides) -> Settings:
        base = {"data_dir": tmp_path / "var", "tz": "UTC", "snapshots_enabled": False}
        if store_kind == "postgresql":
            base["database_url"] = PG_URL
            base["db_schema"] = schema
        base.update(overrides)
        return Settings(**base)

    yield factory
    if store_kind == "postgresql":
        _drop_pg_schema(schema)


@dataclass
class RunningServer:
    """A live server: its base URL, app and settings."""

    url: str
    ws_url: str
    app: object
    settings: Settings
    server: uvicorn.Server

    @property
    def runtime(self):
        return self.app.state.runtime

    async def stop(self) -> None:
        self.server.should_exit = True


@pytest.fixture
async def start_server() -> AsyncIterator[Callable[..., "asyncio.Future[RunningServer]"]]:
    """Factory: ``await start_server(settings, clock=None)`` runs a real uvicorn server
    in this event loop on a free port; every server started is stopped after the test."""
    started: list[tuple[uvicorn.Server, asyncio.Task]] = []

    async def factory(settings: Settings, clock: Clock | None = None) -> RunningServer:
        app = create_app(settings, clock=clock)
        opts = {**uvicorn_options(settings), "host": "127.0.0.1", "port": 0, "log_level": "warning"}
        server = uvicorn.Server(uvicorn.Config(app, **opts))
        task = asyncio.create_task(server.serve())
        started.append((server, task))
        for _ in range(1000):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        port = server.servers[0].sockets[0].getsockname()[1]
        return RunningServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", app, settings, server)

    yield factory
    for server, _ in started:
        server.should_exit = True
    for _, task in started:
        await asyncio.wait_for(task, 15)


@pytest.fixture
async def server(make_settings, start_server) -> RunningServer:
    """A running server on a clean store with default settings (UTC)."""
    return await start_server(make_settings())


@pytest.fixture
async def client(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP client bound to ``server``."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture
def client_for():
    """Factory: ``async with client_for(server) as client``."""

    def factory(srv: RunningServer) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=srv.url, timeout=60)

    return factory


httpx_client = client_for
