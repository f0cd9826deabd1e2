"""Azure Arc-enabled servers (Microsoft.HybridCompute/machines): what differs from Azure VMs, as pure functions.

Contract: azure-rest-api-specs `specification/hybridcompute/resource-manager/Microsoft.HybridCompute/stable/
2024-07-10/HybridCompute.json` (Machine, MachineInstallPatchesResult, MachineAssessPatchesResult):
- the OS is `properties.osType` ("windows"/"linux", lower case in Machines_Get.json), not a storage profile;
- `properties.status` is the Connected Machine agent's status (StatusTypes: Connected, Disconnected, Error,
  AwaitingConnection; the portal also shows Expired after 45 days disconnected). Only a Connected agent can run
  an operation, so any other status is taken as "cannot run now", an open string, never an enum;
- the install result has the Compute result's counts but no per-patch list and its error is `errorDetails`;
- the assessment result has `availablePatchCountByClassification` instead of the patch list and the
  criticalAndSecurity/other counts.
`compute_shaped` turns a result into the Compute shape the rest of PatchPilot reads, keeping every original field.
"""

from __future__ import annotations

from typing import Any

from shared.arm.operations import MACHINE_NOT_CONNECTED

CONNECTED = "Connected"
__all__ = ["CONNECTED", "MACHINE_NOT_CONNECTED", "agent_status", "compute_shaped", "os_type"]
# AvailablePatchCountByClassification property -> the classification string Compute's patch lists carry
# (the spec examples' "Definition Updates" and "Update Rollups"), so the compliance view counts both kinds alike.
CLASSIFICATIONS = {
    "security": "Security", "critical": "Critical", "definition": "Definition Updates",
    "updateRollup": "Update Rollups", "featurePack": "FeaturePack", "servicePack": "ServicePack",
    "tools": "Tools", "updates": "Updates", "other": "Other",
}
CRITICAL_OR_SECURITY = ("critical", "security")


def properties(model: Any) -> dict[str, Any]:
    props = model.get("properties") if isinstance(model, dict) else None
    return props if isinstance(props, dict) else {}


def os_type(model: Any) -> str:
    """"Windows" or "Linux" (Compute's casing, which the run parameters use) from properties.osType; "" if absent."""
    value = str(properties(model).get("osType") or "").strip().lower()
    return {"windows": "Windows", "linux": "Linux"}.get(value, "")


def agent_status(model: Any) -> str:
    """The agent's status as Azure reports it ("" when absent)."""
    return str(properties(model).get("status") or "")


def not_connected_reason(name: str, status: str) -> str:
    return (f"the Azure Connected Machine agent of Arc machine '{name}' is {status or 'of unknown status'}, "
            "not Connected: Azure cannot run a patch operation on it until it reconnects")


def classification_counts(result: dict[str, Any]) -> dict[str, int]:
    """{classification: count} of an Arc assessment, the classifications that have patches only."""
    raw = result.get("availablePatchCountByClassification")
    counts = raw if isinstance(raw, dict) else {}
    out: dict[str, int] = {}
    for key, value in counts.items():
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            out[CLASSIFICATIONS.get(str(key), str(key))] = value
    return out


def compute_shaped(action: str, result: dict[str, Any]) -> dict[str, Any]:
    """An Arc operation result with the fields of Compute's result that PatchPilot reads: `error` (from
    `errorDetails`) and, for an assessment, criticalAndSecurityPatchCount and otherPatchCount summed from
    availablePatchCountByClassification. Fields Azure already gave are never overwritten."""
    shaped = dict(result)
    if "error" not in shaped and isinstance(result.get("errorDetails"), dict):
        shaped["error"] = result["errorDetails"]
    if action == "assessPatches" and isinstance(result.get("availablePatchCountByClassification"), dict):
        counts = result["availablePatchCountByClassification"]
        numbers = {k: v for k, v in counts.items() if isinstance(v, int) and not isinstance(v, bool)}
        shaped.setdefault("criticalAndSecurityPatchCount", sum(numbers.get(k, 0) for k in CRITICAL_OR_SECURITY))
        shaped.setdefault("otherPatchCount",
                          sum(v for k, v in numbers.items() if k not in CRITICAL_OR_SECURITY))
    return shaped
