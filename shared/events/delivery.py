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
from typing import Any

import requests
from azure.core.exceptions import ResourceModifiedError

from shared.core.clock import iso, utcnow
from shared.events.publish import emit, run_subject
from shared.rollouts.controller import advance
from shared.runs.retry_policy import backoff
from shared.runs.services import Services

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-PatchPilot-Signature"
TIMESTAMP_HEADER = "X-PatchPilot-Timestamp"


def sign(body: bytes, key: str, timestamp: str) -> str:
    return "sha256=" + hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def post(svc: Services, url: str, payload: Any, *, timeout: float, content_type: str) -> tuple[int | None, str]:
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


def deliver(message: dict[str, Any], svc: Services) -> str:
    kind = message.get("kind")
    if kind == "prehook":
        return pre_hook(message, svc)
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


def fail_pre_hook(run_id: str, svc: Services, reason: str) -> None:
    """The pre-run hook could not be called at all (its message was poisoned): the run does not start."""
    run = svc.store.get_run(run_id)
    if run is None or run.get("preHookAt"):
        return
    svc.store.update_run(run_id, {"preHookAt": iso(utcnow()), "preHookStatus": 0, "preHookAnswer": reason,
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
    status, detail = post(svc, hook["url"], payload, timeout=float(hook.get("timeoutSeconds") or 60),
                          content_type="application/json")
    passed = status is not None and 200 <= status < 300
    changes: dict[str, Any] = {"preHookAt": iso(utcnow()), "preHookStatus": status or 0,
                               "preHookAnswer": detail}
    if not passed:
        changes["canceledAt"] = iso(utcnow())
        changes["canceledReason"] = f"the pre-run hook answered {status or 'nothing'}: {detail}"[:1000]
        emit(svc, "patchpilot.run.canceled", run_subject(run_id),
             {"runId": run_id, "reason": changes["canceledReason"]})
    svc.store.update_run(run_id, changes)
    advance(run_id, svc)
    return "passed" if passed else "vetoed"
