"""The hardened HTTP protocol by import path, for ``pulseboard serve --workers N``.

uvicorn's worker processes are spawned: the options they get are pickled, and the protocol class
built by ``app.api.edge.configured_protocol`` for the configured limits cannot be pickled by
reference. Passed as ``http="module:attr"`` instead, each worker imports this module, which builds
the class from the settings (the same environment as the parent).
"""

from __future__ import annotations

from app.api.edge import EdgeHttpProtocol, address_counter, configured_protocol
from app.config import Settings

_settings = Settings()
WorkerEdgeHttpProtocol: type[EdgeHttpProtocol] = configured_protocol(_settings, address_counter(_settings))
IMPORT_PATH = "app.api.worker_edge:WorkerEdgeHttpProtocol"
