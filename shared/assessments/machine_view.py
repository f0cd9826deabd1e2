"""One machine as the API shows it: snapshot, latest assessment with every patch, and history.

Classifications are shown by the API's names (shared/arm/patch_results.py), also for rows stored before
PatchPilot canonicalised them. On a Linux machine the latest assessment says how many updates are classified
`Other` (`otherUpdates`) and, when there are any, a `note`: Ubuntu ships many CVE fixes in its updates pocket
classified Other, so an installPatches run with classificationsToInclude ["Security"] (or Critical and
Security) does not install them (README, "Ubuntu: security fixes classified Other").
"""

from __future__ import annotations

import json
from typing import Any

from shared.arm.errors import stored_error
from shared.arm.patch_results import OTHER, canonical_counts, normalise_patch
from shared.core.ids import MachineRef
from shared.storage.fleet_store import FleetStore

SNAPSHOT_FIELDS = ("resourceId", "machineKind", "osType", "location", "powerState", "agentStatus",
                   "lastSeenAt", "assessedAt", "assessmentStatus",
                   "rebootPending", "criticalAndSecurityPatchCount", "otherPatchCount", "lastAttemptAt",
                   "lastAttemptState", "notAssessedReason")
HISTORY_FIELDS = ("at", "status", "assessmentActivityId", "rebootPending", "criticalAndSecurityPatchCount",
                  "otherPatchCount", "startDateTime", "runId", "patchCount")


OTHER_NOTE = ("{n} {updates} classified Other: a run with linuxParameters.classificationsToInclude of Critical "
              "and/or Security will not install them (many Ubuntu security fixes are classified Other); include "
              "Other or name the packages in packageNameMasksToInclude")


def other_updates(os_type: str, counts: dict[str, int]) -> dict[str, Any]:
    """`otherUpdates` (and `note` when there are any) for a Linux machine's latest assessment; {} otherwise. A
    machine whose OS type is not known counts as Linux when it has Other updates (a Linux-only class)."""
    linux = os_type.strip().lower() == "linux" or (not os_type.strip() and counts.get(OTHER, 0) > 0)
    if not linux:
        return {}
    n = int(counts.get(OTHER, 0))
    if n == 0:
        return {"otherUpdates": 0}
    return {"otherUpdates": n, "note": OTHER_NOTE.format(n=n, updates="update" if n == 1 else "updates")}


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
        counts = canonical_counts(json.loads(newest.get("classificationCounts") or "{}"))
        latest = {**_pick(newest, HISTORY_FIELDS), "classificationCounts": counts,
                  "availablePatches": [normalise_patch(p) for p in fleet.history_patches(vm, newest["historyKey"])],
                  **other_updates(str((snapshot or {}).get("osType") or ""), counts)}
    view["latest"] = latest
    view["history"] = [_pick(s, HISTORY_FIELDS) for s in summaries]
    return view
