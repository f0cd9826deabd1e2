"""The pre-run hook: called once before a rollout's first wave; a 2xx lets the run start, anything
else cancels it. Its delivery is a queue message like an event's (shared/events/delivery.py)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Protocol

from shared.core.clock import iso, parse_iso, utcnow
from shared.core.errors import ConflictError
from shared.events.delivery import Senders, post
from shared.events.publish import emit, run_subject
from shared.rollouts.controller import PRE_HOOK_SLACK, RolloutDeps, advance

log = logging.getLogger(__name__)
CLAIM_ATTEMPTS = 5


class PreHookDeps(RolloutDeps, Senders, Protocol):
    """What calling a rollout's pre-run hook uses."""


def fail_pre_hook(run_id: str, deps: PreHookDeps, reason: str) -> None:
    """The pre-run hook could not be called at all (its message was poisoned): the run does not start."""
    run = deps.store.get_run(run_id)
    if run is None or run.get("preHookAt"):
        return
    deps.store.update_run(run_id, {"preHookAt": iso(utcnow()), "preHookStatus": 0,
                                  "canceledAt": iso(utcnow()), "canceledReason": reason})
    advance(run_id, deps)


def pre_hook(message: dict[str, Any], deps: PreHookDeps) -> str:
    """Called once before the first wave: 2xx lets the run start; anything else cancels it."""
    run_id = str(message["runId"])
    for _ in range(CLAIM_ATTEMPTS):
        run = deps.store.get_run(run_id)
        if run is None or run.get("preHookAt") or run.get("canceledAt") or run.get("completedAt"):
            return "already-decided"  # decided, or the run stopped: no draining for a run that will not start
        hook = (run.rollout or {}).get("preHook") or {}
        called = run.get("preHookCalledAt")
        patience = timedelta(seconds=int(hook.get("timeoutSeconds") or 60)) + PRE_HOOK_SLACK
        if called and parse_iso(str(called)) + patience > utcnow():
            return "claimed-elsewhere"  # a copy of this message is calling it (or did, and its answer is on the way)
        try:  # claim the call: a duplicated message must not call the hook twice
            deps.store.update_run(run_id, {"preHookCalledAt": iso(utcnow())}, etag=run.etag)
            break
        except ConflictError:
            # Another write changed the run (most often the controller giving its lock back right after queueing
            # this message), not necessarily a claim: read again. Giving up here left the hook uncalled until the
            # controller's patience ran out (the hook's timeout + PRE_HOOK_SLACK).
            continue
    else:
        log.warning("run %s: the pre-run hook's claim met %d conflicts; the controller asks again later",
                    run_id, CLAIM_ATTEMPTS)
        return "contended"
    payload = {"runId": run_id, "event": "patchpilot.run.prehook", "machineCount": run.get("machineCount"),
               "installPatches": run.parameters}
    answer = post(deps, hook["url"], payload, read_seconds=float(hook.get("timeoutSeconds") or 60),
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
        emit(deps, "patchpilot.run.canceled", run_subject(run_id),
             {"runId": run_id, "reason": changes["canceledReason"]})
    deps.store.update_run(run_id, changes)
    advance(run_id, deps)
    return "passed" if passed else "vetoed"
