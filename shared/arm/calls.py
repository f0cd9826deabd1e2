"""Every ARM call PatchPilot makes, as one value: its name, HTTP method, path shape and the budgets it draws from.

The client builds the URL from it (shared/arm/client.py `ArmClient.send`), the pacer reserves and corrects
the budgets it names (shared/runs/pacing.py), and the audit trail records its name (a machine row's
`armCalls[].op`). A new call is one more value here; it cannot be paced by the wrong bucket because no
caller names buckets.

Budgets, per subscription (ARM's limits are regional; PatchPilot talks to one region's front end):
    guestPatch  Compute's VMGuestPatchOperationSubscriptionMaximum: installPatches/assessPatches,
                600 burst, 200 per minute (learn.microsoft.com/troubleshoot/azure/virtual-machines/
                troubleshooting-throttling-errors)
    writes      ARM's subscription writes: 200 burst, 10 per second
    reads       ARM's subscription reads other than polls: 250 burst, 25 per second (request-limits-and-
                throttling, "Migrating to regional throttling and token bucket algorithm")
    polls       the share of ARM's reads that polling may use (POLL_READ_PERCENT)
`budgets` is in reservation order, the slow one first (shared/runs/pacing.py `paced_delay` says why).

A 429 on a read moves only that read's budget. A 429 on a write moves what Compute's headers say ran out
(`shared/runs/pacing.py` `throttled_buckets`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shared.core.ids import MachineRef

GUEST_PATCH = "guestPatch"  # Compute's VMGuestPatchOperationSubscriptionMaximum
WRITES = "writes"  # ARM subscription writes (a POST)
READS = "reads"  # ARM subscription reads other than polls (GET of a VM, an instance view, a list page)
POLLS = "polls"  # the share of ARM reads that polling may use (POLL_READ_PERCENT)
BUDGETS = (GUEST_PATCH, WRITES, READS, POLLS)


@dataclass(frozen=True)
class ArmCall:
    """One kind of ARM request.

    `name`: the audit trail's `op` (stable: stored in machine rows). `method`: GET or POST. `path`: its shape
    below ARM_ENDPOINT: `{machine}` is a machine's resource id, `{subscription}` its subscription's
    (`/subscriptions/{id}`), `{scope}` a subscription or resource group,
    `{url}` a URL ARM handed back (a `Location` to poll, a `nextLink`), which the client checks is on
    ARM_ENDPOINT before sending. `budgets`: what it draws from, slow one first. `api_version`: for a call to
    another resource provider than the machine's (Resource Health, Alerts Management); None: the machine's
    provider's (COMPUTE_API_VERSION or HYBRIDCOMPUTE_API_VERSION)."""

    name: str
    method: Literal["GET", "POST"]
    path: str
    budgets: tuple[str, ...]
    api_version: str | None = None

    @property
    def is_write(self) -> bool:
        return self.method == "POST"

    @property
    def action(self) -> str | None:
        """The segment after `{machine}/` (`installPatches`, `instanceView`), None for the machine itself."""
        head, _, tail = self.path.partition("{machine}/")
        return tail if head == "" and tail else None


# Compute's VirtualMachines_Get (Microsoft.Compute/virtualMachines): osType before a start
GET_VM = ArmCall("getVm", "GET", "{machine}", (READS,))
# HybridCompute's Machines_Get: osType and the agent's connection status (properties.status)
GET_ARC_MACHINE = ArmCall("getMachine", "GET", "{machine}", (READS,))
# VirtualMachines_InstanceView: patchStatus, read before installPatches and to settle a lost answer
INSTANCE_VIEW = ArmCall("instanceView", "GET", "{machine}/instanceView", (READS,))
# VirtualMachines_ListAll / _List (or Machines_ListBy*): a scope's machines, one page; later pages by nextLink
LIST_MACHINES = ArmCall("listVms", "GET", "{scope}/providers/{type}", (READS,))
# The long-running operations (final-state-via: location), and following them
INSTALL_PATCHES = ArmCall("installPatches", "POST", "{machine}/installPatches", (GUEST_PATCH, WRITES))
ASSESS_PATCHES = ArmCall("assessPatches", "POST", "{machine}/assessPatches", (GUEST_PATCH, WRITES))
POLL_OPERATION = ArmCall("poll", "GET", "{url}", (POLLS,))
# Health reads of a rollout's healthCheck (shared/runs/health_check.py). Resource Health's
# AvailabilityStatuses_GetByResource (Microsoft.ResourceHealth/availabilityStatuses/read on the machine):
RESOURCE_HEALTH = ArmCall("resourceHealth", "GET",
                          "{machine}/providers/Microsoft.ResourceHealth/availabilityStatuses/current", (READS,),
                          api_version="2022-10-01")
# Alerts Management's Alerts_GetAll at the machine's subscription (Microsoft.AlertsManagement/alerts/read there),
# filtered by targetResource (or targetResourceGroup); later pages by nextLink:
LIST_ALERTS = ArmCall("alerts", "GET", "{subscription}/providers/Microsoft.AlertsManagement/alerts", (READS,),
                      api_version="2019-05-05-preview")

ALL_CALLS: tuple[ArmCall, ...] = (GET_VM, GET_ARC_MACHINE, INSTANCE_VIEW, LIST_MACHINES, INSTALL_PATCHES,
                                  ASSESS_PATCHES, POLL_OPERATION, RESOURCE_HEALTH, LIST_ALERTS)
CALLS_BY_NAME = {c.name: c for c in ALL_CALLS}


def get_machine(machine: MachineRef) -> ArmCall:
    """The GET of a machine: Compute's for an Azure VM, HybridCompute's for an Arc-enabled server."""
    return GET_ARC_MACHINE if machine.is_hybrid else GET_VM
