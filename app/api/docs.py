"""The public contract and the KPI pack schema, served beside the OpenAPI document.

- ``GET /docs/contract``: ``docs/CONTRACT.md`` (the living copy of the public contract), as
  ``text/markdown``.
- ``GET /api/v1/schemas/pack.json``: the JSON Schema of a KPI pack file, generated from the
  models that validate packs (``app.metrics.pack_format``); ``docs/pack.schema.json`` is the
  same document, kept in sync by a test.

Both are public: they describe the server, not its data.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse, Response

from app.auth.deps import public
from app.metrics.pack_format import SCHEMA_PATH, pack_json_schema

router = APIRouter()
CONTRACT_PATH = "/docs/contract"
CONTRACT_FILE = "CONTRACT.md"
API_DESCRIPTION = (
    "Real-time operations dashboards: events in, KPI rollups, live tiles.\n\n"
    f"The public contract (events, reads, live tiles, snapshots, close codes): [{CONTRACT_PATH}]({CONTRACT_PATH}) "
    "(`docs/CONTRACT.md` in the repository). "
    f"The format of KPI pack files: [{SCHEMA_PATH}]({SCHEMA_PATH}) (JSON Schema, `docs/pack.schema.json`)."
)


def contract_markdown() -> str | None:
    """The text of ``CONTRACT.md``: from the installed package (``app/docs/``, where a wheel maps
    the repository's ``docs/``) or, in a checkout, from ``docs/`` beside ``app/``; ``None`` when
    neither has it."""
    installed = resources.files("app") / "docs" / CONTRACT_FILE
    if installed.is_file():
        return installed.read_text(encoding="utf-8")
    checkout = Path(__file__).resolve().parents[2] / "docs" / CONTRACT_FILE
    if checkout.is_file():
        return checkout.read_text(encoding="utf-8")
    return None


@router.get(CONTRACT_PATH, summary="The public contract (Markdown)", **public())
async def contract() -> Response:
    """``docs/CONTRACT.md`` as ``text/markdown``.

    Raises:
        HTTPException: 404 when the server was installed without it.
    """
    text = contract_markdown()
    if text is None:
        raise HTTPException(404, "this installation carries no CONTRACT.md; see docs/CONTRACT.md in the repository")
    return Response(text, media_type="text/markdown; charset=utf-8")


@router.get(SCHEMA_PATH, summary="The JSON Schema of a KPI pack file", **public())
async def pack_schema() -> JSONResponse:
    """The pack format as JSON Schema (2020-12), for pack authors and their editors."""
    return JSONResponse(pack_json_schema(), media_type="application/schema+json")
