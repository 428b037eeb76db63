"""Shared fixtures: a store per test (SQLite file or a fresh PostgreSQL schema),
a real uvicorn server on a free port, and HTTP / WebSocket clients.

PostgreSQL tests skip when no server answers at ``PULSEBOARD_TEST_PG``
(default ``postgresql://postgres@127.0.0.1:5432/test``), except with
``CI=true``, where they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from app.clock import Clock
from app.config import Settings
from app.main import create_app, uvicorn_options
from tests.helpers import wait_until

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


TEST_SOURCES = ("default", "anonymous-bank", "itsm-incident-log", "pcic2021", "github-status")
_SOURCE_RE = re.compile(rb'"source"\s*:\s*"([^"\\]{1,64})"')


@dataclass
class TestKeys:
    """Keys a test server is started with: one per scope, ingest keys per test source,
    display keys per dashboard."""

    __test__ = False  # not a test class, though its name starts with "Test" (test modules import it)

    admin: str
    read: str
    ingest: dict[str, str]
    display: dict[str, str]


async def make_test_keys(app) -> TestKeys:
    """Create the test keys in ``app``'s store (the lifespan must be running)."""
    store = app.state.runtime.keys
    now = 0

    async def key(scope: str, **kw) -> str:
        return (await store.create(scope, f"test {scope}", now, **kw))[0]

    slugs = [d for p in app.state.runtime.packs.values() for d in p.dashboards]
    return TestKeys(
        admin=await key("admin"),
        read=await key("read"),
        ingest={s: await key("ingest", source=s) for s in TEST_SOURCES},
        display={slug: await key("display", dashboard=slug) for slug in slugs},
    )


class ScopedAuth(httpx.Auth):
    """Test client auth: the key a real client of each route would hold (ingest key of the
    posted source for events, admin for other changes, read for reads)."""

    def __init__(self, keys: TestKeys) -> None:
        self.keys = keys

    def auth_flow(self, request: httpx.Request):
        if "authorization" not in request.headers:
            if request.method == "POST" and request.url.path == "/api/v1/events":
                found = _SOURCE_RE.search(request.content or b"")
                source = found.group(1).decode("utf-8", "replace") if found else "default"
                key = self.keys.ingest.get(source, self.keys.ingest["default"])
            elif request.method in ("POST", "PUT", "PATCH", "DELETE"):
                key = self.keys.admin
            else:
                key = self.keys.read
            request.headers["Authorization"] = f"Bearer {key}"
        yield request


def keyed_client(srv: RunningServer | Any, **kw) -> httpx.AsyncClient:
    """An HTTP client for the test server ``srv`` (anything with ``url`` and ``keys``: a
    ``RunningServer``, a module fixture's server), holding the keys a real client of each route
    would hold (see ``ScopedAuth``).  The keys travel with the server: there is no registry.

    Raises:
        TypeError: ``srv`` is a URL (pass the server object).
    """
    if isinstance(srv, str):
        raise TypeError("keyed_client takes the server (with .url and .keys), not its URL")
    return httpx.AsyncClient(base_url=srv.url, auth=ScopedAuth(srv.keys), **kw)


async def serve(app, settings: Settings, timeout_s: float = 10.0) -> tuple[uvicorn.Server, asyncio.Task, str]:
    """Run ``app`` under uvicorn in this event loop on a free port of 127.0.0.1.

    Returns:
        ``(server, its task, base URL)`` once it accepts connections; stop it with
        ``server.should_exit = True`` and await the task.

    Raises:
        Whatever stopped the server during start-up (port taken, store error), or
        AssertionError when it has not started within ``timeout_s``.
    """
    opts = {**uvicorn_options(settings), "host": "127.0.0.1", "port": 0, "log_level": "warning"}
    server = uvicorn.Server(uvicorn.Config(app, **opts))
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started or task.done(), timeout_s, what="the test server to start")
    if task.done():
        task.result()
        raise AssertionError("the test server stopped during start-up")
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, task, f"http://127.0.0.1:{port}"


@dataclass
class RunningServer:
    """A live server: its base URL, app, settings and test keys."""

    url: str
    ws_url: str
    app: object
    settings: Settings
    server: uvicorn.Server
    keys: TestKeys | None = None

    def auth(self, scope: str = "read", dashboard: str | None = None) -> dict[str, str]:
        """An Authorization header with the test key of ``scope``."""
        assert self.keys is not None
        key = self.keys.display[dashboard] if scope == "display" else getattr(self.keys, scope)
        if isinstance(key, dict):
            key = key["default"]
        return {"Authorization": f"Bearer {key}"}

    @property
    def runtime(self):
        return self.app.state.runtime

    async def stop(self) -> None:
        self.server.should_exit = True


@pytest.fixture
async def start_server() -> AsyncIterator[Callable[..., asyncio.Future[RunningServer]]]:
    """Factory: ``await start_server(settings, clock=None)`` runs a real uvicorn server
    in this event loop on a free port; every server started is stopped after the test."""
    started: list[tuple[uvicorn.Server, asyncio.Task]] = []

    async def factory(settings: Settings, clock: Clock | None = None) -> RunningServer:
        app = create_app(settings, clock=clock)
        server, task, url = await serve(app, settings)
        started.append((server, task))
        keys = await make_test_keys(app)
        return RunningServer(url, "ws" + url[len("http") :], app, settings, server, keys)

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
    async with keyed_client(server, timeout=30) as c:
        yield c


@pytest.fixture
def client_for():
    """Factory: ``async with client_for(server) as client``."""

    def factory(srv: RunningServer, auth: bool = True) -> httpx.AsyncClient:
        return keyed_client(srv, timeout=60) if auth else httpx.AsyncClient(base_url=srv.url, timeout=60)

    return factory


httpx_client = client_for


def settings_to_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Put ``settings`` into the environment, the way the CLI reads them."""
    for key, value in settings.model_dump(exclude_none=True).items():
        if key == "database_url":
            monkeypatch.setenv("DATABASE_URL", value)
        elif isinstance(value, (str, int, float, bool)) or hasattr(value, "__fspath__"):
            monkeypatch.setenv(f"PULSEBOARD_{key.upper()}", str(value))


# Tests that measure time (deadlines, latency bounds, readiness during a fault) or load the machine
# on purpose run alone: scripts/test runs everything else on 2 xdist workers first, then these in one
# process (`-m serial`), so a 2-core machine is never shared between two of them.
SERIAL_MODULES = frozenset(
    {
        "test_cluster_lease",
        "test_crash",
        "test_db_hang",
        "test_db_restart",
        "test_edge",
        "test_halfopen",
        "test_overload",
        "test_scale_out",
        "test_scale_out_failures",
        "test_shutdown",
        "test_snapshot_stop",
        "test_lifespan",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the time-measuring modules and every browser test ``serial`` (see SERIAL_MODULES)."""
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if module in SERIAL_MODULES or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.serial)
