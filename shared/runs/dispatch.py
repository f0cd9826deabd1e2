"""Fan a run out into one step message per machine, off the HTTP path.

The HTTP function stores the machine list and queues a single dispatch message, so a
1,000-machine request answers in milliseconds; this worker creates the target rows (one
transaction per ≤ 99 machines of one counter shard, with their counts) and sends the per-machine
messages in parallel. A duplicate or
retried dispatch is harmless: target rows are created, never overwritten, and each machine's
`seq` and ETag let only one delivery of a step act.

Start slots are reserved in blocks: one budget write per subscription takes a guest-patch token for
every machine of the run (shared/runs/pacing.py), each machine's row is created due at its slot and its
message is sent delayed to it, holding the token. So a 10,000-machine run costs one budget round-trip
per subscription to pace its starts, not one per machine, and the sweeper does not take machines
waiting for their slot for lost ones. A retried dispatch reserves again (more waiting, never more calls).

Start messages are released a horizon at a time: dispatch queues the messages of the machines due within
DISPATCH_HORIZON_SECONDS, and a release message (DispatchMessage.release_from) comes back half a horizon
before the next window to queue its machines, until the run's last slot (`lastSlotAt`). At Azure's 200
starts per minute a 10,000-machine run holds about 400 start messages at a time instead of 10,000 for
50 minutes, and Azurite, whose dequeue scans every message in the queue
(108 ms per receive with 5,000 waiting, 11 ms with none, measured), keeps up. The run's `releasedThrough`
fences duplicated release messages (an ETag-conditional write after the window's messages are sent); a
lost release is sent again by the sweeper (release_overdue), and a release that reaches the poison queue
is dropped for the sweeper to redo, never taken for a failed dispatch. A slot that passed more than a
horizon ago (an earlier dispatch attempt's) is not spent: that machine reserves again.

Longest first: an install run's rows carry each machine's predicted duration (`predictedSeconds`, whole
seconds, and `predictionBasis`: "plan", "machine", "peers" or "default"; shared/runs/install_history.py,
one partition query of the histories per subscription), and with LONGEST_FIRST (the default) the earliest
slots of each subscription go to the longest predicted machines. The budget hands out the same slots either
way; only who gets which changes, so the last machines to start are the short ones and the run ends sooner
(a machine started late that also runs long sets the makespan). The sort is stable: equal predictions (a
fleet with no history: all the default) keep the request's order. The start messages of a window are sent
in slot order, the longest first among machines due at once (a burst's slots are all "now", and the workers
take them in about the order sent). A rollout's rows get their predictions here too; its controller admits
each wave's machines in that order (shared/rollouts/controller.py).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from shared.arm.calls import GUEST_PATCH, READS, WRITES
from shared.core.clock import iso, parse_iso, utcnow
from shared.core.errors import ConflictError, StorageContentionError
from shared.core.messages import CarriedRow, DispatchMessage
from shared.core.records import THROTTLED_AT_COLUMN, MachineRecord, RunRecord
from shared.core.states import MachineState, RunStatus
from shared.runs.budget import slots as block_slots
from shared.runs.install_history import Durations, RunPredictions, predict_machines, prediction_columns
from shared.runs.operation_kinds import INSTALL, KINDS
from shared.runs.ports import Dispatching, Fleet, Paced, RunRows
from shared.runs.predictions import Prediction
from shared.validation.resource_ids import parse_machine_id

if TYPE_CHECKING:
    from shared.runs.machine_worker import StepPorts

log = logging.getLogger(__name__)
SEND_PARALLELISM = 16
RELEASE_ATTEMPTS = 5
SEND_GRACE_SECONDS = 15
# Backpressure (release_window): a start message due this long ago and still not taken means the consumers are
# behind; the next window waits BACKLOG_RECHECK_SECONDS and looks again.
BACKLOG_SECONDS = 30
BACKLOG_RECHECK_SECONDS = 10


class DispatchDeps(RunRows, Dispatching, Paced, Durations, RunPredictions, Fleet, Protocol):
    """What dispatching and releasing a run's start messages use."""


