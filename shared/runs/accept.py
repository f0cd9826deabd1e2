"""Accepting a run: validate (done by the caller), persist, queue one dispatch message, answer.

Order matters for "nothing half-written": the machine list first (one transaction of chunk
entities), then the run entity, which is what makes the run visible, then the dispatch message.
A crash before the run entity leaves only unreachable chunk rows; a crash after it leaves a visible
run that a retry with the same Idempotency-Key dispatches. Target rows are created by the dispatch
worker, so the HTTP answer costs three storage round-trips whatever the run's size.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from shared.errors import ApiError, ValidationError
from shared.runs.model import RunStatus, iso, utcnow
from shared.runs.services import Services
from shared.validation.run_request import RunRequest

MAX_IDEMPOTENCY_KEY = 255


def new_run_id() -> str:
    """11 hex digits of inverted milliseconds + 8 random: RowKeys sort newest first."""
    inverted = 0xFFFFFFFFFFF - int(time.time() * 1000)
    return f"{inverted:011x}-{secrets.token_hex(4)}"


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise ValidationError(f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} printable characters",
                              target="Idempotency-Key", code="InvalidHeader")
    return key


def accept_run(
    request: RunRequest, idempotency_key: str | None, svc: Services
) -> tuple[dict[str, Any], bool]:
    """Returns (run entity, created). A replay with the same key and body returns the first run."""
    store = svc.store
    fingerprint = request.fingerprint()
    run_id = new_run_id()
    if idempotency_key:
        claim = store.claim_idempotency_key(idempotency_key, fingerprint, run_id)
        if claim["fingerprint"] != fingerprint:
            raise ApiError(409, "IdempotencyKeyReused",
                           "this Idempotency-Key was already used with a different request body",
                           target="Idempotency-Key")
        run_id = claim["runId"]
        existing = store.get_run(run_id)
        if existing:
            if not existing.get("dispatchedAt"):
                svc.send_dispatch(run_id)  # the first attempt may have stopped before queuing
            return existing, False

    now = iso(utcnow())
    store.save_machine_chunks(run_id, [vm.resource_id for vm in request.machines])
    run = {
        "RowKey": run_id,
        "createdAt": now,
        "status": RunStatus.ACCEPTED.value,
        "active": True,
        "machineCount": len(request.machines),
        "operation": "installPatches",
        "installPatches": json.dumps(request.install_parameters, separators=(",", ":")),
        "fingerprint": fingerprint,
        "idempotencyKey": idempotency_key or "",
    }
    store.create_run(run)
    svc.send_dispatch(run_id)
    return {"PartitionKey": "run", **run}, True
