"""Delivering events and calling hooks: one POST per message, signed, with retries and dead letters.

Every request carries `X-PatchPilot-Timestamp: <unix seconds>` and `X-PatchPilot-Signature:
sha256=<hex>`, an HMAC-SHA256 with EVENT_SIGNING_KEY of "<timestamp>.<exact body>", so a receiver can
check it came from this PatchPilot and refuse an old one replayed. A failed event delivery is
queued again with exponential backoff; after EVENT_MAX_ATTEMPTS it becomes a dead-letter record
(RUNS_TABLE, partition "deadletter"). A pre-run hook is called once: its answer decides.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any, Protocol

import requests

from shared.core.retry import backoff
from shared.core.settings import Settings

log = logging.getLogger(__name__)


class DeadLetters(Protocol):
    def dead_letter(self, record: dict[str, Any]) -> None: ...


class Senders(Protocol):
    """What delivery needs from the app's services (the run machinery's Services provides it)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def hooks_session(self) -> requests.Session: ...
    @property
    def store(self) -> DeadLetters: ...

    def send_delivery(self, message: dict[str, Any], delay_seconds: int = 0) -> None: ...
SIGNATURE_HEADER = "X-PatchPilot-Signature"
TIMESTAMP_HEADER = "X-PatchPilot-Timestamp"


def sign(body: bytes, key: str, timestamp: str) -> str:
    return "sha256=" + hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def post(svc: Senders, url: str, payload: Any, *, timeout: float, content_type: str) -> tuple[int | None, str]:
    """(HTTP status or None, a short description). Never raises for the receiver's failures."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {"Content-Type": content_type, "User-Agent": "PatchPilot", TIMESTAMP_HEADER: timestamp}
    if svc.settings.event_signing_key:
        headers[SIGNATURE_HEADER] = sign(body, svc.settings.event_signing_key, timestamp)
    try:
        resp = svc.hooks_session.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        return None, f"{exc.__class__.__name__}: {str(exc)[:300]}"
    return resp.status_code, resp.text[:500]


def deliver(message: dict[str, Any], svc: Senders) -> str:
    kind = message.get("kind")
    url, payload, attempt = str(message["url"]), message["body"], int(message.get("attempt") or 1)
    cloud = kind == "event" and isinstance(payload, dict)  # Event Grid's schema is an array; hooks are plain JSON
    status, detail = post(svc, url, payload, timeout=10,
                          content_type="application/cloudevents+json" if cloud else "application/json")
    if status is not None and 200 <= status < 300:
        return "delivered"
    if attempt >= svc.settings.event_max_attempts:
        svc.store.dead_letter({"url": url, "kind": str(kind), "attempts": attempt, "lastStatus": status or 0,
                               "lastError": detail, "body": json.dumps(payload)[:30000]})
        log.warning("delivery to %s dead-lettered after %d attempts: %s %s", url, attempt, status, detail)
        return "dead-lettered"
    svc.send_delivery({**message, "attempt": attempt + 1}, backoff(attempt, svc.settings))
    return f"retry-{attempt}"
