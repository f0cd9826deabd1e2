"""What the API shows of runs and machines (Table entities → JSON)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from shared.arm.errors import stored_error
from shared.core.counters import RunCounters
from shared.core.ids import machine_kind_of
from shared.core.records import RunRecord
from shared.core.states import summarize, with_discovery, with_rollout
from shared.runs.accept import is_internal_key
from shared.runs.dispatch import undispatched_targets
from shared.runs.ports import RunRows

# A run of more machines than this shows counts only (from its counter rows, whatever its size); its machines
# are paged (GET /api/runs/{id}/machines).
INLINE_MACHINES = 1000
MACHINE_FIELDS = (
    "state", "status", "installationActivityId", "rebootStatus", "maintenanceWindowExceeded",
    "installedPatchCount", "failedPatchCount", "pendingPatchCount", "excludedPatchCount", "notSelectedPatchCount",
    "startDateTime", "osType", "assessmentActivityId", "rebootPending", "criticalAndSecurityPatchCount",
    "otherPatchCount", "agentStatus", "wave", "operationStartedAt", "completedAt", "updatedAt", "nextActionAt",
)


def machine_view(target: Mapping[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = {"id": target["resourceId"], "machineKind": machine_kind_of(str(target["resourceId"]))}
    for name in MACHINE_FIELDS:
        if target.get(name) not in (None, ""):
            view[name] = target[name]
    view["error"] = stored_error(target)  # ARM's shape: code, message, and details/innererror when ARM gave them
    finished = ("Completed", "Failed", "TimedOut", "OutcomeUnknown", "Unhealthy", "Verifying")
    if target.get("lastRetryReason") and target.get("state") not in finished:
        view["lastRetryReason"] = target["lastRetryReason"]
    if target.get("notSelectedByClassification"):  # e.g. {"Other": 12}: what the classifications left out
        view["notSelectedByClassification"] = json.loads(target["notSelectedByClassification"])
    if (health := health_view(target)) is not None:
        view["health"] = health
    view["armCalls"] = json.loads(target.get("armCalls") or "[]")
    return view


def health_view(target: Mapping[str, Any]) -> dict[str, Any] | None:
    """A machine's health checks (rollout healthCheck): `status` (Verifying, Healthy, Unhealthy, HealthUnknown,
    UnhealthyBeforePatching), `lastRound` (the last round's verdict: Healthy, Unhealthy, HealthUnknown), the signals
    that failed, the last round's readings after the installation and the baseline's before it ({signal, verdict,
    observed, at, code}), the deadline while it is Verifying. None for a machine of a run without health checks."""
    if not any(target.get(k) for k in ("health", "healthBaseline", "healthChecks", "healthDeadline")):
        return None
    view: dict[str, Any] = {}
    if target.get("health"):
        view["status"] = target["health"]
    if target.get("lastVerdict"):
        view["lastRound"] = target["lastVerdict"]
    if target.get("unhealthySignals"):
        view["failedSignals"] = str(target["unhealthySignals"]).split(",")
    for column, name in (("healthChecks", "after"), ("healthBaseline", "before")):
        if target.get(column):
            view[name] = json.loads(target[column])
    if target.get("operationEndedAt"):
        view["since"] = target["operationEndedAt"]  # when the installation's result was seen: `after` counts from it
    if target.get("state") == "Verifying" and target.get("healthDeadline"):
        view["deadline"] = target["healthDeadline"]
    if target.get("healthReads"):
        view["reads"] = int(target["healthReads"])
    return view


def scope_view(row: Mapping[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = {"scope": row["scope"], "listed": int(row.get("listed") or 0), "done": bool(row.get("done"))}
    if row.get("errorCode"):
        view["error"] = stored_error(row)  # ARM's shape, with ARM's details when it gave them
    elif row.get("lastRetryReason") and not row.get("done"):
        view["lastRetryReason"] = row["lastRetryReason"]
    return view


def rollout_view(run: RunRecord) -> dict[str, Any]:
    view: dict[str, Any] = {**(run.rollout or {}), "currentWave": run.get("currentWave"),
                            "waveCount": run.get("waveCount")}
    if run.get("soakUntil"):
        view["soakUntil"] = run["soakUntil"]
    if run.get("haltedReason"):
        view["halted"] = {"reason": run["haltedReason"], "at": run.get("haltedAt"),
                          "machines": json.loads(run.get("haltedMachines") or "[]")}
        if run.get("haltedDetails"):  # each machine's failure kind, and the signals of an unhealthy one
            view["halted"]["details"] = json.loads(run["haltedDetails"])
    if run.get("canceledAt"):
        view["canceledAt"] = run["canceledAt"]
        if run.get("canceledReason"):
            view["canceledReason"] = run["canceledReason"]
    if run.get("preHookAt"):
        # Status and latency only, never the hook's body (runs before this change stored one as preHookAnswer).
        view["preHook"] = {"at": run["preHookAt"], "status": run.get("preHookStatus"),
                           "latencyMs": run.get("preHookLatencyMs")}
    if run.get("pinnedLinuxCount"):
        view["pinnedLinuxPackages"] = int(run["pinnedLinuxCount"])  # the versions: in each later Linux request
    return view


def run_view(run: RunRecord, targets: Sequence[Mapping[str, Any]] | None,
             scopes: Sequence[Mapping[str, Any]] | None = None, *, inline: bool = True,
             counters: RunCounters | None = None) -> dict[str, Any]:
    """The run as the API shows it. Its status and counts come from `counters` when given (a big run),
    else from `targets` (shown as `machines` when `inline`); with neither, the status stored on the run."""
    operation = run.get("operation", "installPatches")
    view: dict[str, Any] = {
        "id": run.run_id,
        "operation": operation,
        "origin": run.get("origin", "api"),
        "createdAt": run.get("createdAt"),
        "machineCount": run.get("machineCount"),
    }
    if operation == "installPatches":
        view["installPatches"] = run.parameters
    if run.get("maintenanceConfiguration"):
        view["maintenanceWindow"] = {"configuration": run["maintenanceConfiguration"],
                                     "startDateTime": run.get("windowStart"), "endDateTime": run.get("windowEnd")}
    if run.get("planId"):  # the plan it applies (POST /api/plans/{id}/apply): each machine installs its planned patches
        view["planId"] = run["planId"]
    if targets is not None or counters is not None:
        summary = counters.summary() if counters is not None else summarize(targets or [])
        status = with_rollout(with_discovery(summary["status"], scopes or [], summary["machineCount"]), run)
        view.update(status=status, states=summary["states"], outcomes=summary["outcomes"])
        if scopes is not None:
            view["machineCount"] = summary["machineCount"]
            view["scopes"] = [scope_view(s) for s in scopes]
        if inline and targets is not None:
            view["machines"] = [machine_view(t) for t in targets]
    else:
        view["status"] = run.get("status")
    if run.get("rollout"):
        view["rollout"] = rollout_view(run)
    if run.get("completedAt"):
        view["completedAt"] = run["completedAt"]
    if run.get("idempotencyKey") and not is_internal_key(run["idempotencyKey"]):  # the caller's header only
        view["idempotencyKey"] = run["idempotencyKey"]
    return view


def load_run_view(run: RunRecord, deps: RunRows) -> dict[str, Any]:
    """The full view of a stored run: its machines (from the request until dispatch made their rows)
    and, for a run that discovers machines, its scopes. A dispatched run of more than INLINE_MACHINES
    (or one that discovers its machines: read first to know) shows the counts of its counter rows (one
    query); a smaller one reads its machines to show them, and counts those rows (so the two agree)."""
    run_id = run.run_id
    scopes = deps.store.list_scopes(run_id) if run.get("scopeCount") else None
    if not run.get("dispatchedAt"):
        targets = undispatched_targets(run_id, deps)
        inline = int(run.get("machineCount") or 0) <= INLINE_MACHINES and len(targets) <= INLINE_MACHINES
        return run_view(run, targets, scopes, inline=inline)
    if run.get("scopeCount") or int(run.get("machineCount") or 0) > INLINE_MACHINES:  # how many is not known
        counters = deps.store.run_counters(run_id, counted=run.counted)  # or too many to show
        if counters.machine_count > INLINE_MACHINES:  # a big run: counts only, its machines paged
            return run_view(run, None, scopes, inline=False, counters=counters)
    return run_view(run, deps.store.list_targets(run_id), scopes)


def machines_page(run: RunRecord, deps: RunRows, top: int, state: str | None,
                  after: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a run's machines (key order) and the cursor of the next; before dispatch has made
    their rows, from the request."""
    if run.get("dispatchedAt"):
        page, cursor = deps.store.page_targets(run.run_id, top, state=state, after=after)
        return [machine_view(t) for t in page], cursor
    rows = sorted((t for t in undispatched_targets(run.run_id, deps)
                   if (state is None or t.get("state") == state) and (after is None or t.key > after)),
                  key=lambda t: t.key)
    return [machine_view(t) for t in rows[:top]], (rows[top - 1].key if len(rows) > top else None)
