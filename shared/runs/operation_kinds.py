"""Operations as strategies: what differs between Azure's patch operations, one object each. Everything
else (claiming, pacing, polling, retries, timeouts, poison handling) is one shared path in machine_worker.py.
Both need the machine's OS before starting (install: its parameters; assess: the compliance view filters by
it), read with one GET unless discovery already listed it.

An operation says which ARM call starts it (and so which budgets it draws from: shared/arm/calls.py), how its
request body is built from the run's stored `parameters`, how long Azure may run it, which of its result's
fields the machine row keeps, and whether its outcome also goes to the machine's history (a feature
registered for it at shared/composition.py). A new operation is one more value in KINDS (and its ArmCall).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from shared.arm.calls import ASSESS_PATCHES, INSTALL_PATCHES, INSTANCE_VIEW, ArmCall
from shared.core.ids import MachineRef
from shared.core.states import MachineState
from shared.validation.install_parameters import maximum_duration, parameters_for_os

# Azure does not bound an assessment; it normally takes minutes. An hour is generous.
ASSESSMENT_DURATION = timedelta(hours=1)


@dataclass(frozen=True)
class OperationKind:
    call: ArmCall  # the POST that starts it: .../virtualMachines/{vm}/{action} (or an Arc machine's)
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
    # How long Azure may run it, from the run's parameters (install: its maximumDuration)
    duration: Callable[[dict[str, Any]], timedelta] = lambda _params: ASSESSMENT_DURATION

    @property
    def action(self) -> str:
        """Azure's name of the operation (`installPatches`), which runs store as their `operation`."""
        return self.call.name

    def start_budgets(self, machine: MachineRef, *, settle: bool) -> tuple[str, ...]:
        """What a start draws from, reserved before the claim in the order its calls are made: the
        instance-view read (when the start settles from Azure; `settle`: not already done), then the POST's
        budgets (slow one first). In call order, a start that must wait for its read holds nothing else, and a
        held guest-patch token is never spent late behind a read (a late read token risks only a read 429,
        which delays)."""
        reads = INSTANCE_VIEW.budgets if settle and self.settles_from(machine) else ()
        return tuple(b for b in reads if b not in self.call.budgets) + self.call.budgets

    @property
    def reads_per_start(self) -> int:
        """ARM reads a start makes at most: the machine's GET (its OS type, unless a listing gave it) and, when
        it settles from Azure, the instance view (dispatch's start slots leave room for them)."""
        return 2 if self.settles_from_instance_view else 1

    def settles_from(self, machine: MachineRef) -> bool:
        """An Azure VM's instance view shows its patch installations; an Arc machine's shows none."""
        return self.settles_from_instance_view and not machine.is_hybrid

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
        return self.duration(params)


INSTALL = OperationKind(
    call=INSTALL_PATCHES,
    body_per_os=True,
    result_fields=(
        "status", "installationActivityId", "rebootStatus", "maintenanceWindowExceeded", "excludedPatchCount",
        "notSelectedPatchCount", "pendingPatchCount", "installedPatchCount", "failedPatchCount", "startDateTime",
    ),
    patches_field="patches",
    not_running_state=MachineState.FAILED,
    keeps_history=False,
    settles_from_instance_view=True,
    duration=maximum_duration,
)
ASSESS = OperationKind(
    call=ASSESS_PATCHES,
    body_per_os=False,
    result_fields=("status", "assessmentActivityId", "rebootPending", "criticalAndSecurityPatchCount",
                   "otherPatchCount", "startDateTime"),
    patches_field="availablePatches",
    not_running_state=MachineState.SKIPPED,
    keeps_history=True,
)
KINDS = {k.action: k for k in (INSTALL, ASSESS)}
