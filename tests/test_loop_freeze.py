"""Publication is a freeze (issue 14, item 1), on both stores, with real calls of August 1999:
publish the month scorecard and sign off a day, post late calls, and the published numbers stay;
the restatement shows beside them; notes are accepted where numbers moved (only there); publishing
again pins the new version; every publication is kept.  Notes are written as the key's holder."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from app.clock import ManualClock
from tests.loop_data import SLUG, ZONE, abandoned_calls_from_file, events_of

AUG_2 = date(1999, 8, 2)
AFTER_AUGUST = datetime(1999, 9, 1, 0, 20, tzinfo=ZONE)
LATE = 40  # abandoned calls of 1999-08-02 held back, posted after publication


@pytest.fixture
async def srv(make_settings, start_server):
    return await start_server(make_settings(tz="Asia/Jerusalem"), clock=ManualClock(AFTER_AUGUST))


async def _post(client, events) -> None:
    for i in range(0, len(events), 2000):
        resp = await client.post("/api/v1/events", json=events[i : i + 2000])
        assert resp.status_code == 202, resp.text


def _values(kpis) -> dict[str, float | None]:
    if isinstance(kpis, list):
        return {r["kpi"]: r["value"] for r in kpis}
    return {name: k["value"] for name, k in kpis.items()}


async def _loaded(srv, client):
    """Days 1 and 2 of August cut, with the last ``LATE`` abandoned calls of day 2 held back."""
    late_calls = frozenset(abandoned_calls_from_file()[AUG_2][-LATE:])
    await _post(client, events_of({date(1999, 8, 1), AUG_2}, skip_calls=late_calls))
    await srv.runtime.snapshots.run_due()
    return late_calls


async def test_published_scorecard_stays_as_published_and_republishes(srv, client_for):
    owner_key, _ = await srv.runtime.keys.create("comment", "olga's key", 0, holder="Olga Owner")
    as_owner = {"Authorization": f"Bearer {owner_key}"}
    card_url = f"/api/v1/scorecards/{SLUG}/1999-08"
    async with client_for(srv) as client:
        late_calls = await _loaded(srv, client)
        card = (await client.get(card_url)).json()
        abandoned_v1 = {r["kpi"]: r for r in card["kpis"]}["abandoned"]["value"]
        file_abandoned = len(abandoned_calls_from_file()[date(1999, 8, 1)]) + len(abandoned_calls_from_file()[AUG_2])
        assert abandoned_v1 == file_abandoned - LATE
        red = [r["kpi"] for r in card["kpis"] if r["needs_note"]]
        assert red, "the slice has red KPIs to explain"
        # The owner writes as the key's holder; another name is refused.
        claimed = await client.post(
            card_url + "/commentary", json={"kpi": red[0], "text": "x", "author": "Someone Else"}, headers=as_owner
        )
        assert claimed.status_code == 422 and claimed.json()["errors"][0]["field"] == "author"
        for kpi in red:
            note = await client.post(
                card_url + "/commentary", json={"kpi": kpi, "text": f"{kpi}: staffing"}, headers=as_owner
            )
            assert note.status_code == 201 and note.json()["author"] == "Olga Owner", note.text
        published = await client.post(card_url + "/publish", json={})
        assert published.status_code == 200, published.text
        frozen = published.json()
        assert frozen["published"]["snapshot_version"] == 1 and frozen["published"]["number"] == 1
        assert [n["author"] for r in frozen["kpis"] for n in r["commentary"]] == ["Olga Owner"] * len(red)

        # Late calls arrive; the month is restated as version 2.
        await _post(client, [e for e in events_of({AUG_2}) if e["dims"]["call"] in late_calls])
        restated = await srv.runtime.snapshots.restate_pending()
        assert {(r.grain, r.period, r.version) for r in restated} >= {("month", "1999-08", 2), ("day", "1999-08-02", 2)}
        latest = (await client.get(f"/api/v1/snapshots/{SLUG}/month/1999-08")).json()
        assert latest["version"] == 2 and latest["kpis"]["abandoned"]["value"] == abandoned_v1 + LATE

        card = (await client.get(card_url)).json()
        assert _values(card["kpis"]) == _values(frozen["kpis"])  # the published numbers, unchanged
        assert card["snapshot"]["version"] == 1 and card["snapshot"]["latest_version"] == 2
        after = card["restated_after_publication"]
        assert after["version"] == 2 and after["cause"].startswith(f"late events: {LATE * 2}")  # queued + abandoned
        assert after["changes"]["abandoned"] == {
            **after["changes"]["abandoned"],
            "from": abandoned_v1,
            "to": abandoned_v1 + LATE,
            "difference": LATE,
        }
        assert "answered" not in after["moved"] and "aht_s" not in after["moved"]
        assert {"abandoned", "offered", "abandonment_rate"} <= set(after["moved"])
        rows = {r["kpi"]: r for r in card["kpis"]}
        assert rows["abandoned"]["restated_after_publication"]["to"] == abandoned_v1 + LATE
        assert rows["abandoned"]["notes_allowed"] and not rows["answered"]["notes_allowed"]
        assert card["republication"] == {"open": True, "moved": after["moved"], "latest_version": 2}

        # Notes where numbers moved are accepted; elsewhere the card stays locked.
        moved = await client.post(
            card_url + "/commentary", json={"kpi": "abandoned", "text": "40 late calls from VRU 2"}, headers=as_owner
        )
        assert moved.status_code == 201 and moved.json()["snapshot_version"] == 2
        still = await client.post(card_url + "/commentary", json={"kpi": "answered", "text": "x"}, headers=as_owner)
        assert still.status_code == 409

        # Re-publication pins version 2; a red KPI of version 2 without a note blocks it first.
        v2 = latest["kpis"]
        noted = {r["kpi"] for r in card["kpis"] if r["commentary"]} | {"abandoned"}
        blocking = sorted(n for n, k in v2.items() if k["status"] == "red" and n not in noted)
        again = await client.post(card_url + "/publish", json={})
        if blocking:
            assert again.status_code == 422 and sorted(e["kpi"] for e in again.json()["errors"]) == blocking
            for kpi in blocking:
                ok = await client.post(card_url + "/commentary", json={"kpi": kpi, "text": "late"}, headers=as_owner)
                assert ok.status_code == 201
            again = await client.post(card_url + "/publish", json={})
        assert again.status_code == 200, again.text
        card = again.json()
        assert card["published"]["number"] == 2 and card["snapshot"]["version"] == 2
        assert _values(card["kpis"]) == _values(v2) and card["restated_after_publication"] is None
        history = (await client.get(card_url + "/publications")).json()["publications"]
        assert [(p["number"], p["snapshot_version"], p["by"]) for p in history] == [
            (1, 1, "test admin"),
            (2, 2, "test admin"),
        ]
        assert (await client.post(card_url + "/publish", json={})).status_code == 409  # nothing new to publish
        locked = await client.post(card_url + "/commentary", json={"kpi": "abandoned", "text": "x"}, headers=as_owner)
        assert locked.status_code == 409


async def test_signed_off_day_stays_as_signed_off(srv, client_for):
    owner_key, _ = await srv.runtime.keys.create("comment", "omar's key", 0, holder="Omar Owner")
    as_owner = {"Authorization": f"Bearer {owner_key}"}
    day_url = f"/api/v1/days/{SLUG}/1999-08-02"
    async with client_for(srv) as client:
        late_calls = await _loaded(srv, client)
        view = (await client.get(day_url)).json()
        snap = view["snapshot"]
        assert snap["version"] == 1 and view["signed_off"] is None
        red = sorted(n for n, k in snap["kpis"].items() if k["status"] == "red")
        # Each red KPI of the cut day is a breach of the day (source snapshot), with its owner.
        assert sorted(b["kpi"] for b in view["breaches"] if b["source"] == "snapshot") == red
        for b in view["breaches"]:
            assert b["owner"] == snap["kpis"][b["kpi"]]["owner"] and b["explained"] is False
            assert b["worst_value"] == snap["kpis"][b["kpi"]]["value"] and b["duration_s"] == 86400
        refused = await client.post(day_url + "/signoff")
        assert refused.status_code == 422
        assert sorted(e["kpi"] for e in refused.json()["errors"]) == red
        for kpi in red:
            note = await client.post(day_url + "/commentary", json={"kpi": kpi, "text": "VRU outage"}, headers=as_owner)
            assert note.status_code == 201 and note.json()["author"] == "Omar Owner"
        signed = await client.post(day_url + "/signoff")
        assert signed.status_code == 200, signed.text
        frozen = signed.json()
        assert frozen["signed_off"]["snapshot_version"] == 1
        assert all(b["explained"] and b["explanation"][0]["author"] == "Omar Owner" for b in frozen["breaches"])

        await _post(client, [e for e in events_of({AUG_2}) if e["dims"]["call"] in late_calls])
        await srv.runtime.snapshots.restate_pending()
        view = (await client.get(day_url)).json()
        assert _values(view["snapshot"]["kpis"]) == _values(frozen["snapshot"]["kpis"])
        assert view["snapshot"]["version"] == 1 and view["snapshot"]["latest_version"] == 2
        after = view["restated_after_publication"]
        assert after["changes"]["abandoned"]["difference"] == LATE and "answered" not in after["moved"]
        assert view["notes_allowed"] == after["moved"]
        assert (await client.post(day_url + "/commentary", json={"kpi": "answered", "text": "x"})).status_code == 409
        ok = await client.post(
            day_url + "/commentary", json={"kpi": "abandoned", "text": "late VRU batch"}, headers=as_owner
        )
        assert ok.status_code == 201
        latest = (await client.get(f"/api/v1/snapshots/{SLUG}/day/1999-08-02")).json()
        newly_red = sorted(
            n for n, k in latest["kpis"].items() if k["status"] == "red" and n not in red and n != "abandoned"
        )
        for kpi in newly_red:
            assert (
                await client.post(day_url + "/commentary", json={"kpi": kpi, "text": "late"}, headers=as_owner)
            ).status_code == 201
        again = await client.post(day_url + "/signoff")
        assert again.status_code == 200, again.text
        view = again.json()
        assert [p["snapshot_version"] for p in view["publications"]] == [1, 2]
        assert _values(view["snapshot"]["kpis"]) == _values(latest["kpis"])
