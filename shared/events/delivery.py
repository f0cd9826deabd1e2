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
from typing import Any

from azure.core.exceptions import ResourceModifiedError

from shared.egress import Answer
from shared.egress import post as egress_post
from shared.events.publish import emit, run_subject
from shared.rollouts.controller import advance
from shared.runs.model import iso, utcnow
from shared.runs.retry_policy import backoff
from shared.runs.services import Services

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-PatchPilot-Signature"
TIMESTAMP_HEADER = "X-PatchPilot-Timestamp"


def sign(body: bytes, key: str, timestamp: str) -> str:
    return "sha256=" + hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def post(svc: Services, url: str, payload: Any, *, read_seconds: float, content_type: str) -> Answer:
    """One signed POST through the egress session (shared/egress): the receiver's status and the
    latency, never its body. Never raises for the receiver's failures."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {"Content-Type": content_type, "User-Agent": "PatchPilot", TIMESTAMP_HEADER: timestamp}
    if svc.settings.event_signing_key:
        headers[SIGNATURE_HEADER] = sign(body, svc.settings.event_signing_key, timestamp)
    return egress_post(svc.hooks_session, url, body, headers,
                       connect_seconds=svc.settings.event_connect_timeout_seconds, read_seconds=read_seconds)


def deliver(message: dict[str, Any], svc: Services) -> str:
    kind = message.get("kind")
    if kind == "prehook":
        return pre_hook(message, svc)
    url, payload, attempt = str(message["url"]), message["body"], int(message.get("attempt") or 1)
    cloud = kind == "event" and isinstance(payload, dict)  # Event Grid's schema is an array; hooks are plain JSON
    answer = post(svc, url, payload, read_seconds=svc.settings.event_read_timeout_seconds,
                  content_type="application/cloudevents+json" if cloud else "application/json")
    if answer.ok:
        return "delivered"
    if attempt >= svc.settings.event_max_attempts or answer.refused:  # a refused address: retrying changes nothing
        svc.store.dead_letter({"url": url, "kind": str(kind), "attempts": attempt, "lastStatus": answer.status or 0,
                               "lastError": answer.error or f"HTTP {answer.status}",
                               "body": json.dumps(payload)[:30000]})
        log.warning("delivery to %s dead-lettered after %d attempts: %s %s", url, attempt, answer.status, answer.error)
        return "dead-lettered"
    svc.send_delivery({**message, "attempt": attempt + 1}, backoff(attempt, svc.settings))
    return f"retry-{attempt}"


def fail_pre_hook(run_id: str, svc: Services, reason: str) -> None:
    """The pre-run hook could not be called at all (its message was poisoned): the run does not start."""
    run = svc.store.get_run(run_id)
    if run is None or run.get("preHookAt"):
        return
    svc.store.update_run(run_id, {"preHookAt": iso(utcnow()), "preHookStatus": 0,
                                  "canceledAt": iso(utcnow()), "canceledReason": reason})
    advance(run_id, svc)


def pre_hook(message: dict[str, Any], svc: Services) -> str:
    """Called once before the first wave: 2xx lets the run start; anything else cancels it."""
    run_id = str(message["runId"])
    run = svc.store.get_run(run_id)
    if run is None or run.get("preHookAt") or run.get("canceledAt") or run.get("completedAt"):
        return "already-decided"  # decided, or the run stopped: no draining for a run that will not start
    try:  # claim the call: a duplicated message must not call the hook twice
        svc.store.update_run(run_id, {"preHookCalledAt": iso(utcnow())}, etag=run["etag"])
    except ResourceModifiedError:
        return "claimed-elsewhere"
    hook = json.loads(str(run["rollout"])).get("preHook") or {}
    payload = {"runId": run_id, "event": "patchpilot.run.prehook", "machineCount": run.get("machineCount"),
               "installPatches": json.loads(str(run.get("installPatches") or "{}"))}
    answer = post(svc, hook["url"], payload, read_seconds=float(hook.get("timeoutSeconds") or 60),
                  content_type="application/json")
    passed = answer.ok
    # Status and latency only: the hook's body never reaches the run (a hook aimed at an internal page
    # would read it back through the run view).
    changes: dict[str, Any] = {"preHookAt": iso(utcnow()), "preHookStatus": answer.status or 0,
                               "preHookLatencyMs": answer.latency_ms}
    if not passed:
        changes["canceledAt"] = iso(utcnow())
        changes["canceledReason"] = (f"the pre-run hook answered HTTP {answer.status}" if answer.status is not None
                                     else f"the pre-run hook was not reached: {answer.error}")
        emit(svc, "patchpilot.run.canceled", run_subject(run_id),
             {"runId": run_id, "reason": changes["canceledReason"]})
    svc.store.update_run(run_id, changes)
    advance(run_id, svc)
    return "passed" if passed else "vetoed"
