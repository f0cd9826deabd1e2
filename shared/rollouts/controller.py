"""The rollout controller: admits a run's machines wave by wave within its limits, halts it when the
error budget is spent, and stops it when canceled.

`advance(run)` is called when the run's machines are known (dispatch or discovery done), after each
machine finishes, after a soak, on cancel/resume, and by the sweeper. Decisions need one view of the
run, so a call first takes the run's controller lock (an ETag-conditional write on the run entity,
expiring after six minutes, longer than any function runs, in case its holder dies); a call that finds it
taken queues a delayed
`advance` instead, so no finish is ever left unconsidered. Admitting a machine marks its target
`admitted` and sends its first step message; nothing else sends one for a rollout run.

A decision reads the run's counters (shared.core.counters: per state, per wave, admitted, failures by
kind), not its machines: a constant number of Table round-trips whatever the run's size. Machines are
listed only to change them: all of them once to plan the waves; the current wave's next ones to start, as
many as slots are free (all of the wave without a maxConcurrency), when slots are free to admit them; the
canary wave once to pin its patch set; the failed ones once to name them in a halt; the waiting ones once to
skip them. With a maxConcurrencyPerSubscription, the machines in flight (≤ maxConcurrency) and the wave's
waiting ones are listed too.

Start order: planning gives each machine its place in its wave's start order (`startRank`): the longest
predicted duration first (`predictedSeconds`, written by dispatch; LONGEST_FIRST, the default), else the
request's order (shared/rollouts/plan.py start_ranks). Machines are admitted in that order, so the machines of
a wave already admitted are its first `wave:<n>:admitted` ranks (a counter) and the next ones are a rank window:
one query of just the machines to admit, as cheap as taking them in key order. (A wave's waiting machines are
read whole, and sorted, only with a per-subscription limit, which skips some, or when the window comes back
short of what the counters say waits; a rollout planned before ranks existed admits in key order, as before.)
"""

from __future__ import annotations

import json
import logging
import math
import secrets
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol

from shared.core.clock import iso, parse_iso, utcnow
from shared.core.counters import RunCounters
from shared.core.errors import ConflictError
from shared.core.records import MachineRecord, RunRecord
from shared.core.states import TERMINAL_STATES, MachineState
from shared.events.publish import DeliveryQueue, emit, run_subject
from shared.rollouts.plan import assign_waves, failure_kind, start_ranks
from shared.runs.completion import complete_run_if_done
from shared.runs.install_history import Durations
from shared.runs.ports import Dispatching, RunRows
from shared.validation.durations import parse_duration
from shared.validation.rollout import DEFAULT_FAILURE_ON, resolve

log = logging.getLogger(__name__)
LOCK = timedelta(minutes=6)  # longer than a function may run (host.json functionTimeout is 5 minutes)
BUSY_RETRY_SECONDS = 2
# What the controller reads of the targets it lists (with the counted ones: RunStore.iter_targets).
DECISION_COLUMNS = ["resourceId", "state", "seq", "wave", "admitted", "status",
                    "failedPatchCount", "maintenanceWindowExceeded", "osType", "errorCode", "unhealthySignals",
                    "predictedSeconds", "startRank"]
PRE_HOOK_SLACK = timedelta(minutes=5)  # beyond the hook's timeout before its request counts as lost


class RolloutDeps(RunRows, Dispatching, DeliveryQueue, Durations, Protocol):
    """What the rollout controller uses."""


def on_progress(run_id: str, deps: RolloutDeps, machine: str | None = None) -> bool:
    """The `progressed` hook (shared/composition.py): a machine (`machine`, its key) or a scope's listing finished.
    A rollout run's machines are admitted by the controller, which also closes it (not counted here: False); any
    other run closes when its last machine ends (True when this call closed it)."""
    spec = deps.run_spec(run_id)
    if spec is not None and spec.rollout:
        advance(run_id, deps)
        return False
    return complete_run_if_done(run_id, deps, machine=machine)


def advance(run_id: str, deps: RolloutDeps) -> str:
    return locked(run_id, deps, lambda run, now: Round(run, deps, now).decide())


