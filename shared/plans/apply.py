"""Applying a plan: a run that installs the plan and nothing newer.

`POST /api/plans/{id}/apply` (apply_plan) refuses, in ARM's error shape and with nothing written:
- 404 `PlanNotFound`; 409 `PlanNotReady` (still planning) or `PlanFailed`;
- 409 `PlanExpired`: planned longer ago than PLAN_MAX_AGE_HOURS (default 24): plan again;
- 409 `WindowPassed`: its maintenance window has (nearly) closed;
- 409 `PlanOutdated`: a machine was assessed again since and a planned patch is no longer available (installed
  meanwhile, withdrawn or superseded); `error.details` names each machine and patch. Patches published since the
  plan are no reason to refuse: the run does not install them (below), the next plan does;
- 409 `WindowAlreadyOpened`: the configuration's window already has its run.
Otherwise it creates (once: a repeated apply answers the same run) an installPatches run of the plan's machines
with something to install, its rollout, and its window (`maintenanceConfiguration`, `windowStart`, `windowEnd`,
`notBefore`: the run is dispatched when the window opens, and shared/maintenance/window_guard.py keeps each start
inside it). For a maintenance configuration's plan the run *is* that window's run (the same idempotency key the
window timer uses), so the timer finds it instead of opening another.

At each machine's start `FollowPlan` (a before_start hook) replaces the request's selection by the machine's
planned patches (shared/plans/selection.py `pinned_body`: Windows by KB and maxPatchPublishDate, Linux by exact
package versions), and skips a machine whose predicted duration no longer fits what is left of the window
(`WouldNotFinish`, the code the plan gave it). One Table read per start (the machine's planned row).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from shared.core.clock import iso, parse_iso, utcnow
from shared.core.errors import ApiError
from shared.core.ids import MachineRef
from shared.core.records import NewRun, PlanRecord, RunRecord
from shared.core.settings import Settings
from shared.maintenance.limits import MIN_REMAINING, REBOOT_RESERVE
from shared.maintenance.windows import occurrence_key, window_fingerprint
from shared.plans.build import READ_PARALLELISM, SUCCEEDED
from shared.plans.schedule import WOULD_NOT_FINISH
from shared.plans.selection import PlannedPatch, pinned_body, planned_patches
from shared.runs.accept import AcceptDeps, accept, internal_key
from shared.runs.hooks import Decision, Proceed, Skip, StartContext
from shared.validation.resource_ids import parse_machine_id


class PlanMachines(Protocol):
    def get_machine(self, plan_id: str, key: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None: ...


class PlanReader(PlanMachines, Protocol):
    def get_plan(self, plan_id: str) -> PlanRecord | None: ...

    def update_plan(self, plan_id: str, changes: Mapping[str, Any], etag: str | None = None) -> None: ...

    def iter_machines(self, plan_id: str, *, patches: bool = True) -> Any: ...

    def machine_ids(self, plan_id: str) -> list[str]: ...


class Assessed(Protocol):
    def query_machines(self, subscription_id: str, resource_group: str | None = None, *, os_type: str | None = None,
                       seen_before: str | None = None, select: list[str] | None = None) -> list[dict[str, Any]]: ...

    def history_patches(self, vm: MachineRef, history_key: str) -> list[dict[str, Any]]: ...


class Occurrences(Protocol):
    def get_occurrence(self, config: str, start: datetime) -> dict[str, Any] | None: ...


class ApplyDeps(AcceptDeps, Protocol):
    @property
    def plans(self) -> PlanReader: ...

    @property
    def fleet(self) -> Any: ...

    @property
    def maintenance(self) -> Any: ...

    @property
    def settings(self) -> Settings: ...


def _patch_identity(p: PlannedPatch) -> tuple[str, str]:
    return (p.key, p.version)


def outdated_machines(plan: PlanRecord, entries: list[tuple[str, dict[str, Any], list[dict[str, Any]]]],
                      fleet: Assessed) -> list[dict[str, str]]:
    """Machines assessed again since the plan whose planned patches are not all still selected: ARM error details."""
    install = plan.json_column("parameters") or {}
    by_sub: dict[str, list[tuple[str, dict[str, Any], list[dict[str, Any]]]]] = defaultdict(list)
    for key, entry, patches in entries:
        if entry.get("action") == "Install":
            by_sub[key.split("|", 1)[0]].append((key, entry, patches))
    changed: list[tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]] = []
    for sub, group in by_sub.items():
        rows = {f"{sub}|{r['RowKey']}": r for r in fleet.query_machines(sub, select=["historyKey", "assessedAt"])}
        for key, entry, patches in group:
            row = rows.get(key) or {}
            if str(row.get("historyKey") or "") != entry["assessment"].get("historyKey"):
                changed.append((row, entry, patches))  # assessed since: compare (unchanged ones: the plan stands)

    def now_available(item: tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        row, entry, _ = item
        vm = parse_machine_id(entry["resourceId"], target="machines")
        return fleet.history_patches(vm, str(row["historyKey"])) if row.get("historyKey") else []

    with ThreadPoolExecutor(max_workers=READ_PARALLELISM) as pool:  # after a nightly assessment: every machine
        lists = list(pool.map(now_available, changed))
    details = []
    for (row, entry, patches), available in zip(changed, lists, strict=True):
        still = {_patch_identity(p) for p in planned_patches(available, install, entry["osType"]) or []}
        gone = [p for p in (PlannedPatch.from_json(x) for x in patches) if _patch_identity(p) not in still]
        if gone:
            names = ", ".join(f"{p.key}{' ' + p.version if p.version else ''}" for p in gone[:10])
            details.append({"code": "PlannedPatchesGone", "target": entry["resourceId"],
                            "message": f"assessed again at {row.get('assessedAt') or 'an unknown time'}: "
                                       f"{len(gone)} planned patch(es) no longer available ({names})"})
    return details


def apply_plan(plan_id: str, deps: ApplyDeps) -> tuple[RunRecord, bool]:
    """Start (or find) the run that installs this plan; (run, created). Raises ApiError (module doc)."""
    plan = deps.plans.get_plan(plan_id)
    if plan is None:
        raise ApiError(404, "PlanNotFound", f"no plan with id {plan_id!r}", target="planId")
    status = str(plan.get("status"))
    if status != SUCCEEDED:
        code = "PlanFailed" if status == "Failed" else "PlanNotReady"
        raise ApiError(409, code, f"the plan is {status}" + (f": {plan.get('errorMessage')}" if code == "PlanFailed"
                                                               else "; apply it once it has Succeeded"),
                       target="planId")
    key = _apply_key(plan)
    claim = deps.store.find_idempotency_claim(key)
    if claim is not None and (run := deps.store.get_run(claim["runId"])) is not None:
        if run.get("planId") != plan_id:
            raise _taken(plan, run)
        if plan.get("appliedRunId") != run.run_id:  # an apply that stopped before saying so
            deps.plans.update_plan(plan_id, {"appliedRunId": run.run_id, "appliedAt": iso(utcnow())})
        return run, False  # applied before: the same run
    now = utcnow()
    planned_at = parse_iso(str(plan.get("plannedAt") or plan["createdAt"]))
    max_age = timedelta(hours=deps.settings.plans.max_age_hours)
    if now - planned_at > max_age:
        raise ApiError(409, "PlanExpired", f"the plan was made at {iso(planned_at)}, more than "
                       f"{deps.settings.plans.max_age_hours} h ago (PLAN_MAX_AGE_HOURS): POST /api/plans again to see "
                       "what would be installed now", target="planId")
    window = plan.json_column("window")
    if window and parse_iso(window["end"]) - max(now, parse_iso(window["start"])) < MIN_REMAINING:
        raise ApiError(409, "WindowPassed", f"the plan's maintenance window closes at {window['end']}; too little "
                       "of it is left to start anything: plan the next window", target="planId")
    configuration = str(plan.get("maintenanceConfiguration") or "")
    if configuration and window:
        occurrence = deps.maintenance.get_occurrence(configuration, parse_iso(window["start"]))
        if occurrence is not None and occurrence.get("runId"):
            raise ApiError(409, "WindowAlreadyOpened", f"the window of {configuration!r} at {window['start']} already "
                           f"has its run {occurrence['runId']}, which installs what the configuration selects",
                           target="planId")
    entries = list(deps.plans.iter_machines(plan_id))
    details = outdated_machines(plan, entries, deps.fleet)
    if details:
        raise ApiError(409, "PlanOutdated", f"{len(details)} machine(s) were assessed again since the plan and some "
                       "planned patches are gone: plan again", target="planId", details=details)
    # The plan's machines with something to install, in the plan's request order (its timeline's tie order)
    by_key = {key: entry for key, entry, _ in entries if entry.get("action") == "Install"}
    order = [vm for vm in (parse_machine_id(rid, target="machines") for rid in deps.plans.machine_ids(plan_id))
             if vm.key in by_key]
    if not order:
        raise ApiError(409, "NothingToInstall", "the plan installs nothing on any of its machines", target="planId")
    machines = tuple(order)
    extra: list[tuple[str, Any]] = [("planId", plan_id)]
    if plan.get("rollout"):
        extra.append(("rollout", json.dumps(frozen_waves(plan.json_column("rollout"), machines, by_key),
                                            separators=(",", ":"))))
    if window:
        extra += [("maintenanceConfiguration", configuration or f"plan-{plan_id}"),
                  ("windowStart", window["start"]), ("windowEnd", window["end"]), ("notBefore", window["start"])]
    parameters = plan.json_column("parameters") or {}
    new = NewRun("installPatches", parameters, _fingerprint(plan), machines,
                 origin="maintenance" if configuration else "plan", extra=tuple(extra))
    run, created = accept(new, key, deps)
    if run.get("planId") != plan_id:  # the window's timer (or another plan of the window) got the key first
        raise _taken(plan, run)
    deps.plans.update_plan(plan_id, {"appliedRunId": run.run_id, "appliedAt": iso(now)})
    return run, created


def _taken(plan: PlanRecord, run: RunRecord) -> ApiError:
    other = f"plan {run['planId']}" if run.get("planId") else "the maintenance window timer"
    return ApiError(409, "WindowAlreadyOpened", f"this plan's window already has its run {run.run_id}, started by "
                    f"{other}: it installs what that one selected, not this plan", target="planId")


def frozen_waves(rollout: dict[str, Any], machines: tuple[Any, ...], entries: Mapping[str, dict[str, Any]]
                 ) -> dict[str, Any]:
    """The plan's rollout with its wave assignment frozen: each wave names the machines the plan put in it (a size
    or selector would pick again, among fewer machines, and the run's canary would not be the plan's). A wave the
    plan left empty is dropped."""
    waves = rollout.get("waves") or []
    if not waves:
        return rollout
    frozen = []
    for index, wave in enumerate(waves):
        members = [vm.key for vm in machines if entries[vm.key].get("wave", 0) == index]  # as parse_rollout keeps them
        if members:
            frozen.append({**({"name": wave["name"]} if wave.get("name") else {}), "machines": members})
    return {**rollout, "waves": frozen}


def _apply_key(plan: PlanRecord) -> str:
    """The idempotency key of the plan's run: a configuration's window key (the timer's), else the plan's own."""
    window = plan.json_column("window")
    configuration = str(plan.get("maintenanceConfiguration") or "")
    if configuration and window:
        return occurrence_key(configuration, parse_iso(window["start"]))
    return internal_key(f"plan|{plan.plan_id}")


def _fingerprint(plan: PlanRecord) -> str:
    window = plan.json_column("window")
    configuration = str(plan.get("maintenanceConfiguration") or "")
    if configuration and window:  # what the window timer's run is (shared/maintenance/windows.py window_run)
        return window_fingerprint(configuration, parse_iso(window["start"]))
    return hashlib.sha256(json.dumps(["plan", plan.plan_id]).encode()).hexdigest()


@dataclass(frozen=True)
class FollowPlan:
    """The before_start hook of runs that apply a plan (registered in shared/composition.py, after the window's)."""

    plans: PlanMachines
    now: Callable[[], datetime]

    def __call__(self, ctx: StartContext) -> Decision:
        if not ctx.spec.plan_id or ctx.body is None:
            return Proceed(ctx.body)
        found = self.plans.get_machine(ctx.spec.plan_id, ctx.machine.key)
        if found is None:
            return Skip("NotInPlan", f"plan {ctx.spec.plan_id} has no entry for this machine")
        entry, raw = found
        seconds = float((entry.get("prediction") or {}).get("seconds") or 0)
        # Not when an earlier try claimed it: Azure may be installing already, and the step settles that first
        if ctx.spec.window_end and seconds and not ctx.first_claimed_at:
            # what the window's run gives Azure: what is left, less the reboot reserve (window_guard.py)
            left = (parse_iso(ctx.spec.window_end) - self.now() - REBOOT_RESERVE).total_seconds()
            if seconds > left:
                return Skip(WOULD_NOT_FINISH, f"predicted to take {round(seconds / 60)} min "
                            f"({(entry.get('prediction') or {}).get('basis')}), and only {max(0, round(left / 60))} "
                            f"min of the maintenance window are left")
        body = pinned_body(ctx.body, [PlannedPatch.from_json(p) for p in raw], ctx.os_type or entry.get("osType", ""))
        if body is None:
            return Skip("NothingToInstall", "the plan found nothing to install on this machine")
        return Proceed(body)


def planned_seconds(plans: PlanReader, plan_id: str) -> dict[str, float]:
    """{machine key: the plan's predicted seconds}: a planned run starts its machines in the plan's order."""
    return {key: float((entry.get("prediction") or {}).get("seconds") or 0)
            for key, entry, _ in plans.iter_machines(plan_id, patches=False)}
