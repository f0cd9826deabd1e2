"""Accepting a run: validate (done by the caller), check it can be stored, persist, queue one
dispatch message, answer.

Order matters for "nothing half-written":
1. Everything that could refuse the request runs first, the Table storage limits included
   (shared/storage/limits.py): the run entity is built and measured before the first write.
2. The Idempotency-Key's claim (when a key is given), then the scope rows and the machine list (one
   transaction of chunk entities), then the run entity, which is what makes the run visible, then
   the dispatch message.
3. If a write fails with an exception before the run entity exists, this request's claim and rows
   are deleted again before the error goes up: the key stays free, so the caller's retry (or a
   corrected request) is accepted rather than answered 409 IdempotencyKeyReused. Only a process that
   dies in that gap leaves its claim and unreachable rows behind; a retry with the same body then
   resumes that run. A crash after the run entity leaves a visible run that a retry with the same
   key dispatches.
Target rows are created by the dispatch worker, so the HTTP answer costs three storage round-trips
whatever the run's size.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from collections.abc import Mapping
from typing import Any, Protocol

from shared.core.clock import iso, parse_iso, utcnow
from shared.core.errors import ApiError, ValidationError
from shared.core.records import NewRun, RunRecord
from shared.core.states import RunStatus
from shared.events.publish import DeliveryQueue, emit, run_subject
from shared.runs.ports import Dispatching, Fleet, RunRows
from shared.validation.run_request import RunRequest

log = logging.getLogger(__name__)
MAX_IDEMPOTENCY_KEY = 255


class AcceptDeps(RunRows, Fleet, Dispatching, DeliveryQueue, Protocol):
    """What accepting a run uses."""


def new_run_id() -> str:
    """11 hex digits of inverted milliseconds + 8 random: run ids sort newest first in storage."""
    inverted = 0xFFFFFFFFFFF - int(time.time() * 1000)
    return f"{inverted:011x}-{secrets.token_hex(4)}"


INTERNAL_KEY_PREFIX = "\x00"


def internal_key(name: str) -> str:
    """A claim key for PatchPilot's own runs (schedule slots, maintenance windows, plans applied). It starts
    with NUL, which check_idempotency_key refuses in a caller's header (and strip() keeps): no collision."""
    return INTERNAL_KEY_PREFIX + name


def is_internal_key(key: str) -> bool:
    """A key internal_key made: not the caller's, so not shown as its Idempotency-Key (`origin` says whose)."""
    return key.startswith(INTERNAL_KEY_PREFIX)


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise ValidationError(f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} printable characters",
                              target="Idempotency-Key", code="InvalidHeader")
    return key


def accept_run(
    request: RunRequest, idempotency_key: str | None, deps: AcceptDeps
) -> tuple[RunRecord, bool]:
    """An install run from `POST /api/runs`."""
    extra: tuple[tuple[str, Any], ...] = ()
    if request.rollout is not None:
        extra = (("rollout", json.dumps(request.rollout, separators=(",", ":"))),)
    filters = tuple(request.filter or {} for _ in request.scopes)  # one filter, for every scope
    return accept(NewRun("installPatches", request.accepted_parameters(), request.fingerprint(), request.machines,
                         scopes=request.scopes, filters=filters, extra=extra), idempotency_key, deps)