def locked(run_id: str, deps: RolloutDeps, act: Callable[[RunRecord, datetime], str], *,
           inactive_ok: bool = False) -> str:
    """Run `act` holding the run's controller lock; when it is taken, queue a retry instead.

    The lock is a token on the run entity written with the run's ETag; it lasts longer than a
    function may run, and is released only by its holder (checked by token and ETag). A decision
    that finds targets changed under it (conditional writes fail) gives way and retries too.
    """
    store = deps.store
    run = store.get_run(run_id)
    if run is None or not run.get("rollout") or (run.get("active") is False and not inactive_ok):
        return "inactive"
    now = utcnow()
    if str(run.get("controllerLockUntil") or "") > iso(now):
        deps.queues.send_advance(run_id, BUSY_RETRY_SECONDS)
        return "busy"
    token = secrets.token_hex(8)
    try:
        etag = store.update_run(run_id, {"controllerLock": token, "controllerLockUntil": iso(now + LOCK)},
                                etag=run.etag)
    except ConflictError:
        deps.queues.send_advance(run_id, BUSY_RETRY_SECONDS)
        return "busy"
    run = run.with_changes({"controllerLock": token}, etag)
    try:
        return act(run, now)
    except (ConflictError) as exc:
        log.info("run %s: %s; deciding again shortly", run_id, exc)
        deps.queues.send_advance(run_id, BUSY_RETRY_SECONDS)
        return "retry"
    finally:
        _release(run_id, token, deps)


RELEASE_ATTEMPTS = 5


def _release(run_id: str, token: str, deps: RolloutDeps) -> None:
    """Give the lock back if it is still ours. Another writer may change the run between our read and our
    conditional write (a pre-run hook's claim, a cancel, a release window): that ETag conflict is not a reason
    to keep the lock, so read again and retry. A lock left held makes every decision of the run wait for its
    expiry (LOCK, six minutes): a canceled run would sit with its machines Queued all that time."""
    for _ in range(RELEASE_ATTEMPTS):
        try:
            current = deps.store.get_run(run_id)
            if current is None or current.get("controllerLock") != token:
                return
            deps.store.update_run(run_id, {"controllerLockUntil": ""}, etag=current.etag)
            return
        except ConflictError:
            continue
        except Exception:  # storage unreachable: the lock expires after LOCK, as for a holder that died
            log.warning("run %s: controller lock not released; it expires after %s", run_id, LOCK, exc_info=True)
            return
    log.warning("run %s: controller lock not released after %d conflicts; it expires after %s",
                run_id, RELEASE_ATTEMPTS, LOCK)


