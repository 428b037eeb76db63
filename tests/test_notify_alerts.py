"""Alert flow end to end on the replayed August 1999 log, on an injected clock, both stores.

The morning of 1999-08-10 (Asia/Jerusalem) is posted through the HTTP API; the clock then walks
minute by minute from 06:00 to 14:00 and the alert rules are evaluated at each minute, with the
server restarted twice on the same store.  Real servers on 127.0.0.1 receive the messages: an
SMTP server (aiosmtpd) and a webhook receiver that verifies every HMAC-SHA256 signature itself.

The expected alerts are computed here from the file alone: the 60-minute service level at each
minute (answered within 20 s / (answered + abandoned), CONTRACT §6) and the rules' documented
semantics (README "Alerts and distribution"): exactly one alert per rule, to the owner's address
and webhook, recoveries where the breach ended, nothing twice after a restart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import httpx
import pytest

from app.clock import ManualClock
from app.replay.client import replay_events
from tests.helpers import AUGUST, wait_closed, wait_until
from tests.notify_common import SECRET, SmtpSink, WebhookSink, august_events, local, write_yaml

pytestmark = pytest.mark.slow

DAY = date(1999, 8, 10)
OWNER = "ops-manager@bank.example"
RULES = {
    # id: (when, threshold, for_min, cooldown_min)
    "sl20-red-30m": ("red", None, 30, 240),
    "sl20-below-10pct-15m": ("below", 0.10, 15, 60),
    "sl20-below-10pct-flapping": ("below", 0.10, 5, 120),
}
NOTIFY_YAML = f"""
contacts:
  Operations manager: {{email: {OWNER}, webhook: WEBHOOK/hooks/ops}}
alerts:
  - {{id: sl20-red-30m, kpi: service_level_20s, window: 60m, when: red, for_min: 30, cooldown_min: 240}}
  - {{id: sl20-below-10pct-15m, kpi: service_level_20s, window: 60m, when: below, threshold: 0.10,
      for_min: 15, cooldown_min: 60}}
  - {{id: sl20-below-10pct-flapping, kpi: service_level_20s, window: 60m, when: below, threshold: 0.10,
      for_min: 5, cooldown_min: 120}}
