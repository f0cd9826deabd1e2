"""The machine-step hook of maintenance windows: a VM starts inside its window or not at all, and a VM
two windows catch at once is patched by one of them (registered in shared/composition.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from shared.core.clock import parse_iso
from shared.core.ids import MachineRef
from shared.core.records import MachineRecord
from shared.core.states import TERMINAL_STATES, machine_outcome
from shared.maintenance.limits import MIN_REMAINING, REBOOT_RESERVE
from shared.runs.hooks import Decision, Fits, Proceed, Skip, StartContext, WaitContext
from shared.validation.durations import format_duration, parse_duration


class MachineLeases(Protocol):
    """Which window's run has a machine (shared/storage/maintenance_store.py `MaintenanceStore` is one)."""

    def lease(self, vm: MachineRef, *, run_id: str, configuration: str, until: datetime, now: datetime,
              take_over: str | None = None) -> dict[str, Any] | None: ...


class TargetReader(Protocol):
    def get_target(self, run_id: str, key: str) -> MachineRecord | None: ...


@dataclass(frozen=True)
class WithinWindow:
    """The before_start hook of maintenance windows. `now`: the windows' own clock (core.clock.schedule_now)."""

    leases: MachineLeases
    targets: TargetReader
    now: Callable[[], datetime]

    def wait(self, ctx: WaitContext) -> Skip | Fits | None:
        """The before_wait hook: a VM of a window's run that must wait (a 429's Retry-After of up to 20 minutes, a
        conflict while another operation or a host update holds it, the ARM budget) waits only while it can still
        start inside its window; otherwise it ends Skipped `WindowClosed` now, not Failed later. Inside the window
        the window bounds the waiting, so 409s are retried until it closes, not a fixed number of times."""
        spec = ctx.spec
        if not spec.configuration:
            return None
        window_end = parse_iso(spec.window_end)
        resume_at = self.now() + timedelta(seconds=ctx.seconds)
        if window_end - resume_at < MIN_REMAINING:
            return Skip("WindowClosed",
                        f"the next try would be in {ctx.seconds} s ({ctx.reason}); the maintenance window closes at "
                        f"{spec.window_end}, too soon after that to start this VM inside it")
        return Fits()

    def __call__(self, ctx: StartContext) -> Decision:
        """Proceed with maximumDuration capped to what is left of the window, or Skip: the window is (nearly)
        over, or another window's run has the VM."""
        spec = ctx.spec
        if not spec.configuration:
            return Proceed(ctx.body)
        now: datetime = self.now()
        window_end = parse_iso(spec.window_end)
        left = window_end - now
        if left < MIN_REMAINING:  # a retry, throttling or a slow listing brought us here too late
            return Skip("WindowClosed",
                        f"only {int(left.total_seconds() // 60)} minutes of the window were left when "
                        f"this VM's turn came; it was not started outside its window")
        vm, run_id = ctx.machine, ctx.run_id
        ctx.confirm()  # a lease is a write of its own: not for a machine whose row moved on (a carried start's)
        holder = self.leases.lease(vm, run_id=run_id, configuration=spec.configuration, until=window_end, now=now)
        if holder is not None:
            theirs = self.targets.get_target(holder["runId"], vm.key)
            if theirs is not None and theirs["state"] in TERMINAL_STATES and machine_outcome(theirs) != "succeeded":
                holder = self.leases.lease(vm, run_id=run_id, configuration=spec.configuration,
                                           until=window_end, now=now, take_over=holder["runId"])  # not patched
        if holder is not None:
            return Skip("PatchedByOtherWindow",
                        f"maintenance configuration '{holder['configuration']}' (run {holder['runId']}) "
                        f"has this VM until {holder['until']}; it is patched there, once")
        body = ctx.body
        if body is not None:
            allowed = timedelta(minutes=int((left - REBOOT_RESERVE).total_seconds() // 60))
            body = {**body, "maximumDuration": format_duration(min(parse_duration(body["maximumDuration"]),
                                                                   allowed))}
        return Proceed(body)