class Round:
    """One decision over the whole run, under its lock."""

    def __init__(self, run: RunRecord, deps: RolloutDeps, now: datetime) -> None:
        self.run, self.deps, self.now = run, deps, now
        self.run_id = run.run_id
        self.spec: dict[str, Any] = run.rollout or {}
        self.changes: dict[str, Any] = {}

    def field(self, name: str) -> Any:
        return self.changes.get(name, self.run.get(name))

    def save(self) -> None:
        if self.changes:
            self.deps.store.update_run(self.run_id, self.changes)
            self.run = self.run.with_changes(self.changes)
            self.changes = {}

    def decide(self) -> str:
        store = self.deps.store
        if not self.run.get("dispatchedAt"):
            return "waiting-dispatch"
        if self.run.get("scopeCount") and any(not s.get("done") for s in store.list_scopes(self.run_id)):
            return "waiting-discovery"
        if not self.field("planned"):  # its own step: planning changes every target, and so their ETags
            self.plan(store.list_targets(self.run_id, select=DECISION_COLUMNS))
            self.save()
            self.deps.queues.send_advance(self.run_id)
            return "planned"
        counters = store.run_counters(self.run_id, counted=self.run.counted)
        total = counters.machine_count
        if self.field("canceledAt") or self.field("haltedReason"):
            return self.stop(counters)
        failure_on = self.spec.get("failureOn") or DEFAULT_FAILURE_ON
        kinds = counters.failures(failure_on)
        budget = resolve(self.spec.get("maxFailures"), total)
        spent = sum(kinds.values()) - int(self.field("failureBaseline") or 0)
        if budget is not None and spent > 0 and spent >= budget:
            failed = [t for t in store.iter_targets(self.run_id, admitted=True, select=DECISION_COLUMNS)
                      if t["state"] in TERMINAL_STATES and failure_kind(t, failure_on)]
            details = [halt_detail(t, failure_on) for t in failed[:100]]
            unhealthy = [f"{d['machine'].rsplit('/', 1)[-1]} ({', '.join(d['signals'])})" for d in details
                         if d.get("signals")]
            self.changes.update(
                haltedReason=f"{spent} machine(s) failed ({', '.join(f'{k}: {n}' for k, n in sorted(kinds.items()))}); "
                             f"maxFailures is {self.spec['maxFailures']}: nothing new starts"
                             + (f"; unhealthy after patching: {', '.join(unhealthy[:10])}" if unhealthy else ""),
                haltedMachines=json.dumps([d["machine"] for d in details]), haltedDetails=json.dumps(details),
                haltedAt=iso(self.now))
            log.warning("run %s halted: %s", self.run_id, self.changes["haltedReason"])
            emit(self.deps, "patchpilot.run.halted", run_subject(self.run_id), {
                "runId": self.run_id, "reason": self.changes["haltedReason"],
                "machines": [d["machine"] for d in details], "details": details},
                key=str(self.field("resumes") or 0))
            return self.stop(counters)
        hook = self.spec.get("preHook")
        if hook and not self.field("preHookAt"):  # nothing starts before the pre-run hook said yes
            asked = self.field("preHookRequestedAt")
            patience = timedelta(seconds=int(hook.get("timeoutSeconds") or 60)) + PRE_HOOK_SLACK
            if not asked or parse_iso(asked) + patience < self.now:  # never asked, or the request was lost
                self.changes["preHookRequestedAt"] = iso(self.now)
                self.save()
                self.deps.send_delivery({"kind": "prehook", "runId": self.run_id})
            else:
                self.save()
            return "waiting-prehook"
        return self.admit(counters, total)

    def plan(self, targets: list[MachineRecord]) -> None:
        """Waves are fixed once the machines are known: request order first, then discovered ones; so is each
        machine's place in its wave's start order (`startRank`: longest predicted first, or request order).
        With a percentage maxConcurrencyPerSubscription, each subscription's machine count is kept for it."""
        requested = [vm for chunk in self.deps.store.machine_chunks(self.run_id) for vm in chunk]
        keys = {t.key for t in targets}
        order = [k for k in (self._key(r) for r in requested) if k in keys]
        order += sorted(keys - set(order))
        waves = assign_waves(order, self.spec.get("waves") or [])
        by_key = {t.key: t for t in targets}
        predicted = {t.key: float(t["predictedSeconds"]) for t in targets
                     if isinstance(t.get("predictedSeconds"), (int, float))}
        ranks = start_ranks(order, waves, predicted, longest_first=self.deps.settings.plans.longest_first)
        if isinstance(self.spec.get("maxConcurrencyPerSubscription"), str):
            self.deps.store.save_subscription_counts(self.run_id, Counter(t.subscription_id for t in targets))
        self.deps.store.merge_targets([(by_key[k], {"wave": w, "startRank": ranks[k]}) for k, w in waves.items()])
        self.changes.update(planned=True, ranked=True, currentWave=0, waveCount=max(waves.values(), default=0) + 1)

    @staticmethod
    def _key(resource_id: str) -> str:
        parts = resource_id.split("/")
        return f"{parts[2]}|{parts[4]}|{parts[8]}".lower()

    def stop(self, counters: RunCounters) -> str:
        """Canceled or halted: machines not yet admitted never start; the rest are followed to their end."""
        reason = ("RunCanceled", "the run was canceled before this machine started") if self.field("canceledAt") \
            else ("RunHalted", "the run halted (maxFailures reached) before this machine started")
        waiting = [t for t in self.deps.store.iter_targets(self.run_id, state=MachineState.QUEUED.value,
                                                          select=DECISION_COLUMNS)
                   if not t.get("admitted")] if counters.waiting() else []
        # The halt (or cancel) is written first: once the waiting machines are Skipped every machine may have
        # finished, and a GET in between must already see why the run stopped (Halted, not Failed).
        self.save()
        self.deps.store.merge_targets([(t, {
            "state": MachineState.SKIPPED.value, "errorCode": reason[0], "errorMessage": reason[1], "seq": t.seq + 1,
            "completedAt": iso(self.now)}) for t in waiting])
        complete_run_if_done(self.run_id, self.deps)
        return "stopped"

    def admit(self, counters: RunCounters, total: int) -> str:
        store = self.deps.store
        current, waves = int(self.field("currentWave") or 0), int(self.field("waveCount") or 1)
        failure_on = self.spec.get("failureOn") or DEFAULT_FAILURE_ON
        while True:
            if counters.wave_unfinished(current):
                break
            if current >= waves - 1:
                self.save()
                complete_run_if_done(self.run_id, self.deps)
                return "done"
            if not counters.wave_admitted(current):  # nothing ran in it: nothing to soak or report
                current += 1
                self.changes["currentWave"] = current
                continue
            soak = parse_duration(self.spec["soakTime"]) if self.spec.get("soakTime") else timedelta(0)
            if int(self.field("soakFor") if self.field("soakFor") not in (None, "") else -1) != current:
                if current == 0:
                    self.pin_patch_set(store.list_targets(self.run_id, wave=0, state=MachineState.COMPLETED.value,
                                                          select=DECISION_COLUMNS))
                self.changes.update(soakFor=current, soakUntil=iso(self.now + soak))
                emit(self.deps, "patchpilot.wave.completed", run_subject(self.run_id), {
                    "runId": self.run_id, "wave": current, "machines": counters.wave_total(current),
                    "failed": sum(counters.failures(failure_on, wave=current).values())},
                    key=f"{current}|{self.field('resumes') or 0}")
            until = parse_iso(self.field("soakUntil"))
            if self.now < until:
                self.save()
                self.deps.queues.send_advance(self.run_id, int((until - self.now).total_seconds()) + 1)
                return "soaking"
            current += 1
            self.changes["currentWave"] = current
        chosen = self.choose(counters, current, total)
        store.merge_targets([(t, {"admitted": True, "admittedAt": iso(self.now), "nextActionAt": iso(self.now)})
                             for t in chosen])
        self.save()
        for target in chosen:
            self.deps.queues.send_step(self.run_id, target.key, target.seq)
        return f"admitted-{len(chosen)}"

    def choose(self, counters: RunCounters, wave: int, total: int) -> list[MachineRecord]:
        """The machines of `wave` to admit now, in start order (`startRank`; key order for a rollout planned
        before ranks), within maxConcurrency (and per subscription).

        Lists the wave's machines only when a slot is free and one waits: without a per-subscription limit just
        the rank window of those to admit (module doc); a rollout planned before ranks reads at most
        maxConcurrency Queued ones in key order (those waiting, and admitted ones back in Queued for a retry,
        which are in flight)."""
        in_flight = counters.in_flight
        limit = resolve(self.spec.get("maxConcurrency"), total) or total
        if in_flight >= limit or not counters.waiting(wave):
            return []
        store = self.deps.store
        per_sub_spec = self.spec.get("maxConcurrencyPerSubscription")
        busy: Counter[str] = Counter()  # machines in flight per subscription
        by_sub: dict[str, int] = {}  # machines per subscription: what a percentage limit is of
        if per_sub_spec is not None:
            busy.update(t.subscription_id for t in store.iter_targets(self.run_id, admitted=True, unfinished=True,
                                                                      select=["RowKey"]))
            if isinstance(per_sub_spec, str):
                kept = store.subscription_counts(self.run_id)
                by_sub = kept if kept is not None else dict(  # planned before the counts were kept: count here
                    Counter(t.subscription_id for t in store.iter_targets(self.run_id, select=["RowKey"])))
        chosen: list[MachineRecord] = []
        candidates = self.candidates(counters, wave, limit - in_flight, whole=per_sub_spec is not None)
        for target in (t for t in candidates if not t.get("admitted")):
            if in_flight + len(chosen) >= limit:
                break
            sub = target.subscription_id
            cap = resolve(per_sub_spec, by_sub.get(sub, 0)) if per_sub_spec is not None else None
            if cap and busy[sub] >= cap:  # a limit of 0 limits nothing
                continue
            busy[sub] += 1
            chosen.append(target)
        return chosen

    def candidates(self, counters: RunCounters, wave: int, wanted: int, *, whole: bool) -> Iterable[MachineRecord]:
        """The wave's Queued machines to consider, in start order: the rank window of the next `wanted` (ranked
        runs, not `whole`), the whole wave sorted by rank (`whole`, or a window that came back short), or for
        a rollout planned before ranks the wave in key order, read as the caller goes."""
        store = self.deps.store
        queued = MachineState.QUEUED.value
        if not self.field("ranked"):
            return store.iter_targets(self.run_id, wave=wave, state=queued, select=DECISION_COLUMNS,
                                      per_page=None if whole else wanted)
        if not whole:
            first = counters.wave_admitted(wave)  # admitted in rank order: ranks [0, first) are admitted
            window = [t for t in store.iter_targets(self.run_id, wave=wave, state=queued, rank_from=first,
                                                    rank_before=first + wanted, select=DECISION_COLUMNS)
                      if not t.get("admitted")]
            if len(window) >= min(wanted, counters.waiting(wave)):
                return sorted(window, key=_rank)
            log.warning("run %s: wave %d's next ranks from %d hold %d waiting machines, its counters say %d wait; "
                        "reading the whole wave", self.run_id, wave, first, len(window), counters.waiting(wave))
        return sorted(store.iter_targets(self.run_id, wave=wave, state=queued, select=DECISION_COLUMNS), key=_rank)

    def pin_patch_set(self, canary: list[MachineRecord]) -> None:
        """Later waves install nothing the canary did not: on Linux, exactly the package versions it
        installed (Windows is pinned by maxPatchPublishDate when the run was accepted)."""
        packages: set[str] = set()
        for target in canary:
            if str(target.get("osType") or "").lower() != "linux" or target["state"] != MachineState.COMPLETED.value:
                continue
            for patch in self.deps.store.list_patches(self.run_id, target.key):
                if patch.get("installationState") == "Installed" and patch.get("name"):
                    packages.add(f"{patch['name']}_{patch['version']}" if patch.get("version") else patch["name"])
        if packages:  # rows of their own: hundreds of packages outgrow one property
            self.deps.store.save_pins(self.run_id, sorted(packages))
            self.changes["pinnedLinuxCount"] = len(packages)


