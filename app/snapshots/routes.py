"""Snapshot, scorecard and reconciliation endpoints (CONTRACT §7) and their pages."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from app.api.deps import RuntimeDep
from app.api.jsonresp import FiniteJSONResponse as JSONResponse
from app.api.routes import FRONTEND_DIR
from app.api.text import StoredText
from app.api.vendor import page_response
from app.auth.deps import public, scoped
from app.metrics.calendar import to_us
from app.runtime import Runtime
from app.snapshots import cut as cuts
from app.snapshots import scorecard as cards
from app.snapshots.export import scorecard_csv, snapshot_csv

router = APIRouter()
DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MONTH_RE = re.compile(r"^\d{4}-\d{2}$")
Grain = Literal["day", "month"]


def _valid_period(grain: str, period: str) -> bool:
    try:
        if grain == "day":
            return bool(DAY_RE.match(period)) and date.fromisoformat(period) is not None
        return bool(MONTH_RE.match(period)) and 1 <= int(period[5:]) <= 12
    except ValueError:
        return False


def _check_period(grain: str, period: str) -> None:
    if not _valid_period(grain, period):
        raise HTTPException(404, f"no {grain} {period!r}: use YYYY-MM-DD for days and YYYY-MM for months")


async def _snapshot(runtime: Runtime, dashboard: str, grain: str, period: str, version: int | None) -> Any:
    """The latest (or ``version``) snapshot row of a period.

    Raises:
        HTTPException: 404 for a malformed period, or a period (version) not cut.
        NotCut: 404 for an unknown dashboard or period.
    """
    _check_period(grain, period)
    service = runtime.snapshots
    service.target(dashboard)
    service.period(dashboard, grain, period)
    async with runtime.engine.connect() as conn:
        rows = await cuts.versions(conn, dashboard, grain, period)
    if version is not None:
        rows = [r for r in rows if r.version == version]
    if not rows:
        raise HTTPException(
            404, f"{dashboard}: {grain} {period} has not been cut" + (f" (version {version})" if version else "")
        )
    return rows[-1]


@router.get(
    "/api/v1/snapshots/{dashboard}/{grain}/{period}",
    summary="The latest (or ?version=n) snapshot of a period",
    **scoped("read", "admin"),
)
async def get_snapshot(
    dashboard: str, grain: Grain, period: str, runtime: RuntimeDep, version: int | None = None
) -> JSONResponse:
    return JSONResponse(cuts.snapshot_json(await _snapshot(runtime, dashboard, grain, period, version)))


@router.get(
    "/api/v1/snapshots/{dashboard}/{grain}/{period}/versions",
    summary="Every version, with what changed and why",
    **scoped("read", "admin"),
)
async def snapshot_versions(dashboard: str, grain: Grain, period: str, runtime: RuntimeDep) -> JSONResponse:
    await _snapshot(runtime, dashboard, grain, period, None)
    async with runtime.engine.connect() as conn:
        rows = await cuts.versions(conn, dashboard, grain, period)
    return JSONResponse(
        {
            "dashboard": dashboard,
            "grain": grain,
            "period": period,
            "versions": [{k: v for k, v in cuts.snapshot_json(r).items() if k != "kpis"} for r in rows],
        }
    )


@router.get(
    "/api/v1/snapshots/{dashboard}/{grain}/{period}/export.csv", summary="A snapshot as CSV", **scoped("read", "admin")
)
async def snapshot_export(dashboard: str, grain: Grain, period: str, runtime: RuntimeDep) -> Response:
    snap = cuts.snapshot_json(await _snapshot(runtime, dashboard, grain, period, None))
    return Response(
        snapshot_csv(snap),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{dashboard}-{grain}-{period}-v{snap["version"]}.csv"'},
    )


class CutRequest(BaseModel):
    """A manual cut: the same code path as the scheduled job."""

    grain: Grain
    period: str = Field(pattern=r"^\d{4}-\d{2}(-\d{2})?$")


@router.post(
    "/api/v1/snapshots/{dashboard}/cut", summary="Cut (or re-cut) a period now", status_code=201, **scoped("admin")
)
async def cut_now(dashboard: str, body: CutRequest, runtime: RuntimeDep) -> JSONResponse:
    _check_period(body.grain, body.period)
    row, created = await runtime.snapshots.cut_period(dashboard, body.grain, body.period)
    return JSONResponse({**cuts.snapshot_json(row), "created": created}, status_code=201 if created else 200)


@router.get(
    "/api/v1/reconciliation/{dashboard}/{grain}/{period}",
    summary="Check a period's numbers against each other",
    **scoped("read", "admin"),
)
async def reconciliation(dashboard: str, grain: Grain, period: str, runtime: RuntimeDep) -> JSONResponse:
    _check_period(grain, period)
    return JSONResponse(await runtime.snapshots.reconcile(dashboard, grain, period))


async def _card(runtime: Runtime, dashboard: str, month: str) -> dict[str, Any]:
    """The scorecard of ``month``.

    Raises:
        HTTPException: 404 for a malformed month or an unknown dashboard.
        NotCut: 404 for a month not cut.
    """
    if not MONTH_RE.match(month) or dashboard not in runtime.snapshots.targets:
        raise HTTPException(404, f"no scorecard {dashboard}/{month}")
    async with runtime.engine.connect() as conn:
        return await cards.build(conn, dashboard, month)


@router.get(
    "/api/v1/scorecards/{dashboard}/{month}",
    summary="The monthly scorecard and its review agenda",
    **scoped("read", "admin"),
)
async def get_scorecard(dashboard: str, month: str, runtime: RuntimeDep) -> JSONResponse:
    return JSONResponse(await _card(runtime, dashboard, month))


@router.get(
    "/api/v1/scorecards/{dashboard}/{month}/export.csv", summary="The scorecard as CSV", **scoped("read", "admin")
)
async def scorecard_export(dashboard: str, month: str, runtime: RuntimeDep) -> Response:
    card = await _card(runtime, dashboard, month)
    return Response(
        scorecard_csv(card),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{dashboard}-scorecard-{month}.csv"'},
    )


class NoteIn(BaseModel):
    """A commentary note on one KPI of a monthly scorecard."""

    kpi: StoredText = Field(min_length=1, max_length=128)
    text: StoredText = Field(min_length=1, max_length=cards.MAX_NOTE_CHARS)
    author: StoredText = Field(default="anonymous", min_length=1, max_length=128)


class PublishIn(BaseModel):
    """Who publishes the scorecard."""

    by: StoredText = Field(default="anonymous", min_length=1, max_length=128)


@router.post(
    "/api/v1/scorecards/{dashboard}/{month}/commentary",
    status_code=201,
    summary="Add a note to one KPI",
    **scoped("admin"),
)
async def add_commentary(dashboard: str, month: str, note: NoteIn, runtime: RuntimeDep) -> JSONResponse:
    await _card(runtime, dashboard, month)
    added = await cards.add_note(
        runtime.engine, dashboard, month, note.kpi, note.text, note.author, to_us(runtime.clock.now())
    )
    return JSONResponse(added, status_code=201)


@router.post(
    "/api/v1/scorecards/{dashboard}/{month}/publish", summary="Publish (lock) the scorecard", **scoped("admin")
)
async def publish_scorecard(
    dashboard: str, month: str, runtime: RuntimeDep, body: Annotated[PublishIn | None, Body()] = None
) -> JSONResponse:
    await _card(runtime, dashboard, month)
    card = await cards.publish(runtime.engine, dashboard, month, (body or PublishIn()).by, to_us(runtime.clock.now()))
    return JSONResponse(card)


@router.get("/day/{slug}/{day}", include_in_schema=False, **public())
async def day_page(slug: str, day: str, runtime: RuntimeDep) -> HTMLResponse:
    if not _valid_period("day", day) or slug not in runtime.snapshots.targets:
        raise HTTPException(404, "no such end-of-day page")
    return page_response(FRONTEND_DIR / "day" / "index.html")


@router.get("/scorecard/{slug}/{month}", include_in_schema=False, **public())
async def scorecard_page(slug: str, month: str, runtime: RuntimeDep) -> HTMLResponse:
    if not _valid_period("month", month) or slug not in runtime.snapshots.targets:
        raise HTTPException(404, "no such scorecard page")
    return page_response(FRONTEND_DIR / "scorecard" / "index.html")