def dispatch_run(msg: DispatchMessage, deps: DispatchDeps) -> int:
    """Returns how many machines were queued (start messages sent)."""
    run = deps.store.get_run(msg.run_id)
    if run is None:
        log.warning("dispatch: run %s does not exist; dropping", msg.run_id)
        return 0
    if msg.release_from:
        return release_window(run, parse_iso(msg.release_from), deps)
    if run.get("dispatchedAt"):
        log.info("dispatch: run %s already dispatched at %s", msg.run_id, run["dispatchedAt"])
        return 0
    if run.get("notBefore") and parse_iso(str(run["notBefore"])) > utcnow():
        log.info("dispatch: run %s waits for its window at %s", msg.run_id, run["notBefore"])
        return 0  # its own delayed message (or the sweeper, after notBefore) comes back then
    kind = KINDS.get(str(run.get("operation") or INSTALL.action), INSTALL)
    chunks = deps.store.machine_chunks(msg.run_id)
    predictions = predict_machines(run, machine_keys(chunks), deps) if kind is INSTALL else {}
    if run.get("rollout"):  # machines wait for the rollout controller to admit them
        create_targets(msg.run_id, deps, chunks=chunks, predictions=predictions)
        deps.store.update_run(msg.run_id, {"dispatchedAt": iso(utcnow()), "status": RunStatus.IN_PROGRESS.value})
        deps.queues.send_advance(msg.run_id)
        return 0
    now = utcnow()
    block_starts: dict[str, float] = {}
    slots = start_slots(deps, chunks, reads_per_start=kind.reads_per_start,
                        predicted={key: p.seconds for key, p in predictions.items()}, block_starts=block_starts)
    create_targets(msg.run_id, deps, {key: iso(now + timedelta(seconds=s)) for key, s in slots.items()},
                   chunks=chunks, predictions=predictions)
    until = now + timedelta(seconds=deps.settings.pacing.dispatch_horizon_seconds)
    queued = deps.store.list_targets(msg.run_id, state=MachineState.QUEUED.value, seq=0, due_before=iso(until))
    shift = defer_start_schedule(deps, block_starts)
    sent_at = utcnow()
    send_starts(msg.run_id, queued, deps, shift=shift, carry=True)
    # Rows of an earlier attempt keep that attempt's slots: the latest of any row bounds the releases.
    last_slot = max([now + timedelta(seconds=s) for s in slots.values()] + [until], default=until)
    if last_slot > until:  # before dispatchedAt: a retried dispatch must not stop short of the chain
        send_next_release(msg.run_id, until, deps, shift=shift)
    deps.store.update_run(msg.run_id, {"dispatchedAt": iso(utcnow()), "status": RunStatus.IN_PROGRESS.value,
                                      "releasedThrough": iso(until), "lastSlotAt": iso(last_slot),
                                      START_SHIFT_COLUMN: shift, RELEASED_AT_COLUMN: iso(sent_at)})
    log.info("dispatch: run %s queued %d machines, due before %s", msg.run_id, len(queued), iso(until))
    return len(queued)


def defer_start_schedule(deps: DispatchDeps, block_starts: Mapping[str, float]) -> int:
    """Whole seconds by which a run's start schedule moves, now that its first start messages go.
    `block_starts`: {subscription: epoch second its block of slots counts from} (start_slots).

    A block counts Compute's bucket refilling from its start, but a bucket that is full then (nothing reserved
    before, or the earlier reservations ran out before now) stays full until the first start is spent, and its
    refill is lost. Writing 10,000 rows and listing the first window took 13 s in the benchmark; counted from
    the reservation, the schedule granted about 90 starts more than Compute's bucket held, which met 429s two
    minutes in (and the longest-first machines throttled were re-slotted after every other machine). So the
    shift is the refill lost, the most of any subscription of the run: every start message is sent that much
    later than its row's slot (`startShiftSeconds` on the run, for its releases, the backlog check and the
    sweeper), and each subscription's stored budget moves on by as much (Pacer.defer), so a later reservation
    does not overlap the shifted slots. A subscription that lost less waits the same (one shift per run).

    Not covered: a reservation made on the same subscription during the lag itself (another dispatch, a
    throttled start reserving again) is granted inside this run's shifted tail; it is rare and at most the lag
    long, and a 429 it meets only delays. One budget write per subscription, only when the shift is a whole
    second or more."""
    now = deps.pacer.clock()
    shift = math.floor(max((now - start for start in block_starts.values()), default=0.0))
    if shift < 1:
        return 0
    for subscription in block_starts:
        deps.pacer.defer(subscription, GUEST_PATCH, shift)
    return shift


