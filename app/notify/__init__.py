"""Notifications: alert rules on live KPI windows and distribution of cuts, through email and
signed webhooks, with retries and a delivery log.

- ``config``: the notify YAML file (contacts, alert rules, subscriptions), validated against the packs.
- ``channels``: SMTP (aiosmtplib) and JSON webhooks signed with HMAC-SHA256 (Standard Webhooks).
- ``alerts``: rule evaluation (red for N minutes, threshold crossing, recovery, cool-down).
- ``reports``: the end-of-day and scorecard emails (summary, link, CSV, XLSX, PDF).
- ``service``: the delivery log, the delivery passes and the background loops.

Exception tree::

    NotifyError
     ├── NotifyConfigError   the notify file is malformed (start-up fails, naming FILE: PATH: REASON)
     └── DeliveryError       one try of one message failed (``permanent``: retrying cannot help)
"""


class NotifyError(Exception):
    """Base of notification errors."""


class NotifyConfigError(NotifyError, ValueError):
    """The notify file cannot be used; the message lists every problem as ``FILE: PATH: REASON``."""


class DeliveryError(NotifyError):
    """One try of one delivery failed.

    Args:
        message: what the channel answered (status, SMTP reply, connection error).
        permanent: ``True`` when another try cannot succeed (a 4xx answer, a refused recipient).
    """

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
