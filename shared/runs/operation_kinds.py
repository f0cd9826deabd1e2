"""What differs between Azure's patch operations. Everything else (claiming, polling, retries,
timeouts, poison handling) is one shared path in machine_worker.py. Both need the VM's OS before
starting (install: its parameters; assess: the compliance view filters by it), read with one GET
unless discovery already listed it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from shared.core.states import MachineState
from shared.validation.install_parameters import maximum_duration, parameters_for_os


@dataclass(frozen=True)
class OperationKind:
    action: str  # the ARM action: POST .../virtualMachines/{vm}/{action}
    body_per_os: bool  # the request body is the part of the run's parameters for the VM's own OS
    result_fields: tuple[str, ...]  # result properties kept on the target row
    patches_field: str  # the result's list of per-patch records
    # Azure refuses the operation on a VM that is not running: an install was asked for and did not
    # happen (Failed); an assessment is simply not possible now (Skipped, with the reason).
    not_running_state: MachineState
    keeps_history: bool  # results also go to the per-machine history and latest snapshot (compliance)
    # Sending it twice does harm (a second installation): before sending, and to settle a claim whose
    # answer was lost, the VM's instance view says whether it already runs (shared/arm/patch_status.py).
    # An assessment only reads, so sending it again is the way to settle it.
    settles_from_instance_view: bool = False

    def request_body(self, params: dict[str, Any], os_type: str) -> tuple[dict[str, Any] | None, str | None]:
        """(body, None), or (None, reason) when this VM cannot get a body from the request."""
        if not self.body_per_os:
            return None, None
        body = parameters_for_os(params, os_type)
        if body is None:
            wanted = "windowsParameters" if os_type.lower() == "windows" else "linuxParameters"
            return None, f"the VM runs {os_type or 'an unknown OS'} but the run has no {wanted}"
        return body, None

    def expected_duration(self, params: dict[str, Any]) -> timedelta:
        """How long Azure may run the operation; polling stops at this plus the grace period."""
        if self.action == "installPatches":
            return maximum_duration(params)
        return ASSESSMENT_DURATION


# Azure does not bound an assessment; it normally takes minutes. An hour is generous.
ASSESSMENT_DURATION = timedelta(hours=1)

INSTALL = OperationKind(
    action="installPatches",
    body_per_os=True,
    result_fields=(
        "status", "installationActivityId", "rebootStatus", "maintenanceWindowExceeded", "excludedPatchCount",
        "notSelectedPatchCount", "pendingPatchCount", "installedPatchCount", "failedPatchCount", "startDateTime",
    ),
    patches_field="patches",
    not_running_state=MachineState.FAILED,
    keeps_history=False,
    settles_from_instance_view=True,
)
ASSESS = OperationKind(
    action="assessPatches",
    body_per_os=False,
    result_fields=("status", "assessmentActivityId", "rebootPending", "criticalAndSecurityPatchCount",
                   "otherPatchCount", "startDateTime"),
    patches_field="availablePatches",
    not_running_state=MachineState.SKIPPED,
    keeps_history=True,
)
KINDS = {k.action: k for k in (INSTALL, ASSESS)}
