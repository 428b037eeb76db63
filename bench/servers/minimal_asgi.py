"""The single-event ingest baseline: a minimal ASGI app answering 202 to every POST.

It reads the whole body (as Pulseboard must) and answers
``202 {"accepted": 1, "duplicates": 0}`` — no parsing, no validation, no
storage.  Served by uvicorn with Pulseboard's own uvicorn options
(``app.cli.uvicorn_options``), so the HTTP stack is the same.
"""

from __future__ import annotations

import argparse

BODY = b'{"accepted":1,"duplicates":0}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send) -> None:
    """ASGI 3 app: 202 after draining the request body; 200 ``ok`` for GET (readiness)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    status = 202 if scope["method"] == "POST" else 200
    await send({"type": "http.response.start", "status": status, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main() -> None:
    import uvicorn

    from app.config import Settings
    from app.main import uvicorn_options

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, **uvicorn_options(Settings(port=args.port)))  # same options, access log included


if __name__ == "__main__":
    main()
