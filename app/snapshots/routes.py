"""Snapshot, scorecard and reconciliation endpoints (CONTRACT §7) and their pages."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from app.api.deps import RuntimeDep
from app.api.jsonresp import FiniteJSONResponse as JSONResponse
from app.api.routes import FRONTEND_DIR
from app.api.text import StoredText
from app.api.vendor import page_response
from app.auth.deps import ANONYMOUS, SCOPE_KEY, Access, public, require, scoped
from app.metrics.calendar import to_us
from app.runtime import Runtime
from app.snapshots import breaches as breach_log
from app.snapshots import cut as cuts
from app.snapshots import endofday
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
    **scoped("read", "admin", "comment"),
)
async def get_snapshot(
    dashboard: str, grain: Grain, period: str, runtime: RuntimeDep, version: int | None = None
) -> JSONResponse:
    return JSONResponse(cuts.snapshot_json(await _snapshot(runtime, dashboard, grain, period, version)))


@router.get(
    "/api/v1/snapshots/{dashboard}/{grain}/{period}/versions",
    summary="Every version, with what changed and why",
    **scoped("read", "admin", "comment"),
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
    "/api/v1/snapshots/{dashboard}/{grain}/{period}/export.csv",
    summary="A snapshot as CSV",
    **scoped("read", "admin", "comment"),
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
    **scoped("read", "admin", "comment"),
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
    **scoped("read", "admin", "comment"),
)
async def get_scorecard(dashboard: str, month: str, runtime: RuntimeDep) -> JSONResponse:
    await runtime.hub.flush_breaches()
    return JSONResponse(await _card(runtime, dashboard, month))


@router.get(
    "/api/v1/scorecards/{dashboard}/{month}/export.csv",
    summary="The scorecard as CSV",
    **scoped("read", "admin", "comment"),
)
async def scorecard_export(dashboard: str, month: str, runtime: RuntimeDep) -> Response:
    card = await _card(runtime, dashboard, month)
    return Response(
        scorecard_csv(card),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{dashboard}-scorecard-{month}.csv"'},
    )


class NoteIn(BaseModel):
    """A commentary note on one KPI of a monthly scorecard (or, with ``day``, of one day).

    The author is the authenticated person: the key's holder (``author``, when sent, must be that
    person); a key without a holder writes as ``author``, else as the key's name.
    """

    kpi: StoredText = Field(min_length=1, max_length=128)
    text: StoredText = Field(min_length=1, max_length=cards.MAX_NOTE_CHARS)
    author: StoredText | None = Field(default=None, min_length=1, max_length=128)
    day: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")


class DayNoteIn(BaseModel):
    """The owner's note on one KPI of one day (the explanation of its breaches)."""

    kpi: StoredText = Field(min_length=1, max_length=128)
    text: StoredText = Field(min_length=1, max_length=cards.MAX_NOTE_CHARS)


class PublishIn(BaseModel):
    """Who publishes: the key's holder (``by``, when sent, must be that person); a key without a
    holder publishes as ``by``, else as the key's name."""

    by: StoredText | None = Field(default=None, min_length=1, max_length=128)


def _person(access: Access, claimed: str | None, field: str) -> str:
    """The author of a note or a publication: the key's holder.

    A key with a holder writes as that person: a ``claimed`` name that differs is refused (422
    naming ``field``).  A key without a holder (made before holders, or without ``--holder``)
    writes as the claimed name, else the key's name; such notes carry ``author_key_id`` so the
    key behind them is known.  With access checks disabled, the claim (or "anonymous") stands.
    """
    if access.key is ANONYMOUS:
        return claimed or "anonymous"
    holder = access.key.holder
    if holder is None:
        return claimed or access.key.name
    if claimed is not None and claimed != holder:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", field),
                    "msg": f"this key belongs to {holder!r}: it writes as its holder, not as another name",
                    "input": claimed,
                }
            ]
        )
    return holder


CommentAccess = Annotated[Access, Depends(require("admin", "comment"))]
AdminAccess = Annotated[Access, Depends(require("admin"))]


@router.post(
    "/api/v1/scorecards/{dashboard}/{month}/commentary",
    status_code=201,
    summary="Add a note to one KPI (of the month, or of one of its days)",
    openapi_extra={SCOPE_KEY: ["admin", "comment"]},
)
async def add_commentary(
    dashboard: str, month: str, note: NoteIn, runtime: RuntimeDep, access: CommentAccess
) -> JSONResponse:
    if note.day is not None and (not _valid_period("day", note.day) or note.day[:7] != month):
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", "day"), "msg": f"must be a day of {month}", "input": note.day}]
        )
    if note.day is None:
        await _card(runtime, dashboard, month)
    elif dashboard not in runtime.snapshots.targets:
        raise HTTPException(404, f"no dashboard {dashboard!r}")
    author = _person(access, note.author, "author")
    added = await cards.add_note(
        runtime.engine,
        dashboard,
        month,
        note.kpi,
        note.text,
        author,
        to_us(runtime.clock.now()),
        key_id=access.key.id,
        day=note.day,
        pack_kpis=runtime.snapshots.target(dashboard).pack.kpis,
    )
    return JSONResponse(added, status_code=201)


