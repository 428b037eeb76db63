"""REST reads (CONTRACT §3): KPIs, series, dashboards, the home page's list; health; the home, sign-in,
pairing and wall pages."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response

from app import resources
from app.api.deps import RuntimeDep
from app.api.jsonresp import FiniteJSONResponse as JSONResponse
from app.api.problems import STORE_RETRY
from app.auth.deps import public, scoped
from app.ingest.parse import parse_ts
from app.metrics.calendar import SUPPORTED_END_YEAR, SUPPORTED_FIRST_YEAR, from_us, supported, to_us
from app.metrics.pack import NAME_RE, AmbiguousName, Dashboard, Kpi, Pack, Playlist
from app.query import drill
from app.query.errors import QueryError
from app.query.kpis import series
from app.query.tiles import Freshness, dashboard_tiles
from app.runtime import Runtime
from app.snapshots.export import to_csv
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
        "qualified_name": f"{pack_name}/{kpi.name}",
        "gauge": kpi.is_gauge,
        "definition_hash": kpi.definition_hash(),
    }


@router.get("/api/v1/kpis", summary="Every KPI of the loaded packs", **scoped("read", "admin", "comment"))
async def list_kpis(runtime: RuntimeDep) -> list[dict[str, Any]]:
    return [kpi_json(k, p.name) for p in runtime.packs.values() for k in p.kpis.values()]


LOST_PLUS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)? \d{2}:\d{2}$")


def query_instant(name: str, raw: str) -> int:
    """The query parameter ``name`` (an RFC 3339 instant with an offset) as UTC µs.

    Raises:
        QueryError: naming ``name``: not RFC 3339, or outside the supported calendar (1900 to 9000,
            ``app.metrics.calendar``; issue 10 item 11); for an offset whose ``+`` became a space (what an unencoded
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
        us = to_us(parse_ts(raw))
    except (ValueError, OverflowError) as exc:
        raise QueryError(name, str(exc)) from None
    if not supported(us):
        raise QueryError(
            name, f"{raw!r} is outside the supported calendar [{SUPPORTED_FIRST_YEAR}, {SUPPORTED_END_YEAR}) (UTC)"
        )
    return us


def dims_filter(request: Request) -> tuple[tuple[str, str], ...]:
    """``dims.KEY=VALUE`` query parameters, sorted by key."""
    return tuple(sorted((k[5:], v) for k, v in request.query_params.items() if k.startswith("dims.") and len(k) > 5))


@router.get("/api/v1/kpis/{name:path}/series", summary="A KPI per local period", **scoped("read", "admin", "comment"))
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
            a gauge cannot take, a filter on a value past the cardinality cap (rolled up as ``__other__``).
    """
    try:
        found = runtime.find_kpi(name, pack)
    except AmbiguousName as exc:
        raise QueryError("name", str(exc)) from None
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
    cap = runtime.writer.dim_cap
    for key, value in dims_filter(request):
        if cap is not None and key in kpi_pack.dimensions and cap.folded(kpi_pack.name, key, value):
            raise QueryError(
                f"dims.{key}",
                f"{value!r} is past the cardinality cap of {cap.max_values} values of {key!r} "
                f"(PULSEBOARD_MAX_DIM_VALUES): it is rolled up with the others as dims.{key}=__other__",
            )
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


DRILL_RESERVED = {"start", "end", "limit", "after", "format", "pack"}


@router.get(
    "/api/v1/kpis/{name}/events",
    summary="The raw events behind a KPI over [start, end) (drill-down; paginated; JSON or CSV)",
    **scoped("read", "admin", "comment"),
)
async def kpi_events(
    name: str,
    request: Request,
    runtime: RuntimeDep,
    start: str = Query(..., description="RFC 3339 instant with offset"),
    end: str = Query(..., description="RFC 3339 instant with offset (exclusive)"),
    limit: int | None = Query(None, ge=1, description="events per page (default and maximum: configurable)"),
    after: str | None = Query(None, description="the 'next' cursor of the previous page"),
    format: Literal["json", "csv"] = Query("json", description="json, or csv (also by Accept: text/csv)"),
    pack: str | None = Query(None, description="the pack whose KPI this is, when several define it"),
) -> Response:
    """The events the KPI's measures count (``app.query.drill``), filtered by ``dims.KEY=VALUE``
    parameters (or bare ``KEY=VALUE`` for a dimension of the pack), in event-time order.

    JSON: ``{kpi, pack, start, end, dims, events: [{seq, source, id, type, ts, value, dims,
    received_at, measures}], count, next, next_url}``; CSV: one row per event, the next page's URL
    in a ``Link: <...>; rel="next"`` header.

    Raises:
        HTTPException: 404 for an unknown KPI.
        QueryError: 422 for a bad ``start``/``end``/``after``, a reversed range, ``limit`` past the
            maximum, a bare KPI name that several packs define.
    """
    try:
        found = runtime.find_kpi(name, pack)
    except AmbiguousName as exc:
        raise QueryError("name", str(exc)) from None
    if found is None:
        raise HTTPException(404, f"no KPI named {name!r}" + (f" in pack {pack!r}" if pack else ""))
    kpi_pack, kpi = found
    start_us, end_us = query_instant("start", start), query_instant("end", end)
    if end_us <= start_us:
        raise QueryError("end", "must be after start")
    settings = runtime.settings
    if limit is not None and limit > settings.drill_page_max_events:
        raise QueryError("limit", f"at most {settings.drill_page_max_events} events per page")
    size = limit or settings.drill_page_default_events
    dims = dict(dims_filter(request))
    for key, value in request.query_params.items():  # bare KEY=VALUE for the pack's dimensions
        if key not in DRILL_RESERVED and key in kpi_pack.dimensions and key not in dims:
            dims[key] = value
    wanted = tuple(sorted(dims.items()))
    async with runtime.engine.connect() as conn:
        events, cursor = await drill.kpi_events(
            conn, kpi_pack, kpi, start_us, end_us, wanted, drill.parse_cursor(after), size
        )
    zone = runtime.zone
    items = [
        {
            "seq": e["seq"],
            "source": e["source"],
            "id": e["id"],
            "type": e["type"],
            "ts": from_us(e["ts_us"], zone).isoformat(),
            "value": e["value"],
            "dims": e["dims"],
            "received_at": from_us(e["received_us"], zone).isoformat(),
            "measures": e["measures"],
        }
        for e in events
    ]
    next_cursor = f"{cursor[0]}.{cursor[1]}" if cursor else None
    next_url = str(request.url.include_query_params(after=next_cursor)) if next_cursor else None
    as_csv = format == "csv" or "text/csv" in request.headers.get("accept", "")
    if as_csv:
        header = ["seq", "ts", "type", "source", "id", "value", "measures", "dims", "received_at"]
        rows: list[list[Any]] = []
        for e in items:
            rows.append(
                [
                    e["seq"],
                    e["ts"],
                    e["type"],
                    e["source"],
                    e["id"],
                    e["value"],
                    " ".join(e["measures"]),
                    msgspec.json.encode(e["dims"]).decode(),
                    e["received_at"],
                ]
            )
        headers = {"Content-Disposition": f'attachment; filename="{name}-events.csv"'}
        if next_url:
            headers["Link"] = f'<{next_url}>; rel="next"'
        return Response(to_csv(header, rows), media_type="text/csv; charset=utf-8", headers=headers)
    return JSONResponse(
        {
            "kpi": name,
            "pack": kpi_pack.name,
            "start": from_us(start_us, zone).isoformat(),
            "end": from_us(end_us, zone).isoformat(),
            "dims": dict(wanted),
            "events": items,
            "count": len(items),
            "next": next_cursor,
            "next_url": next_url,
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
        settings = runtime.settings
        fresh = Freshness(settings.late_event_after_s, settings.wall_data_age_after_s)
        tiles = await dashboard_tiles(conn, pack, dash, now_us, zone, fresh)
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
    """200 ``{"ready": true}`` when the store answers ``SELECT 1`` (and, scaled out, Redis answers and the
    tile subscription is up: then ``"leader"`` tells whether this process leads); else 503 with ``Retry-After`` and the
    reason, at the latest after ``Settings.store_wait_s`` (a database that hangs instead of refusing).
    Concurrent polls share one check; a check that outlives its deadline finishes in the background."""
    failure = await runtime.ready_probe.check(runtime.settings.store_wait_s)
    if failure is None and runtime.cluster is not None:  # scaled out: Redis carries the live tiles
        failure = await runtime.cluster.ping()
    if failure is not None:  # any failure means not ready; say which
        return JSONResponse({"ready": False, "reason": failure}, status_code=503, headers=STORE_RETRY)
    body: dict[str, Any] = {"ready": True, "server_time": datetime.now().astimezone().isoformat()}
    if runtime.cluster is not None:
        body["leader"] = runtime.cluster.leading
    return JSONResponse(body)


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
