"""Accepting a plan request: resolve what would run (machines, installPatches, rollout, window), store it, queue it.

- A run request's machines are planned as given; its `scopes` are resolved from the fleet inventory (the machines
  PatchPilot's last listing or assessment saw: shared/storage/fleet_store.py), with the filter's resource groups,
  OS types, locations and resource types applied as a run's discovery applies them
  (shared/validation/dynamic_scope.py). The inventory keeps no tags, so a scope filter with `tagSettings` is
  refused (400 naming `filter.tagSettings`): name the machines instead. Applying the plan installs on the
  machines it lists, not on what a later listing would find.
- A maintenance configuration's plan is its next window to start (one open now is already the window timer's), its
  static
  assignments' VMs and its dynamic scopes' machines from the inventory (the same tag rule), with its own
  installPatches (maximumDuration: the window less the reboot reserve, as shared/maintenance/windows.py) and rollout.
Nothing is written before everything that can refuse the request has run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from shared.core.clock import iso, schedule_now, utcnow
from shared.core.errors import ApiError, ValidationError
from shared.core.ids import MachineRef, ScopeRef
from shared.core.records import PlanRecord
from shared.core.settings import Settings
from shared.maintenance.configuration import configuration_from_stored, parse_assignment
from shared.maintenance.limits import REBOOT_RESERVE
from shared.maintenance.windows import window_run
from shared.plans.build import PLANNING, plan_fingerprint
from shared.plans.request import PlanRequest
from shared.runs.accept import new_run_id
from shared.validation.dynamic_scope import filter_matches
from shared.validation.resource_ids import parse_machine_id

HYBRID_TYPE = "Microsoft.HybridCompute/machines"
VM_TYPE = "Microsoft.Compute/virtualMachines"


class NewPlans(Protocol):
    def create_plan(self, plan_id: str, columns: Mapping[str, Any], machine_ids: list[str]) -> None: ...


class Inventory(Protocol):
    def query_machines(self, subscription_id: str, resource_group: str | None = None, *, os_type: str | None = None,
                       seen_before: str | None = None, select: list[str] | None = None) -> list[dict[str, Any]]: ...


class Configurations(Protocol):
    def get_config(self, name: str) -> dict[str, Any] | None: ...

    def list_assignments(self, config: str) -> list[dict[str, Any]]: ...


class PlanQueue(Protocol):
    def send_plan(self, plan_id: str) -> None: ...


class AcceptPlanDeps(Protocol):
    @property
    def plans(self) -> NewPlans: ...

    @property
    def fleet(self) -> Inventory: ...

    @property
    def maintenance(self) -> Configurations: ...

    @property
    def queues(self) -> PlanQueue: ...

    @property
    def settings(self) -> Settings: ...


def inventory_machines(fleet: Inventory, scope: ScopeRef, flt: Mapping[str, Any] | None,
                       target: str) -> list[MachineRef]:
    """The machines of a scope as the inventory knows them, through a dynamic-scope filter (no tags: module doc)."""
    flt = dict(flt or {})
    if (flt.get("tagSettings") or {}).get("tags"):
        raise ValidationError("a plan resolves scopes from PatchPilot's inventory, which keeps no tags: name the "
                              "machines, or plan without tagSettings", target=f"{target}.tagSettings")
    found = []
    for row in fleet.query_machines(scope.subscription_id, scope.resource_group):
        if not row.get("resourceId"):
            continue
        vm = parse_machine_id(str(row["resourceId"]), target="machines")
        listed = {"id": vm.resource_id, "type": HYBRID_TYPE if vm.is_hybrid else VM_TYPE,
                  "location": row.get("location") or ""}
        if filter_matches(flt, listed, str(row.get("osType") or "")):
            found.append(vm)
    return found


def _unique(machines: list[MachineRef]) -> list[MachineRef]:
    seen: dict[str, MachineRef] = {}
    for vm in machines:
        seen.setdefault(vm.key, vm)
    return list(seen.values())


def resolve(request: PlanRequest, deps: AcceptPlanDeps, now: datetime) -> dict[str, Any]:
    """What would run: {machines, parameters, rollout, window (start, end) | None, configuration}."""
    if request.configuration:
        stored = deps.maintenance.get_config(request.configuration)
        if stored is None:
            raise ApiError(404, "ResourceNotFound", f"no maintenance configuration {request.configuration!r}",
                           target="maintenanceConfiguration")
        config = configuration_from_stored(request.configuration, stored)
        clock = schedule_now(deps.settings.local)
        # the next window to start: one open now is the timer's to open (within a minute), not a plan's
        window = next(iter(config.schedule.windows(clock + timedelta(seconds=1))), None)
        if window is None:
            raise ValidationError(f"maintenance configuration {config.name!r} has no window to come",
                                  target="maintenanceConfiguration")
        assignments = [parse_assignment(a["name"], json.loads(a["body"]))
                       for a in deps.maintenance.list_assignments(config.name)]
        begin, end = window
        new = window_run(config, assignments, begin, end, config.schedule.duration - REBOOT_RESERVE)
        machines = list(new.machines)
        for i, (scope, flt) in enumerate(zip(new.scopes, new.filters, strict=True)):
            machines += inventory_machines(deps.fleet, scope, flt, f"assignments[{i}].filter")
        return {"machines": _unique(machines), "parameters": new.parameters, "rollout": config.rollout,
                "window": window, "configuration": config.name}
    run = request.run
    assert run is not None
    machines = list(run.machines)
    for scope in run.scopes:
        machines += inventory_machines(deps.fleet, scope, run.filter, "filter")
    return {"machines": _unique(machines), "parameters": run.accepted_parameters(), "rollout": run.rollout,
            "window": request.window, "configuration": ""}


def accept_plan(request: PlanRequest, deps: AcceptPlanDeps) -> PlanRecord:
    """Store the plan (status Planning) and queue its planning; returns the stored plan."""
    now = utcnow()
    what = resolve(request, deps, now)
    machines: list[MachineRef] = what["machines"]
    if len(machines) > deps.settings.limits.max_machines_per_run:
        raise ValidationError(f"the plan would cover {len(machines)} machines; a run takes at most "
                              f"{deps.settings.limits.max_machines_per_run} (MAX_MACHINES_PER_RUN)",
                              target="machines")
    window = what["window"]
    columns: dict[str, Any] = {
        "createdAt": iso(now), "status": PLANNING, "machineCount": len(machines),
        "parameters": json.dumps(what["parameters"], separators=(",", ":")),
        "rollout": json.dumps(what["rollout"], separators=(",", ":")) if what["rollout"] else "",
        "window": json.dumps({"start": iso(window[0]), "end": iso(window[1])}) if window else "",
        "maintenanceConfiguration": what["configuration"],
    }
    columns["fingerprint"] = plan_fingerprint({**columns, "createdAt": "", "machines": [m.key for m in machines]})
    plan_id = new_run_id()  # the same shape as a run's: plans sort newest first, the API checks one pattern
    deps.plans.create_plan(plan_id, columns, [m.resource_id for m in machines])
    deps.queues.send_plan(plan_id)
    return PlanRecord(etag="", columns=columns, plan_id=plan_id)
