"""The admin view of notifications: ``GET /admin/notifications`` (HTML), the same as JSON, and a
retry by hand.  Admin scope only."""

from __future__ import annotations

import html
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from app.api.deps import RuntimeDep
from app.auth import Unauthenticated
from app.auth.deps import SCOPE_KEY, authenticate, check_scope, presented_key, scoped

router = APIRouter()


@router.get("/api/v1/notifications", summary="The delivery log and the alert rules' states", **scoped("admin"))
async def notifications(runtime: RuntimeDep) -> JSONResponse:
    notifier = runtime.notifier
    return JSONResponse(
        {
            "deliveries": await notifier.log_rows(runtime.settings.admin_log_rows),
            "rules": await notifier.rule_states(),
        }
    )


@router.post(
    "/api/v1/notifications/{row_id}/retry", summary="Send a failed or dead delivery again now", **scoped("admin")
)
async def retry(row_id: str, runtime: RuntimeDep) -> JSONResponse:
    status = await runtime.notifier.retry_now(row_id)
    if status is None:
        raise HTTPException(404, f"no delivery {row_id!r}")
    return JSONResponse({"id": row_id, "status": status})


@router.post("/admin/notifications/{row_id}/retry", include_in_schema=False, **scoped("admin"))
async def retry_form(row_id: str, runtime: RuntimeDep) -> RedirectResponse:
    if await runtime.notifier.retry_now(row_id) is None:
        raise HTTPException(404, f"no delivery {row_id!r}")
    return RedirectResponse("/admin/notifications", status_code=303)


def _cell(value: Any) -> str:
    return f"<td>{html.escape('' if value is None else str(value))}</td>"


@router.get("/admin/notifications", include_in_schema=False, openapi_extra={SCOPE_KEY: ["admin"]})
async def admin_page(request: Request, runtime: RuntimeDep) -> Response:
    """The admin page; a browser that presents no key at all is sent to sign in first (401 otherwise)."""
    try:
        check_scope(await authenticate(request), ("admin",))
    except Unauthenticated:
        key, _ = presented_key(request)
        if key is None and "text/html" in request.headers.get("accept", ""):
            return RedirectResponse("/login?next=%2Fadmin%2Fnotifications", status_code=303)
        raise
    notifier = runtime.notifier
    rows = await notifier.log_rows(runtime.settings.admin_log_rows)
    states = await notifier.rule_states()
    failing = sum(1 for r in rows if r["status"] in ("failed", "dead"))
    deliveries = "".join(
        f'<tr class="{html.escape(r["status"])}" data-id="{html.escape(r["id"])}">'
        + "".join(
            _cell(r[k])
            for k in (
                "status",
                "kind",
                "source",
                "channel",
                "recipient",
                "subject",
                "attempts",
                "passes",
                "last_error",
                "created_at",
                "sent_at",
                "next_attempt_at",
            )
        )
        + (
            f'<td><form method="post" action="/admin/notifications/{html.escape(r["id"])}/retry">'
            '<button type="submit">Retry now</button></form></td>'
            if r["status"] in ("failed", "dead")
            else "<td></td>"
        )
        + "</tr>"
        for r in rows
    )
    rules = "".join(
        "<tr>"
        + "".join(_cell(s[k]) for k in ("rule", "kpi", "window", "state", "since", "notified", "last_value"))
        + _cell(s["evaluated_at"])
        + "</tr>"
        for s in states
    )
    # The site sends Referrer-Policy: no-referrer, under which a form post carries "Origin: null" and
    # the CSRF check refuses it; same-origin (this page only) lets the retry form post say where it is from.
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Notifications · Pulseboard</title>
<meta name="referrer" content="same-origin">
<style>
body {{ font-family: sans-serif; margin: 24px; }} table {{ border-collapse: collapse; margin-bottom: 24px; }}
th, td {{ border: 1px solid #999; padding: 3px 6px; text-align: left; font-size: 13px; }}
tr.failed td {{ background: #fbe3b0; }} tr.dead td {{ background: #f8c8c8; }}
</style></head><body>
<h1>Notifications</h1>
<p id="summary">{len(rows)} deliveries shown, {failing} failed or given up.</p>
<h2>Alert rules</h2>
<table id="rules"><thead><tr><th>Rule</th><th>KPI</th><th>Window</th><th>State</th><th>Since</th><th>Notified</th>
<th>Last value</th><th>Evaluated</th></tr></thead><tbody>{rules}</tbody></table>
<h2>Delivery log</h2>
<table id="deliveries"><thead><tr><th>Status</th><th>Kind</th><th>Rule / subscription</th><th>Channel</th>
<th>Recipient</th><th>Subject</th><th>Tries</th><th>Passes</th><th>Last error</th><th>Logged</th><th>Sent</th>
<th>Next pass</th><th></th></tr></thead><tbody>{deliveries}</tbody></table>
</body></html>
"""
    return HTMLResponse(page)
