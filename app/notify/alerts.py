"""Alert rules evaluated on live KPI windows: a state machine per rule, kept in ``alert_state``.

Each evaluation reads the rule's KPI over its window ending at the view clock's now (the same
windows as the wall's tiles, ``app.metrics.windows``) and tests the condition:

- ``when: red``: the RAG status is red against the KPI's target for the window's grain
  (``today`` → the day target, ``month`` → the month target, else the base target);
- ``when: below`` / ``above``: the value is below / above ``threshold`` (a crossing).

States: ``ok`` → ``pending`` (the condition holds, since ``since_us``) → ``firing`` once it has held
``for_min`` minutes (``for_min: 0`` fires at the first evaluation where it holds).  Entering
``firing`` sends one alert, unless the rule's last alert is less than ``cooldown_min`` old: then the
episode is recorded as cooled down (``notified`` false) and sends nothing, not even its recovery.
When the condition stops holding, a firing episode that was notified sends one recovery notice
(``recovery: true``).  A window without a value (no events) changes nothing: no data is neither a
breach nor a recovery.  This is the pending/firing model of Prometheus alerting rules (``for``)
with Alertmanager's repeat interval as the cool-down.

Every message is logged under a deduplication key made of the rule and the episode's start
(``alert:RULE:SINCE:RECIPIENT``), unique in the delivery log, and the state is stored in the same
transaction: a restart neither repeats an alert nor loses a recovery owed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from app.metrics.calendar import MINUTE_US, from_us
from app.metrics.evaluate import rag_status
from app.metrics.windows import window_bounds
from app.notify.config import AlertRule
from app.query.kpis import kpi_value

WINDOW_GRAIN = {"today": "day", "month": "month"}


@dataclass(slots=True)
class RuleState:
    """Where one rule stands (one ``alert_state`` row); instants in UTC µs."""

    rule: str
    state: str = "ok"  # ok | pending | firing
    since_us: int | None = None
    fired_us: int | None = None
    notified: bool = False
    last_alert_us: int | None = None
    last_value: float | None = None
    evaluated_us: int = 0

    def row(self) -> dict[str, Any]:
        """The ``alert_state`` row."""
        return {
            "rule": self.rule,
            "state": self.state,
            "since_us": self.since_us,
            "fired_us": self.fired_us,
            "notified": self.notified,
            "last_alert_us": self.last_alert_us,
            "last_value": self.last_value,
            "evaluated_us": self.evaluated_us,
        }


@dataclass(frozen=True, slots=True)
class Transition:
    """A message a rule owes: ``kind`` ``alert`` or ``recovery`` of the episode begun at ``since_us``."""

    rule: AlertRule
    kind: str
    since_us: int
    at_us: int
    value: float | None
    target: float | None
    status: str | None


def rule_target(rule: AlertRule) -> float | None:
    """The target the rule's window is judged against (per grain for ``today`` / ``month``)."""
    return rule.kpi.target_for(WINDOW_GRAIN.get(rule.spec.window))


def condition_holds(rule: AlertRule, value: float | None) -> bool | None:
    """Whether the rule's condition holds for ``value``; ``None`` when there is no value."""
    if value is None:
        return None
    spec = rule.spec
    if spec.when == "red":
        return rag_status(rule.kpi, value, rule_target(rule)) == "red"
    assert spec.threshold is not None  # checked when the notify file is loaded
    return value < spec.threshold if spec.when == "below" else value > spec.threshold


async def rule_value(conn: AsyncConnection, rule: AlertRule, now_us: int, zone: ZoneInfo) -> float | None:
    """The rule's KPI over its window ending at ``now_us`` (gauges: read at ``now_us``)."""
    start, end = window_bounds(rule.spec.window, now_us, zone)  # exactly what a tile of that window reads
    return (await kpi_value(conn, rule.pack, rule.kpi, rule.dims, start, end, now_us)).value


