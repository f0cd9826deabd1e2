"""States of a machine in a run, and how a run's status follows from its machines.

Machine state (ours) and operation status (Azure's) are different things: a machine is
`Completed` when Azure's operation finished, and its `status` then says how it went
(`Succeeded`, `CompletedWithWarnings`, `Failed`, `Unknown`). A finished operation is not a succeeded one.

    Queued ──claim──▶ Starting ──202──▶ Running ──200──▶ Completed
      ▲  │               │ 200 (sync result) ─────────────▶ Completed
      │  │ 409/429/5xx   │ 4xx, no params for OS, instance view unreadable after a crash ──▶ Failed
      └──┴───────────────┘             │ past maximumDuration + grace ──▶ TimedOut
      Queued ── VM not running (assessments only) ──▶ Skipped: recorded with the reason, not a failure
      Running ── poll refused (403) ──▶ OutcomeUnknown;  Starting, claim abandoned ──▶ OutcomeUnknown
      With a rollout's healthCheck (shared/runs/health_check.py), an installation that ended Succeeded or
      CompletedWithWarnings is read before it counts:
      Running ──200──▶ Verifying ── every signal passes ──▶ Completed
                           └── `within` ran out: a signal failed, or could not be read ──▶ Unhealthy
      Queued ── already unhealthy before patching ──▶ Skipped (errorCode UnhealthyBeforePatching)

`OutcomeUnknown` is neither success nor failure: Azure may have run (or still runs) the operation, but
PatchPilot cannot see how it ended. Its `errorCode` says why (`PollForbidden`, `OutcomeUnknown`), ARM's
error is kept in its details, and runs count it apart (`outcomes.unknown`); a rollout's `maxFailures`
never spends on it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

# An installation Azure ended `Failed` only because its maintenance window (maximumDuration) ran out, with patches
# still pending and none failed: "the window ran out", not a broken machine (Update Manager's troubleshooting guide,
# "maintenance window exceeded"). The step sets this errorCode (Azure's error kept in its details); runs count it
# as a warning, rollouts under failureOn "MaintenanceWindowExceeded" only.
WINDOW_EXCEEDED = "MaintenanceWindowExceeded"
UNHEALTHY_BEFORE = "UnhealthyBeforePatching"  # Skipped: a health check's baseline found the machine broken already


class MachineState(str, Enum):
    QUEUED = "Queued"
    STARTING = "Starting"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"
    SKIPPED = "Skipped"  # deliberately not attempted (an assessment of a VM that is not running)
    OUTCOME_UNKNOWN = "OutcomeUnknown"  # the operation may run in Azure, but its end cannot be seen from here
    VERIFYING = "Verifying"  # the installation ended; its health is being read (rollout healthCheck)
    UNHEALTHY = "Unhealthy"  # installed, but the machine did not come back healthy (or its health is unknown)


TERMINAL_STATES = frozenset(
    {MachineState.COMPLETED.value, MachineState.FAILED.value, MachineState.TIMED_OUT.value,
     MachineState.SKIPPED.value, MachineState.OUTCOME_UNKNOWN.value, MachineState.UNHEALTHY.value}
)


class RunStatus(str, Enum):
    ACCEPTED = "Accepted"
    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    COMPLETED_WITH_WARNINGS = "CompletedWithWarnings"
    FAILED = "Failed"
    HALTED = "Halted"  # a rollout spent its error budget: nothing new started
    CANCELED = "Canceled"


def machine_outcome(target: Mapping[str, Any]) -> str:
    """'succeeded', 'warnings', 'skipped', 'skippedUnhealthy', 'unknown', 'unhealthy', 'windowExceeded' or 'failed'
    for a machine in a terminal state."""
    if target.get("state") == MachineState.SKIPPED.value:
        # not patched because it was broken already: no failure of the patch, but not a clean run either
        return "skippedUnhealthy" if target.get("errorCode") == UNHEALTHY_BEFORE else "skipped"
    if target.get("state") == MachineState.OUTCOME_UNKNOWN.value:
        return "unknown"
    if target.get("state") == MachineState.UNHEALTHY.value:
        return "unhealthy"
    if target.get("state") != MachineState.COMPLETED.value:
        return "failed"
    status = str(target.get("status") or "")
    if status == "Failed" and target.get("errorCode") == WINDOW_EXCEEDED:
        return "windowExceeded"
    if status == "Succeeded" and not target.get("failedPatchCount"):
        return "succeeded"
    if status in ("Succeeded", "CompletedWithWarnings"):
        return "warnings"
    return "failed"


def summarize(targets: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts by state and outcome of these machines, and the run status they imply (summarize_counts)."""
    states: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for t in targets:
        states[str(t.get("state"))] += 1
        if t.get("state") in TERMINAL_STATES:
            outcomes[machine_outcome(t)] += 1
    return summarize_counts(states, outcomes)


def summarize_counts(states: Mapping[str, int], outcomes: Mapping[str, int]) -> dict[str, Any]:
    """The run status machine counts imply: `Failed` if any machine failed or came back unhealthy; else
    `CompletedWithWarnings` if any had warnings or an unknown outcome (nothing failed that we know of, but not
    everything is known to have succeeded); else `Succeeded`; `InProgress`/`Accepted` while any is unfinished. Returns
    {"status", "machineCount", "finished", "states": {state: n}, "outcomes": {outcome: n}}."""
    states, outcomes = Counter(states), Counter(outcomes)
    total = sum(states.values())
    finished = sum(states[s] for s in TERMINAL_STATES)
    if finished < total or total == 0:
        status = RunStatus.IN_PROGRESS if finished or states[MachineState.QUEUED.value] < total \
            else RunStatus.ACCEPTED
    elif outcomes["failed"] or outcomes["unhealthy"]:
        status = RunStatus.FAILED
    elif outcomes["warnings"] or outcomes["unknown"] or outcomes["windowExceeded"] or outcomes["skippedUnhealthy"]:
        status = RunStatus.COMPLETED_WITH_WARNINGS
    else:
        status = RunStatus.SUCCEEDED
    return {"status": status.value, "machineCount": total, "finished": finished,
            "states": {s: n for s, n in states.items() if n}, "outcomes": {o: n for o, n in outcomes.items() if n}}


def with_discovery(status: str, scopes: Iterable[Mapping[str, Any]], machine_count: int) -> str:
    """A run that lists scopes is unfinished until every scope is listed, and failed if one could not be.
    Listing nothing at all is a finished run (an empty subscription), not one waiting to start."""
    scopes = list(scopes)
    if not scopes:
        return status
    if any(not s.get("done") for s in scopes):
        return RunStatus.IN_PROGRESS.value
    if machine_count == 0:
        status = RunStatus.SUCCEEDED.value
    if status not in (RunStatus.ACCEPTED.value, RunStatus.IN_PROGRESS.value) and any(
            s.get("errorCode") for s in scopes):
        return RunStatus.FAILED.value
    return status


def with_rollout(status: str, run: Mapping[str, Any]) -> str:
    """A finished rollout that was canceled or halted says so, whatever its machines did."""
    if status in (RunStatus.ACCEPTED.value, RunStatus.IN_PROGRESS.value):
        return status
    if run.get("canceledAt"):
        return RunStatus.CANCELED.value
    if run.get("haltedReason"):
        return RunStatus.HALTED.value
    return status
