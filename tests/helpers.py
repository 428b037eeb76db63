"""Small helpers shared by tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PACKS_DIR = Path(__file__).resolve().parent / "packs"
REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"  # the real data sets the tests read, each with its SOURCE.md (data/README.md)
AUGUST = DATA / "anonymous-bank" / "august_1999.tsv.gz"
ITSM_LOG = DATA / "itsm-incident-log" / "incident_event_log.csv.gz"


def strict_json(text: str) -> Any:
    """Parse JSON refusing NaN / Infinity (a strict parser, as clients use)."""

    def refuse(token: str) -> Any:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


async def series(client, kpi: str, grain: str, start: str, end: str, **dims: str) -> list[dict]:
    """Points of ``kpi``'s series; asserts 200 and strict JSON."""
    params = {"grain": grain, "start": start, "end": end, **{f"dims.{k}": v for k, v in dims.items()}}
    resp = await client.get(f"/api/v1/kpis/{kpi}/series", params=params)
    assert resp.status_code == 200, resp.text
    return strict_json(resp.text)["points"]


def sample(ts: str, value: float | None = 1, **extra: Any) -> dict:
    """A ``sample`` event of the generic test pack."""
    ev = {"type": "sample", "ts": ts, **extra}
    if value is not None:
        ev["value"] = value
    return ev