def step(rule: AlertRule, st: RuleState, value: float | None, now_us: int) -> Transition | None:
    """Advance ``st`` (in place) to ``now_us`` given the window's ``value``; the message owed, if any."""
    holds = condition_holds(rule, value)
    st.evaluated_us = now_us
    if value is not None:
        st.last_value = value
    if holds is None:
        return None
    spec = rule.spec
    target = rule_target(rule)
    status = rag_status(rule.kpi, value, target)
    if holds:
        if st.state == "ok":
            st.state, st.since_us, st.notified, st.fired_us = "pending", now_us, False, None
        assert st.since_us is not None
        if st.state == "pending" and now_us - st.since_us >= spec.for_min * MINUTE_US:
            st.state, st.fired_us = "firing", now_us
            cooled = st.last_alert_us is not None and now_us - st.last_alert_us < spec.cooldown_min * MINUTE_US
            if not cooled:
                st.notified, st.last_alert_us = True, now_us
                return Transition(rule, "alert", st.since_us, now_us, value, target, status)
        return None
    owed = st.state == "firing" and st.notified and spec.recovery
    since = st.since_us
    st.state, st.since_us, st.notified, st.fired_us = "ok", None, False, None
    if owed and since is not None:
        return Transition(rule, "recovery", since, now_us, value, target, status)
    return None


def format_value(value: float | None, unit: str) -> str:
    """``value`` for people: ratios as percentages, seconds with ``s``, counts as they are."""
    if value is None:
        return "no data"
    if unit == "ratio":
        return f"{value * 100:.1f} %"
    if unit == "s":
        return f"{value:.1f} s"
    return f"{value:g} {unit}".strip()


def describe(t: Transition, zone: ZoneInfo, link: str | None) -> tuple[str, str, dict[str, Any]]:
    """``(subject, text body, webhook JSON)`` of a transition."""
    rule, spec, kpi = t.rule, t.rule.spec, t.rule.kpi
    dims = "".join(f" · {k}={v}" for k, v in rule.dims)
    what = f"{kpi.title} ({spec.window}{dims})"
    since = from_us(t.since_us, zone)
    at = from_us(t.at_us, zone)
    if spec.when == "red":
        cond = f"red against target {format_value(t.target, kpi.unit)}"
    else:
        cond = f"{spec.when} {format_value(spec.threshold, kpi.unit)}"
    if t.kind == "alert":
        subject = f"[Pulseboard] ALERT {what}: {format_value(t.value, kpi.unit)}, {cond}"
        lead = (
            f"{what} has been {cond} since {since:%Y-%m-%d %H:%M %Z} "
            f"({(t.at_us - t.since_us) / MINUTE_US:.0f} min; the rule asks for {spec.for_min:g} min)."
        )
    else:
        subject = f"[Pulseboard] RECOVERED {what}: {format_value(t.value, kpi.unit)}"
        lead = (
            f"{what} is no longer {cond} at {at:%Y-%m-%d %H:%M %Z}; the breach began "
            f"{since:%Y-%m-%d %H:%M %Z} and lasted {(t.at_us - t.since_us) / MINUTE_US:.0f} min."
        )
    owner = {"role": kpi.owner.role, "person": kpi.owner.person} if kpi.owner else None
    text = "\n".join(
        [
            lead,
            "",
            f"Value now: {format_value(t.value, kpi.unit)} (status {t.status or 'none'})",
            f"Target: {format_value(t.target, kpi.unit)} ({kpi.direction} is better)",
            f"Owner: {owner['person'] or owner['role'] if owner else 'none'}",
            f"Rule: {spec.id} (when {spec.when}, for {spec.for_min:g} min, cool-down {spec.cooldown_min:g} min)",
            *([f"Wall: {link}"] if link else []),
        ]
    )
    body = {
        "type": f"alert.{'fired' if t.kind == 'alert' else 'recovered'}",
        "rule": spec.id,
        "kpi": kpi.name,
        "title": kpi.title,
        "window": spec.window,
        "dims": dict(rule.dims),
        "condition": {"when": spec.when, "threshold": spec.threshold, "for_min": spec.for_min},
        "value": t.value,
        "unit": kpi.unit,
        "target": t.target,
        "status": t.status,
        "since": since.isoformat(),
        "at": at.isoformat(),
        "owner": owner,
        "link": link,
        "text": lead,
    }
    return subject, text, body
