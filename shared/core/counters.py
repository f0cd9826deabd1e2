"""A run's machine counts, maintained as its machines change, so views and rollout decisions read a few
counter rows instead of every machine (storage: shared/storage/run_store.py, `~counts-NN` rows).

A machine adds 1 to each key `machine_counts` gives for its counted columns (COUNTED_COLUMNS); every
write that changes one of those columns moves the machine's keys in the same transaction, so the
stored counts always equal `count_rows` of the machines as stored. Keys (strings, so they travel as one
JSON column):

    state:<MachineState>                      every machine, by state
    outcome:<machine_outcome>                 finished machines, by outcome (shared.core.states)
    wave:<n>:state:<MachineState>             per rollout wave (0 before planning, or without a rollout)
    wave:<n>:admitted                         ... admitted by the rollout controller (any state)
    wave:<n>:waiting                          ... Queued and not admitted
    wave:<n>:failure:<kinds>                  ... finished with failure kinds (`failure_kinds`, joined by ",")
    admitted:state:<MachineState>             admitted machines, by state
    admitted:failure:<kinds>                  admitted machines, by failure kinds
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.core.states import TERMINAL_STATES, WINDOW_EXCEEDED, MachineState, machine_outcome, summarize_counts

# Every column `machine_counts` reads: a write that changes none of them leaves the counts as they are.
COUNTED_COLUMNS = ("state", "status", "failedPatchCount", "maintenanceWindowExceeded", "errorCode", "wave",
                   "admitted")
# The order failure kinds are tried in (a rollout's failureOn picks the first it names: rollouts/plan.py).
FAILURE_KINDS = ("Failed", "TimedOut", "Unhealthy", "CompletedWithWarnings", "FailedPatches",
                 "MaintenanceWindowExceeded")
OUTCOME_UNKNOWN_CODE = "OutcomeUnknown"  # shared.arm.patch_status.OUTCOME_UNKNOWN (core cannot import arm)


def failure_kinds(target: Mapping[str, Any]) -> tuple[str, ...]:
    """Every failure kind (FAILURE_KINDS, in that order) a finished machine matches; empty for one that
    cannot spend a rollout's error budget: Skipped, OutcomeUnknown (Azure may still be patching it), or
    unfinished. A rollout's failureOn picks the first kind it names (shared.rollouts.plan.failure_kind)."""
    state = target.get("state")
    if target.get("errorCode") == OUTCOME_UNKNOWN_CODE:
        return ()
    if state == MachineState.FAILED.value:
        return ("Failed",)
    if state == MachineState.TIMED_OUT.value:
        return ("TimedOut",)
    if state == MachineState.UNHEALTHY.value:  # installed as asked, but it did not come back healthy
        return ("Unhealthy",)
    if state != MachineState.COMPLETED.value:
        return ()
    status = str(target.get("status") or "")
    if status == "Failed" and target.get("errorCode") == WINDOW_EXCEEDED:  # the window ran out: not a failure
        return ("MaintenanceWindowExceeded",)
    kinds: list[str] = []
    if status in ("Failed", "Unknown"):
        kinds.append("Failed")
    if status == "CompletedWithWarnings":
        kinds.append("CompletedWithWarnings")
    if int(target.get("failedPatchCount") or 0) > 0:
        kinds.append("FailedPatches")
    if target.get("maintenanceWindowExceeded"):
        kinds.append("MaintenanceWindowExceeded")
    return tuple(kinds)


def first_failure_kind(kinds: Iterable[str], failure_on: Iterable[str]) -> str | None:
    """The kind a rollout counts a machine with `kinds` as (the first its failureOn names), or None."""
    wanted = set(failure_on)
    return next((k for k in kinds if k in wanted), None)