START_SHIFT_COLUMN = "startShiftSeconds"
RELEASED_AT_COLUMN = "releasedAt"  # when the latest window's start messages were sent (the sweeper's start_message_due)
ROOM_FOR_COLUMN = "roomForWindow"  # the window whose release made room for throttled starts (room_for_throttled)


def start_shift(run: RunRecord) -> int:
    """Whole seconds every start message of the run goes after its row's slot (`startShiftSeconds`: the refill a
    dispatch lost, defer_start_schedule, plus each late window's move, shift_late_window)."""
    return int(run.get(START_SHIFT_COLUMN) or 0)


def send_starts(run_id: str, queued: list[MachineRecord], deps: DispatchDeps, *, shift: int = 0,
                carry: bool = False) -> None:
    """Each machine's first step, delayed to its slot (`shift` seconds later: defer_start_schedule) and holding
    its guest-patch token. `carry`: `queued` are whole rows as just listed (no `select`), and each message carries
    its row (CarriedRow), so the start need not read it: its claim is If-Match on that ETag (machine_worker.py
    CARRIED_STATES). One Table round-trip less per machine. A slot more than
    PACING_LATE_SECONDS + SEND_GRACE_SECONDS past (a row of an earlier dispatch attempt that died, a late window of
    a run with scopes: shift_late_window moves any other late window's schedule first) is not spent, since
    tokens spent that late can pile up beyond Compute's bucket
    (Bucket.late): that step reserves again. The grace covers the sending itself: queueing the first
    window's 1,000 messages takes seconds.

    Sent in slot order and, with LONGEST_FIRST, the longest predicted first among machines due at once: a
    burst's slots are all "now", and the queue hands out equal-delay messages roughly in the order sent, so at
    the pace the workers take them that order is the order they start in."""
    now = utcnow()
    stale = timedelta(seconds=deps.settings.pacing.pacing_late_seconds + SEND_GRACE_SECONDS)
    queued = sorted(queued, key=lambda t: start_order(t, longest_first=deps.settings.plans.longest_first))

    def send(target: MachineRecord) -> None:
        due = parse_iso(str(target.get("nextActionAt") or iso(now))) + timedelta(seconds=shift)
        row = CarriedRow.of(target.etag, target.columns) if carry else None
        if due < now - stale:
            deps.queues.send_step(run_id, target.key, target.seq, row=row)
        else:
            deps.queues.send_step(run_id, target.key, target.seq, math.ceil(max(0.0, (due - now).total_seconds())),
                                  held=(GUEST_PATCH,), row=row)
    with ThreadPoolExecutor(max_workers=SEND_PARALLELISM) as pool:
        list(pool.map(send, queued))


def start_order(target: MachineRecord, *, longest_first: bool) -> tuple[str, float]:
    """Sort key of a Queued row for sending its start: when it is due (ISO), then (`longest_first`) the
    longest predicted first; ties keep the order given (a stable sort)."""
    predicted = target.get("predictedSeconds")
    seconds = float(predicted) if longest_first and isinstance(predicted, (int, float)) else 0.0
    return str(target.get("nextActionAt") or ""), -seconds


def send_next_release(run_id: str, window_from: datetime, deps: DispatchDeps, *, shift: int = 0) -> None:
    """The release of the window starting at `window_from` (slot time: its messages are due `shift` seconds
    later, the run's startShiftSeconds), arriving half a horizon before it."""
    lead = deps.settings.pacing.dispatch_horizon_seconds / 2
    delay = max(0.0, (window_from - utcnow()).total_seconds() + shift - lead)
    deps.queues.send_release(run_id, iso(window_from), math.floor(delay))


