"""The notify file: contacts of KPI owners, alert rules and subscriptions (YAML).

Example (``PULSEBOARD_NOTIFY_FILE``)::

    contacts:                       # keyed by a KPI owner's person or role (pack: kpis.*.owner)
      Operations manager: {email: ops@bank.example, webhook: https://hooks.example/ops}
    alerts:
      - id: sl20-red-30m
        kpi: service_level_20s      # a KPI of a loaded pack
        window: 60m                 # 15m, 60m, today or month: the live window evaluated
        when: red                   # red: RAG red against the KPI's target; below / above: vs threshold
        for_min: 30                 # the condition must hold this long before the alert (0 = at once)
        cooldown_min: 120           # no new alert of this rule within this long of the last one
        recovery: true              # send a recovery notice when the condition ends
    subscriptions:
      - id: ops-daily
        dashboard: contact-centre
        grain: day                  # day: the end-of-day dashboard; month: the scorecard
        to: [ops@bank.example]      # addresses, or owner names/roles of contacts
        since: 1999-08-01           # optional: no period before this one is sent

An alert goes to the KPI owner's contact (person first, then role), or to the rule's ``to`` when
given: by email when the contact has an address and SMTP is configured, and by webhook to the
contact's URL or else ``PULSEBOARD_WEBHOOK_URL``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.metrics.pack import Kpi, Pack
from app.notify import NotifyConfigError

ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
RULE_WINDOWS = ("15m", "60m", "today", "month")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContactSpec(_Strict):
    """Where one owner is reached: an email address and/or a webhook URL."""

    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)
    webhook: str | None = Field(default=None, pattern=r"^https?://", max_length=2000)


class AlertSpec(_Strict):
    """One alert rule on one KPI's live window."""

    id: str = Field(pattern=ID_PATTERN)
    kpi: str
    pack: str | None = None
    window: Literal["15m", "60m", "today", "month"] = "60m"
    dims: dict[str, str] = Field(default_factory=dict)
    when: Literal["red", "below", "above"] = "red"
    threshold: float | None = None
    for_min: float = Field(default=0, ge=0, le=7 * 24 * 60)
    cooldown_min: float = Field(default=60, ge=0, le=30 * 24 * 60)
    recovery: bool = True
    to: list[str] | None = None


class SubscriptionSpec(_Strict):
    """Who gets a dashboard's end-of-day page (``day``) or scorecard (``month``) after each cut."""

    id: str = Field(pattern=ID_PATTERN)
    dashboard: str
    grain: Literal["day", "month"]
    to: list[str] = Field(min_length=1)
    since: date | None = None


class NotifySpec(_Strict):
    """The whole notify file."""

    contacts: dict[str, ContactSpec] = Field(default_factory=dict)
    alerts: list[AlertSpec] = Field(default_factory=list)
    subscriptions: list[SubscriptionSpec] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Recipient:
    """One destination: ``channel`` is ``email`` (address) or ``webhook`` (URL); ``name`` is whom it reaches."""

    channel: Literal["email", "webhook"]
    address: str
    name: str


@dataclass(frozen=True, slots=True)
class AlertRule:
    """A validated rule with its pack, KPI and resolved recipients."""

    spec: AlertSpec
    pack: Pack
    kpi: Kpi
    recipients: tuple[Recipient, ...]

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def dims(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(self.spec.dims.items()))


@dataclass(frozen=True, slots=True)
class Subscription:
    """A validated subscription with its resolved recipients."""

    spec: SubscriptionSpec
    recipients: tuple[Recipient, ...]

    @property
    def id(self) -> str:
        return self.spec.id


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    """Contacts, rules and subscriptions ready to run (empty when no notify file is set)."""

    contacts: Mapping[str, ContactSpec]
    rules: tuple[AlertRule, ...] = ()
    subscriptions: tuple[Subscription, ...] = ()


def _recipients(
    names: list[str], contacts: Mapping[str, ContactSpec], default_webhook: str | None, email: bool = True
) -> tuple[list[Recipient], list[str]]:
    out: list[Recipient] = []
    unknown: list[str] = []
    for name in names:
        if "@" in name:
            out.append(Recipient("email", name, name))
            continue
        contact = contacts.get(name)
        if contact is None:
            unknown.append(name)
            continue
        if contact.email and email:
            out.append(Recipient("email", contact.email, name))
        hook = contact.webhook or default_webhook
        if hook:
            out.append(Recipient("webhook", hook, name))
    return list(dict.fromkeys(out)), unknown


