"""The uvicorn internals ``app/ws/transport.py`` relies on are where it expects them.

``DirectWebSocketProtocol`` subclasses uvicorn's ``WebSocketsSansIOProtocol`` and reads and
sets its private state.  A uvicorn release that renames or drops any of it must fail here,
naming what moved, instead of making screens silently slower or unbounded (a
``pause_writing`` that fell back to ``asyncio.Protocol``'s no-op would never mark a screen
backlogged).  pyproject.toml's lower bound (uvicorn 0.52.1) is the first release with all of it.
"""

from __future__ import annotations

import asyncio
import importlib
import json

import pytest
import uvicorn
import websockets
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.server import ServerProtocol

MODULE = "uvicorn.protocols.websockets.websockets_sansio_impl"
CLASS = "WebSocketsSansIOProtocol"
# Methods DirectWebSocketProtocol overrides or relies on, defined by uvicorn's class itself.
OWN_METHODS = ("connection_made", "connection_lost", "handle_connect", "pause_writing", "resume_writing")
# Instance state it reads or sets: name -> what it must be right after the handshake.
STATE_AFTER_ACCEPT = {
    "handshake_complete": True,
    "close_sent": False,
    "disconnected": False,
    "read_paused": False,
    "close_timer": None,
}


def _moved(what: list[str]) -> str:
    return (
        f"uvicorn {uvicorn.__version__} lacks internals that app/ws/transport.py relies on (moved, renamed or not "
        "there yet): " + "; ".join(what) + ". Adapt DirectWebSocketProtocol to this uvicorn, or keep uvicorn within "
        "the range pyproject.toml gives (>= 0.52.1, the first release with all of them)."
    )


def _protocol_class() -> type:
    try:
        module = importlib.import_module(MODULE)
    except ImportError as exc:
        pytest.fail(_moved([f"module {MODULE} is gone ({exc})"]))
    cls = getattr(module, CLASS, None)
    if cls is None:
        pytest.fail(_moved([f"{MODULE}.{CLASS} is gone"]))
    return cls


def test_the_class_and_its_own_methods():
    cls = _protocol_class()
    own = {name for klass in cls.__mro__ if not klass.__module__.startswith("asyncio") for name in vars(klass)}
    missing = [
        f"{CLASS}.{name}() is not defined by uvicorn (only asyncio's no-op)" for name in OWN_METHODS if name not in own
    ]
    assert not missing, _moved(missing)


def test_uvicorn_takes_the_protocol_class_as_ws():
    from app.ws.transport import DirectWebSocketProtocol, direct_protocol

    protocol = direct_protocol(4096)
    config = uvicorn.Config(lambda scope, receive, send: None, ws=protocol, lifespan="off")
    config.load()
    assert config.ws_protocol_class is protocol
    assert issubclass(protocol, DirectWebSocketProtocol) and issubclass(protocol, _protocol_class())
    assert protocol.write_buffer_high_bytes == 4096


async def test_state_and_direct_writes_on_a_real_connection():
    """A real uvicorn server with the direct protocol: every private attribute is there with the
    expected value after the handshake, a pre-built frame reaches the client, ``close_now``
    closes it with its code and arms uvicorn's close timer."""
    from app.ws.transport import DIRECT_EXTENSION, direct_protocol, text_frame

    seen: dict[str, object] = {}
    done = asyncio.Event()

    async def app(scope, receive, send):
        assert scope["type"] == "websocket"
        await receive()  # websocket.connect
        proto = scope["extensions"].get(DIRECT_EXTENSION)
        seen["proto"] = proto
        await send({"type": "websocket.accept"})
        if proto is not None:
            seen["state"] = {name: getattr(proto, name, "<missing>") for name in STATE_AFTER_ACCEPT}
            seen["others"] = {
                name: hasattr(proto, name) for name in ("scope", "transport", "conn", "writable", "queue", "loop")
            }
            try:
                seen["open"] = proto.is_open()
                seen["wrote"] = proto.write_frame(text_frame(json.dumps({"hello": 1}).encode()))
                await receive()  # the client's "close me"
                proto.close_now(4008, "too slow", abort_after_s=5)
                seen["after_close"] = (proto.close_sent, proto.is_open(), type(proto.close_timer).__name__)
                seen["disconnect"] = await receive()
            except AttributeError as exc:  # named in the failure below
                seen["error"] = f"DirectWebSocketProtocol raised AttributeError: {exc}"
                await send({"type": "websocket.close", "code": 1011})
        done.set()

    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, ws=direct_protocol(4096), lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while not (server.started or task.done()):  # poll the start with a deadline
            assert asyncio.get_running_loop().time() < deadline, "uvicorn did not start within 30 s"
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        port = server.servers[0].sockets[0].getsockname()[1]
        first: str | bytes | None = None
        closed: ConnectionClosed | None = None
        async with connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
            try:
                first = await asyncio.wait_for(ws.recv(), 10)
                await ws.send("close me")
                await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed as exc:
                closed = exc
        await asyncio.wait_for(done.wait(), 10)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)

    proto = seen["proto"]
    assert proto is not None, _moved(
        [f"handle_connect() no longer leaves a scope with extensions ({DIRECT_EXTENSION})"]
    )
    moved = [f"{name} is missing" for name, present in seen["others"].items() if not present]
    moved += [
        f"{name} is {value!r} after the handshake, expected {STATE_AFTER_ACCEPT[name]!r}"
        for name, value in seen["state"].items()
        if value != STATE_AFTER_ACCEPT[name]
    ]
    if not isinstance(getattr(proto, "conn", None), ServerProtocol):
        moved.append(f"conn is not a websockets ServerProtocol (websockets {websockets.__version__})")
    if not isinstance(getattr(proto, "writable", None), asyncio.Event):
        moved.append("writable is not an asyncio.Event")
    if "error" in seen:
        moved.append(str(seen["error"]))
    assert not moved, _moved(moved)
    assert proto.transport.get_write_buffer_limits()[1] == 4096  # connection_made applied the high-water mark
    assert seen["open"] is True and seen["wrote"] is True
    assert first is not None and json.loads(first) == {"hello": 1}
    assert (
        closed is not None and closed.rcvd is not None and (closed.rcvd.code, closed.rcvd.reason) == (4008, "too slow")
    )
    assert seen["after_close"] == (True, False, "TimerHandle")
    assert seen["disconnect"] == {"type": "websocket.disconnect", "code": 4008, "reason": "too slow"}
