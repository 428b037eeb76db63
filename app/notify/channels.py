"""The two channels: email over SMTP (aiosmtplib) and JSON webhooks signed with HMAC-SHA256.

Webhook signatures follow the Standard Webhooks specification (standardwebhooks.com, v1):
headers ``webhook-id`` (the delivery's id: receivers drop a repeat), ``webhook-timestamp``
(Unix seconds) and ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``.
The key is ``PULSEBOARD_WEBHOOK_SECRET``: base64-decoded when it starts with ``whsec_`` (as
the specification's secrets do), else its UTF-8 bytes.

A try that fails raises ``DeliveryError``; ``permanent`` tells the retry loop that another try
cannot succeed (a 4xx answer other than 408/429, recipients refused by the SMTP server).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib
import httpx

from app.config import Settings
from app.notify import DeliveryError

SIGNATURE_VERSION = "v1"


def webhook_key(secret: str) -> bytes:
    """The HMAC key of ``secret``: base64 after a ``whsec_`` prefix, else UTF-8 bytes."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_") :])
    return secret.encode("utf-8")


def sign(key: bytes, msg_id: str, timestamp_s: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,`` + base64(HMAC-SHA256(key, id.timestamp.body))."""
    mac = hmac.new(key, f"{msg_id}.{timestamp_s}.".encode() + body, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(mac).decode()}"


async def post_webhook(
    client: httpx.AsyncClient, url: str, msg_id: str, body: bytes, timestamp_s: int, key: bytes | None
) -> int:
    """POST ``body`` (JSON) to ``url``, signed when ``key`` is set.  Returns the HTTP status (2xx).

    Raises:
        DeliveryError: a transport error or timeout, or a non-2xx answer (permanent for 4xx except 408/429).
    """
    headers = {"content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(timestamp_s)}
    if key is not None:
        headers["webhook-signature"] = sign(key, msg_id, timestamp_s, body)
    try:
        resp = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"webhook {url}: {type(exc).__name__}: {exc}") from exc
    if 200 <= resp.status_code < 300:
        return resp.status_code
    permanent = 400 <= resp.status_code < 500 and resp.status_code not in (408, 429)
    raise DeliveryError(f"webhook {url}: answered {resp.status_code} {resp.text[:200]!r}", permanent)


def email_message(
    settings: Settings,
    to: str,
    subject: str,
    text: str,
    html: str | None,
    msg_id: str,
    attachments: Sequence[tuple[str, str, bytes]] = (),
) -> EmailMessage:
    """An RFC 5322 message: plain text (and HTML alternative), attachments as ``(filename, mime type, bytes)``.

    The Message-ID is derived from the delivery id, so a resent message is recognisably the same.
    """
    msg = EmailMessage()
    msg["From"] = settings.smtp_from
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    domain = settings.smtp_from.rsplit("@", 1)[-1] or "pulseboard"
    msg["Message-ID"] = f"<{msg_id}@{domain}>" if msg_id else make_msgid(domain=domain)
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for filename, mime, data in attachments:
        maintype, subtype = mime.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg


async def send_email(settings: Settings, msg: EmailMessage) -> None:
    """Send ``msg`` through ``PULSEBOARD_SMTP_HOST``.

    Raises:
        DeliveryError: no SMTP server configured (permanent), a refused recipient (permanent), or a
            connection, timeout or server error (worth another try).
    """
    if not settings.smtp_host:
        raise DeliveryError("no SMTP server configured (PULSEBOARD_SMTP_HOST)", permanent=True)
    try:
        await aiosmtplib.send(
            msg,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            start_tls=settings.smtp_starttls,
            use_tls=False,
            timeout=settings.smtp_timeout_s,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        raise DeliveryError(f"SMTP {settings.smtp_host}: recipients refused: {exc}", permanent=True) from exc
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"SMTP {settings.smtp_host}:{settings.smtp_port}: {type(exc).__name__}: {exc}") from exc
