"""The machine-step hook of maintenance windows: a VM starts inside its window or not at all, and a VM
two windows catch at once is patched by one of them (registered in shared/composition.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from shared.core.clock import parse_iso, schedule_now
from shared.core.records import RunSpec
from shared.core.states import TERMINAL_STATES, machine_outcome
from shared.maintenance.limits import MIN_REMAINING, REBOOT_RESERVE
from shared.runs.machine_worker import MachineStep
from shared.validation.durations import format_duration, parse_duration


def within_window(step: MachineStep, spec: RunSpec, body: dict[str, Any] | None,
                  os_type: str) -> tuple[dict[str, Any] | None, str]:
    """(body with maximumDuration capped to what is left of the window, "") or (None, outcome) when
    the VM is skipped: the window is (nearly) over, or another window's run has the VM."""
    if not spec.configuration:
        return body, ""
    svc = step.svc
    now = schedule_now(svc.settings)  # the windows' own clock
    window_end = parse_iso(spec.window_end)
    left = window_end - now
    if left < MIN_REMAINING:  # a retry, throttling or a slow listing brought us here too late
        return None, step.skip("WindowClosed",
                               f"only {int(left.total_seconds() // 60)} minutes of the window were left when "
                               f"this VM's turn came; it was not started outside its window")
    run_id = step.run_id
    holder = svc.maintenance.lease(step.vm, run_id=run_id, configuration=spec.configuration, until=window_end,
                                   now=now)
    if holder is not None:
        theirs = svc.store.get_target(holder["runId"], step.vm.key)
        if theirs is not None and theirs["state"] in TERMINAL_STATES and machine_outcome(theirs) != "succeeded":
            holder = svc.maintenance.lease(step.vm, run_id=run_id, configuration=spec.configuration,
                                           until=window_end, now=now, take_over=holder["runId"])  # not patched
    if holder is not None:
        return None, step.skip("PatchedByOtherWindow",
                               f"maintenance configuration '{holder['configuration']}' (run {holder['runId']}) "
                               f"has this VM until {holder['until']}; it is patched there, once")
    if body is not None:
        allowed = timedelta(minutes=int((left - REBOOT_RESERVE).total_seconds() // 60))
        body = {**body, "maximumDuration": format_duration(min(parse_duration(body["maximumDuration"]), allowed))}
    return body, ""
