"""Third-party browser assets, served from the Python packages that ship them.

Nothing third-party is copied into ``frontend/``: the charting library comes
from the ``plotly`` package's own ``package_data/plotly.min.js``.
"""

from __future__ import annotations

from pathlib import Path

import plotly
from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from app.auth.deps import public

router = APIRouter()
ASSETS = {
    "plotly.min.js": Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js",
}


@router.get("/vendor/{name}", include_in_schema=False, **public())
async def vendor_asset(name: str) -> FileResponse:
    """A shipped asset by exact name (no paths: anything else is 404)."""
    path = ASSETS.get(name)
    if path is None or not path.is_file():
        raise HTTPException(404, f"no vendor asset {name!r}")
    return FileResponse(path, media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})
