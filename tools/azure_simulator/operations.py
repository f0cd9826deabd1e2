"""The long-running-operation engine: patch operations on the simulated clock, and the VM state they change.

An operation's whole outcome is decided when it is accepted (deterministically), and becomes visible when
its real finish time passes: `settle()` then applies it to the VM (installed patches leave the pending list,
reboot state and the instance view's patchStatus change) and, for an installation, to the machine's health
model (health.py: its afterPatch, or the unhealthy_after_patch_rate outcome decided at acceptance). Nothing runs
in the background, so there is no timer thread to race with, and a stopped simulator leaves nothing behind.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tools.azure_simulator.clock import azure_clock
from tools.azure_simulator.config import SimulatorConfig
from tools.azure_simulator.fleet import Fleet, Patch, VirtualMachine, iso_z
from tools.azure_simulator.health import HealthBook
from tools.azure_simulator.patching import (
    InstallOutcome,
    InstallParameters,
    assessment_result,
    simulate_install,
)

KINDS = ("installPatches", "assessPatches")


def iso_offset(when: datetime) -> str:
    """Operation-status timestamps, as Compute writes them: 2020-04-24T21:02:04.2556154+00:00."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0+00:00"


@dataclass
class Operation:
    op_id: str
    kind: str
    vm: VirtualMachine
    request: Any
    api_version: str
    started: datetime  # wall clock
    started_real: float  # OperationEngine.clock (Azure's: clock.py)
    finish_real: float  # OperationEngine.clock
    simulated_seconds: float
    result: dict[str, Any]
    outcome: InstallOutcome | None = None
    applied: bool = False
    ended: datetime | None = None
    goes_down: bool = False  # the machine comes back down after this installation (unhealthy_after_patch_rate)

    def done(self, now_real: float) -> bool:
        return now_real >= self.finish_real

    def status(self, now_real: float) -> str:
        return "Succeeded" if self.done(now_real) else "InProgress"

    def async_body(self, now_real: float) -> dict[str, Any]:
        """What the Azure-AsyncOperation URL returns (Compute's OperationStatusResponse)."""
        body: dict[str, Any] = {
            "startTime": iso_offset(self.started),
            "status": self.status(now_real),
            "name": self.op_id,
        }
        if self.done(now_real):
            body["endTime"] = iso_offset(self.end_time())
            body["properties"] = {"output": self.result}
        return body

    def end_time(self) -> datetime:
        return self.ended or self.started + timedelta(seconds=self.finish_real - self.started_real)

    def state(self, now_real: float) -> dict[str, Any]:
        done = self.done(now_real)
        return {
            "opId": self.op_id,
            "kind": self.kind,
            "status": self.status(now_real),
            "vmId": self.vm.id,
            "apiVersion": self.api_version,
            "startTime": iso_offset(self.started),
            "endTime": iso_offset(self.end_time()) if done else None,
            "simulatedSeconds": self.simulated_seconds,
            "realSeconds": round(self.finish_real - self.started_real, 4),
            "request": self.request,
            "result": self.result if done else None,
        }


