"""The fan-out baseline: a bare ``websockets`` server broadcasting frames with ``broadcast()``.

Screens connect to any path but ``/control`` and get one small ``snapshot``
frame.  A message ``{"frames_file": F, "duration_s": D}`` on ``/control``
starts the broadcast: the frames of ``F`` (length-prefixed, captured from
Pulseboard's own updates) are sent round-robin with
``websockets.asyncio.server.broadcast`` as fast as the screens take them —
after each broadcast the loop waits while any screen's write buffer is over
``HIGH_WATER_BYTES`` (``broadcast`` itself has no backpressure) — for D
seconds; the reply tells how many frames went out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import time
from pathlib import Path

HIGH_WATER_BYTES = 64 * 1024


def read_frames(path: Path) -> list[bytes]:
    """Frames of a file written by ``write_frames``."""
    blob = path.read_bytes()
    frames, i = [], 0
    while i < len(blob):
        (n,) = struct.unpack_from("<I", blob, i)
        frames.append(blob[i + 4 : i + 4 + n])
        i += 4 + n
    return frames


def write_frames(path: Path, frames: list[bytes]) -> None:
    """Store ``frames`` length-prefixed."""
    path.write_bytes(b"".join(struct.pack("<I", len(f)) + f for f in frames))


async def serve(port: int) -> None:
    from websockets.asyncio.server import broadcast
    from websockets.asyncio.server import serve as ws_serve

    screens: set = set()

    async def blast(frames: list[bytes], duration_s: float) -> int:
        end = time.monotonic() + duration_s
        sent = 0
        while time.monotonic() < end:
            broadcast(screens, frames[sent % len(frames)], text=True)
            sent += 1
            await asyncio.sleep(0)
            while any(c.transport.get_write_buffer_size() > HIGH_WATER_BYTES for c in screens):
                await asyncio.sleep(0.0005)
                if time.monotonic() >= end:
                    break
        return sent

    async def handler(ws) -> None:
        if ws.request.path == "/control":
            order = json.loads(await ws.recv())
            sent = await blast(read_frames(Path(order["frames_file"])), order["duration_s"])
            await ws.send(json.dumps({"frames_sent": sent, "screens": len(screens)}))
            return
        screens.add(ws)
        try:
            await ws.send('{"type":"snapshot"}')
            await ws.wait_closed()
        finally:
            screens.discard(ws)

    async with ws_serve(
        handler,
        "127.0.0.1",
        port,
        compression=None,
        max_size=64 * 1024,
        ping_interval=10,
        ping_timeout=10,
        backlog=4096,
    ):
        await asyncio.Future()


def main() -> None:
    import uvloop

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        uvloop.run(serve(args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