"""


def sl20_60m(events: list[dict], at: datetime) -> float | None:
    """The 60-minute sliding service level at ``at`` (the window holds the open minute)."""
    end = at.replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(minutes=60)
    inside = [e for e in events if start <= e["ts"] < end]
    answered = [e for e in inside if e["type"] == "call.answered"]
    offered = len(answered) + sum(1 for e in inside if e["type"] == "call.abandoned")
    return sum(1 for e in answered if e["value"] <= 20) / offered if offered else None


@dataclass
class Expected:
    alerts: dict[str, tuple[datetime, datetime, float]]  # rule -> (since, at, value)
    recoveries: dict[str, tuple[datetime, datetime, float]]


def expected_messages(events: list[dict], minutes: list[datetime]) -> Expected:
    """The rules' documented semantics, applied to the file's minute-by-minute service level."""
    values = {t: sl20_60m(events, t) for t in minutes}
    alerts: dict[str, list] = {r: [] for r in RULES}
    recoveries: dict[str, list] = {r: [] for r in RULES}
    for rule, (when, threshold, for_min, cooldown) in RULES.items():
        state, since, notified, last_alert = "ok", None, False, None
        for t in minutes:
            v = values[t]
            if v is None:
                continue
            holds = v < 0.75 if when == "red" else v < threshold  # red: below target 0.8 - amber band 0.05
            if holds:
                if state == "ok":
                    state, since, notified = "pending", t, False
                if state == "pending" and t - since >= timedelta(minutes=for_min):
                    state = "firing"
                    if last_alert is None or t - last_alert >= timedelta(minutes=cooldown):
                        notified, last_alert = True, t
                        alerts[rule].append((since, t, v))
            else:
                if state == "firing" and notified:
                    recoveries[rule].append((since, t, v))
                state, since, notified = "ok", None, False
    for rule in RULES:
        assert len(alerts[rule]) == 1, f"the reference itself: {rule} alerts {alerts[rule]}"
    return Expected({r: a[0] for r, a in alerts.items()}, {r: x[0] for r, x in recoveries.items() if x})


async def test_morning_breach_alerts_once_per_rule_with_recoveries_and_no_repeat_after_restart(
    make_settings, start_server, tmp_path
):
    if not AUGUST.is_file():
        pytest.skip(f"no {AUGUST}")
    events = august_events(DAY, before_hour=14)
    minutes = [local(DAY, 6, 0) + timedelta(minutes=i) for i in range(8 * 60 + 1)]  # 06:00 .. 14:00
    want = expected_messages(events, minutes)
    # The data really shows the flapping the cool-down is for: the third rule's breach comes back.
    assert set(want.recoveries) == {"sl20-below-10pct-15m", "sl20-below-10pct-flapping"}

    smtp = SmtpSink().start()
    hooks = WebhookSink().start()
    try:
        notify_file = write_yaml(tmp_path / "notify.yaml", NOTIFY_YAML.replace("WEBHOOK", hooks.url))
        settings = make_settings(
            tz="Asia/Jerusalem",
            notify_file=notify_file,
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
            webhook_secret=SECRET,
            alert_interval_s=3600,
            notify_retry_wait_s=0.01,
            max_future_skew_s=86_400,  # the morning is posted up front, the clock then walks through it
        )
        clock = ManualClock(minutes[0])
        srv = await start_server(settings, clock=clock)
        summary = await replay_events(
            events, srv.url, speed=None, batch_size=1000, api_key=srv.keys.ingest["anonymous-bank"]
        )
        assert summary.accepted == len(events)

        async def walk(srv, chunk: list[datetime]) -> None:
            for t in chunk:
                clock.set(t)
                await srv.runtime.notifier.evaluate_alerts()

        async def restart(srv):
            await srv.stop()
            await wait_closed(srv.url)
            return await start_server(settings, clock=clock)

        cut1, cut2 = minutes.index(local(DAY, 9, 30)), minutes.index(local(DAY, 11, 0))
        await walk(srv, minutes[: cut1 + 1])
        srv = await restart(srv)  # mid-episode of the flapping rule: pending/firing state survives
        await walk(srv, minutes[cut1 : cut2 + 1])  # the restart minute again, then on
        srv = await restart(srv)
        await walk(srv, minutes[cut2:])
        assert await srv.runtime.notifier.retry_due() == 0  # nothing left owed

        n_messages = len(want.alerts) + len(want.recoveries)
        await wait_until(lambda: len(smtp.to(OWNER)) >= n_messages, 10, what="the emails")
        await wait_until(lambda: len(hooks.received()) >= n_messages, 10, what="the webhooks")
        srv = await restart(srv)  # and once more: a fresh process owes nothing
        await walk(srv, minutes[-3:])
        assert await srv.runtime.notifier.retry_due() == 0

        mails = smtp.to(OWNER)
        received = hooks.received()
        assert len(mails) == n_messages, [m["Subject"] for m in mails]
        assert len(received) == n_messages, [h.body["rule"] for h in received]
        assert all(h.signature_ok for h in received)
        assert {h.path for h in received} == {"/hooks/ops"}
        assert len({h.headers["webhook-id"] for h in received}) == n_messages  # a distinct id per delivery

        for kind, table in (("alert.fired", want.alerts), ("alert.recovered", want.recoveries)):
            got = {h.body["rule"]: h.body for h in received if h.body["type"] == kind}
            assert set(got) == set(table), kind
            for rule, (since, at, value) in table.items():
                body = got[rule]
                assert datetime.fromisoformat(body["since"]) == since, (rule, kind)
                assert datetime.fromisoformat(body["at"]) == at, (rule, kind)
                assert math.isclose(body["value"], value, rel_tol=1e-9), (rule, kind, body["value"], value)
                assert body["kpi"] == "service_level_20s"
                assert body["owner"] == {"role": "Operations manager", "person": None}
                assert body["recipient"] == "Operations manager"
            subjects = [
                m["Subject"] for m in mails if ("ALERT" if kind == "alert.fired" else "RECOVERED") in m["Subject"]
            ]
            assert len(subjects) == len(table)
        first = want.alerts["sl20-red-30m"]
        assert first[1] - first[0] == timedelta(minutes=30)  # red for 30 min, then the alert

        # The delivery log and the admin page show the same: every row sent once.
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
            page = await c.get("/admin/notifications", headers=srv.auth("admin"))
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            assert f"{2 * n_messages} deliveries shown, 0 failed" in page.text
            assert (await c.get("/admin/notifications", headers=srv.auth("read"))).status_code == 403
            log = (await c.get("/api/v1/notifications", headers=srv.auth("admin"))).json()
        assert sorted(d["status"] for d in log["deliveries"]) == ["sent"] * (2 * n_messages)
        assert all(d["attempts"] == 1 for d in log["deliveries"])
        states = {s["rule"]: s for s in log["rules"]}
        assert states["sl20-red-30m"]["state"] == "firing"  # still red at 14:00: no recovery owed yet
        assert states["sl20-below-10pct-15m"]["state"] == "ok"
    finally:
        smtp.stop()
        hooks.stop()
