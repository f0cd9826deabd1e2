"""Planning: from a plan request to every machine's patches, predicted duration and slot, off the HTTP path.

`POST /api/plans` stores the request (accept_plan) and queues one plan message; the worker (build_plan) reads,
per subscription, the machines' latest assessments (one partition query: shared/storage/fleet_store.py) and
duration histories (one partition query), then each assessed machine's patch list (one query per machine, 8 in
parallel), and writes the planned machines in transactions of 100 before the plan row turns `Succeeded`. A
redelivered message plans again and rewrites the same rows; a plan that is no longer `Planning` is left alone.
At 10,000 machines that is about 10,000 reads and 100 writes in one invocation, inside functionTimeout.

What a machine's entry says (the shape `GET /api/plans/{id}/machines` serves):
    {"resourceId", "osType", "wave",
     "action": Install | NothingToInstall | NotAssessed | NoParametersForOsType | NoPatchList (an Arc machine:
               HybridCompute's assessment counts patches per classification without listing them, so a plan cannot
               pin them; it is left out of the applied run),
     "assessment": {"status": Current | Stale | Missing, "assessedAt", "ageHours", "historyKey"},
     "patchCount", "rebootExpected", "prediction": {"seconds", "basis", "samples", "error"},
     "predictedStart", "predictedFinish", "outside": {"code", "message"} | absent}
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, Protocol

from shared.core.clock import iso, parse_iso, utcnow
from shared.core.ids import MachineRef
from shared.core.records import PlanRecord
from shared.core.settings import Settings
from shared.maintenance.limits import MIN_REMAINING
from shared.plans.schedule import Item, Limits, Timeline, Window, schedule
from shared.plans.selection import PlannedPatch, planned_patches, reboot_expected
from shared.rollouts.plan import assign_waves
from shared.runs.budget import Bucket
from shared.runs.install_history import DurationRows, read_histories
from shared.runs.operation_kinds import INSTALL
from shared.runs.predictions import PeerModel, Prediction, predict
from shared.validation.durations import format_duration, parse_duration
from shared.validation.resource_ids import parse_machine_id
from shared.validation.rollout import resolve

log = logging.getLogger(__name__)
READ_PARALLELISM = 8
MAX_PATCH_TOTALS = 200  # patches listed in the plan's totals (the CSV and machine pages list every machine's)
MAX_OUTSIDE_LISTED = 100  # machines outside the window named in the summary (counts cover all; pages show each)
MAX_VERSIONS_LISTED = 10  # Linux versions of one package listed in its totals row
PLANNING, SUCCEEDED, FAILED = "Planning", "Succeeded", "Failed"


class PlanRows(Protocol):
    def get_plan(self, plan_id: str) -> PlanRecord | None: ...

    def update_plan(self, plan_id: str, changes: Mapping[str, Any], etag: str | None = None) -> None: ...

    def machine_ids(self, plan_id: str) -> list[str]: ...

    def save_machines(self, plan_id: str, machines: Any) -> None: ...


class Snapshots(Protocol):
    def query_machines(self, subscription_id: str, resource_group: str | None = None, *, os_type: str | None = None,
                       seen_before: str | None = None, select: list[str] | None = None) -> list[dict[str, Any]]: ...

    def history_patches(self, vm: MachineRef, history_key: str) -> list[dict[str, Any]]: ...


class BudgetState(Protocol):
    @property
    def buckets(self) -> dict[str, Bucket]: ...

    def peek(self, subscription: str) -> dict[str, float]: ...


class PlanDeps(Protocol):
    """What planning uses (shared/composition.py Components is one)."""

    @property
    def plans(self) -> PlanRows: ...

    @property
    def fleet(self) -> Snapshots: ...

    @property
    def durations(self) -> DurationRows: ...

    @property
    def pacer(self) -> BudgetState: ...

    @property
    def settings(self) -> Settings: ...


def _snapshot_key(subscription: str, row_key: str) -> str:
    return f"{subscription}|{row_key}"


def _assessment(row: Mapping[str, Any] | None, now: datetime, freshness_hours: int) -> dict[str, Any]:
    if not row or not row.get("assessedAt") or not row.get("historyKey"):
        return {"status": "Missing"}
    at = parse_iso(str(row["assessedAt"]))
    age = (now - at).total_seconds() / 3600
    return {"status": "Current" if age <= freshness_hours else "Stale", "assessedAt": str(row["assessedAt"]),
            "ageHours": round(age, 1), "historyKey": str(row["historyKey"])}


def plan_machine(vm: MachineRef, row: Mapping[str, Any] | None, available: list[dict[str, Any]] | None,
                 install: Mapping[str, Any], *, now: datetime, freshness_hours: int
                 ) -> tuple[dict[str, Any], list[PlannedPatch]]:
    """One machine's entry without its prediction and slot, and the patches the request would install."""
    os_type = str((row or {}).get("osType") or "")
    assessment = _assessment(row, now, freshness_hours)
    entry: dict[str, Any] = {"resourceId": vm.resource_id, "osType": os_type, "assessment": assessment}
    if assessment["status"] == "Missing" or available is None:
        entry.update(action="NotAssessed", patchCount=0, rebootExpected=False)
        return entry, []
    if vm.is_hybrid and not available and json.loads(str((row or {}).get("classificationCounts") or "{}")):
        # HybridCompute's assessPatches reports counts per classification, no patch list: nothing to pin
        entry.update(action="NoPatchList", patchCount=0, rebootExpected=False)
        return entry, []
    patches = planned_patches(available, install, os_type)
    if patches is None:
        entry.update(action="NoParametersForOsType", patchCount=0, rebootExpected=False)
        return entry, []
    reboot = reboot_expected(patches, install, reboot_pending=bool((row or {}).get("rebootPending")))
    entry.update(action="Install" if patches else "NothingToInstall", patchCount=len(patches),
                 rebootExpected=reboot and bool(patches))
    return entry, patches


