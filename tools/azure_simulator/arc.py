"""Azure Arc-enabled servers (Microsoft.HybridCompute/machines): resource model, patch results and refusals.

Contract: azure-rest-api-specs `specification/hybridcompute/resource-manager/Microsoft.HybridCompute/stable/
2024-07-10/HybridCompute.json` and its examples (Machines_Get, Machine_InstallPatches, Machine_AssessPatches), as
Microsoft's `azure-mgmt-hybridcompute` client (10.x, api-version 2026-07-15) reads them:

- installPatches / assessPatches are POSTs answered 202 with `Location` (and `Retry-After`), no
  `Azure-AsyncOperation`; the client polls `Location` (202 while running, 200 with the result at the end).
- The polling URL is `/subscriptions/{sub}/providers/Microsoft.HybridCompute/locations/{loc}/
  updateCenterOperationResults/{id}`: reading it needs `Microsoft.HybridCompute/locations/
  updateCenterOperationResults/read` at the machine's subscription (Azure Update Manager's permission table,
  https://learn.microsoft.com/azure/update-manager/roles-permissions). The path shape under that action is the
  simulator's inference from the action's name.
- MachineInstallPatchesResult has the Compute result's counts but no per-patch list, and adds
  `lastModifiedDateTime`, `startedBy`, `patchServiceUsed`, `osType` and `errorDetails`;
  MachineAssessPatchesResult carries `availablePatchCountByClassification` instead of the patch list.
- `maximumDuration` is required in MachineInstallPatchesParameters.
- Fault setting `arc_lro_style = "async"` answers the 202 the ARM-RPC way instead (server.py): an
  `Azure-AsyncOperation` to `.../locations/{loc}/operationstatus/{id}` (200 with id, name, status, startTime and at
  the end endTime, and error when the result says Failed; never properties.output) and a `Location` to
  `.../locations/{loc}/operationresults/{id}` (202 to itself while running, then 200 with the result above), no
  `Retry-After`; reading them needs `Microsoft.HybridCompute/locations/operationstatus/read` and
  `.../operationresults/read` at the machine's subscription.

A machine whose agent is not Connected cannot run an operation. What HybridCompute answers then is not
documented in the spec or docs found; the simulator answers 409 OperationNotAllowed with a detail
`MachineNotConnected` naming the agent status (A GUESS, modelled on Compute's 409 for a deallocated VM).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tools.azure_simulator.errors import ArmError
from tools.azure_simulator.fleet import VirtualMachine, iso_z

# Reported classification string -> AvailablePatchCountByClassification property.
CLASSIFICATION_COUNTS = {
    "Security": "security",
    "Critical": "critical",
    "Definition Updates": "definition",
    "Update Rollups": "updateRollup",
    "FeaturePack": "featurePack",
    "ServicePack": "servicePack",
    "Tools": "tools",
    "Updates": "updates",
    "Other": "other",
}
WINDOWS_COUNTS = ("security", "critical", "definition", "updateRollup", "featurePack", "servicePack", "tools",
                  "updates")
LINUX_COUNTS = ("critical", "security", "other")
AGENT_VERSION = "1.56.03167.2506"


def patch_service(machine: VirtualMachine) -> str:
    """PatchServiceUsed: WU on Windows, the distribution's package manager on Linux."""
    if machine.os_type == "Windows":
        return "WU"
    return "YUM" if machine.image.os_name == "redhat" else "APT"


def machine_model(machine: VirtualMachine) -> dict[str, Any]:
    """The Machine resource as GET and list return it (shape of Machines_Get.json, the fields a fleet has)."""
    windows = machine.os_type == "Windows"
    patch_settings = {"assessmentMode": machine.assessment_mode, "patchMode": machine.patch_mode}
    os_profile: dict[str, Any] = {"computerName": machine.name}
    os_profile["windowsConfiguration" if windows else "linuxConfiguration"] = {"patchSettings": patch_settings}
    fqdn = f"{machine.name.lower()}.corp.contoso.com"
    return {
        "id": machine.id,
        "name": machine.name,
        "location": machine.location,
        "type": "Microsoft.HybridCompute/machines",
        "tags": dict(machine.tags),
        "identity": {"type": "SystemAssigned", "principalId": machine.vm_id, "tenantId": machine.subscription_id},
        "properties": {
            "provisioningState": "Succeeded",
            "agentVersion": AGENT_VERSION,
            "status": machine.agent_status,
            "lastStatusChange": iso_z(machine.last_status_change or machine.time_created),
            "errorDetails": [],
            "displayName": machine.name,
            "machineFqdn": fqdn,
            "dnsFqdn": fqdn,
            "domainName": "corp.contoso.com",
            "osName": "windows" if windows else "linux",
            "osType": "windows" if windows else "linux",  # swagger: "The type of Operating System (windows/linux)"
            "osVersion": machine.image.os_version,
            "osSku": machine.image.os_name,
            "vmId": machine.vm_id,
            "osProfile": os_profile,
            "detectedProperties": {"manufacturer": "VMware, Inc.", "model": "VMware Virtual Platform"},
        },
    }


def not_connected(machine: VirtualMachine, action: str) -> ArmError:
    """The refusal for a machine whose agent is not Connected (a guess: see the module docstring)."""
    return ArmError(
        409,
        "OperationNotAllowed",
        f"Operation '{action}' is not allowed on machine '{machine.name}' since its Azure Connected Machine agent "
        f"status is '{machine.agent_status}'; the agent must be Connected.",
        details=[{
            "code": "MachineNotConnected",
            "target": "properties.status",
            "message": f"The machine's agent status is '{machine.agent_status}'.",
        }],
    )


def _common(machine: VirtualMachine, ended: datetime) -> dict[str, Any]:
    return {
        "lastModifiedDateTime": iso_z(ended),
        "startedBy": "User",
        "patchServiceUsed": patch_service(machine),
        "osType": machine.os_type,
    }


def install_result(machine: VirtualMachine, compute_result: dict[str, Any], ended: datetime) -> dict[str, Any]:
    """MachineInstallPatchesResult from the engine's (Compute-shaped) installation result."""
    keep = ("status", "installationActivityId", "rebootStatus", "maintenanceWindowExceeded", "excludedPatchCount",
            "notSelectedPatchCount", "pendingPatchCount", "installedPatchCount", "failedPatchCount",
            "startDateTime")
    return {**{k: compute_result[k] for k in keep}, **_common(machine, ended),
            "errorDetails": compute_result.get("error")}


def assess_result(machine: VirtualMachine, compute_result: dict[str, Any], ended: datetime) -> dict[str, Any]:
    """MachineAssessPatchesResult: counts per classification instead of the patch list."""
    names = WINDOWS_COUNTS if machine.os_type == "Windows" else LINUX_COUNTS
    counts = dict.fromkeys(names, 0)
    for patch in compute_result["availablePatches"]:
        key = CLASSIFICATION_COUNTS.get(patch["classifications"][0])
        if key in counts:
            counts[key] += 1
    return {
        "status": compute_result["status"],
        "assessmentActivityId": compute_result["assessmentActivityId"],
        "rebootPending": compute_result["rebootPending"],
        "startDateTime": compute_result["startDateTime"],
        "availablePatchCountByClassification": counts,
        **_common(machine, ended),
        "errorDetails": compute_result.get("error"),
    }


def result(machine: VirtualMachine, kind: str, compute_result: dict[str, Any], ended: datetime) -> dict[str, Any]:
    if kind == "installPatches":
        return install_result(machine, compute_result, ended)
    return assess_result(machine, compute_result, ended)
