"""REST reads (CONTRACT §3): KPIs, series, dashboards, the home page's list; health; the home, sign-in,
pairing and wall pages."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from app import resources
from app.api.deps import RuntimeDep
from app.api.problems import STORE_RETRY
from app.auth.deps import public, scoped
from app.ingest.parse import parse_ts
from app.metrics.calendar import from_us, to_us
from app.metrics.pack import NAME_RE, Dashboard, Kpi, Pack, Playlist
from app.query.kpis import QueryError, series
from app.query.tiles import dashboard_tiles
from app.runtime import Runtime
from app.ws.hub import view_key

router = APIRouter()
FRONTEND_DIR = resources.frontend_dir()


def kpi_json(kpi: Kpi, pack_name: str) -> dict[str, Any]:
    """Public description of a KPI (``GET /api/v1/kpis``)."""
    return {
        "name": kpi.name,
        "title": kpi.title,
        "unit": kpi.unit,
        "description": kpi.description,
        "target": kpi.target,
        "direction": kpi.direction,
        "amber_band": kpi.amber_band,
        "owner": {"role": kpi.owner.role, "person": kpi.owner.person} if kpi.owner else None,
        "weight": kpi.weight,
        "pack": pack_name,
        "gauge": kpi.is_gauge,
        "definition_hash": kpi.definition_hash(),
    }


@router.get("/api/v1/kpis", summary="Every KPI of the loaded packs", **scoped("read", "admin"))
async def list_kpis(runtime: RuntimeDep) -> list[dict[str, Any]]:
    return [kpi_json(k, p.name) for p in runtime.packs.values() for k in p.kpis.values()]


LOST_PLUS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)? \d{2}:\d{2}$")


def query_instant(name: str, raw: str) -> int:
    """The query parameter ``name`` (an RFC 3339 instant with an offset) as UTC µs.

    Raises:
        QueryError: naming ``name``; for an offset whose ``+`` became a space (what an unencoded
            ``+02:00`` turns into in a query string), saying that it must be sent as ``%2B``.
    """
    if LOST_PLUS_RE.match(raw):
        fixed = raw.replace(" ", "%2B")
        raise QueryError(
            name,
            f"{raw!r} lost the '+' of its offset: in a query string '+' means a space, so send it "
            f"percent-encoded as %2B ({name}={fixed})",
        )
    try:
        return to_us(parse_ts(raw))
    except ValueError as exc:
        raise QueryError(name, str(exc)) from None


def dims_filter(request: Request) -> tuple[tuple[str, str], ...]:
    """``dims.KEY=VALUE`` query parameters, sorted by key."""
    return tuple(sorted((k[5:], v) for k, v in request.query_params.items() if k.startswith("dims.") and len(k) > 5))


@router.get("/api/v1/kpis/{name}/series", summary="A KPI per local period", **scoped("read", "admin"))
async def kpi_series(
    name: str,
    request: Request,
    runtime: RuntimeDep,
    grain: Literal["minute", "hour", "day", "month"] = Query(..., description="period length"),
    start: str = Query(..., description="RFC 3339 instant with offset"),
    end: str = Query(..., description="RFC 3339 instant with offset (exclusive)"),
    tz: str | None = Query(None, description="IANA zone of the periods (default: the business zone)"),
    pack: str | None = Query(None, description="the pack whose KPI this is, when several define it (mttr_s)"),
) -> JSONResponse:
    """Points ``{start, end, value, components}``; ``value`` is null where undefined.

    Filter with ``dims.KEY=VALUE`` (e.g. ``dims.queue=PS``).

    Raises:
        HTTPException: 404 for an unknown KPI.
        QueryError: 422 for a bad ``tz``, ``start`` or ``end``, a reversed or too long range, a filter
            a gauge cannot take.
    """
    found = runtime.find_kpi(name, pack)
    if found is None:
        raise HTTPException(404, f"no KPI named {name!r}" + (f" in pack {pack!r}" if pack else ""))
    kpi_pack, kpi = found
    zone = runtime.zone
    if tz is not None:
        try:
            zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Etc" is a directory, names too long
            raise QueryError("tz", f"unknown IANA time zone {tz!r}") from None
    start_us, end_us = query_instant("start", start), query_instant("end", end)
    if end_us <= start_us:
        raise QueryError("end", "must be after start")
    async with runtime.engine.connect() as conn:
        points = await series(
            conn, kpi_pack, kpi, grain, start_us, end_us, zone, dims_filter(request), to_us(runtime.view_clock.now())
        )
    return JSONResponse(
        {
            "kpi": name,
            "pack": kpi_pack.name,
            "grain": grain,
            "tz": str(zone),
            "unit": kpi.unit,
            "dims": dict(dims_filter(request)),
            "points": [
                {
                    "start": p.period.start.isoformat(),
                    "end": p.period.end.isoformat(),
                    "value": p.value.value,
                    "components": p.value.components,
                }
                for p in points
            ],
        }
    )


@router.get("/api/v1/dashboards", summary="Every dashboard", **scoped("read", "admin"))
async def list_dashboards(runtime: RuntimeDep) -> list[dict[str, Any]]:
    return [
        {"slug": d.slug, "title": d.title, "pack": p.name, "tiles": len(d.tiles)}
        for p in runtime.packs.values()
        for d in p.dashboards.values()
    ]


@router.get(
    "/api/v1/dashboards/{slug}",
    summary="A dashboard, its tiles and their current values",
    **scoped("read", "admin", "display", dashboard_param="slug"),
)
async def get_dashboard(slug: str, request: Request, runtime: RuntimeDep) -> JSONResponse:
    """The dashboard, narrowed by its declared ``params`` given as query parameters
    (``?site=X``: every tile filtered by ``dims.site = X``; ``view`` is then ``noc?site=X``)."""
    found = runtime.find_dashboard(slug)
    if found is None:
        raise HTTPException(404, f"no dashboard {slug!r}")
    pack, dash = found
    params = dict(request.query_params)
    try:
        dash = runtime.hub.view(slug, params, runtime.settings.max_dashboard_views).dashboard
    except ValueError as exc:
        raise QueryError(next(iter(params), "params"), str(exc)) from None
    zone = runtime.dashboard_zone(dash)
    now_us = to_us(runtime.view_clock.now())
    async with runtime.engine.connect() as conn:
        tiles = await dashboard_tiles(conn, pack, dash, now_us, zone)
    runtime.hub.add_feed_states(dash, tiles, zone)
    return JSONResponse(
        {
            "slug": slug,
            "view": dash.slug,
            "params": params,
            "title": dash.title,
            "pack": pack.name,
            "tz": str(zone),
            "as_of": from_us(now_us, zone).isoformat(),
            "tile_order": [t.id for t in dash.tiles],
            "tiles": tiles,
        }
    )


def home_entry(runtime: Runtime, pack: Pack, dash: Dashboard, now: datetime) -> dict[str, Any]:
    """One dashboard of ``GET /api/v1/home``: ``today`` (YYYY-MM-DD) and ``month`` (YYYY-MM) are the
    local calendar day and month of ``now`` in the dashboard's zone, and ``links`` its page paths."""
    zone = runtime.dashboard_zone(dash)
    today = now.astimezone(zone).date().isoformat()
    month = today[:7]
    return {
        "slug": dash.slug,
        "title": dash.title,
        "pack": pack.name,
        "tz": str(zone),
        "today": today,
        "month": month,
        "links": {
            "wall": f"/wall/{dash.slug}",
            "day": f"/day/{dash.slug}/{today}",
            "scorecard": f"/scorecard/{dash.slug}/{month}",
        },
    }


