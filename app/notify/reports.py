"""The distributed reports: the end-of-day dashboard (a day snapshot) and the monthly scorecard.

Each report is an email: a summary in the body (plain text and the same table as HTML), a link
to the page, and attachments: the CSV of the export endpoints (``app.snapshots.export``: formula
characters neutralised), an XLSX of the same table (pandas with openpyxl; the CSV is read back so
both hold the same cells, numbers parsed exactly), and a PDF of the report page printed by headless Chromium
(``--print-to-pdf``) when ``PULSEBOARD_PDF_RENDERER`` exists; otherwise the PDF is left out and the
email says so.
"""

from __future__ import annotations

import asyncio
import csv
import html
import io
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from app.notify.alerts import format_value
from app.snapshots.export import scorecard_csv, snapshot_csv

log = logging.getLogger(__name__)
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@dataclass(slots=True)
class Report:
    """One report ready to mail: subject, bodies and attachments ``(filename, mime type, bytes)``."""

    subject: str
    text: str
    html: str
    attachments: list[tuple[str, str, bytes]] = field(default_factory=list)
    pdf_note: str | None = None


def _number(text: str) -> int | float | None:
    """``text`` as the exact number Python reads (``int`` for integers), ``None`` if it is not one."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def csv_to_xlsx(csv_text: str, sheet: str) -> bytes:
    """An XLSX workbook (one sheet) with the cells of ``csv_text``; numbers stay numbers, exactly.

    Text cells keep the CSV's neutralising quote, so no cell becomes a formula.
    """
    table = list(csv.reader(io.StringIO(csv_text)))
    header, rows = table[0], table[1:]
    columns: dict[str, list[Any]] = {}
    for i, name in enumerate(header):
        cells = [r[i] for r in rows]
        numbers = [_number(c) for c in cells]
        numeric = all(n is not None or c == "" for c, n in zip(cells, numbers, strict=True))
        columns[name] = numbers if numeric else [c or None for c in cells]
    buf = io.BytesIO()
    with pd.ExcelWriter(buf, engine="openpyxl") as writer:
        pd.DataFrame(columns, columns=header).to_excel(writer, sheet_name=sheet[:31], index=False)
    return buf.getvalue()


async def print_pdf(renderer: Path | None, page_html: str, timeout_s: float) -> tuple[bytes | None, str | None]:
    """``page_html`` printed to PDF by headless Chromium at ``renderer``.

    Returns:
        ``(pdf bytes, None)``, or ``(None, why)`` when there is no renderer or it failed (logged).
    """
    if renderer is None or not await asyncio.to_thread(Path(renderer).is_file):
        return None, f"PDF omitted: no renderer (PULSEBOARD_PDF_RENDERER={renderer})"
    tmp = await asyncio.to_thread(tempfile.mkdtemp, prefix="pulseboard-pdf-")
    try:
        return await _render(Path(renderer), Path(tmp), page_html, timeout_s)
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)


def _write(path: Path, content: str) -> None:
    path.write_text(content, encoding="utf-8")


def _read_pdf(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


async def _render(renderer: Path, tmp: Path, page_html: str, timeout_s: float) -> tuple[bytes | None, str | None]:
    page = tmp / "report.html"
    out = tmp / "report.pdf"
    await asyncio.to_thread(_write, page, page_html)
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={tmp / 'profile'}",
        "--no-pdf-header-footer",
        f"--print-to-pdf={out}",
        page.as_uri(),
    ]
    proc = await asyncio.create_subprocess_exec(
        str(renderer), *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        log.warning("PDF renderer %s took more than %g s", renderer, timeout_s)
        return None, f"PDF omitted: the renderer took more than {timeout_s:g} s"
    pdf = await asyncio.to_thread(_read_pdf, out)
    if proc.returncode != 0 or pdf is None:
        log.warning("PDF renderer %s failed (%s): %s", renderer, proc.returncode, err[-500:])
        return None, f"PDF omitted: the renderer failed (exit {proc.returncode})"
    return pdf, None


def _page(title: str, lead: str, header: list[str], rows: list[list[str]], link: str, foot: str) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="{html.escape(c[1])}">{html.escape(c[0])}</td>' for c in _split(r)) + "</tr>"
        for r in rows
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #111; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #999; padding: 4px 8px; text-align: left; }}
td.red {{ background: #f8c8c8; }} td.amber {{ background: #fbe3b0; }} td.green {{ background: #cdeccd; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(lead)}</p>
<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>
<p><a href="{html.escape(link)}">{html.escape(link)}</a></p>
<p>{html.escape(foot)}</p>
</body></html>
"""