def release_window(run: RunRecord, window_from: datetime, deps: DispatchDeps) -> int:
    """Queue the start messages of the machines due in [window_from, window_from + horizon).

    At least once, one chain: the messages are sent first, then the run's `releasedThrough` moves on from
    this window (ETag-conditional), and only the delivery whose write won sends the next release. A
    redelivery after a crash before that write sends the window again (a start message twice is harmless:
    `seq` and ETags let one act); a duplicate running at the same time loses the write and stops; a crash
    after it loses the chain, which the sweeper restarts (sweeper.release_overdue). A release of a closed
    run, or of a window already passed on, does nothing."""
    if run.get("releasedThrough") != iso(window_from) or run.get("completedAt") or run.get("canceledAt"):
        return 0
    shift = start_shift(run)
    if backlogged(run.run_id, window_from, deps, shift=shift):
        # Backpressure: the consumers have not taken the start messages already due, so queueing more now only
        # deepens the backlog (Azurite's receive scans every message; Azure's queue and a capped plan slow down
        # too). Come back later; the fence stays, so this window is released once, when they have caught up.
        # Its slots pass meanwhile: when it goes, the run's schedule moves on by as much (shift_late_window).
        deps.queues.send_release(run.run_id, iso(window_from), BACKLOG_RECHECK_SECONDS)
        log.info("dispatch: run %s holds back the window from %s: start messages due earlier are still queued",
                 run.run_id, iso(window_from))
        return 0
    until = window_from + timedelta(seconds=deps.settings.pacing.dispatch_horizon_seconds)
    queued = deps.store.list_targets(run.run_id, state=MachineState.QUEUED.value, seq=0,
                                    due_from=iso(window_from), due_before=iso(until))
    shifted = shift_late_window(run, window_from, queued, deps)
    if shifted is None:
        return 0  # another delivery moved the fence on meanwhile: it sends the next release
    run, late = shifted
    shift = start_shift(run)
    sent_at = utcnow()
    send_starts(run.run_id, queued, deps, shift=shift, carry=True)
    for _ in range(RELEASE_ATTEMPTS):
        try:
            deps.store.update_run(run.run_id, {"releasedThrough": iso(until), RELEASED_AT_COLUMN: iso(sent_at)},
                                  etag=run.etag)
            break
        except ConflictError:  # a duplicate of this release, or any other write to the run: look again
            fresh = deps.store.get_run(run.run_id)
            if fresh is None or fresh.get("releasedThrough") != iso(window_from):
                return len(queued)  # another delivery moved the fence on: it sends the next release
            run = fresh
    else:
        raise StorageContentionError(f"run {run.run_id} kept changing; the queue will retry this release")
    if parse_iso(str(run.get("lastSlotAt") or iso(until))) >= until:
        send_next_release(run.run_id, until, deps, shift=shift)
    log.info("dispatch: run %s released %d machines due before %s%s", run.run_id, len(queued), iso(until),
             f" (its schedule moves on {late} s, to {shift} s: its slots were late or starts wait out a 429)"
             if late else "")
    return len(queued)