@router.post(
    "/api/v1/scorecards/{dashboard}/{month}/publish",
    summary="Publish (freeze) the scorecard; again after a restatement",
    openapi_extra={SCOPE_KEY: ["admin"]},
)
async def publish_scorecard(
    dashboard: str,
    month: str,
    runtime: RuntimeDep,
    access: AdminAccess,
    body: Annotated[PublishIn | None, Body()] = None,
) -> JSONResponse:
    await _card(runtime, dashboard, month)
    by = _person(access, (body or PublishIn()).by, "by")
    card = await cards.publish(runtime.engine, dashboard, month, by, to_us(runtime.clock.now()), access.key.id)
    return JSONResponse(card)


@router.get(
    "/api/v1/scorecards/{dashboard}/{month}/publications",
    summary="Every publication of the scorecard, oldest first",
    **scoped("read", "admin", "comment"),
)
async def scorecard_publications(dashboard: str, month: str, runtime: RuntimeDep) -> JSONResponse:
    card = await _card(runtime, dashboard, month)
    return JSONResponse(
        {
            "dashboard": dashboard,
            "month": month,
            "publications": card["publications"],
            "restated_after_publication": card["restated_after_publication"],
        }
    )


def _day_target(runtime: Runtime, dashboard: str, day: str) -> cuts.Target:
    if not _valid_period("day", day) or dashboard not in runtime.snapshots.targets:
        raise HTTPException(404, f"no end-of-day dashboard {dashboard}/{day}")
    return runtime.snapshots.targets[dashboard]


@router.get(
    "/api/v1/days/{dashboard}/{day}",
    summary="The end-of-day dashboard: pinned snapshot, breaches with owners and explanations, sign-off",
    **scoped("read", "admin", "comment"),
)
async def get_day(dashboard: str, day: str, runtime: RuntimeDep) -> JSONResponse:
    target = _day_target(runtime, dashboard, day)
    await runtime.hub.flush_breaches()
    async with runtime.engine.connect() as conn:
        view = await endofday.build_day(conn, dashboard, day, target.pack, runtime.snapshots.zone(dashboard))
    return JSONResponse(view)


@router.post(
    "/api/v1/days/{dashboard}/{day}/commentary",
    status_code=201,
    summary="The owner's note on one KPI of the day (explains its breaches)",
    openapi_extra={SCOPE_KEY: ["admin", "comment"]},
)
async def add_day_note(
    dashboard: str, day: str, note: DayNoteIn, runtime: RuntimeDep, access: CommentAccess
) -> JSONResponse:
    target = _day_target(runtime, dashboard, day)
    added = await cards.add_note(
        runtime.engine,
        dashboard,
        day[:7],
        note.kpi,
        note.text,
        _person(access, None, "author"),
        to_us(runtime.clock.now()),
        key_id=access.key.id,
        day=day,
        pack_kpis=target.pack.kpis,
    )
    return JSONResponse(added, status_code=201)


@router.post(
    "/api/v1/days/{dashboard}/{day}/signoff",
    summary="Sign off (freeze) the end-of-day dashboard; again after a restatement",
    openapi_extra={SCOPE_KEY: ["admin"]},
)
async def sign_off_day(dashboard: str, day: str, runtime: RuntimeDep, access: AdminAccess) -> JSONResponse:
    target = _day_target(runtime, dashboard, day)
    view = await endofday.sign_off(
        runtime.engine,
        dashboard,
        day,
        target.pack,
        runtime.snapshots.zone(dashboard),
        _person(access, None, "by"),
        access.key.id,
        to_us(runtime.clock.now()),
    )
    return JSONResponse(view)


@router.get(
    "/api/v1/breaches/{dashboard}",
    summary="The breach log of a day or a month (red spells, owners, explanations)",
    **scoped("read", "admin", "comment"),
)
async def list_breaches(
    dashboard: str,
    runtime: RuntimeDep,
    day: str | None = Query(None, description="YYYY-MM-DD: breaches that started that local day"),
    month: str | None = Query(None, description="YYYY-MM: breaches that started that local month"),
) -> JSONResponse:
    if dashboard not in runtime.snapshots.targets:
        raise HTTPException(404, f"no dashboard {dashboard!r}")
    if (day is None) == (month is None):
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("query", "day"), "msg": "give exactly one of day or month", "input": day}]
        )
    if day is not None and not _valid_period("day", day):
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("query", "day"), "msg": "expected YYYY-MM-DD", "input": day}]
        )
    if month is not None and not _valid_period("month", month):
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("query", "month"), "msg": "expected YYYY-MM", "input": month}]
        )
    target = runtime.snapshots.targets[dashboard]
    zone = runtime.snapshots.zone(dashboard)
    await runtime.hub.flush_breaches()  # this instance's own transitions are read back
    async with runtime.engine.connect() as conn:
        found = await breach_log.breaches(conn, dashboard, zone, endofday.owners_of(target.pack), day=day, month=month)
    return JSONResponse({"dashboard": dashboard, "day": day, "month": month, "tz": str(zone), "breaches": found})


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