def build(spec: NotifySpec, packs: Mapping[str, Pack], origin: str, default_webhook: str | None) -> NotifyConfig:
    """Check ``spec`` against the loaded packs and resolve every recipient.

    Raises:
        NotifyConfigError: listing every problem as ``ORIGIN: PATH: REASON``.
    """
    problems: list[str] = []
    rules: list[AlertRule] = []
    seen: set[str] = set()
    for i, a in enumerate(spec.alerts):
        where = f"{origin}: alerts[{i}]"
        if a.id in seen:
            problems.append(f"{where}.id: {a.id!r} is used twice")
        seen.add(a.id)
        found = [p for p in packs.values() if a.kpi in p.kpis and (a.pack is None or p.name == a.pack)]
        if not found:
            problems.append(f"{where}.kpi: no KPI {a.kpi!r} in the loaded packs")
            continue
        pack = found[0]
        kpi = pack.kpis[a.kpi]
        for key in a.dims:
            if key not in pack.dimensions:
                problems.append(f"{where}.dims.{key}: not a rolled-up dimension of {pack.name} {list(pack.dimensions)}")
        if a.when == "red" and kpi.target is None:
            problems.append(f"{where}.when: KPI {a.kpi!r} has no target, so it is never red; use below/above")
        if a.when != "red" and a.threshold is None:
            problems.append(f"{where}.threshold: required with when: {a.when}")
        if a.to is not None:
            names = a.to
        elif kpi.owner is None:
            problems.append(f"{where}.to: KPI {a.kpi!r} has no owner; name the recipients with to")
            continue
        else:
            names = [kpi.owner.person] if kpi.owner.person and kpi.owner.person in spec.contacts else [kpi.owner.role]
        recipients, unknown = _recipients(names, spec.contacts, default_webhook)
        if unknown:
            problems.append(f"{where}: no contact for {', '.join(repr(u) for u in unknown)} (add it under contacts)")
        elif not recipients:
            problems.append(f"{where}: {names} have neither an email address nor a webhook")
        rules.append(AlertRule(a, pack, kpi, tuple(recipients)))
    subs: list[Subscription] = []
    seen = set()
    slugs = {slug for p in packs.values() for slug in p.dashboards}
    for i, s in enumerate(spec.subscriptions):
        where = f"{origin}: subscriptions[{i}]"
        if s.id in seen:
            problems.append(f"{where}.id: {s.id!r} is used twice")
        seen.add(s.id)
        if s.dashboard not in slugs:
            problems.append(f"{where}.dashboard: no dashboard {s.dashboard!r} (have {sorted(slugs)})")
        recipients, unknown = _recipients(s.to, spec.contacts, None)
        recipients = [r for r in recipients if r.channel == "email"]  # reports are emails
        if unknown:
            problems.append(f"{where}.to: no contact for {', '.join(repr(u) for u in unknown)}")
        elif not recipients:
            problems.append(f"{where}.to: no email address among {s.to}")
        subs.append(Subscription(s, tuple(recipients)))
    if problems:
        raise NotifyConfigError("\n".join(problems))
    return NotifyConfig(spec.contacts, tuple(rules), tuple(subs))


def load(path: Path | None, packs: Mapping[str, Pack], default_webhook: str | None = None) -> NotifyConfig:
    """Read and check the notify file at ``path`` (``None``: no rules, no subscriptions).

    Raises:
        NotifyConfigError: unreadable YAML, an unknown key, a KPI or dashboard not loaded, an owner
            without a contact; every problem as ``FILE: PATH: REASON``.
    """
    if path is None:
        return NotifyConfig({})
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise NotifyConfigError(f"{path}: cannot read the notify file: {exc}") from exc
    try:
        spec = NotifySpec.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{path}: {'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()]
        raise NotifyConfigError("\n".join(lines)) from exc
    return build(spec, packs, str(path), default_webhook)
