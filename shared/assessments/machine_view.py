"""One machine as the API shows it: snapshot, latest assessment with every patch, and history."""

from __future__ import annotations

import json
from typing import Any

from shared.arm.errors import stored_error
from shared.core.ids import MachineRef
from shared.storage.fleet_store import FleetStore

SNAPSHOT_FIELDS = ("resourceId", "machineKind", "osType", "location", "powerState", "agentStatus",
                   "lastSeenAt", "assessedAt", "assessmentStatus",
                   "rebootPending", "criticalAndSecurityPatchCount", "otherPatchCount", "lastAttemptAt",
                   "lastAttemptState", "notAssessedReason")
HISTORY_FIELDS = ("at", "status", "assessmentActivityId", "rebootPending", "criticalAndSecurityPatchCount",
                  "otherPatchCount", "startDateTime", "runId", "patchCount")


def _pick(entity: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {n: entity[n] for n in names if entity.get(n) not in (None, "")}


def machine_assessment(fleet: FleetStore, vm: MachineRef, *, history: int) -> dict[str, Any] | None:
    snapshot = fleet.get_machine(vm)
    summaries = fleet.list_history(vm, history)
    if snapshot is None and not summaries:
        return None
    view: dict[str, Any] = {"id": vm.resource_id, **_pick(snapshot or {}, SNAPSHOT_FIELDS)}
    last_error = stored_error(snapshot) if snapshot else None
    if last_error:
        view["lastError"] = last_error  # ARM's shape, with details/innererror when ARM gave them
    latest = None
    if summaries:
        newest = summaries[0]
        latest = {**_pick(newest, HISTORY_FIELDS),
                  "classificationCounts": json.loads(newest.get("classificationCounts") or "{}"),
                  "availablePatches": fleet.history_patches(vm, newest["historyKey"])}
    view["latest"] = latest
    view["history"] = [_pick(s, HISTORY_FIELDS) for s in summaries]
    return view