@router.get(
    "/api/v1/home",
    summary="Every dashboard with its zone, today and this month there, and its page links",
    **scoped("read", "admin"),
)
async def home(runtime: RuntimeDep) -> dict[str, Any]:
    """What the home page lists: ``{"as_of", "clock", "dashboards": [...]}``.

    ``as_of`` is the server's view clock (RFC 3339 with offset): wall time, or in event-time mode
    (``clock: "event"``) the newest event time, so a replay's home page points at the replayed day.
    Each dashboard: ``slug``, ``title``, ``pack``, ``tz`` (IANA), ``today``, ``month`` and ``links``
    (``wall``, ``day``: today's end-of-day page, ``scorecard``: this month's), see ``home_entry``.
    """
    now = runtime.view_clock.now()
    return {
        "as_of": now.isoformat(),
        "clock": runtime.settings.clock,
        "dashboards": [home_entry(runtime, p, d, now) for p in runtime.packs.values() for d in p.dashboards.values()],
    }


@router.get("/healthz", summary="Liveness", include_in_schema=False, **public())
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the store answers", **public())
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """200 ``{"ready": true}`` when the store answers ``SELECT 1``; else 503 with ``Retry-After`` and the
    reason, at the latest after ``Settings.store_wait_s`` (a database that hangs instead of refusing).
    Concurrent polls share one check; a check that outlives its deadline finishes in the background."""
    failure = await runtime.ready_probe.check(runtime.settings.store_wait_s)
    if failure is not None:  # any failure means not ready; say which
        return JSONResponse({"ready": False, "reason": failure}, status_code=503, headers=STORE_RETRY)
    return JSONResponse({"ready": True, "server_time": datetime.now().astimezone().isoformat()})


