"""The notifier: the delivery log, delivery passes with retries, and the background loops.

Every message is first stored in ``notification`` (the delivery log) under a unique
``dedup_key``, then sent; the row records each pass: attempts, the last error, when it was sent.
A try that fails is retried within the pass by tenacity (exponential back-off,
``PULSEBOARD_NOTIFY_ATTEMPTS`` tries); a pass that fails leaves the row ``failed`` for the next
retry pass (every ``PULSEBOARD_NOTIFY_RETRY_PASS_S``), and after ``PULSEBOARD_NOTIFY_MAX_PASSES``
passes, or a permanent error, ``dead``.  ``/admin/notifications`` lists them and retries by hand.

A pass claims its row (``next_attempt_us`` moved a lease ahead, compare-and-set), so two
processes never send one row at once; a process that dies mid-send leaves the row to be sent
again once the lease ends (at least once: receivers drop repeats by ``webhook-id`` / Message-ID,
both the row's id).

Loops (``start``): alert evaluation every ``PULSEBOARD_ALERT_INTERVAL_S`` on the view clock (event
time in event-time mode), distribution of cut periods (also woken after each cut), and retries.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import msgspec
from sqlalchemy import select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from app.clock import Clock
from app.config import Settings
from app.metrics.calendar import to_us
from app.metrics.pack import Pack
from app.notify import DeliveryError, reports
from app.notify import alerts as rules
from app.notify.channels import email_message, post_webhook, send_email, webhook_key
from app.notify.config import NotifyConfig, Recipient, Subscription
from app.snapshots import NotCut
from app.snapshots import cut as cuts
from app.snapshots import scorecard as cards
from app.store.schema import alert_state, notification, snapshot

log = logging.getLogger(__name__)
_json = msgspec.json
SECOND_US = 1_000_000


def log_key(raw: str) -> str:
    """The delivery log's ``dedup_key`` of ``raw``: itself up to 400 characters, else a prefix and its SHA-256."""
    if len(raw) <= 400:
        return raw
    return raw[:335] + "#" + hashlib.sha256(raw.encode()).hexdigest()


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, DeliveryError) and not exc.permanent