def accept(new: NewRun, idempotency_key: str | None, deps: AcceptDeps) -> tuple[RunRecord, bool]:
    """Returns (the run, created). A replay with the same key and body returns the first run.

    Raises ValidationError (400, nothing written) when the run cannot be stored, ApiError 409 when the
    key was used with another body; any other error leaves no claim and no rows (see the module doc).
    """
    store = deps.store
    now = iso(utcnow())
    run_id = new_run_id()
    run: dict[str, Any] = {
        "createdAt": now,
        "status": RunStatus.ACCEPTED.value,
        "active": True,
        "operation": new.operation,
        "origin": new.origin,
        "parameters": json.dumps(new.parameters, separators=(",", ":")),
        "fingerprint": new.fingerprint,
        "idempotencyKey": idempotency_key or "",
    }
    if new.operation == "installPatches":
        # For one release also under the old column name: an instance of the previous version (a slot swap, a
        # rolling deployment, a rollback) reads only `installPatches`. Remove once no such instance can run.
        run["installPatches"] = run["parameters"]
    run.update(dict(new.extra))
    run["machineCount"] = len(new.machines)
    if new.scopes:
        run["scopeCount"] = len(new.scopes)  # the ids live in the scope rows
    if not new.machines:
        run["dispatchedAt"] = now  # nothing to dispatch
    store.check_storable_run(run_id, run)

    claimed = False
    if idempotency_key:
        claim = store.claim_idempotency_key(idempotency_key, new.fingerprint, run_id)
        if claim["fingerprint"] != new.fingerprint:
            raise ApiError(409, "IdempotencyKeyReused",
                           "this Idempotency-Key was already used with a different request body",
                           target="Idempotency-Key")
        claimed = claim["runId"] == run_id
        run_id = claim["runId"]
        existing = store.get_run(run_id)
        if existing:
            if not existing.get("dispatchedAt"):
                deps.queues.send_dispatch(run_id, not_before_delay(existing))  # the first attempt may have stopped
            return existing, False

    try:
        if new.scopes:
            # Discovery fans out the scopes' machines; the sweeper re-queues a page message that got lost.
            filters = new.filters or tuple({} for _ in new.scopes)
            store.create_scopes(run_id, [(s.resource_id, f) for s, f in zip(new.scopes, filters, strict=True)], now)
        if new.machines:
            store.save_machine_chunks(run_id, [vm.resource_id for vm in new.machines])
        if new.operation == "assessPatches" and new.machines:
            deps.fleet.note_subscriptions(vm.subscription_id for vm in new.machines)  # so compliance finds them
        created = store.create_run(run_id, run)
    except Exception:
        if claimed or not idempotency_key:  # only the request that made the claim takes back what it wrote
            _forget(store, idempotency_key, run_id)
        raise
    if not created:
        # A concurrent request with the same key got here first: it queues the work, we answer with its run.
        return store.get_run(run_id) or RunRecord(etag="", columns=run, run_id=run_id), False
    emit(deps, "patchpilot.run.started", run_subject(run_id), {
        "runId": run_id, "operation": new.operation, "origin": new.origin, "machineCount": len(new.machines),
        "scopes": [s.resource_id for s in new.scopes]})
    for index in range(len(new.scopes)):
        deps.queues.send_discovery(run_id, index, 0)
    if new.machines:
        deps.queues.send_dispatch(run_id, not_before_delay(run))
    return RunRecord(etag="", columns=run, run_id=run_id), True


def not_before_delay(run: Mapping[str, Any]) -> int:
    """Seconds until a run may be dispatched: a run applied ahead of its maintenance window waits for it
    (`notBefore`, ISO; shared/plans/apply.py). 0 for every other run."""
    if not run.get("notBefore"):
        return 0
    return max(0, math.ceil((parse_iso(str(run["notBefore"])) - utcnow()).total_seconds()))


def _forget(store: Any, idempotency_key: str | None, run_id: str) -> None:
    """Undo a failed acceptance: its claim first (what would block a retry), then its rows. Best effort:
    the original error is what the caller must see, so a failure here is logged, not raised."""
    try:
        if store.get_run(run_id) is not None:  # the create went through after all (its answer was lost): keep all
            return
        if idempotency_key and not store.release_idempotency_claim(idempotency_key, run_id):
            return  # the claim is gone or not ours: a retry of the same request may be writing these rows now
        store.delete_run_rows(run_id)
    except Exception:
        log.exception("could not take back the Idempotency-Key claim of failed run %s", run_id)