def build_plan(plan_id: str, deps: PlanDeps) -> str:
    """Plan the stored request; returns the plan's status. Safe to run twice."""
    plan = deps.plans.get_plan(plan_id)
    if plan is None or plan.get("status") != PLANNING:
        return "" if plan is None else str(plan.get("status"))
    try:
        return _build(plan, deps)
    except (ValueError, KeyError, TypeError) as exc:  # the request cannot be planned: the plan says why, at once
        # (a storage or network failure propagates instead: the queue delivers the message again)
        log.exception("plan %s failed", plan_id)
        deps.plans.update_plan(plan_id, {"status": FAILED, "errorCode": "PlanningFailed",
                                         "errorMessage": f"{type(exc).__name__}: {exc}"[:1000]})
        return FAILED


def _build(plan: PlanRecord, deps: PlanDeps) -> str:
    settings = deps.settings
    now = utcnow()
    install: dict[str, Any] = plan.json_column("parameters") or {}
    rollout: dict[str, Any] | None = plan.json_column("rollout")
    window_raw = plan.json_column("window")
    window = Window(parse_iso(window_raw["start"]), parse_iso(window_raw["end"])) if window_raw else None
    vms = [parse_machine_id(rid, target="machines") for rid in deps.plans.machine_ids(plan.plan_id)]
    by_sub: dict[str, list[MachineRef]] = defaultdict(list)
    for vm in vms:
        by_sub[vm.subscription_id].append(vm)
    rows: dict[str, dict[str, Any]] = {}
    for sub in by_sub:
        rows.update((_snapshot_key(sub, r["RowKey"]), r) for r in deps.fleet.query_machines(sub))
    histories = read_histories(by_sub, deps)  # the same reader dispatch predicts with
    peers = PeerModel.from_histories(histories.values())

    def read(vm: MachineRef) -> tuple[MachineRef, list[dict[str, Any]] | None]:
        row = rows.get(vm.key)
        if not row or not row.get("historyKey") or not row.get("assessedAt"):
            return vm, None
        return vm, deps.fleet.history_patches(vm, str(row["historyKey"]))

    with ThreadPoolExecutor(max_workers=READ_PARALLELISM) as pool:
        available = dict(pool.map(read, vms))
    entries: dict[str, dict[str, Any]] = {}
    patches: dict[str, list[PlannedPatch]] = {}
    predictions: dict[str, Prediction] = {}
    for vm in vms:
        entry, planned = plan_machine(vm, rows.get(vm.key), available[vm], install, now=now,
                                      freshness_hours=settings.assessments.freshness_hours)
        prediction = predict(histories.get(vm.key), peers, os_type=entry["osType"], patches=len(planned),
                             rebooted=entry["rebootExpected"], default_seconds=settings.plans.default_install_seconds)
        entry["prediction"] = prediction.to_json()
        entries[vm.key], patches[vm.key], predictions[vm.key] = entry, planned, prediction
    installing = [vm for vm in vms if entries[vm.key]["action"] == "Install"]
    # The run that applies the plan holds exactly these machines, in this order (shared/plans/apply.py), and its
    # waves are this assignment, frozen: the plan's canary is the run's.
    waves = assign_waves([vm.key for vm in installing], (rollout or {}).get("waves") or [])
    begin = max(now, window.start) if window else now
    timeline = schedule(
        [Item(vm.key, vm.subscription_id, waves.get(vm.key, 0), predictions[vm.key].seconds) for vm in installing],
        begin=begin, buckets=deps.pacer.buckets, reserved={s: deps.pacer.peek(s) for s in
                                                           {vm.subscription_id for vm in installing}},
        limits=_limits(rollout, len(installing), install), longest_first=settings.plans.longest_first,
        reads_per_start=INSTALL.reads_per_start, window=window, min_remaining=MIN_REMAINING)
    for vm in vms:
        entry = entries[vm.key]
        if vm.key in waves:
            entry["wave"] = waves[vm.key]
        slot = timeline.slots.get(vm.key)
        if slot is not None:
            entry["predictedStart"], entry["predictedFinish"] = iso(slot.start), iso(slot.finish)
            if slot.outside:
                entry["outside"] = {"code": slot.outside, "message": slot.reason}
    deps.plans.save_machines(plan.plan_id, ((vm.key, entries[vm.key], [p.to_json() for p in patches[vm.key]])
                                            for vm in vms))
    summary = plan_summary(entries, patches, timeline, window=window, rollout=rollout,
                           longest_first=settings.plans.longest_first, begin=begin)
    deps.plans.update_plan(plan.plan_id, {"status": SUCCEEDED, "plannedAt": iso(now),
                                          "summary": summary})
    log.info("plan %s: %d machines, %d installing", plan.plan_id, len(vms), len(installing))
    return SUCCEEDED