class Notifier:
    """Alerts, distribution and deliveries of one process.

    Args:
        engine: the store.
        packs: loaded packs (links to walls).
        settings: channels, retry and loop settings.
        config: contacts, rules and subscriptions (``app.notify.config.load``).
        clock: wall time: the delivery log's instants and retry schedule.
        view_clock: what alert windows end at (an ``EventClock`` in event-time mode).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        packs: Mapping[str, Pack],
        settings: Settings,
        config: NotifyConfig,
        clock: Clock,
        view_clock: Clock,
    ) -> None:
        self._engine = engine
        self._packs = packs
        self._settings = settings
        self.config = config
        self._clock = clock
        self._view_clock = view_clock
        self._alert_lock = asyncio.Lock()
        self._dist_lock = asyncio.Lock()
        self._http: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake_distribution = asyncio.Event()
        self._key = webhook_key(settings.webhook_secret.get_secret_value()) if settings.webhook_secret else None

    # -- links ---------------------------------------------------------------------------------

    def base_url(self) -> str:
        """Where links in messages point: ``PULSEBOARD_PUBLIC_URL``, else the bind address."""
        if self._settings.public_url:
            return self._settings.public_url.rstrip("/")
        return f"http://{self._settings.host}:{self._settings.port}"

    def _wall_link(self, pack: Pack, kpi: str) -> str | None:
        for slug, dash in pack.dashboards.items():
            if any(t.kpi == kpi for t in dash.tiles):
                return f"{self.base_url()}/wall/{slug}"
        return None

    # -- the delivery log ----------------------------------------------------------------------

    def _now_us(self) -> int:
        return to_us(self._clock.now())

    async def _log(
        self,
        conn: AsyncConnection,
        dedup_key: str,
        kind: str,
        source: str,
        to: Recipient,
        subject: str,
        payload: dict[str, Any],
    ) -> str | None:
        """Store one message unless its ``dedup_key`` is logged already; the new row's id, or ``None``."""
        dedup_key = log_key(dedup_key)
        found = (await conn.execute(select(notification.c.id).where(notification.c.dedup_key == dedup_key))).first()
        if found is not None:
            return None
        now = self._now_us()
        row_id = secrets.token_hex(16)
        await conn.execute(
            notification.insert(),
            {
                "id": row_id,
                "dedup_key": dedup_key,
                "kind": kind,
                "source": source,
                "channel": to.channel,
                "recipient": to.address,
                "subject": subject,
                "payload": _json.encode(payload).decode(),
                "status": "pending",
                "attempts": 0,
                "passes": 0,
                "last_error": None,
                "created_us": now,
                "next_attempt_us": now + int(self._settings.notify_lease_s * SECOND_US),  # claimed by its creator
                "sent_us": None,
            },
        )
        return row_id

    async def _claim(self, row_id: str) -> Any | None:
        """Take row ``row_id`` for one pass when it is due (pending/failed, lease over); the row or ``None``."""
        now = self._now_us()
        lease = now + int(self._settings.notify_lease_s * SECOND_US)
        t = notification.c
        async with self._engine.begin() as conn:
            got = await conn.execute(
                update(notification)
                .where(t.id == row_id, t.status.in_(("pending", "failed")), t.next_attempt_us <= now)
                .values(next_attempt_us=lease)
            )
            if got.rowcount != 1:
                return None
            return (await conn.execute(select(notification).where(t.id == row_id))).first()

    async def _send(self, row: Any) -> None:
        payload = _json.decode(row.payload)
        if row.channel == "webhook":
            assert self._http is not None
            body = _json.encode(payload["body"])
            await post_webhook(self._http, row.recipient, row.id, body, int(self._clock.now().timestamp()), self._key)
            return
        attachments = [(a["filename"], a["mime"], base64.b64decode(a["data"])) for a in payload.get("attachments", [])]
        msg = email_message(
            self._settings, row.recipient, row.subject, payload["text"], payload.get("html"), row.id, attachments
        )
        await send_email(self._settings, msg)

    async def deliver(self, row: Any) -> str:
        """One delivery pass of a claimed row: up to ``notify_attempts`` tries; returns the new status."""
        s = self._settings
        tries = 0
        error: DeliveryError | None = None
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(s.notify_attempts),
                wait=wait_exponential(multiplier=s.notify_retry_wait_s, max=s.notify_retry_max_wait_s),
                retry=retry_if_exception(_retryable),
                reraise=True,
            ):
                with attempt:
                    tries += 1
                    try:
                        await self._send(row)
                    except DeliveryError:
                        raise
                    except Exception as exc:  # a message the channel cannot take (bad header, payload): final
                        raise DeliveryError(f"{type(exc).__name__}: {exc}", permanent=True) from exc
        except DeliveryError as exc:
            error = exc
        now = self._now_us()
        passes = row.passes + 1
        values: dict[str, Any] = {"attempts": row.attempts + tries, "passes": passes}
        if error is None:
            values.update(status="sent", sent_us=now, last_error=None)
        else:
            dead = error.permanent or passes >= s.notify_max_passes
            values.update(
                status="dead" if dead else "failed",
                last_error=str(error)[:2000],
                next_attempt_us=now + int(s.notify_retry_pass_s * SECOND_US),
            )
            log.warning("delivery %s (%s to %s) %s: %s", row.id, row.channel, row.recipient, values["status"], error)
        async with self._engine.begin() as conn:
            await conn.execute(update(notification).where(notification.c.id == row.id).values(**values))
        return str(values["status"])

    async def _deliver_ids(self, ids: Sequence[str]) -> None:
        for row_id in ids:
            async with self._engine.connect() as conn:
                row = (await conn.execute(select(notification).where(notification.c.id == row_id))).first()
            if row is not None and row.status == "pending":
                await self.deliver(row)

    async def retry_due(self) -> int:
        """One retry pass over every pending or failed row whose time has come; returns how many were tried."""
        now = self._now_us()
        t = notification.c
        async with self._engine.connect() as conn:
            ids = [
                r.id
                for r in await conn.execute(
                    select(t.id)
                    .where(t.status.in_(("pending", "failed")), t.next_attempt_us <= now)
                    .order_by(t.created_us)
                    .limit(500)
                )
            ]
        tried = 0
        for row_id in ids:
            row = await self._claim(row_id)
            if row is not None:
                tried += 1
                await self.deliver(row)
        return tried

    async def retry_now(self, row_id: str) -> str | None:
        """Make row ``row_id`` due now (also a ``dead`` one) and run a pass; its new status, or ``None`` if unknown."""
        t = notification.c
        async with self._engine.begin() as conn:
            got = await conn.execute(
                update(notification)
                .where(t.id == row_id, t.status != "sent")
                .values(status="failed", next_attempt_us=self._now_us(), passes=0)
            )
            if got.rowcount != 1:
                found = (await conn.execute(select(t.status).where(t.id == row_id))).first()
                return None if found is None else str(found.status)
        row = await self._claim(row_id)
        return await self.deliver(row) if row is not None else "failed"

    # -- alerts --------------------------------------------------------------------------------

    async def evaluate_alerts(self, now_us: int | None = None) -> list[rules.Transition]:
        """Evaluate every rule at ``now_us`` (default: the view clock), store the states and log and
        send the messages owed.  Returns the transitions that produced messages."""
        if not self.config.rules:
            return []
        now_us = to_us(self._view_clock.now()) if now_us is None else now_us
        zone = self._settings.zone
        new_ids: list[str] = []
        done: list[rules.Transition] = []
        async with self._alert_lock, self._engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('pulseboard:alerts'))"))
            stored = {r.rule: r for r in await conn.execute(select(alert_state))}
            for rule in self.config.rules:
                prev = stored.get(rule.id)
                st = rules.RuleState(rule.id)
                if prev is not None:
                    st = rules.RuleState(
                        prev.rule,
                        prev.state,
                        prev.since_us,
                        prev.fired_us,
                        bool(prev.notified),
                        prev.last_alert_us,
                        prev.last_value,
                        prev.evaluated_us,
                    )
                    if now_us < prev.evaluated_us:  # a clock that went back: keep what is known
                        continue
                value = await rules.rule_value(conn, rule, now_us, zone)
                move = rules.step(rule, st, value, now_us)
                if prev is None:
                    await conn.execute(alert_state.insert(), st.row())
                else:
                    await conn.execute(update(alert_state).where(alert_state.c.rule == rule.id).values(**st.row()))
                if move is None:
                    continue
                subject, body_text, body = rules.describe(move, zone, self._wall_link(rule.pack, rule.kpi.name))
                logged = False
                for to in rule.recipients:
                    payload: dict[str, Any] = (
                        {"body": {**body, "recipient": to.name}} if to.channel == "webhook" else {"text": body_text}
                    )
                    key = f"{move.kind}:{rule.id}:{move.since_us}:{to.channel}:{to.address}"
                    row_id = await self._log(conn, key, move.kind, rule.id, to, subject, payload)
                    if row_id is not None:
                        new_ids.append(row_id)
                        logged = True
                if logged:
                    done.append(move)
        await self._deliver_ids(new_ids)
        return done

    # -- distribution --------------------------------------------------------------------------

    async def _periods(self, conn: AsyncConnection, sub: Subscription) -> list[str]:
        t = snapshot.c
        query = select(t.period).where(t.dashboard == sub.spec.dashboard, t.grain == sub.spec.grain, t.version == 1)
        if sub.spec.since is not None:
            since = sub.spec.since.isoformat()
            query = query.where(t.period >= (since if sub.spec.grain == "day" else since[:7]))
        query = query.order_by(t.period.desc()).limit(self._settings.distribution_catchup_max_periods)
        return sorted(r.period for r in await conn.execute(query))

    async def _report(self, conn: AsyncConnection, sub: Subscription, period: str) -> reports.Report | None:
        s = self._settings
        slug = sub.spec.dashboard
        if sub.spec.grain == "day":
            row = await cuts.latest(conn, slug, "day", period)
            if row is None:
                return None
            link = f"{self.base_url()}/day/{slug}/{period}"
            return await reports.day_report(cuts.snapshot_json(row), link, s.pdf_renderer, s.pdf_timeout_s)
        try:
            card = await cards.build(conn, slug, period)
        except NotCut:
            return None
        link = f"{self.base_url()}/scorecard/{slug}/{period}"
        return await reports.month_report(card, link, s.pdf_renderer, s.pdf_timeout_s)

    async def distribute(self) -> list[tuple[str, str, str]]:
        """Send every cut period of every subscription not sent yet (catch-up included: each missed
        period once, the newest ``distribution_catchup_max_periods``).  Returns ``(subscription,
        period, recipient)`` of the messages logged by this call."""
        out: list[tuple[str, str, str]] = []
        async with self._dist_lock:
            for sub in self.config.subscriptions:
                async with self._engine.connect() as conn:
                    periods = await self._periods(conn, sub)
                    logged = {
                        r.dedup_key
                        for r in await conn.execute(
                            select(notification.c.dedup_key).where(
                                notification.c.kind == "distribution", notification.c.source == sub.id
                            )
                        )
                    }
                for period in periods:
                    todo = [to for to in sub.recipients if self._dist_key(sub, period, to) not in logged]
                    if not todo:
                        continue
                    async with self._engine.connect() as conn:
                        report = await self._report(conn, sub, period)
                    if report is None:
                        continue
                    payload = {
                        "text": report.text,
                        "html": report.html,
                        "attachments": [
                            {"filename": f, "mime": m, "data": base64.b64encode(d).decode()}
                            for f, m, d in report.attachments
                        ],
                    }
                    ids = []
                    async with self._engine.begin() as conn:
                        if conn.dialect.name == "postgresql":  # two instances: one logs, the other finds it
                            await conn.execute(
                                text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                                {"k": f"pulseboard:distribution:{sub.id}:{period}"},
                            )
                        for to in todo:
                            key = self._dist_key(sub, period, to)
                            row_id = await self._log(conn, key, "distribution", sub.id, to, report.subject, payload)
                            if row_id is not None:
                                ids.append(row_id)
                                out.append((sub.id, period, to.address))
                    await self._deliver_ids(ids)
        return out

    @staticmethod
    def _dist_key(sub: Subscription, period: str, to: Recipient) -> str:
        return log_key(f"distribution:{sub.id}:{sub.spec.grain}:{period}:{to.address}")

    def cut_made(self, _slug: str) -> None:
        """Snapshot hook: a cut or restatement happened; wake the distribution loop."""
        self._wake_distribution.set()

    # -- admin view ----------------------------------------------------------------------------

    async def log_rows(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` deliveries, failed and dead first (the admin page)."""
        t = notification.c
        async with self._engine.connect() as conn:
            rows = list(await conn.execute(select(notification).order_by(t.created_us.desc()).limit(limit)))
        zone = self._settings.zone
        order = {"dead": 0, "failed": 1, "pending": 2, "sent": 3}
        rows.sort(key=lambda r: order.get(r.status, 4))
        from app.metrics.calendar import from_us

        return [
            {
                "id": r.id,
                "kind": r.kind,
                "source": r.source,
                "channel": r.channel,
                "recipient": r.recipient,
                "subject": r.subject,
                "status": r.status,
                "attempts": r.attempts,
                "passes": r.passes,
                "last_error": r.last_error,
                "created_at": from_us(r.created_us, zone).isoformat(),
                "sent_at": from_us(r.sent_us, zone).isoformat() if r.sent_us is not None else None,
                "next_attempt_at": from_us(r.next_attempt_us, zone).isoformat() if r.status == "failed" else None,
            }
            for r in rows
        ]

    async def rule_states(self) -> list[dict[str, Any]]:
        """Each rule's stored state (the admin page)."""
        from app.metrics.calendar import from_us

        zone: ZoneInfo = self._settings.zone
        async with self._engine.connect() as conn:
            stored = {r.rule: r for r in await conn.execute(select(alert_state))}
        out = []
        for rule in self.config.rules:
            r = stored.get(rule.id)
            out.append(
                {
                    "rule": rule.id,
                    "kpi": rule.kpi.name,
                    "window": rule.spec.window,
                    "state": r.state if r else "ok",
                    "since": from_us(r.since_us, zone).isoformat() if r and r.since_us else None,
                    "notified": bool(r.notified) if r else False,
                    "last_value": r.last_value if r else None,
                    "evaluated_at": from_us(r.evaluated_us, zone).isoformat() if r else None,
                }
            )
        return out

    # -- loops ---------------------------------------------------------------------------------

    async def _every(self, interval_s: float, job: Any, name: str) -> None:
        while True:
            try:
                await job()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("%s failed, will try again in %g s: %s", name, interval_s, exc)
            except Exception:  # a loop must outlive any one pass
                log.exception("%s failed unexpectedly, will try again in %g s", name, interval_s)
            await asyncio.sleep(interval_s)

    async def _distribution_loop(self) -> None:
        while True:
            try:
                await self.distribute()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("distribution failed, will try again: %s", exc)
            except Exception:  # a loop must outlive any one pass
                log.exception("distribution failed unexpectedly, will try again")
            try:
                await asyncio.wait_for(self._wake_distribution.wait(), self._settings.notify_retry_pass_s)
            except TimeoutError:
                pass
            self._wake_distribution.clear()

    def start(self) -> None:
        """Open the webhook client and start the loops (alerts, distribution, retries)."""
        s = self._settings
        self._http = httpx.AsyncClient(timeout=s.webhook_timeout_s, follow_redirects=False)
        if not s.notify_enabled:
            return
        if self.config.rules:
            self._tasks.append(asyncio.create_task(self._every(s.alert_interval_s, self.evaluate_alerts, "alerts")))
        if self.config.subscriptions:
            self._tasks.append(asyncio.create_task(self._distribution_loop(), name="distribution"))
        self._tasks.append(asyncio.create_task(self._every(s.notify_retry_pass_s, self.retry_due, "retries")))

    async def stop(self) -> None:
        """Stop the loops (a delivery in flight is cancelled: its row is sent again after its lease)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None