def _split(row: list[str]) -> list[tuple[str, str]]:
    """Cells with a CSS class: the status column colours itself."""
    return [(c, c if c in ("red", "amber", "green") else "") for c in row]


def _owner(o: dict[str, Any] | None) -> str:
    if not o:
        return ""
    return str(o.get("person") or o.get("role") or "")


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


async def day_report(snap: dict[str, Any], link: str, renderer: Path | None, timeout_s: float) -> Report:
    """The end-of-day dashboard of a day snapshot (API form, ``app.snapshots.cut.snapshot_json``)."""
    label, slug = snap["period"]["label"], snap["dashboard"]
    header = ["KPI", "Value", "Target", "Status", "Owner"]
    rows = [
        [
            k.get("title") or name,
            format_value(k["value"], k.get("unit") or ""),
            format_value(k["target"], k.get("unit") or "") if k["target"] is not None else "",
            k["status"] or "",
            _owner(k.get("owner")),
        ]
        for name, k in snap["kpis"].items()
    ]
    reds = [r[0] for r in rows if r[3] == "red"]
    lead = (
        f"End of day {label} for {slug} (snapshot version {snap['version']}, {snap['status']}, cut "
        f"{snap['cut_at']}): {len(reds)} of {len(rows)} KPIs red" + (f": {', '.join(reds)}." if reds else ".")
    )
    title = f"{slug}: end of day {label}"
    csv_text = snapshot_csv(snap)
    return await _assemble(
        title, lead, header, rows, link, f"{slug}-day-{label}-v{snap['version']}", csv_text, renderer, timeout_s
    )


async def month_report(card: dict[str, Any], link: str, renderer: Path | None, timeout_s: float) -> Report:
    """The monthly scorecard (``app.snapshots.scorecard.build``), in agenda order."""
    month, slug = card["month"], card["dashboard"]
    header = ["#", "KPI", "Value", "Target", "Status", "Red streak", "Owner", "Commentary"]
    rows = [
        [
            str(r["agenda_rank"]),
            r["title"],
            format_value(r["value"], r.get("unit") or ""),
            format_value(r["target"], r.get("unit") or "") if r["target"] is not None else "",
            r["status"] or "",
            str(r["red_streak_months"]),
            _owner(r.get("owner")),
            " | ".join(n["text"] for n in r["commentary"]) or ("note needed" if r["needs_note"] else ""),
        ]
        for r in card["kpis"]
    ]
    reds = [r[1] for r in rows if r[4] == "red"]
    snap = card["snapshot"]
    pub = card.get("published")
    lead = (
        f"Scorecard {month} for {slug} (snapshot version {snap['version']}, {snap['status']}"
        + (f", published by {pub['by']}" if pub else ", not published yet")
        + f"): {len(reds)} of {len(rows)} KPIs red"
        + (f": {', '.join(reds)}." if reds else ".")
    )
    title = f"{slug}: scorecard {month}"
    csv_text = scorecard_csv(card)
    return await _assemble(
        title, lead, header, rows, link, f"{slug}-scorecard-{month}-v{snap['version']}", csv_text, renderer, timeout_s
    )


async def _assemble(
    title: str,
    lead: str,
    header: list[str],
    rows: list[list[str]],
    link: str,
    stem: str,
    csv_text: str,
    renderer: Path | None,
    timeout_s: float,
) -> Report:
    foot = "Attached: the table as CSV and XLSX"
    page = _page(title, lead, header, rows, link, foot + " (and this page as PDF).")
    pdf, why = await print_pdf(renderer, page, timeout_s)
    attachments = [
        (f"{stem}.csv", "text/csv", csv_text.encode("utf-8")),
        (f"{stem}.xlsx", XLSX_MIME, csv_to_xlsx(csv_text, "KPIs")),
    ]
    if pdf is not None:
        attachments.append((f"{stem}.pdf", "application/pdf", pdf))
        foot += ", and this page as PDF."
    else:
        foot += f". {why}."
    text = f"{lead}\n\n{_text_table(header, rows)}\n\nPage: {link}\n{foot}\n"
    return Report(
        f"[Pulseboard] {title}", text, _page(title, lead, header, rows, link, foot), attachments, pdf_note=why
    )
