"""Real servers on 127.0.0.1 for the notification tests: an SMTP server (aiosmtpd) that keeps
every message it accepts, and a webhook receiver that checks each Standard Webhooks signature
with its own HMAC-SHA256 computation (not the application's code)."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import hmac
import json
import socket
import threading
from dataclasses import dataclass, field
from datetime import date, datetime
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiosmtpd.controller import Controller

from tests.helpers import AUGUST

ZONE = ZoneInfo("Asia/Jerusalem")
SECRET = "s3cret-for-tests-only"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Keep:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server, session, envelope) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.sink.lock:
            self.sink.messages.append((list(envelope.rcpt_tos), msg))
        return "250 OK"


@dataclass
class SmtpSink:
    """An aiosmtpd server on a free port; ``messages`` holds ``(envelope recipients, message)``."""

    port: int = field(default_factory=free_port)
    messages: list[tuple[list[str], EmailMessage]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    controller: Controller | None = None

    def start(self) -> SmtpSink:
        self.controller = Controller(_Keep(self), hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for rcpt, m in self.messages if address in rcpt]


@dataclass
class Hook:
    """One webhook request as received: headers, body, whether its signature verified."""

    headers: dict[str, str]
    body: dict[str, Any]
    signature_ok: bool
    path: str


class WebhookSink:
    """A threading HTTP server on a free port that verifies ``webhook-signature`` and keeps each request."""

    def __init__(self, secret: str = SECRET, answers: list[int] | None = None) -> None:
        self.secret = secret.encode()
        self.answers = list(answers or [])  # statuses to answer first, in order (then 204 / 401)
        self.hooks: list[Hook] = []
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                msg_id, ts = self.headers.get("webhook-id", ""), self.headers.get("webhook-timestamp", "")
                want = base64.b64encode(
                    hmac.new(sink.secret, f"{msg_id}.{ts}.".encode() + raw, hashlib.sha256).digest()
                ).decode()
                sigs = [s.split(",", 1)[1] for s in self.headers.get("webhook-signature", "").split() if "," in s]
                ok = any(hmac.compare_digest(want, s) for s in sigs)
                with sink.lock:
                    sink.hooks.append(Hook(dict(self.headers), json.loads(raw), ok, self.path))
                    status = sink.answers.pop(0) if sink.answers else (204 if ok else 401)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> WebhookSink:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def received(self) -> list[Hook]:
        with self.lock:
            return list(self.hooks)


def august_events(day: date, before_hour: int = 24) -> list[dict[str, Any]]:
    """The events of the August 1999 log on local ``day`` (Asia/Jerusalem) before ``before_hour``."""
    from app.replay.anonymous_bank import load_events

    return [
        ev
        for ev in load_events(AUGUST)
        if ev["ts"].astimezone(ZONE).date() == day and ev["ts"].astimezone(ZONE).hour < before_hour
    ]


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def local(day: date, hh: int, mm: int) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=ZONE)
