"""Delivering events and calling hooks: one POST per message, signed, with retries and dead letters.

Every request carries `X-PatchPilot-Timestamp: <unix seconds>` and `X-PatchPilot-Signature:
sha256=<hex>`, an HMAC-SHA256 with EVENT_SIGNING_KEY of "<timestamp>.<exact body>", so a receiver can
check it came from this PatchPilot and refuse an old one replayed. A failed event delivery is
queued again with exponential backoff; after EVENT_MAX_ATTEMPTS it becomes a dead-letter record
(RUNS_TABLE, partition "deadletter"), at once when the receiver's address is refused by policy.
A pre-run hook is called once: its status decides. Only statuses are kept, never a receiver's body.

Each call lasts at most EVENT_CONNECT_TIMEOUT_SECONDS + the read timeout (EVENT_READ_TIMEOUT_SECONDS,
or a pre-run hook's timeoutSeconds, at most 200), so a queue invocation ends well inside the
5-minute functionTimeout however slowly a receiver answers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any, Protocol

from shared.core.retry import backoff
from shared.core.settings import Settings
from shared.egress import Answer, EgressSession
from shared.egress import post as egress_post

log = logging.getLogger(__name__)


class DeadLetters(Protocol):
    def dead_letter(self, record: dict[str, Any]) -> None: ...


class Senders(Protocol):
    """What delivery needs from the app's services (the run machinery's Services provides it)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def hooks_session(self) -> EgressSession: ...
    @property
    def store(self) -> DeadLetters: ...

    def send_delivery(self, message: dict[str, Any], delay_seconds: int = 0) -> None: ...


SIGNATURE_HEADER = "X-PatchPilot-Signature"
TIMESTAMP_HEADER = "X-PatchPilot-Timestamp"


def sign(body: bytes, key: str, timestamp: str) -> str:
    return "sha256=" + hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def post(deps: Senders, url: str, payload: Any, *, read_seconds: float, content_type: str) -> Answer:
    """One signed POST through the egress session (shared/egress): the receiver's status and the
    latency, never its body. Never raises for the receiver's failures."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {"Content-Type": content_type, "User-Agent": "PatchPilot", TIMESTAMP_HEADER: timestamp}
    if deps.settings.events.signing_key:
        headers[SIGNATURE_HEADER] = sign(body, deps.settings.events.signing_key, timestamp)
    return egress_post(deps.hooks_session, url, body, headers,
                       connect_seconds=deps.settings.events.connect_timeout_seconds, read_seconds=read_seconds)


def deliver(message: dict[str, Any], deps: Senders) -> str:
    kind = message.get("kind")
    url, payload, attempt = str(message["url"]), message["body"], int(message.get("attempt") or 1)
    cloud = kind == "event" and isinstance(payload, dict)  # Event Grid's schema is an array; hooks are plain JSON
    answer = post(deps, url, payload, read_seconds=deps.settings.events.read_timeout_seconds,
                  content_type="application/cloudevents+json" if cloud else "application/json")
    if answer.ok:
        return "delivered"
    if attempt >= deps.settings.events.max_attempts or answer.refused:  # a refused address: retrying changes nothing
        deps.store.dead_letter({"url": url, "kind": str(kind), "attempts": attempt, "lastStatus": answer.status or 0,
                               "lastError": answer.error or f"HTTP {answer.status}",
                               "body": json.dumps(payload)[:30000]})
        log.warning("delivery to %s dead-lettered after %d attempts: %s %s", url, attempt, answer.status, answer.error)
        return "dead-lettered"
    deps.send_delivery({**message, "attempt": attempt + 1}, backoff(attempt, deps.settings.retries))
    return f"retry-{attempt}"