def _rank(target: MachineRecord) -> float:
    """A machine's place in its wave's start order; one without (rows planned before ranks) goes last."""
    rank = target.get("startRank")
    return float(rank) if isinstance(rank, int) else math.inf


def halt_detail(target: MachineRecord, failure_on: list[str]) -> dict[str, Any]:
    """One machine that spent the error budget, as the halted run and its event name it: the machine, the kind it
    counted as, and for an Unhealthy one the signals that failed (its row's healthChecks say what they read)."""
    detail: dict[str, Any] = {"machine": target["resourceId"], "kind": failure_kind(target, failure_on),
                              "state": target["state"]}
    if target.get("errorCode"):
        detail["errorCode"] = target["errorCode"]
    if target.get("unhealthySignals"):
        detail["signals"] = str(target["unhealthySignals"]).split(",")
    return detail


def resume(run_id: str, deps: RolloutDeps) -> str:
    """Under the lock: re-queue what the halt skipped (admitted or not), count failures afresh from
    here, reopen the run, and decide again."""
    def act(run: RunRecord, now: datetime) -> str:
        if not run.get("haltedReason") or run.get("canceledAt"):
            return "not-halted"  # another resume (or a cancel) got here first
        store = deps.store
        targets = store.list_targets(run_id)
        failure_on = (run.rollout or {}).get("failureOn")
        baseline = sum(1 for t in targets if t.get("admitted") and t["state"] in TERMINAL_STATES
                       and failure_kind(t, failure_on))
        store.merge_targets([(t, {"state": MachineState.QUEUED.value, "admitted": False, "errorCode": "",
                                  "errorMessage": "", "completedAt": ""})
                             for t in targets if t.get("errorCode") == "RunHalted"])
        store.update_run(run_id, {"haltedReason": "", "haltedMachines": "", "haltedDetails": "", "haltedAt": "",
                                  "active": True,
                                  "failureBaseline": baseline, "completedAt": "", "resumedAt": iso(now),
                                  "resumes": int(run.get("resumes") or 0) + 1})
        return Round(store.get_run(run_id) or run, deps, now).decide()

    return locked(run_id, deps, act, inactive_ok=True)
