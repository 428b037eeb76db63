"""Figure results, the printed table, and the JSON / Markdown files of a run."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import Summary, summarize


@dataclass
class Figure:
    """One row of the issue's table, as measured.

    Attributes:
        key: short id (``ingest_pg``...).
        title: what is measured.
        unit: unit of ``product`` (and of ``baseline`` unless ``baseline_unit`` says otherwise).
        product: Pulseboard's value over the repeats.
        baseline: the in-run baseline over the repeats (None when the figure has none).
        baseline_label: what the baseline is.
        ratio: per-repeat ratio summarised; ``ratio_label`` says which way it is taken.
        goal: the goal as text; ``met`` True/False, or None when not measurable.
        notes: caveats and what was (not) reached.
    """

    key: str
    title: str
    unit: str
    product: Summary | None = None
    baseline: Summary | None = None
    baseline_label: str = "—"
    baseline_unit: str | None = None
    ratio: Summary | None = None
    ratio_label: str = ""
    goal: str = ""
    met: bool | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("product", "baseline", "ratio"):
            v = getattr(self, k)
            d[k] = v.as_dict() if v is not None else None
        return d


def ratios(products: list[float], baselines: list[float]) -> Summary:
    """Per-repeat ``product / baseline`` ratios, summarised."""
    return summarize([p / b for p, b in zip(products, baselines, strict=True) if b])


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (thousands separated), or ``—``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _cell(s: Summary | None, unit: str) -> str:
    if s is None or math.isnan(s.median):
        return "—"
    return f"{fmt(s.median)} {unit} (range {s.spread_pct:.0f} %)" if len(s.values) > 1 else f"{fmt(s.median)} {unit}"


def _met(f: Figure) -> str:
    if f.product is None:
        return "not measured"
    return {True: "met", False: "NOT met", None: "reported"}[f.met]


def table_rows(figures: list[Figure]) -> list[list[str]]:
    """The rows of the summary table (header first)."""
    rows = [
        ["figure", "Pulseboard median (range)", "baseline median (range) — what", "ratio (median)", "goal", "status"]
    ]
    for f in figures:
        ratio = (
            "—" if f.ratio is None or math.isnan(f.ratio.median) else f"{f.ratio.median:.3g}× {f.ratio_label}".strip()
        )
        base = "—" if f.baseline is None else f"{_cell(f.baseline, f.baseline_unit or f.unit)} — {f.baseline_label}"
        rows.append([f.title, _cell(f.product, f.unit), base, ratio, f.goal, _met(f)])
    return rows


def text_table(figures: list[Figure]) -> str:
    """A plain-text table for the terminal."""
    rows = table_rows(figures)
    widths = [min(48, max(len(r[i]) for r in rows)) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        out.append("  ".join(c[:w].ljust(w) for c, w in zip(r, widths, strict=False)))
    return "\n".join(out)


def markdown_table(figures: list[Figure]) -> str:
    """The summary table in Markdown, followed by each figure's notes."""
    rows = table_rows(figures)
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows[1:]]
    lines.append("")
    for f in figures:
        if f.notes:
            lines.append(f"- **{f.title}**: " + " ".join(f.notes))
    return "\n".join(lines)


BEGIN_MARK = "<!-- bench:results:begin (written by python -m bench --write-benchmarks) -->"
END_MARK = "<!-- bench:results:end -->"


def results_markdown(figures: list[Figure], meta: dict[str, Any]) -> str:
    """Run metadata as a list, then the table and notes."""
    head = [f"- **{k}**: {v}" for k, v in meta.items()]
    return "\n".join(head) + "\n\n" + markdown_table(figures) + "\n"


def update_benchmarks(path: Path, figures: list[Figure], meta: dict[str, Any]) -> None:
    """Replace the generated block of ``BENCHMARKS.md`` (between the markers) with this run;
    the hand-written text around it is kept.  Without markers the block is appended."""
    block = f"{BEGIN_MARK}\n{results_markdown(figures, meta)}{END_MARK}"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if BEGIN_MARK in text and END_MARK in text:
        before = text.split(BEGIN_MARK)[0]
        after = text.split(END_MARK, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def write_results(figures: list[Figure], meta: dict[str, Any], results_dir: Path) -> tuple[Path, Path]:
    """Write ``latest.json`` and ``latest.md`` in ``results_dir``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    js = results_dir / "latest.json"
    md = results_dir / "latest.md"
    js.write_text(json.dumps({"meta": meta, "figures": [f.as_dict() for f in figures]}, indent=2, default=str))
    md.write_text(f"# Pulseboard benchmark run {meta.get('date', '')}\n\n" + results_markdown(figures, meta))
    return js, md