def shift_late_window(run: RunRecord, window_from: datetime, queued: list[MachineRecord],
                      deps: DispatchDeps) -> tuple[RunRecord, int] | None:
    """When a window is released after its slots passed (a backlog held it, release_window, or its release came
    late): move the run's remaining start schedule on by the lateness; and by one guest-patch slot for each of its
    starts waiting out a 429 (`room_for_throttled`). Returns (the run as now stored, whole seconds moved: 0 if the
    window is on time and no start waits), or None when another delivery moved the fence on meanwhile.

    Without it, every start of such a window is stale (send_starts: its slot more than PACING_LATE_SECONDS +
    SEND_GRACE_SECONDS past) and reserves a guest-patch token afresh, which GCRA grants after every slot the run
    reserved: at 10,000 machines over four subscriptions on one 2-core machine a held window's 1,600 starts
    each waited 95-114 s, were queued twice and lost their own slot's token (0.40 paced starts a machine over
    the run; docs/performance.md). Moving the schedule instead starts the window now, in its order, on the
    tokens it holds: the pace slows to what the consumers take, and no start is queued twice. Compute's refill
    during the hold is lost either way; the consumers could not have spent it.

    Once per lateness: `startShiftSeconds` grows by it in an ETag-conditional write before anything is sent, and
    only the delivery whose write won moves each subscription's guest-patch budget on as much (Pacer.defer), so
    that a reservation made after it does not overlap the moved slots. A copy running beside it loses the write,
    reads the run again and finds the window on time under the new shift; a redelivery after a crash finds it late
    only by the time since, and moves the schedule (and the budgets) by that, as it must for its starts to hold
    their tokens. Errs slow: the subscriptions are every one the run lists (one query), including those whose
    slots have all passed, and reservations other runs made before the move still overlap the moved slots (a 429
    only delays).
    Not for a run with scopes: its pages reserve and send their slots in real time (shared/runs/discovery.py),
    so a run-wide shift would move those twice; their late windows still reserve afresh. Start messages already
    queued keep their tokens (spent late, Bucket.late); the backlog check and the sweeper count them with the
    new shift, so they are judged up to the shift's growth later."""
    for _ in range(RELEASE_ATTEMPTS):
        if run.get("releasedThrough") != iso(window_from):
            return None
        shift = start_shift(run)
        if not queued or run.get("scopeCount"):
            return run, 0
        first = min(parse_iso(str(t.get("nextActionAt") or iso(window_from))) for t in queued)
        lateness = (utcnow() - first).total_seconds() - shift  # as send_starts judges a slot stale
        # once a window: a copy of this release, or a redelivery after the write below, finds its marker
        room = 0 if run.get(ROOM_FOR_COLUMN) == iso(window_from) else room_for_throttled(run, deps)
        if lateness <= deps.settings.pacing.pacing_late_seconds + SEND_GRACE_SECONDS:
            lateness = 0.0  # send_starts spends these tokens as they are
        if not lateness and not room:
            return run, 0
        late = math.ceil(lateness) + room
        changes: dict[str, object] = {START_SHIFT_COLUMN: shift + late}
        if room:
            changes[ROOM_FOR_COLUMN] = iso(window_from)
        try:
            etag = deps.store.update_run(run.run_id, changes, etag=run.etag)
        except ConflictError:  # a copy of this release, or any other write to the run: look again
            fresh = deps.store.get_run(run.run_id)
            if fresh is None:
                return None
            run = fresh
            continue
        subscriptions = {parse_machine_id(rid, target="machines").subscription_id
                         for chunk in deps.store.machine_chunks(run.run_id) for rid in chunk}
        for subscription in sorted(subscriptions):
            deps.pacer.defer(subscription, GUEST_PATCH, late)
        return run.with_changes(changes, etag), late
    raise StorageContentionError(f"run {run.run_id} kept changing; the queue will retry this release")


def room_for_throttled(run: RunRecord, deps: DispatchDeps) -> int:
    """Whole seconds of guest-patch slots for the run's starts that wait out a 429 they met since its last
    release (Queued, `throttledAt` at or after `releasedAt`, set when the retry keeps its slot's token): one slot
    (60 / GUEST_PATCH_PER_MINUTE s) each, rounded up, at most a horizon's worth; one query.

    Why: the run reserves its slots at Compute's full rate, so a start Compute refuses (its bucket spent by a
    caller PatchPilot does not see: another tool or Update Manager's own schedules patching in the subscription,
    whose guest-patch budget is shared) tries again after Retry-After holding its token, and every try after its
    slot has passed is one start more than the schedule has room for: it is refused again, or takes the token of a
    start on time, which is refused in its place. Nothing drains that excess before the run's last slot. Seen at
    10,000 machines in one subscription (docs/performance.md, session 23): 74 starts refused together, then for
    seven minutes, to the run's last slot, 5,301 installPatches refused (7.6 % of the ARM calls). That trigger was
    the simulator's (this VM was paused 12.8 s; the simulator's clock stood still while PatchPilot's moved on,
    fixed in session 24: tools/azure_simulator/clock.py), the seven minutes were this schedule's. With the
    schedule moved on by their slots at the next release, they start in the gap it leaves at the window's head;
    until then (at most a horizon) they are still refused. Errs slow: a start refused again after this
    release is counted at the next as well, a 429 of ARM's read or write limit or of the machine's own Compute
    policy counts as one of the subscription's, and the whole run moves (startShiftSeconds is run-wide). Not for
    runs with scopes (shift_late_window returns before it)."""
    since = run.get(RELEASED_AT_COLUMN) or run.get("dispatchedAt")
    if not since:
        return 0
    slot = 60.0 / deps.settings.pacing.guest_patch_per_minute
    most = max(1, int(deps.settings.pacing.dispatch_horizon_seconds / slot))
    throttled = deps.store.list_targets(run.run_id, state=MachineState.QUEUED.value, throttled_since=str(since),
                                        select=[THROTTLED_AT_COLUMN], top=most)
    return math.ceil(len(throttled) * slot)