def machine_counts(target: Mapping[str, Any]) -> Counter[str]:
    """The counter keys one machine adds 1 to (see the module docstring), from its COUNTED_COLUMNS."""
    state = str(target.get("state"))
    wave = int(target.get("wave") or 0)
    admitted = bool(target.get("admitted"))
    keys = [f"state:{state}", f"wave:{wave}:state:{state}"]
    if state in TERMINAL_STATES:
        keys.append(f"outcome:{machine_outcome(target)}")
    kinds = ",".join(failure_kinds(target))
    if kinds:
        keys.append(f"wave:{wave}:failure:{kinds}")
    if admitted:
        keys += [f"wave:{wave}:admitted", f"admitted:state:{state}"]
        if kinds:
            keys.append(f"admitted:failure:{kinds}")
    elif state == MachineState.QUEUED.value:
        keys.append(f"wave:{wave}:waiting")
    return Counter(keys)


def count_rows(targets: Iterable[Mapping[str, Any]]) -> Counter[str]:
    """What the counters of these machines are: the sum of their `machine_counts`."""
    total: Counter[str] = Counter()
    for target in targets:
        total.update(machine_counts(target))
    return total


def counts_delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, int]:
    """How a machine's change from `before` to `after` columns moves the counters (non-zero keys only)."""
    delta = machine_counts(after)
    delta.subtract(machine_counts(before))
    return {k: n for k, n in delta.items() if n}


@dataclass(frozen=True)
class RunCounters:
    """A run's machine counts (keys as in the module docstring), read from its counter rows (or, for a
    run stored before counters existed, counted from its machines). Every figure is a machine count."""

    counts: Mapping[str, int] = field(default_factory=dict)

    def get(self, key: str) -> int:
        return int(self.counts.get(key, 0))

    def _under(self, prefix: str) -> dict[str, int]:
        return {k[len(prefix):]: int(n) for k, n in sorted(self.counts.items()) if k.startswith(prefix) and n}

    @property
    def states(self) -> dict[str, int]:
        return self._under("state:")

    @property
    def outcomes(self) -> dict[str, int]:
        return self._under("outcome:")

    @property
    def machine_count(self) -> int:
        return sum(self.states.values())

    @property
    def unfinished(self) -> int:
        return sum(n for s, n in self.states.items() if s not in TERMINAL_STATES)

    def summary(self) -> dict[str, Any]:
        """What shared.core.states.summarize gives for the machines counted."""
        return summarize_counts(self.states, self.outcomes)

    def waves(self) -> dict[int, dict[str, int]]:
        """Machines per wave, by state: {wave: {state: n}}, waves in order."""
        waves: dict[int, dict[str, int]] = {}
        for key, n in sorted(self.counts.items()):
            parts = key.split(":")
            if len(parts) == 4 and parts[0] == "wave" and parts[2] == "state" and n:
                waves.setdefault(int(parts[1]), {})[parts[3]] = int(n)
        return dict(sorted(waves.items()))

    def wave_total(self, wave: int) -> int:
        return sum(self._under(f"wave:{wave}:state:").values())

    def wave_unfinished(self, wave: int) -> int:
        return sum(n for s, n in self._under(f"wave:{wave}:state:").items() if s not in TERMINAL_STATES)

    def wave_admitted(self, wave: int) -> int:
        return self.get(f"wave:{wave}:admitted")

    def waiting(self, wave: int | None = None) -> int:
        """Machines Queued and not admitted (in `wave`, or in any)."""
        if wave is not None:
            return self.get(f"wave:{wave}:waiting")
        return sum(n for k, n in self.counts.items() if k.startswith("wave:") and k.endswith(":waiting"))

    @property
    def in_flight(self) -> int:
        """Admitted machines not yet finished."""
        return sum(n for s, n in self._under("admitted:state:").items() if s not in TERMINAL_STATES)

    def failures(self, failure_on: Iterable[str], *, wave: int | None = None) -> Counter[str]:
        """Finished machines that spend a rollout's error budget, by the kind it counts them as: admitted
        ones (wave None), or all of `wave`'s."""
        wanted = list(failure_on)
        prefix = "admitted:failure:" if wave is None else f"wave:{wave}:failure:"
        found: Counter[str] = Counter()
        for kinds, n in self._under(prefix).items():
            kind = first_failure_kind(kinds.split(","), wanted)
            if kind is not None:
                found[kind] += n
        return found