@dataclass
class OperationEngine:
    """Owns the fleet's mutable state; every public method takes the engine's lock."""

    config: SimulatorConfig
    fleet: Fleet
    patch_failure_rng: Callable[[], random.Random]
    patch_failure_rate: Callable[[], float]
    clock: Callable[[], float] = azure_clock  # real seconds on Azure's clock (clock.py)
    # Rolled once per accepted installPatches: does the machine come back down after it? (health.py)
    unhealthy_after_patch: Callable[[], bool] = lambda: False
    operations: dict[str, Operation] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _running: dict[str, Operation] = field(default_factory=dict)
    _by_vm: dict[str, list[str]] = field(default_factory=dict)
    _last_assessment: dict[str, dict[str, Any]] = field(default_factory=dict)
    _last_installation: dict[str, dict[str, Any]] = field(default_factory=dict)
    _counter: int = 0

    _releases: list[tuple[datetime, int, str, Patch]] = field(default_factory=list)  # heap by publish time
    _finishing: list[tuple[float, int, str]] = field(default_factory=list)  # heap of unapplied ops by finish time
    _sequence: Iterator[int] = field(default_factory=itertools.count)  # heap tie-breaker
    _running_by_sub: Counter[str] = field(default_factory=Counter)
    peak_concurrent: dict[str, int] = field(default_factory=dict)  # subscription ("*": all) -> most at once
    # subscription -> {whole real seconds since the simulator started: operations accepted in that second}
    starts_per_second: dict[str, Counter[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._created = datetime.now(UTC)
        self._created_real = self.clock()
        self._ids = random.Random(f"operations:{self.config.seed}")
        self.health = HealthBook(self.lock, self.settle, self.config.seed)
        for vm in (*self.fleet.vms, *self.fleet.machines):
            self.schedule_releases(vm)

    def simulated_now(self) -> datetime:
        """The simulated wall clock: starts at the real time the simulator started, runs time_scale times faster."""
        return self._created + timedelta(seconds=(self.clock() - self._created_real) * self.config.time_scale)

    def schedule_releases(self, vm: VirtualMachine) -> None:
        """Queue the VM's upcoming patches; each becomes pending once simulated time reaches its publish date."""
        with self.lock:
            for patch in vm.upcoming:
                self._counter += 1
                heapq.heappush(self._releases, (patch.published, self._counter, vm.key, patch))
            vm.upcoming = []

    def _release_published(self) -> None:
        now = self.simulated_now()
        while self._releases and self._releases[0][0] <= now:
            _, _, key, patch = heapq.heappop(self._releases)
            vm = self.fleet.by_key.get(key)
            if vm is not None and all(p.patch_id != patch.patch_id for p in vm.pending):
                vm.pending.append(patch)

    def now(self) -> datetime:
        return datetime.now(UTC)

    def _next(self) -> tuple[str, random.Random]:
        self._counter += 1
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4)), random.Random(
            f"op:{self.config.seed}:{self._counter}"
        )

    def settle(self) -> None:
        """Apply every operation whose finish time has passed (in the order they finish).

        O(finished operations): unapplied operations wait in a heap by finish time, so a request costs nothing
        for the thousands still running."""
        with self.lock:
            self._release_published()
            now = self.clock()
            heap = self._finishing
            while heap and heap[0][0] <= now:
                _, _, op_id = heapq.heappop(heap)
                op = self.operations[op_id]
                if not op.applied and op.done(now):
                    self._apply(op)

    def finish_now(self, op: Operation) -> None:
        """End a running operation at once (ARM answering the POST with its final 200)."""
        with self.lock:
            op.finish_real = self.clock()
            heapq.heappush(self._finishing, (op.finish_real, next(self._sequence), op.op_id))
            self.settle()

    def in_flight(self) -> dict[str, int]:
        """Operations running now, per subscription and in all ("*")."""
        with self.lock:
            self.settle()
            return {**{k: v for k, v in self._running_by_sub.items() if v}, "*": len(self._running)}

    def _apply(self, op: Operation) -> None:
        vm = op.vm
        op.applied = True
        op.ended = op.end_time()
        if self._running.get(vm.key) is op:
            del self._running[vm.key]
            self._running_by_sub[vm.subscription_id.lower()] -= 1
        if op.kind == "installPatches" and op.outcome is not None:
            gone = {p.patch_id for p in op.outcome.installed}
            vm.pending = [p for p in vm.pending if p.patch_id not in gone]
            vm.installed.extend(op.outcome.installed)
            vm.reboot_pending = op.outcome.reboot_pending_after
            r = op.result
            self._last_installation[vm.key] = {
                "status": r["status"],
                "installationActivityId": r["installationActivityId"],
                "maintenanceWindowExceeded": r["maintenanceWindowExceeded"],
                "notSelectedPatchCount": r["notSelectedPatchCount"],
                "excludedPatchCount": r["excludedPatchCount"],
                "pendingPatchCount": r["pendingPatchCount"],
                "installedPatchCount": r["installedPatchCount"],
                "failedPatchCount": r["failedPatchCount"],
                "startTime": r["startDateTime"],
                "lastModifiedTime": iso_z(op.ended),
                "error": r["error"],
            }
            # The patch extension assesses again after installing, so the available summary moves on too.
            self._last_assessment[vm.key] = self._summary(
                vm, str(uuid.uuid5(uuid.NAMESPACE_URL, op.op_id)), op.ended, op.ended
            )
            # The machine comes back from the installation as its health model says (an assessment never counts).
            self.health.install_completed(vm, op.ended, goes_down=op.goes_down)
        elif op.kind == "assessPatches":
            r = op.result
            self._last_assessment[vm.key] = {
                "status": r["status"],
                "assessmentActivityId": r["assessmentActivityId"],
                "rebootPending": r["rebootPending"],
                "criticalAndSecurityPatchCount": r["criticalAndSecurityPatchCount"],
                "otherPatchCount": r["otherPatchCount"],
                "startTime": r["startDateTime"],
                "lastModifiedTime": iso_z(op.ended),
                "error": None,
            }

    def _summary(self, vm: VirtualMachine, activity: str, start: datetime, end: datetime) -> dict[str, Any]:
        critical = sum(1 for p in vm.pending if p.critical_or_security)
        return {
            "status": "Succeeded",
            "assessmentActivityId": activity,
            "rebootPending": vm.reboot_pending,
            "criticalAndSecurityPatchCount": critical,
            "otherPatchCount": len(vm.pending) - critical,
            "startTime": iso_z(start),
            "lastModifiedTime": iso_z(end),
            "error": None,
        }

    def running(self, vm: VirtualMachine) -> Operation | None:
        with self.lock:
            self.settle()
            return self._running.get(vm.key)

    def _register(self, op: Operation) -> Operation:
        self.operations[op.op_id] = op
        sub = op.vm.subscription_id.lower()
        replaced = self._running.get(op.vm.key)
        if replaced is not None:
            self._running_by_sub[replaced.vm.subscription_id.lower()] -= 1
        self._running[op.vm.key] = op
        self._running_by_sub[sub] += 1
        heapq.heappush(self._finishing, (op.finish_real, next(self._sequence), op.op_id))
        self.peak_concurrent[sub] = max(self.peak_concurrent.get(sub, 0), self._running_by_sub[sub])
        self.peak_concurrent["*"] = max(self.peak_concurrent.get("*", 0), len(self._running))
        second = int(op.started_real - self._created_real)
        self.starts_per_second.setdefault(sub, Counter())[second] += 1
        self._by_vm.setdefault(op.vm.key, []).append(op.op_id)
        return op

    def start_install(
        self, vm: VirtualMachine, params: InstallParameters, request: Any, api_version: str
    ) -> Operation:
        with self.lock:
            op_id, _ = self._next()
            started = self.now()
            overhead = self._install_overhead(vm)
            outcome = simulate_install(
                list(vm.pending),
                params,
                reboot_pending_before=vm.reboot_pending,
                overhead=overhead,
                reboot_seconds=self.config.reboot_seconds,
                failure_rate=self.patch_failure_rate(),
                rng=self.patch_failure_rng(),
                activity_id=op_id,
                started=started,
            )
            real = self.clock()
            return self._register(
                Operation(
                    op_id,
                    "installPatches",
                    vm,
                    request,
                    api_version,
                    started,
                    real,
                    real + outcome.simulated_seconds / self.config.time_scale,
                    outcome.simulated_seconds,
                    outcome.result,
                    outcome,
                    goes_down=self.unhealthy_after_patch(),
                )
            )

    def _install_overhead(self, vm: VirtualMachine) -> float:
        """An installation's fixed overhead (simulated seconds), drawn per machine and per how many installations
        it has had here, not per the order operations arrive in: a machine that is slow to install stays slow
        whichever order a client starts the fleet in, and the same seed gives each machine the same durations."""
        installs = sum(1 for op_id in self._by_vm.get(vm.key, []) if self.operations[op_id].kind == "installPatches")
        return random.Random(f"overhead:{self.config.seed}:{vm.key}:{installs}").uniform(*self.config.operation_seconds)

    def start_assess(self, vm: VirtualMachine, request: Any, api_version: str) -> Operation:
        with self.lock:
            op_id, rng = self._next()
            started = self.now()
            seconds = rng.uniform(*self.config.operation_seconds)
            real = self.clock()
            finish = real + seconds / self.config.time_scale
            result = assessment_result(
                list(vm.pending),
                reboot_pending=vm.reboot_pending,
                activity_id=op_id,
                started=started,
                assessed_at=started + timedelta(seconds=finish - real),
            )
            return self._register(
                Operation(
                    op_id, "assessPatches", vm, request, api_version, started, real, finish, seconds, result
                )
            )

    def get(self, op_id: str) -> Operation | None:
        with self.lock:
            self.settle()
            return self.operations.get(op_id.lower())

    def patch_status(self, vm: VirtualMachine) -> dict[str, Any]:
        """VirtualMachinePatchStatus for the instance view, reflecting finished and running operations."""
        with self.lock:
            self.settle()
            now_real = self.clock()
            assessment = self._last_assessment.get(vm.key) or self._summary(
                vm,
                str(uuid.uuid5(uuid.NAMESPACE_URL, vm.key)),
                self._created - timedelta(hours=6),
                self._created - timedelta(hours=6) + timedelta(minutes=3),
            )
            status: dict[str, Any] = {"availablePatchSummary": dict(assessment)}
            running = self._running.get(vm.key)
            if running is not None and not running.done(now_real):
                progress = {
                    "status": "InProgress",
                    "startTime": iso_z(running.started),
                    "lastModifiedTime": iso_z(self.now()),
                    "error": None,
                }
                if running.kind == "assessPatches":
                    status["availablePatchSummary"] = {
                        **assessment,
                        **progress,
                        "assessmentActivityId": running.op_id,
                    }
                else:
                    status["lastPatchInstallationSummary"] = {
                        **progress,
                        "installationActivityId": running.op_id,
                        "maintenanceWindowExceeded": False,
                        "notSelectedPatchCount": 0,
                        "excludedPatchCount": 0,
                        "pendingPatchCount": 0,
                        "installedPatchCount": 0,
                        "failedPatchCount": 0,
                    }
            if "lastPatchInstallationSummary" not in status and vm.key in self._last_installation:
                status["lastPatchInstallationSummary"] = dict(self._last_installation[vm.key])
            when = iso_z(self._created)
            status["configurationStatuses"] = [
                {
                    "code": "PatchModeConfigurationState/Ready",
                    "level": "Info",
                    "displayStatus": "Status_PatchModeConfigurationState_Ready",
                    "time": when,
                },
                {
                    "code": "AssessmentModeConfigurationState/Ready",
                    "level": "Info",
                    "displayStatus": "Status_AssessmentModeConfigurationState_Ready",
                    "time": when,
                },
            ]
            return status

    def instance_view(self, vm: VirtualMachine) -> dict[str, Any]:
        """VirtualMachineInstanceView (shape of VirtualMachine_Get_InstanceView.json)."""
        created = vm.time_created.strftime("%Y-%m-%dT%H:%M:%S.%f") + "+00:00"
        power_display = {"running": "VM running", "deallocated": "VM deallocated", "stopped": "VM stopped"}
        view: dict[str, Any] = {}
        agent_status = {
            "code": "ProvisioningState/succeeded",
            "level": "Info",
            "displayStatus": "Ready",
            "message": "GuestAgent is running and processing the extensions.",
            "time": iso_offset(self.now()),
        }
        if not self.health.agent_ready(vm):
            agent_status = {
                "code": "ProvisioningState/Unavailable",
                "level": "Warning",
                "displayStatus": "Not Ready",
                "message": "VM Agent is unresponsive.",
                "time": iso_offset(self.now()),
            }
        if vm.power_state == "running":
            view.update(
                {
                    "computerName": vm.name[:15] if vm.os_type == "Windows" else vm.name,
                    "osName": vm.image.os_name,
                    "osVersion": vm.image.os_version,
                    "vmAgent": {
                        "vmAgentVersion": "2.7.41491.1176" if vm.os_type == "Windows" else "2.13.1.1",
                        "statuses": [agent_status],
                        "extensionHandlers": [],
                    },
                }
            )
        view["hyperVGeneration"] = "V2"
        view["disks"] = [
            {
                "name": f"{vm.name}_OsDisk_1",
                "statuses": [
                    {
                        "code": "ProvisioningState/succeeded",
                        "level": "Info",
                        "displayStatus": "Provisioning succeeded",
                        "time": created,
                    }
                ],
            }
        ]
        view["patchStatus"] = self.patch_status(vm)
        # VirtualMachineInstanceView.vmHealth: only with the Application Health extension, and only while running.
        vm_health = self.health.vm_health(vm) if vm.power_state == "running" else None
        if vm_health is not None:
            view["vmHealth"] = vm_health
        view["isVMInStandbyPool"] = False
        view["statuses"] = [
            {
                "code": "ProvisioningState/succeeded",
                "level": "Info",
                "displayStatus": "Provisioning succeeded",
                "time": created,
            },
            {
                "code": f"PowerState/{vm.power_state}",
                "level": "Info",
                "displayStatus": power_display[vm.power_state],
            },
        ]
        return view

    def vm_state(self, vm: VirtualMachine) -> dict[str, Any]:
        with self.lock:
            self.settle()
            now_real = self.clock()
            running = self._running.get(vm.key)
            return {
                "id": vm.id,
                "name": vm.name,
                "subscriptionId": vm.subscription_id,
                "resourceGroup": vm.resource_group,
                "location": vm.location,
                "tags": dict(vm.tags),
                "osType": vm.os_type,
                "osName": vm.image.os_name,
                "osVersion": vm.image.os_version,
                "powerState": vm.power_state,
                "rebootPending": vm.reboot_pending,
                "runningOperation": running.op_id if running is not None else None,
                "pendingPatches": [p.summary() for p in vm.pending],
                "installedPatches": [p.summary() for p in vm.installed],
                "operations": [self.operations[i].state(now_real) for i in self._by_vm.get(vm.key, [])],
            }
