"""The Simulator object: builds the fleet and its state, serves it over HTTP, and exposes test hooks.

Health hooks (health.py has the model): `set_health(id, **fields)` / `POST /_sim/health`, `health(id)` /
`GET /_sim/health?machine=<id>`, `fire_alert(id, ...)` / `POST /_sim/alerts`, `resolve_alert(guid)` /
`POST /_sim/alerts/<guid>/resolve`, `alerts()` / `GET /_sim/alerts`. `reset()` clears them all.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from tools.azure_simulator.calls import CallLog
from tools.azure_simulator.clock import azure_clock
from tools.azure_simulator.config import SimulatorConfig
from tools.azure_simulator.errors import ArmError
from tools.azure_simulator.faults import FaultInjector
from tools.azure_simulator.fleet import ARC_STATUSES, build_arc_machines, build_fleet, new_patch, upcoming_patches
from tools.azure_simulator.operations import OperationEngine
from tools.azure_simulator.rbac import Authorizer
from tools.azure_simulator.server import ArmApi, Request, Response, make_server
from tools.azure_simulator.throttling import BucketSet, PatchThrottle

POWER_STATES = ("running", "deallocated", "stopped")
# Compute's informational read counters: (bucket size, refill per second) per policy. Names are those real
# responses carry (GetOperationResource / GetOperationSubscriptionMaximum: Azure CLI's recorded
# test_vm_install_patches.yaml, 2024-11, reporting 44 and 14999 left); sizes and refill rates are assumptions.
COMPUTE_READ_POLICIES = {
    "LowCostGet3Min": (4000, 4000 / 180),
    "LowCostGet30Min": (32000, 32000 / 1800),
    "HighCostGet3Min": (250, 250 / 180),
    "HighCostGet30Min": (1000, 1000 / 1800),
    "GetOperationResource": (45, 45 / 1800),
    "GetOperationSubscriptionMaximum": (15000, 15000 / 1800),
}


class Simulator:
    """A running stand-in for management.azure.com (Compute VMs and guest patching)."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.partition_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"azure-simulator-{self.config.seed}"))
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None
        self._lock = threading.Lock()
        self.admin = AdminApi(self)
        self._added = 0
        self._build()

    def _build(self) -> None:
        c = self.config
        fleet = build_fleet(
            c.vms,
            c.subscriptions,
            c.seed,
            windows_ratio=c.windows_ratio,
            stopped_ratio=c.stopped_ratio,
            location=c.location,
            ubuntu_other_security_share=c.ubuntu_other_security_share,
        )
        if c.arc_machines:
            fleet.add_machines(build_arc_machines(
                c.arc_machines, fleet.subscriptions, c.seed, windows_ratio=c.arc_windows_ratio,
                disconnected=min(c.arc_disconnected, c.arc_machines), expired=c.arc_expired, location=c.location,
                ubuntu_other_security_share=c.ubuntu_other_security_share,
            ))
        if c.upcoming_patches:
            upcoming = upcoming_patches(c.upcoming_patches, c.upcoming_within_hours, c.seed, datetime.now(UTC))
            for vm in (*fleet.vms, *fleet.machines):
                vm.upcoming = list(upcoming[vm.os_type])
        self.faults = FaultInjector(c.faults, c.seed)
        clock = azure_clock  # one clock for the operations and every bucket (clock.py)
        self.engine = OperationEngine(
            c,
            fleet,
            clock=clock,
            patch_failure_rng=self.faults.rng,
            patch_failure_rate=lambda: self.faults.settings.patch_failure_rate,
            unhealthy_after_patch=lambda: self.faults.roll(self.faults.settings.unhealthy_after_patch_rate),
        )
        self.call_log = CallLog([vm.key for vm in (*fleet.vms, *fleet.machines)])
        self.arm_reads = BucketSet(c.read_burst, c.read_rate, clock, scale=c.budget_scale)
        self.arm_writes = BucketSet(c.write_burst, c.write_rate, clock, scale=c.budget_scale)
        self.compute_reads = {
            name: BucketSet(size, rate, clock, scale=c.budget_scale)
            for name, (size, rate) in COMPUTE_READ_POLICIES.items()
        }
        self.authorizer = Authorizer(c.role_assignments)
        self._host_updates: dict[str, float] = {}  # machine key -> end of its host-update window (engine.clock)
        self.patch_throttle = PatchThrottle(
            c.patch_ops_per_vm_burst,
            c.patch_ops_per_vm_per_min,
            c.patch_ops_per_sub_burst,
            c.patch_ops_per_sub_per_min,
            clock,
            scale=c.budget_scale,
        )

    # ------------------------------------------------------------------------------ lifecycle
    def start(self) -> Simulator:
        with self._lock:
            if self._server is not None:
                return self
            self._server = make_server(ArmApi(self), self.config.host, self.config.port)
            host, port = self._server.server_address[:2]
            self._url = f"http://{host}:{port}"
            self._thread = threading.Thread(
                target=self._server.serve_forever, args=(0.05,), name="arm-simulator", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            if self._server is None:
                return
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the simulator is not started; call start() first")
        return self._url

    # ------------------------------------------------------------------------------ test hooks
    def vm_ids(self) -> list[str]:
        return [vm.id for vm in self.engine.fleet.vms]

    def machine_ids(self) -> list[str]:
        """Arc-enabled servers (Microsoft.HybridCompute/machines ids)."""
        return [m.id for m in self.engine.fleet.machines]

    def subscriptions(self) -> list[str]:
        return list(self.engine.fleet.subscriptions)

    def calls(self) -> dict[str, Any]:
        """Counts (GET /_sim/calls): per call kind and VM, statuses, faults, 429s by bucket
        (`throttledByBucket`: armReads, armWrites, computeGuestPatchSubscription, computeGuestPatchVm, injected;
        and per subscription), operations in flight now and at most (`peakConcurrentBySubscription`, "*" = all),
        and `operationStartsPerSecond`: per subscription, [[second, operations accepted], ...] where second
        counts whole real seconds on Azure's clock (clock.py) since the simulator started (multiply by `budgetScale` for
        Azure seconds)."""
        with self.engine.lock:
            in_flight = self.engine.in_flight()  # settles first: finished operations no longer count as running
            peaks = dict(self.engine.peak_concurrent)
            starts = {sub: sorted(c.items()) for sub, c in self.engine.starts_per_second.items()}
        return {
            **self.call_log.snapshot(),
            "peakConcurrentBySubscription": peaks,
            "inFlightBySubscription": in_flight,
            "operationStartsPerSecond": {sub: [list(pair) for pair in pairs] for sub, pairs in starts.items()},
            "budgetScale": self.config.budget_scale,
            "timeScale": self.config.time_scale,
        }

    def state(self) -> dict[str, Any]:
        return {
            "subscriptions": self.subscriptions(),
            "faults": self.faults.settings.as_dict(),
            "vms": [self.engine.vm_state(vm) for vm in self.engine.fleet.vms],
            "arcMachines": [self.machine_state(m) for m in self.engine.fleet.machines],
        }

    def machine_state(self, machine: Any) -> dict[str, Any]:
        return {**self.engine.vm_state(machine), "agentStatus": machine.agent_status}

    def set_agent_status(self, machine_id: str, status: str) -> dict[str, Any]:
        """An Arc machine's Connected Machine agent goes Connected, Disconnected or Expired."""
        if status not in ARC_STATUSES:
            raise ValueError(f"agent status must be one of {', '.join(ARC_STATUSES)}")
        machine = self._vm_by_id(machine_id)
        if not machine.arc:
            raise ValueError(f"'{machine_id}' is not an Arc machine")
        with self.engine.lock:
            machine.agent_status = status
            machine.last_status_change = self.engine.now()
        return self.machine_state(machine)

    def operation(self, op_id: str) -> dict[str, Any] | None:
        op = self.engine.get(op_id)
        return None if op is None else op.state(self.engine.clock())

    def set_faults(self, values: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        """Change fault settings at run time (partial update); returns the full settings."""
        return self.faults.configure({**(values or {}), **kwargs}).as_dict()

    def set_role_assignments(self, assignments: list[Any] | None) -> list[dict[str, Any]] | None:
        """Replace the caller's role assignments (None: everything allowed); returns them as stored.

        Each is a RoleAssignment or {"scope": "/subscriptions/<id>[/resourceGroups/<rg>]", "actions": [...]}."""
        return self.authorizer.configure(assignments)

    def set_power(self, vm_id: str, power_state: str) -> dict[str, Any]:
        if power_state not in POWER_STATES:
            raise ValueError(f"power state must be one of {', '.join(POWER_STATES)}")
        vm = self._vm_by_id(vm_id)
        with self.engine.lock:
            if vm.power_state != power_state:
                self.engine.health.power_changed(vm)
            vm.power_state = power_state
        return self.engine.vm_state(vm)

    def start_host_update(self, vm_id: str, seconds: float | None = None) -> dict[str, Any]:
        """The platform starts updating the machine's host: for `seconds` real seconds (default: the fault
        setting host_update_seconds) its installPatches/assessPatches POSTs answer 409 OperationNotAllowed
        "... waiting for an ongoing update to complete the resource." Returns {"id", "seconds", "until"}."""
        vm = self._vm_by_id(vm_id)
        length = self.faults.settings.host_update_seconds if seconds is None else float(seconds)
        if length <= 0:
            raise ValueError("a host update needs seconds > 0 (pass seconds or set host_update_seconds)")
        with self.engine.lock:
            end = self._host_updates[vm.key] = self.engine.clock() + length
        # the clock reads as epoch seconds (clock.py)
        return {"id": vm.id, "seconds": length, "until": datetime.fromtimestamp(end, UTC).isoformat()}

    def host_updating(self, vm: Any) -> bool:
        """Is the machine inside a host-update window now?"""
        with self.engine.lock:
            end = self._host_updates.get(vm.key)
            if end is not None and self.engine.clock() >= end:
                del self._host_updates[vm.key]
                end = None
            return end is not None

    # ------------------------------------------------------------------------------ health (health.py)
    def set_health(self, machine_id: str, **fields: Any) -> dict[str, Any]:
        """Set a machine's health model (partial): availability_state / availabilityState ("Available",
        "Unavailable", "Degraded", "Unknown"), vm_health (None = no Application Health extension, "healthy",
        "unhealthy", "unknown"), agent_ready, probe_status (0 = unreachable) and after_patch (a dict of those
        fields plus recoverAfterSeconds, lagSeconds, fireAlert; None clears it). Returns the model."""
        return self.engine.health.set(self._vm_by_id(machine_id), fields)

    def health(self, machine_id: str) -> dict[str, Any]:
        """The machine's health model, and what Resource Health answers for it now."""
        return self.engine.health.model(self._vm_by_id(machine_id))

    def fire_alert(self, machine_id: str, severity: str = "Sev3", name: str = "Alert",
                   monitor_condition: str = "Fired", **extra: Any) -> dict[str, Any]:
        """An Azure Monitor alert on the machine, started now (or at extra startDateTime); returns it."""
        values = {"severity": severity, "name": name, "monitorCondition": monitor_condition, **extra}
        return self.engine.health.fire_alert(self._vm_by_id(machine_id), values)

    def resolve_alert(self, alert_id: str) -> dict[str, Any]:
        return self.engine.health.resolve_alert(alert_id)

    def alerts(self) -> list[dict[str, Any]]:
        return self.engine.health.alerts()

    def add_vms(self, count: int, subscription: str | None = None, os_type: str | None = None) -> list[str]:
        """New VMs appear (as someone deploying would make them): generated like the fleet, given new names."""
        if count < 1:
            raise ValueError("count must be >= 1")
        with self.engine.lock:
            fleet = self.engine.fleet
            sub = fleet.subscription(subscription) if subscription else fleet.subscriptions[0]
            self._added += 1
            extra = build_fleet(count, 1, self.config.seed * 1000 + self._added,
                                windows_ratio={"windows": 1.0, "linux": 0.0}.get((os_type or "").lower(),
                                                                              self.config.windows_ratio),
                                location=self.config.location,
                                ubuntu_other_security_share=self.config.ubuntu_other_security_share)
            groups = list(fleet.resource_groups.get(sub.lower(), {}).values()) or ["rg-added"]
            ids = []
            for i, vm in enumerate(extra.vms):
                vm.subscription_id = sub
                vm.resource_group = groups[i % len(groups)]
                vm.name = f"{vm.name}-n{self._added}"
                fleet.add(vm)
                self.call_log.ensure(vm.key)
                ids.append(vm.id)
            return ids

    def remove_vm(self, vm_id: str) -> None:
        """A VM is deleted: it disappears from lists and GETs answer 404."""
        vm = self._vm_by_id(vm_id)
        with self.engine.lock:
            self.engine.fleet.remove(vm)

    def publish_patch(self, os_type: str, classification: str = "Security", name: str | None = None) -> dict[str, Any]:
        """A vendor publishes an update now: every VM of that OS type is missing it from now on."""
        if os_type not in ("Windows", "Linux"):
            raise ValueError("os_type must be Windows or Linux")
        with self.engine.lock:
            self._added += 1
            patch = new_patch(os_type, classification, name, self.engine.simulated_now(), self._added)
            for vm in (*self.engine.fleet.vms, *self.engine.fleet.machines):
                if vm.os_type == os_type:
                    vm.pending.append(patch)
        return patch.summary()

    def reset(self) -> None:
        """Back to the freshly generated fleet: state, counters, buckets and faults as configured."""
        with self.engine.lock:
            self._build()

    def _vm_by_id(self, vm_id: str) -> Any:
        parts = vm_id.strip("/").split("/")
        if len(parts) != 8 or parts[0].lower() != "subscriptions":
            raise ArmError(400, "InvalidResourceId", f"'{vm_id}' is not a virtual machine resource id.")
        if parts[5].lower() == "microsoft.hybridcompute":
            return self.engine.fleet.machine(parts[1], parts[3], parts[7])
        return self.engine.fleet.vm(parts[1], parts[3], parts[7])

    @contextmanager
    def faults_set(self, **values: Any) -> Iterator[None]:
        """Temporarily change faults (restores the previous settings afterwards)."""
        before = self.faults.settings.as_dict()
        self.set_faults(values)
        try:
            yield
        finally:
            self.set_faults(before)


class AdminApi:
    """/_sim/...: unauthenticated test hooks over HTTP, the same as the Python methods."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def handle(self, req: Request) -> Response:
        path = req.path.rstrip("/")
        parts = path.split("/")[2:]  # after "", "_sim"
        body = json.loads(req.body) if req.body.strip() else {}
        sim = self.sim
        if req.method == "GET" and parts == ["calls"]:
            return Response(200, sim.calls())
        if req.method == "GET" and parts == ["vms"]:
            return Response(200, sim.state())
        if req.method == "GET" and parts[:1] == ["vms"] and len(parts) > 1:
            vm = sim._vm_by_id("/" + "/".join(parts[1:]))
            return Response(200, sim.engine.vm_state(vm))
        if req.method == "POST" and parts == ["vms"]:
            ids = sim.add_vms(int(body.get("count", 1)), body.get("subscription"), body.get("osType"))
            return Response(201, {"added": ids})
        if req.method == "DELETE" and parts[:1] == ["vms"] and len(parts) > 1:
            sim.remove_vm("/" + "/".join(parts[1:]))
            return Response(200, {"removed": "/" + "/".join(parts[1:])})
        if req.method == "GET" and parts == ["machines"]:
            return Response(200, {"arcMachines": [sim.machine_state(m) for m in sim.engine.fleet.machines]})
        if req.method == "POST" and parts[:1] == ["machines"] and parts[-1:] == ["status"]:
            return Response(200, sim.set_agent_status("/" + "/".join(parts[1:-1]), str(body.get("status"))))
        if req.method == "POST" and parts == ["publish"]:
            return Response(201, sim.publish_patch(str(body.get("osType")), str(body.get("classification", "Security")),
                                                   body.get("name")))
        if req.method == "POST" and parts[:1] in (["vms"], ["machines"]) and parts[-1:] == ["hostupdate"]:
            seconds = body.get("seconds") if isinstance(body, dict) else None
            return Response(200, sim.start_host_update("/" + "/".join(parts[1:-1]), seconds))
        if req.method == "POST" and parts[:1] == ["vms"] and parts[-1:] == ["power"]:
            state = body.get("powerState") or body.get("state")
            return Response(200, sim.set_power("/" + "/".join(parts[1:-1]), str(state)))
        if req.method == "GET" and parts[:1] == ["operations"] and len(parts) == 2:
            op = sim.operation(parts[1])
            if op is None:
                raise ArmError(404, "NotFound", f"No operation '{parts[1]}'.")
            return Response(200, op)
        if parts == ["faults"] and req.method in ("GET", "POST"):
            return Response(
                200, sim.set_faults(body) if req.method == "POST" else sim.faults.settings.as_dict()
            )
        if parts == ["rbac"] and req.method in ("GET", "POST"):
            if req.method == "POST":
                if "roleAssignments" not in body:
                    raise ValueError("body needs 'roleAssignments': a list of {scope, actions}, or null for all")
                sim.set_role_assignments(body["roleAssignments"])
            return Response(200, {"roleAssignments": sim.authorizer.as_list()})
        if req.method == "POST" and parts == ["reset"]:
            sim.reset()
            return Response(200, {"reset": True, "vms": len(sim.vm_ids())})
        if req.method == "GET" and parts == ["health"]:
            if req.query.get("machine"):
                return Response(200, sim.health(req.query["machine"]))
            return Response(200, {"ok": True, "vms": len(sim.vm_ids())})  # liveness
        if req.method == "POST" and parts == ["health"]:
            if not isinstance(body, dict) or not isinstance(body.get("machine"), str):
                raise ValueError("body needs 'machine': a machine's resource id")
            fields = {k: v for k, v in body.items() if k != "machine"}
            return Response(200, sim.set_health(body["machine"], **fields))
        if parts == ["alerts"] and req.method in ("GET", "POST"):
            if req.method == "GET":
                return Response(200, {"value": sim.alerts()})
            if not isinstance(body, dict) or not isinstance(body.get("machine"), str):
                raise ValueError("body needs 'machine': a machine's resource id")
            return Response(201, sim.engine.health.fire_alert(sim._vm_by_id(body["machine"]), body))
        if req.method == "POST" and len(parts) == 3 and parts[0] == "alerts" and parts[2] == "resolve":
            return Response(200, sim.resolve_alert(parts[1]))
        raise ArmError(404, "NotFound", f"No simulator admin route {req.method} {req.path}.")