def _limits(rollout: Mapping[str, Any] | None, total: int, install: Mapping[str, Any]) -> Limits:
    maximum = parse_duration(install["maximumDuration"]).total_seconds() if install.get("maximumDuration") else None
    if not rollout:
        return Limits(maximum_seconds=maximum)
    health = rollout.get("healthCheck") or {}
    after = parse_duration(health["after"]).total_seconds() if health.get("after") else (300.0 if health else 0.0)
    soak = parse_duration(rollout["soakTime"]).total_seconds() if rollout.get("soakTime") else 0.0
    return Limits(max_concurrency=resolve(rollout["maxConcurrency"], total) if rollout.get("maxConcurrency") else None,
                  max_per_subscription=(resolve(rollout["maxConcurrencyPerSubscription"], total)
                                        if rollout.get("maxConcurrencyPerSubscription") else None),
                  soak_seconds=soak, verify_seconds=after, maximum_seconds=maximum)


def plan_summary(entries: Mapping[str, dict[str, Any]], patches: Mapping[str, list[PlannedPatch]],
                 timeline: Timeline, *, window: Window | None, rollout: Mapping[str, Any] | None,
                 longest_first: bool, begin: datetime) -> dict[str, Any]:
    """The plan's totals (by classification, by patch), waves, subscriptions, makespan and window fit."""
    actions = Counter(e["action"] for e in entries.values())
    assessments = Counter(e["assessment"]["status"] for e in entries.values())
    installing = [k for k, e in entries.items() if e["action"] == "Install"]
    by_class: dict[str, dict[str, Any]] = {}
    by_patch: dict[tuple[str, str], dict[str, Any]] = {}
    for key in installing:
        for p in patches[key]:
            cls = by_class.setdefault(p.classification, {"patches": set(), "installs": 0, "machines": set()})
            cls["patches"].add(p.key)
            cls["installs"] += 1
            cls["machines"].add(key)
            row = by_patch.setdefault((p.key, p.classification), {
                "patch": p.key, "name": p.name, "classification": p.classification,
                "rebootBehavior": p.reboot_behavior, "publishedDate": p.published, "machines": 0, "versions": set()})
            row["machines"] += 1
            if p.version:
                row["versions"].add(p.version)
    basis = Counter(entries[k]["prediction"]["basis"] for k in installing)
    errors = [entries[k]["prediction"]["error"] for k in installing if entries[k]["prediction"]["error"] is not None]
    outside = [{"machine": entries[k]["resourceId"], **entries[k]["outside"]} for k in installing
               if entries[k].get("outside")]
    makespan = (timeline.finish - begin).total_seconds() if timeline.finish else 0.0
    waves = (rollout or {}).get("waves") or [{}]
    patch_rows = sorted(({**r, "versions": sorted(r["versions"])[:MAX_VERSIONS_LISTED],
                          "versionCount": len(r["versions"])} for r in by_patch.values()),
                        key=lambda r: (-r["machines"], r["patch"]))
    return {
        "machineCount": len(entries),
        "actions": dict(sorted(actions.items())),
        "assessments": dict(sorted(assessments.items())),
        "installing": len(installing),
        "patchInstalls": sum(len(patches[k]) for k in installing),
        "rebootsExpected": sum(1 for k in installing if entries[k]["rebootExpected"]),
        "order": "longestFirst" if longest_first else "requestOrder",
        "predictedStart": iso(timeline.start) if timeline.start else None,
        "predictedFinish": iso(timeline.finish) if timeline.finish else None,
        "predictedMakespan": format_duration(timedelta(seconds=round(makespan))),
        "predictedMakespanSeconds": round(makespan),
        "basis": {"machine": basis["machine"], "peers": basis["peers"], "default": basis["default"],
                  "meanAbsoluteError": round(sum(errors) / len(errors), 3) if errors else None,
                  "note": "durations predicted per machine from its own installations, else its OS peers', "
                          "else DEFAULT_INSTALL_SECONDS; starts paced by each subscription's ARM budgets after "
                          "what other runs hold"},
        "waves": [{"index": i, "name": (waves[i] if i < len(waves) else {}).get("name") or f"wave {i}",
                   "machineCount": sum(1 for k in installing if entries[k]["wave"] == i),
                   "predictedStart": iso(start), "predictedFinish": iso(finish)}
                  for i, (start, finish) in zip(sorted({entries[k]["wave"] for k in installing}), timeline.waves,
                                                strict=False)],
        "subscriptions": [{"subscriptionId": sub, **{k: iso(v) if isinstance(v, datetime) else v
                                                     for k, v in info.items()}}
                          for sub, info in sorted(timeline.subscriptions.items())],
        "window": ({"start": iso(window.start), "end": iso(window.end), "fits": not outside,
                    "wouldNotStart": sum(1 for o in outside if o["code"] == "WindowClosed"),
                    "wouldNotFinish": sum(1 for o in outside if o["code"] == "WouldNotFinish")}
                   if window else None),
        "outsideWindow": outside[:MAX_OUTSIDE_LISTED],
        "outsideWindowTruncated": len(outside) > MAX_OUTSIDE_LISTED,
        "totals": {
            "byClassification": {c: {"patches": len(v["patches"]), "installs": v["installs"],
                                     "machines": len(v["machines"])} for c, v in sorted(by_class.items())},
            "byPatch": patch_rows[:MAX_PATCH_TOTALS],
            "byPatchTruncated": len(patch_rows) > MAX_PATCH_TOTALS,
        },
    }


def plan_fingerprint(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
