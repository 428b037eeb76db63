"""Third-party browser assets: from the npm registry, served pre-compressed under versioned URLs.

``package.json`` / ``package-lock.json`` pin them (today the chart library, ``plotly.js-dist-min``).
At build time (``hatch_build.py``: the wheel's build hook, and ``scripts/bootstrap`` in a
checkout) each is copied into ``app/vendor/`` under a versioned name with a gzip copy beside it
and listed in ``app/vendor/manifest.json``; nothing third-party is in git.

- ``GET /vendor/{file}`` serves a file the manifest names, and nothing else (404): the gzip copy
  with ``Content-Encoding: gzip`` to a client whose ``Accept-Encoding`` accepts gzip
  (RFC 9110 §12.5.3, q-values honoured), the plain file otherwise; always ``Vary:
  Accept-Encoding`` and ``Cache-Control: public, max-age=31536000, immutable`` (a new version is
  a new URL, so a browser never asks twice).
- ``vendor_url(key)`` is the one place a page's URL for an asset comes from: ``page_response``
  serves an HTML page with every ``{{ vendor:KEY }}`` replaced by it (no inline script: the
  page keeps a plain ``<script src=...>``).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse

from app import resources
from app.auth.deps import public

router = APIRouter()

IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable"  # one year (RFC 8246 immutable)
URL_PREFIX = "/vendor/"
PLACEHOLDER_RE = re.compile(r"\{\{\s*vendor:([a-z0-9_-]+)\s*\}\}")


class VendorError(RuntimeError):
    """The vendored assets are missing or their manifest names no such asset (a broken install)."""


@dataclass(frozen=True)
class VendorAsset:
    """One vendored file: ``key`` (``"plotly"``), npm ``package`` and ``version``, the plain file
    ``path`` and its gzip copy ``gzip_path`` (both in ``app/vendor/``), and its ``url``."""

    key: str
    package: str
    version: str
    path: Path
    gzip_path: Path

    @property
    def url(self) -> str:
        """``/vendor/<versioned file name>``, e.g. ``/vendor/plotly-4.1.2.min.js``."""
        return URL_PREFIX + self.path.name


@functools.cache
def assets() -> dict[str, VendorAsset]:
    """The vendored assets by key, from ``app/vendor/manifest.json`` (read once).

    Raises:
        VendorError: no manifest (a checkout where ``scripts/bootstrap`` has not run).
    """
    try:
        folder = resources.vendor_dir()
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VendorError(f"vendored browser assets unreadable ({exc}): run scripts/bootstrap in a checkout") from exc
    return {
        key: VendorAsset(
            key, entry["npm_package"], entry["version"], folder / entry["file"], folder / entry["gzip_file"]
        )
        for key, entry in manifest.items()
    }


def vendor_url(key: str) -> str:
    """The versioned URL of the vendored asset ``key`` (``"plotly"`` -> ``/vendor/plotly-4.1.2.min.js``).

    Raises:
        VendorError: no such asset in the manifest.
    """
    asset = assets().get(key)
    if asset is None:
        raise VendorError(f"no vendored asset {key!r} (app/vendor/manifest.json has {sorted(assets())})")
    return asset.url


def render_page(path: Path) -> str:
    """The HTML page at ``path`` with each ``{{ vendor:KEY }}`` replaced by ``vendor_url(KEY)``."""
    return PLACEHOLDER_RE.sub(lambda match: vendor_url(match.group(1)), path.read_text(encoding="utf-8"))


def page_response(path: Path) -> HTMLResponse:
    """``render_page(path)`` as a ``text/html`` response."""
    return HTMLResponse(render_page(path))


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` value accepts gzip (RFC 9110 §12.5.3).

    ``gzip`` (or its alias ``x-gzip``) with q > 0 accepts it and with ``q=0`` refuses it; otherwise
    ``*`` decides; no header or an empty one gets the plain file.  A malformed q-value counts as 0.
    """
    if not accept_encoding:
        return False
    star: bool | None = None
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        if coding in ("gzip", "x-gzip"):
            return quality > 0
        if coding == "*":
            star = quality > 0
    return bool(star)


def _by_file_name() -> dict[str, VendorAsset]:
    return {asset.path.name: asset for asset in assets().values()}


@router.api_route("/vendor/{name}", methods=["GET", "HEAD"], include_in_schema=False, **public())
async def vendor_asset(name: str, request: Request) -> FileResponse:
    """A vendored file by its exact versioned name (see the module docstring); anything else is 404."""
    asset = _by_file_name().get(name)
    if asset is None:
        raise HTTPException(404, f"no vendor asset {name!r}")
    headers = {"Cache-Control": IMMUTABLE_CACHE_CONTROL, "Vary": "Accept-Encoding"}
    if accepts_gzip(request.headers.get("accept-encoding")):
        headers["Content-Encoding"] = "gzip"
        return FileResponse(asset.gzip_path, media_type="text/javascript", headers=headers)
    return FileResponse(asset.path, media_type="text/javascript", headers=headers)
