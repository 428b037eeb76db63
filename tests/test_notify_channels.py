"""The notify file's errors, and the webhook channel's retries, permanent failures and the
admin's retry by hand, on the generic test pack with a real receiver on 127.0.0.1 (both stores)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import ValidationError

from app.clock import ManualClock
from app.config import Settings
from app.main import create_app
from app.notify import NotifyConfigError
from app.notify.channels import sign, webhook_key
from tests.helpers import PACKS_DIR, sample, wait_until
from tests.notify_common import SECRET, SmtpSink, WebhookSink, write_yaml

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def test_a_bad_notify_file_stops_the_start_naming_every_problem(tmp_path):
    bad = write_yaml(
        tmp_path / "bad.yaml",
        """
contacts:
  Ops manager: {email: ops@example.org}
alerts:
  - {id: no-such-kpi, kpi: sample_mean_typo}
  - {id: no-contact, kpi: sample_count, when: below, threshold: 5}
  - {id: no-threshold, kpi: sample_mean, when: above}
  - {id: no-target, kpi: sample_sum}
subscriptions:
  - {id: nowhere, dashboard: no-such-wall, grain: day, to: [ops@example.org]}
""",
    )
    settings = Settings(data_dir=tmp_path / "var", packs_dir=PACKS_DIR, notify_file=bad)
    with pytest.raises(NotifyConfigError) as err:
        create_app(settings)
    lines = str(err.value).splitlines()
    assert lines == [
        f"{bad}: alerts[0].kpi: no KPI 'sample_mean_typo' in the loaded packs",
        f"{bad}: alerts[1]: no contact for 'Team leader' (add it under contacts)",
        f"{bad}: alerts[2].threshold: required with when: above",
        f"{bad}: alerts[3].when: KPI 'sample_sum' has no target, so it is never red; use below/above",
        f"{bad}: alerts[3].to: KPI 'sample_sum' has no owner; name the recipients with to",
        f"{bad}: subscriptions[0].dashboard: no dashboard 'no-such-wall' (have ['contact-centre', 'generic-wall', "
        "'itsm', 'noc'])",
    ]
    typo = write_yaml(tmp_path / "typo.yaml", "alerts:\n  - {id: x, kpi: sample_mean, for_minutes: 5}\n")
    with pytest.raises(NotifyConfigError, match=r"typo.yaml: alerts\.0\.for_minutes: Extra inputs are not permitted"):
        create_app(Settings(data_dir=tmp_path / "var", packs_dir=PACKS_DIR, notify_file=typo))


@pytest.mark.parametrize(
    ("name", "value"),
    [("notify_attempts", 0), ("notify_max_passes", 0), ("alert_interval_s", 0), ("webhook_url", "ftp://x")],
)
def test_notify_limits_are_validated(tmp_path, name, value):
    with pytest.raises(ValidationError, match=name):
        Settings(data_dir=tmp_path, **{name: value})


def test_signature_is_the_standard_webhooks_one():
    # The example of the Standard Webhooks specification's reference libraries.
    key = webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    assert sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


async def test_webhook_retries_a_5xx_gives_up_on_a_4xx_and_the_admin_retries_it(make_settings, start_server, tmp_path):
    ops = WebhookSink(answers=[500, 503])  # two failures, then the verified 204
    ana = WebhookSink(answers=[410])  # permanent: no second try in the pass
    ops.start()
    ana.start()
    try:
        notify = write_yaml(
            tmp_path / "notify.yaml",
            f"""
contacts:
  Ops manager: {{webhook: {ops.url}/ops}}
  Ana: {{webhook: {ana.url}/ana}}
alerts:
  - {{id: mean-high, kpi: sample_mean, window: 15m, when: above, threshold: 20}}
  - {{id: count-red, kpi: sample_count, window: 15m, when: red}}
