"""The one JSON response class of the API: non-finite numbers are written as ``null``.

Starlette's ``JSONResponse`` raises ``ValueError`` on NaN or ±inf (``allow_nan=False``), which
turned one poisoned partial into a 500 on every read (issue 10 item 1).  KPIs are already
``None`` where undefined (``app.metrics.evaluate``); this is the last line: whatever a handler
returns, the body is valid JSON (RFC 8259 has no NaN), with ``null`` in place of a non-finite
number, as ``msgspec`` encodes them.
"""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi.responses import JSONResponse

_encoder = msgspec.json.Encoder()


class FiniteJSONResponse(JSONResponse):
    """``JSONResponse`` that encodes with msgspec: NaN and ±inf become ``null``, never a 500."""

    def render(self, content: Any) -> bytes:
        """``content`` (JSON-able: dicts, lists, str, int, float, bool, None) as UTF-8 JSON bytes."""
        return _encoder.encode(content)