def backlogged(run_id: str, window_from: datetime, deps: DispatchDeps, *, shift: int = 0) -> bool:
    """Whether a start message this run has released (a slot before `window_from`), visible BACKLOG_SECONDS ago or
    more (its slot plus the run's `shift`), has not been taken yet (its machine is still Queued at seq 0): one query
    that stops at the first match."""
    due = iso(min(window_from, utcnow() - timedelta(seconds=BACKLOG_SECONDS + shift)))
    return bool(deps.store.list_targets(run_id, state=MachineState.QUEUED.value, seq=0, due_before=due,
                                        select=["nextActionAt"], top=1))


def extend_releases(run_id: str, last_slot: datetime, deps: DispatchDeps) -> datetime:
    """Machines listed later (a scope's page, shared/runs/discovery.py) join the release chain: the first page starts
    it (`releasedThrough` a horizon from now), a later one moves `lastSlotAt` on, and restarts the chain when it had
    ended before this slot. Returns `releasedThrough` as it stands: the caller sends the starts due before it; the
    chain queues the rest. ETag-conditional, retried; a release that moved the fence meanwhile is read again."""
    horizon = timedelta(seconds=deps.settings.pacing.dispatch_horizon_seconds)
    for _ in range(RELEASE_ATTEMPTS):
        run = deps.store.get_run(run_id)
        if run is None:
            return utcnow()
        released, last = run.get("releasedThrough"), run.get("lastSlotAt")
        if not released:
            until = utcnow() + horizon
            changes = {"releasedThrough": iso(until), "lastSlotAt": iso(max(last_slot, until))}
            restart = last_slot > until
        else:
            until = parse_iso(str(released))
            if last and parse_iso(str(last)) >= last_slot:
                return until  # the chain reaches this slot already
            changes = {"lastSlotAt": iso(last_slot)}
            restart = last_slot >= until and (not last or parse_iso(str(last)) < until)  # the chain had ended
        try:
            deps.store.update_run(run_id, changes, etag=run.etag)
        except ConflictError:
            continue
        if restart:
            send_next_release(run_id, until, deps, shift=start_shift(run))
        return until
    raise StorageContentionError(f"run {run_id} kept changing; the queue will retry this page")


def release_overdue(run: RunRecord, deps: DispatchDeps, now: datetime) -> bool:
    """The sweeper's backstop: a run whose next release should have come (half a horizon before its window,
    plus STALL_AFTER_SECONDS) and has not moved `releasedThrough` on gets that release again. True if sent.

    Not while the run is backlogged: then its release is most likely alive, holding the window back and looking
    again every BACKLOG_RECHECK_SECONDS (release_window). A second release beside it sent the window twice when
    the backlog cleared (both passed the check before either moved the fence): at 10,000 machines over four
    subscriptions, one window of about 1,500 duplicate starts per sweep, a quarter of all steps. A chain that was
    really lost during a backlog is restarted by the first sweep after the backlog clears."""
    released, last = run.get("releasedThrough"), run.get("lastSlotAt")
    if not released or not last or released > last or run.get("completedAt"):
        return False
    shift = start_shift(run)
    due = parse_iso(released) + timedelta(seconds=shift - deps.settings.pacing.dispatch_horizon_seconds / 2
                                          + deps.settings.retries.stall_after_seconds)
    if now < due or backlogged(run.run_id, parse_iso(released), deps, shift=shift):
        return False
    deps.queues.send_release(run.run_id, released, 0)
    return True


def queued_target(run_id: str, resource_id: str, now: str, **columns: object) -> MachineRecord:
    """A machine as it enters a run: Queued at seq 0, due now."""
    vm = parse_machine_id(resource_id, target="machines")
    return MachineRecord.new(run_id, vm.key, {
        "resourceId": vm.resource_id,
        "state": MachineState.QUEUED.value,
        "seq": 0,
        "createdAt": now,
        "updatedAt": now,
        "nextActionAt": now,
        **columns,
    })


def machine_keys(chunks: list[list[str]]) -> list[str]:
    """The machine keys (MachineRef.key) of a run's machine list, in the request's order."""
    return [parse_machine_id(rid, target="machines").key for chunk in chunks for rid in chunk]


