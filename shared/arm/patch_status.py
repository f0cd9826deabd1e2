"""What a VM's instance view says about its last patch installation. Pure functions.

`GET .../virtualMachines/{vm}/instanceView` answers a VirtualMachineInstanceView whose `patchStatus`
(VirtualMachinePatchStatus, Compute API 2020-12-01 and later) holds `lastPatchInstallationSummary`:

    {"status": "Unknown" | "InProgress" | "Failed" | "Succeeded" | "CompletedWithWarnings",
     "installationActivityId": str, "maintenanceWindowExceeded": bool,
     "notSelectedPatchCount" | "excludedPatchCount" | "pendingPatchCount" | "installedPatchCount"
       | "failedPatchCount": int, "startTime": date-time, "lastModifiedTime": date-time, "error": ApiError}

(specification: /work/shared/azure-api/compute/patch-operations.json, `LastPatchInstallationSummary`;
example VirtualMachine_Get_InstanceView.json). It is how PatchPilot settles an installPatches whose
answer it never recorded (a host died between the claim and ARM's answer; storage lost the write)
and avoids sending a second one: an installation that started after the machine was first claimed
(or, with no claim recorded, after the run was created) is this run's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.arm.client import ArmResponse
from shared.arm.operations import Done, Failed, Outcome, Pending, Retry, classify_read

OUTCOME_UNKNOWN = "OutcomeUnknown"
# The summary's fields under the names an installPatches result (VirtualMachineInstallPatchesResult) uses.
_RESULT_FIELDS = ("status", "installationActivityId", "maintenanceWindowExceeded", "excludedPatchCount",
                  "notSelectedPatchCount", "pendingPatchCount", "installedPatchCount", "failedPatchCount", "error")


def parse_time(value: Any) -> datetime | None:
    """An ARM date-time ("2020-04-24T21:02:04.2556154Z"; Python 3.11's ISO parser takes 7 digits and Z),
    or None when absent, unparseable or without a zone."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def last_installation(view: Any) -> dict[str, Any] | None:
    """`patchStatus.lastPatchInstallationSummary` of an instance view body, or None (never patched,
    a VM without the guest agent's patch extension, an older API version)."""
    if not isinstance(view, dict):
        return None
    summary = (view.get("patchStatus") or {}).get("lastPatchInstallationSummary")
    return summary if isinstance(summary, dict) and summary.get("installationActivityId") else None


def installation_since(view: Any, since: datetime) -> dict[str, Any] | None:
    """The VM's last installation if it started at or after `since`: this run's. None: no installation
    since then, so an installPatches sent before never reached Azure.

    Azure stamps startTime with its clock, `since` is ours; no allowance is made for skew: the claim is
    written before the POST leaves, and Azure starts the installation after the POST arrives (network
    and guest-agent latency), so our own installation is later by more than NTP-synchronised clocks
    differ, while an allowance would take another run's installation, finished just before, for ours."""
    summary = last_installation(view)
    if summary is None:
        return None
    started = parse_time(summary.get("startTime"))
    if started is None or started < since:
        return None
    return summary


def installation_outcome(summary: dict[str, Any], *, retry_after: int) -> Pending | Done:
    """InProgress: keep reading the instance view; otherwise the result, in installPatches' result names
    (startTime becomes startDateTime; no per-patch list: the instance view has none)."""
    if str(summary.get("status") or "").lower() == "inprogress":
        return Pending(retry_after)
    result = {k: summary[k] for k in _RESULT_FIELDS if summary.get(k) is not None}
    result["status"] = str(summary.get("status") or "Unknown")
    if summary.get("startTime"):
        result["startDateTime"] = summary["startTime"]
    return Done(result)


def classify_instance_view(resp: ArmResponse, activity_id: str, *, default_retry_after: int) -> Outcome:
    """A poll of the instance view while following installation `activity_id` found there."""
    problem: Retry | Failed | None = classify_read(resp, default_retry_after=default_retry_after)
    if problem is not None:
        return problem
    summary = last_installation(resp.body)
    if summary is None or str(summary.get("installationActivityId")) != activity_id:
        return Failed(OUTCOME_UNKNOWN, f"the VM's instance view no longer shows installation {activity_id} "
                                       "(another installation replaced it) and its result was not recorded")
    return installation_outcome(summary, retry_after=default_retry_after)