@router.get("/favicon.ico", include_in_schema=False, **public())
async def favicon() -> Response:
    return Response(status_code=204)


@router.get("/", include_in_schema=False, **public())
async def home_page() -> FileResponse:
    """The home page: the dashboards with links to their wall, today's end of day and this month's scorecard."""
    return FileResponse(FRONTEND_DIR / "home" / "index.html", media_type="text/html")


@router.get("/pair", include_in_schema=False, **public())
async def pair_page() -> FileResponse:
    return FileResponse(FRONTEND_DIR / "pair" / "index.html", media_type="text/html")


@router.get("/login", include_in_schema=False, **public())
async def login_page() -> FileResponse:
    return FileResponse(FRONTEND_DIR / "login" / "index.html", media_type="text/html")


def find_playlist(runtime: Runtime, name: str) -> Playlist | None:
    """The playlist ``name`` of any loaded pack, or ``None``."""
    for pack in runtime.packs.values():
        if name in pack.playlists:
            return pack.playlists[name]
    return None


@router.get(
    "/api/v1/playlists/{name}",
    summary="A wall rotation: its dashboards (with parameters) and the interval",
    **scoped("read", "admin", "display"),
)
async def get_playlist(name: str, runtime: RuntimeDep) -> dict[str, Any]:
    """``{"name", "title", "interval_s", "dashboards": [{"dashboard", "params", "view", "title"}]}``;
    ``view`` is the key frames of that entry carry on ``/ws/screens`` (CONTRACT §4)."""
    playlist = find_playlist(runtime, name)
    if playlist is None:
        raise HTTPException(404, f"no playlist {name!r}")
    entries = []
    for slug, params in playlist.entries:
        found = runtime.find_dashboard(slug)
        title = found[1].title if found else slug
        if params:
            title += " · " + " · ".join(f"{k} {v}" for k, v in params)
        entries.append(
            {"dashboard": slug, "params": dict(params), "view": view_key(slug, dict(params)), "title": title}
        )
    return {"name": name, "title": playlist.title, "interval_s": playlist.interval_s, "dashboards": entries}


@router.get("/wall/playlist/{name}", summary="A rotating wall", include_in_schema=False, **public())
async def playlist_page(name: str, runtime: RuntimeDep) -> FileResponse:
    if not NAME_RE.match(name) or find_playlist(runtime, name) is None:
        raise HTTPException(404, f"no playlist {name!r}")
    return FileResponse(FRONTEND_DIR / "wall" / "index.html", media_type="text/html")


@router.get("/wall/{slug}", summary="The wall page of a dashboard", include_in_schema=False, **public())
async def wall_page(slug: str, runtime: RuntimeDep) -> FileResponse:
    if not NAME_RE.match(slug) or runtime.find_dashboard(slug) is None:
        raise HTTPException(404, f"no dashboard {slug!r}")
    return FileResponse(FRONTEND_DIR / "wall" / "index.html", media_type="text/html")
