"""The direct WebSocket protocol by import path, for ``pulseboard serve --workers N``.

uvicorn's worker processes import the WebSocket protocol class by name (``ws="module:attr"``), so
the class built by ``direct_protocol`` for the configured write buffer must live at module level:
this module builds it from the settings when a worker imports it.
"""

from __future__ import annotations

from app.config import Settings
from app.ws.transport import DirectWebSocketProtocol, direct_protocol

WorkerDirectProtocol: type[DirectWebSocketProtocol] = direct_protocol(Settings().ws_write_buffer_bytes)
IMPORT_PATH = "app.ws.worker_protocol:WorkerDirectProtocol"