def start_slots(deps: DispatchDeps, chunks: list[list[str]], *, reads_per_start: int = 1,
                predicted: Mapping[str, float] | None = None,
                block_starts: dict[str, float] | None = None) -> dict[str, int]:
    """Reserve a guest-patch token per machine, one block per subscription: {machine key: whole seconds
    from now until its start is due}. Machine keys repeat nowhere (validation refuses duplicates).

    Within a subscription the slots go in the request's order or, with LONGEST_FIRST (settings.plans) and
    `predicted` ({machine key: seconds}), to the longest predicted first; equal predictions keep the request's
    order (a stable sort), and a machine without one counts as 0 s.

    A start also reads (the machine, for its OS type; for an install, its instance view: `reads_per_start`
    tokens of the reads bucket) and posts (writes bucket), each taking its token when the start runs. A start
    that had to wait for those would spend its guest-patch token late, and held tokens spent late pile up where
    Compute's bucket has no room (at 10,000 machines the first 600 slots all fall at once, while ARM's reads
    allow about 60 at once: the benchmark met 429s). So a slot is also no earlier than those buckets, alone,
    could serve the starts before it: the guest-patch slots, the read schedule and the write schedule, whichever
    is latest (their tokens are still taken at the start, from this process's leases: reserving them now would
    hold ARM's shared budget for the whole run). `block_starts` (if given) gets {subscription: epoch second its
    block counts from} (defer_start_schedule)."""
    by_subscription: dict[str, list[str]] = defaultdict(list)
    for rid in (rid for chunk in chunks for rid in chunk):
        vm = parse_machine_id(rid, target="machines")
        by_subscription[vm.subscription_id].append(vm.key)
    slots: dict[str, int] = {}
    for subscription, keys in by_subscription.items():
        if predicted and deps.settings.plans.longest_first:
            keys.sort(key=lambda k: -predicted.get(k, 0.0))
        started: list[float] = []
        due = deps.pacer.reserve_block(subscription, GUEST_PATCH, len(keys), started=started)
        if block_starts is not None and started:
            block_starts[subscription] = started[0]
        for name, per_start in ((READS, reads_per_start), (WRITES, 1)):
            _, alone = block_slots(deps.pacer.buckets[name], 0.0, 0.0, len(keys) * per_start)
            due = [max(d, a) for d, a in zip(due, alone[per_start - 1::per_start], strict=True)]
        slots.update((key, math.ceil(d)) for key, d in zip(keys, due, strict=True))
    return slots


def create_targets(run_id: str, deps: RunRows, due: dict[str, str] | None = None, *,
                   chunks: list[list[str]] | None = None, predictions: Mapping[str, Prediction] | None = None) -> bool:
    """Create the run's target rows (and count them); rows an earlier attempt created stay as they are.
    `due`: {machine key: ISO time its first step is due} (default: now). `chunks`: the run's machine list as
    read already (default: read it). `predictions`: {machine key: Prediction}, kept on each row as
    `predictedSeconds` and `predictionBasis`. False if some existed already."""
    now = iso(utcnow())
    chunks = deps.store.machine_chunks(run_id) if chunks is None else chunks
    targets = [queued_target(run_id, rid, now) for chunk in chunks for rid in chunk]
    if due or predictions:
        targets = [t.with_changes({**({"nextActionAt": due.get(t.key, now)} if due else {}),
                                   **(prediction_columns(predictions[t.key]) if predictions and t.key in predictions
                                      else {})}, t.etag) for t in targets]
    return deps.store.create_targets(targets)


def undispatched_targets(run_id: str, deps: RunRows) -> list[MachineRecord]:
    """Before dispatch has created its rows, a run's machines are all Queued: show them from the request."""
    existing = {t.key: t for t in deps.store.list_targets(run_id)}
    now = iso(utcnow())
    return [existing.get(t.key, t) for chunk in deps.store.machine_chunks(run_id)
            for t in (queued_target(run_id, rid, now) for rid in chunk)]


def fail_undispatched(run_id: str, deps: DispatchDeps, ports: StepPorts, reason: str) -> int:
    """The dispatch message itself was poisoned: fail the machines that never got going."""
    from shared.runs.machine_worker import fail_machines

    create_targets(run_id, deps)
    return fail_machines(ports, deps.store.list_targets(run_id, state=MachineState.QUEUED.value, seq=0),
                         "DispatchFailed", reason)
