"""Keeping assessment outcomes: every result in the machine's history, the newest in its snapshot.

Called by the machine worker on every terminal transition of an assessment, *before* the target's
own conditional update, so a crash in between is repaired by the redelivered message, which
writes the same rows again (history keys derive from the result itself).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from shared.arm import hybrid
from shared.arm.errors import error_columns, operation_error, result_error, stored_error
from shared.arm.patch_results import assessment_patches, canonical_counts, normalise_patch, primary_classification
from shared.core.clock import iso, utcnow
from shared.core.errors import ValidationError
from shared.core.ids import MachineRef
from shared.core.settings import Settings
from shared.core.states import MachineState
from shared.runs.ports import Fleet
from shared.storage.fleet_store import MAX_MISSING_CHARS, MAX_MISSING_KEPT, patch_key
from shared.validation.install_parameters import parse_datetime
from shared.validation.resource_ids import parse_machine_id

NOT_FOUND = {"ResourceNotFound", "NotFound", "ResourceGroupNotFound", "SubscriptionNotFound"}
SUMMARY_FIELDS = ("status", "assessmentActivityId", "rebootPending", "criticalAndSecurityPatchCount",
                  "otherPatchCount", "startDateTime")


class ResultDeps(Fleet, Protocol):
    """What keeping assessment outcomes uses."""

    @property
    def settings(self) -> Settings: ...


def parse_azure_time(value: object) -> datetime | None:
    """Azure's timestamps (7 fractional digits, "Z"); None when absent or not a time."""
    try:
        return parse_datetime(value, "startDateTime") if value else None
    except ValidationError:
        return None


def patch_facts(patches: list[dict[str, Any]]) -> dict[str, Any]:
    """What compliance needs from the patch list, compact enough for the snapshot entity. Classifications are
    counted by the API's names ("Security Updates" is "Security": shared/arm/patch_results.py)."""
    patches = [normalise_patch(p) for p in patches]
    classes = Counter(primary_classification(p) for p in patches)
    missing = sorted({(patch_key(p), primary_classification(p)) for p in patches})
    kept = missing[:MAX_MISSING_KEPT]
    text = json.dumps([list(m) for m in kept], separators=(",", ":"))
    while len(text) > MAX_MISSING_CHARS:  # long Windows titles or package names: keep what fits
        kept = kept[: len(kept) * 3 // 4]
        text = json.dumps([list(m) for m in kept], separators=(",", ":"))
    return {
        "classificationCounts": json.dumps(dict(sorted(classes.items())), separators=(",", ":")),
        "missingPatches": text,
        "missingPatchesTruncated": len(kept) < len(missing),
    }


def record_outcome(deps: ResultDeps, target: Mapping[str, Any], state: MachineState,
                   result: dict[str, Any] | None, run_id: str) -> dict[str, Any]:
    """Store one assessment's outcome; returns fields for the target row (the history key)."""
    vm = parse_machine_id(target["resourceId"], target="resourceId")
    now = utcnow()
    attempt: dict[str, Any] = {
        "resourceId": vm.resource_id, "resourceGroup": vm.resource_group, "name": vm.name, "machineKind": vm.kind,
        "lastAttemptAt": iso(now), "lastAttemptState": state.value, "lastAttemptRun": run_id,
    }
    if target.get("osType"):
        attempt["osType"] = target["osType"]
    if target.get("agentStatus"):
        attempt["agentStatus"] = target["agentStatus"]
    succeeded = (state is MachineState.COMPLETED and result is not None
                 and str(result.get("status")) in ("Succeeded", "CompletedWithWarnings"))
    if not succeeded:
        if state is MachineState.FAILED and str(target.get("errorCode")) in NOT_FOUND:
            deps.fleet.forget_machine(vm)  # deleted in Azure: not a machine to count any more
            return {}
        kept = stored_error(target)  # the worker's columns: ARM's whole error when it gave one
        arm = None if kept else operation_error(result_error(result))
        error = kept or arm or {"code": f"Assessment{(result or {}).get('status', '')}", "message": ""}
        message = str(error.get("message") or "")
        attempt.update(lastAttemptState=MachineState.FAILED.value if state is MachineState.COMPLETED
                       else state.value, **error_columns(error))
        if not (target.get("errorDetail") if kept else arm):
            attempt["errorDetail"] = ""  # PatchPilot's own error: code and message say it all
        if state is MachineState.SKIPPED and vm.is_hybrid:  # the Arc agent is not Connected
            attempt["notAssessedReason"] = str(message)[:1000]
        elif state is MachineState.SKIPPED:  # ARM refused: the VM is not running (its 409 says how)
            attempt["notAssessedReason"] = str(message)[:1000]
            attempt["powerState"] = "deallocated" if "deallocated" in str(message).lower() else "stopped"
        deps.fleet.record_attempt(vm, attempt, assessed_at=None)
        return {}
    assert result is not None
    return _record_success(deps, vm, result, attempt, run_id=run_id, now=now)


def _record_success(deps: ResultDeps, vm: MachineRef, result: dict[str, Any], attempt: dict[str, Any], *,
                    run_id: str, now: datetime) -> dict[str, Any]:
    when = parse_azure_time(result.get("startDateTime")) or now
    patches = assessment_patches(result)  # `availablePatches` or an older api-version's `patches`, normalised
    summary = {k: result[k] for k in SUMMARY_FIELDS if result.get(k) is not None}
    summary["runId"] = run_id
    facts = patch_facts(patches)
    if vm.is_hybrid and not patches:  # HybridCompute reports counts per classification, no patch list
        facts["classificationCounts"] = json.dumps(canonical_counts(hybrid.classification_counts(result)),
                                                   separators=(",", ":"))
    history_key = deps.fleet.save_history(vm, when, str(result.get("assessmentActivityId") or ""),
                                         {**summary, "classificationCounts": facts["classificationCounts"]}, patches)
    deps.fleet.prune_history(vm, now - timedelta(days=deps.settings.assessments.retention_days))
    latest = {
        **attempt, **facts,
        "assessedAt": iso(when),
        "assessmentStatus": summary.get("status", ""),
        "assessmentActivityId": summary.get("assessmentActivityId", ""),
        "rebootPending": bool(result.get("rebootPending")),
        "criticalAndSecurityPatchCount": int(result.get("criticalAndSecurityPatchCount") or 0),
        "otherPatchCount": int(result.get("otherPatchCount") or 0),
        "historyKey": history_key, "powerState": "running",
        "errorCode": "", "errorMessage": "", "errorDetail": "", "notAssessedReason": "",
    }
    if not deps.fleet.record_attempt(vm, latest, assessed_at=latest["assessedAt"]):
        # A newer assessment is already the snapshot; this one stays in history only.
        deps.fleet.record_attempt(vm, attempt, assessed_at=None)
    return {"historyKey": history_key}