""",
        )
        settings = make_settings(
            packs_dir=PACKS_DIR,
            notify_file=notify,
            webhook_secret=SECRET,
            notify_attempts=3,
            notify_retry_wait_s=0.01,
            notify_enabled=False,  # no loop: the test evaluates and retries by itself (a count of 0 is red)
        )
        clock = ManualClock(NOW)
        srv = await start_server(settings, clock=clock)
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
            r = await c.post("/api/v1/events", json=[sample(NOW.isoformat(), 30)], headers=srv.auth("ingest"))
            assert r.status_code == 202, r.text
            moves = await srv.runtime.notifier.evaluate_alerts()
            assert sorted((m.rule.id, m.kind) for m in moves) == [("count-red", "alert"), ("mean-high", "alert")]
            log = {
                d["source"]: d
                for d in (await c.get("/api/v1/notifications", headers=srv.auth("admin"))).json()["deliveries"]
            }
            assert (log["mean-high"]["status"], log["mean-high"]["attempts"]) == ("sent", 3)
            assert [h.signature_ok for h in ops.received()] == [True, True, True]
            assert len({h.headers["webhook-id"] for h in ops.received()}) == 1  # the same delivery, tried 3 times
            assert (log["count-red"]["status"], log["count-red"]["attempts"]) == ("dead", 1)
            assert "answered 410" in log["count-red"]["last_error"]
            page = await c.get("/admin/notifications", headers=srv.auth("admin"))
            assert "2 deliveries shown, 1 failed or given up" in page.text
            again = await c.post(f"/api/v1/notifications/{log['count-red']['id']}/retry", headers=srv.auth("admin"))
            assert again.json() == {"id": log["count-red"]["id"], "status": "sent"}
            assert len(ana.received()) == 2
            missing = await c.post("/api/v1/notifications/nope/retry", headers=srv.auth("admin"))
            assert missing.status_code == 404
            # The same instant again, and a retry pass: nothing more is sent.
            assert await srv.runtime.notifier.evaluate_alerts() == []
            assert await srv.runtime.notifier.retry_due() == 0
        assert (len(ops.received()), len(ana.received())) == (3, 2)
    finally:
        ops.stop()
        ana.stop()


async def test_catch_up_sends_the_newest_periods_once_and_says_when_there_is_no_pdf(
    make_settings, start_server, tmp_path
):
    smtp = SmtpSink().start()
    try:
        notify = write_yaml(
            tmp_path / "notify.yaml",
            "subscriptions:\n  - {id: daily, dashboard: generic-wall, grain: day, to: [lead@example.org]}\n",
        )
        settings = make_settings(
            packs_dir=PACKS_DIR,
            notify_file=notify,
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
            notify_enabled=False,
            distribution_catchup_max_periods=2,
            pdf_renderer=tmp_path / "no-chromium-here",
            admin_log_rows=1,
        )
        clock = ManualClock(datetime(2026, 3, 5, 1, 0, tzinfo=UTC))
        srv = await start_server(settings, clock=clock)
        days = ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]
        async with httpx.AsyncClient(base_url=srv.url, timeout=30, headers=srv.auth("admin")) as c:
            events = [sample(f"{d}T12:00:00Z", 1 + i, id=f"e{i}-{j}") for i, d in enumerate(days) for j in range(i + 1)]
            r = await c.post("/api/v1/events", json=events, headers=srv.auth("ingest"))
            assert r.status_code == 202, r.text
            for d in days:
                r = await c.post("/api/v1/snapshots/generic-wall/cut", json={"grain": "day", "period": d})
                assert r.status_code == 201, r.text
            sent = await srv.runtime.notifier.distribute()
            assert sent == [("daily", "2026-03-03", "lead@example.org"), ("daily", "2026-03-04", "lead@example.org")]
            assert await srv.runtime.notifier.distribute() == []  # each period once
            page = await c.get("/admin/notifications")
            assert "1 deliveries shown, 0 failed" in page.text  # PULSEBOARD_ADMIN_LOG_ROWS
        mails = {m["Subject"]: m for _, m in smtp.messages}
        assert sorted(mails) == [f"[Pulseboard] generic-wall: end of day {d}" for d in days[2:]]
        mail = mails["[Pulseboard] generic-wall: end of day 2026-03-04"]
        body = mail.get_body(("plain",)).get_content()
        assert f"PDF omitted: no renderer (PULSEBOARD_PDF_RENDERER={tmp_path / 'no-chromium-here'})" in body
        names = sorted(p.get_filename() for p in mail.iter_attachments())
        assert names == ["generic-wall-day-2026-03-04-v1.csv", "generic-wall-day-2026-03-04-v1.xlsx"]
        rows = list(csv.DictReader(io.StringIO(next(mail.iter_attachments()).get_content())))
        assert {r["kpi"]: r["value"] for r in rows}["sample_count"] == "4"
    finally:
        smtp.stop()


def test_long_dedup_keys_fit_the_log_and_stay_distinct():
    from app.notify.service import log_key

    short = "alert:r:1:webhook:https://hooks.example/a"
    assert log_key(short) == short
    a, b = log_key("alert:r:1:webhook:https://h/" + "a" * 2000), log_key("alert:r:1:webhook:https://h/" + "a" * 1999)
    assert len(a) == len(b) == 400 and a != b


async def test_the_alert_loop_evaluates_by_itself_on_the_view_clock(make_settings, start_server, tmp_path):
    hook = WebhookSink().start()
    try:
        notify = write_yaml(
            tmp_path / "notify.yaml",
            f"""
contacts:
  Ops manager: {{webhook: {hook.url}/ops}}
alerts:
  - {{id: mean-high, kpi: sample_mean, window: 15m, when: above, threshold: 20, for_min: 2}}
""",
        )
        settings = make_settings(packs_dir=PACKS_DIR, notify_file=notify, webhook_secret=SECRET, alert_interval_s=0.05)
        clock = ManualClock(NOW)
        srv = await start_server(settings, clock=clock)
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:
            r = await c.post("/api/v1/events", json=[sample(NOW.isoformat(), 30)], headers=srv.auth("ingest"))
            assert r.status_code == 202, r.text

            async def pending() -> bool:
                [state] = await srv.runtime.notifier.rule_states()
                return state["rule"] == "mean-high" and state["state"] == "pending"

            await wait_until(pending, 10, what="the rule pending")
            assert hook.received() == []  # held for 0 of the 2 minutes asked
            clock.advance(120)
            await wait_until(lambda: hook.received(), 10, what="the alert from the loop")
        [got] = hook.received()
        assert got.signature_ok and got.body["type"] == "alert.fired" and got.body["value"] == 30
    finally:
        hook.stop()
