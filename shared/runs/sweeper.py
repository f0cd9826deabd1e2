"""The safety net: re-queue work whose message was lost or is held by a dead host, on a timer.

A step records its outcome and *then* queues the next step; a process that dies between the two
leaves a machine with no message. A host that dies while running steps holds their messages
invisible for the rest of their lease: the Functions host receives queue messages with a 10-minute
visibility timeout and renews it while the function runs (WebJobs QueueListener; host.json
`extensions.queues.visibilityTimeout` is only the delay before a *failed* message's retry). Waiting
that out made recovery take 10-20 minutes. So the sweeper (every minute by default) looks for
unfinished machines whose next action (`nextActionAt`, when their message became due) is overdue by
STALL_AFTER_SECONDS, and queues a step at their current `seq`. A live host takes a due message
within seconds, so such a machine's message is lost, held by a dead host, or stuck in a backlog;
in every case a second message is harmless: `seq`, ETags and the `Starting` claim let only one
delivery act, and the other finds the step moved on ("stale"). Machines left to their run's poll rounds
(shared/runs/poll_rounds.py) get no message each: when any is overdue and no round was due lately, the sweeper
queues a round of that subscription's chain (PollRounds.revive). A claimed machine is settled once its
claim is CLAIM_TIMEOUT_SECONDS old (machine_worker.recover_claim). Recovery after a crash is so
bounded by about STALL_AFTER_SECONDS (or CLAIM_TIMEOUT_SECONDS) plus one sweep interval, when no backlog is
waiting (below).

A backlog is not a loss, and copies deepen it (issue #22: the stack collapsed when they piled up; at 10,000
machines over four subscriptions about 29% of all step messages were such copies, found stale). From the Table a
step in a backlog and one whose message is lost or held by a dead host look the same. The queue narrows it: a
message held by a host, live or dead, is invisible, so when the step's queue has a visible message
(WorkQueues.waiting: one Peek per queue and sweep) the consumers are behind, and a step overdue by less than
STALL_AFTER_SECONDS + BACKLOG_GRACE (10 minutes, the host's lease) is not copied: its message most likely waits
in that backlog. Past that, or when the queue shows nothing visible, it is copied. The price: while a backlog
lasts, a lost message or a dead host's is recovered after up to about 10 minutes instead of one
(tests/integration/test_local_host_recovery.py: no backlog, recovered in seconds). The sweeper also sends at most
MAX_REQUEUED_PER_SWEEP copies a sweep, and leaves a machine whose start window is not released yet to the release
chain (dispatch.release_window, which holds windows back while the consumers are behind).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Protocol

from azure.core.exceptions import AzureError

from shared.core.clock import iso, parse_iso
from shared.core.records import RunRecord
from shared.core.states import MachineState
from shared.runs.dispatch import RELEASED_AT_COLUMN, DispatchDeps, release_overdue, start_shift
from shared.runs.poll_rounds import subscription_of
from shared.runs.ports import Features

log = logging.getLogger(__name__)
MAX_REQUEUED_PER_SWEEP = 500  # step messages one sweep sends again, over all runs
# How long a backlog may hold back a copy: the Functions host's queue lease (10 minutes, see above). A step overdue
# longer than STALL_AFTER_SECONDS + this is copied whatever the queue shows: its message may be lost (a send that
# failed after its Table write) while other work keeps the queue busy.
BACKLOG_GRACE = timedelta(minutes=10)


class RoundReviver(Protocol):
    """Queues a run's poll round when its machines left to the rounds are overdue (shared/runs/poll_rounds.py)."""

    def revive(self, run_id: str, subscription: str, overdue_before: datetime) -> bool: ...


class SweepDeps(DispatchDeps, Features, Protocol):
    """What the sweeper uses."""

    @property
    def poll_rounds(self) -> RoundReviver: ...


def start_message_due(run: RunRecord, slot: datetime) -> datetime:
    """When the start message of a released machine whose slot is `slot` was due: its slot plus the run's
    `startShiftSeconds` (dispatch.defer_start_schedule), and no earlier than the run's latest release
    (`releasedAt`). Under backpressure a window is released after its slots have passed (dispatch.release_window),
    so its rows' slots say nothing of when their messages went; and since a release waits until every start due 30 s
    before it has been taken, a machine still waiting for its start is, but for a lost message, in the latest window
    or due within those 30 s before it. Without this, each late window's machines looked overdue by as long as the
    backlog had lasted, and past the backlog grace the sweeper copied them all: at 10,000 machines over four
    subscriptions, 9,704 copies found their start taken and 4,900 found the machine finished (29 % of all steps). A
    start message lost in an older window still holds every later release back (the backlog check), so it is copied
    STALL_AFTER_SECONDS after the latest release."""
    due = slot + timedelta(seconds=start_shift(run))
    if run.get(RELEASED_AT_COLUMN):
        due = max(due, parse_iso(str(run[RELEASED_AT_COLUMN])))
    return due


def sweep(deps: SweepDeps, now: datetime) -> dict[str, int]:
    counts = {"runs": 0, "redispatched": 0, "released": 0, "requeued": 0, "behind": 0, "relisted": 0,
              "rounds": 0, "completed": 0}
    store = deps.store
    stall_after = timedelta(seconds=deps.settings.retries.stall_after_seconds)
    stalled_before = iso(now - stall_after)
    lost_before = iso(now - stall_after - BACKLOG_GRACE)  # overdue so long that no backlog explains it
    behind: dict[bool, bool] = {}  # per step queue (poll or not): a backlog is waiting there (asked once a sweep)
    for run in store.list_active_runs():
        counts["runs"] += 1
        run_id = run.run_id
        if not run.get("dispatchedAt"):
            # its dispatch message was lost, or is held (a run applied ahead of its window waits for it first)
            if max(str(run["createdAt"]), str(run.get("notBefore") or "")) < stalled_before:
                deps.queues.send_dispatch(run_id)
                counts["redispatched"] += 1
            continue
        if release_overdue(run, deps, now):  # the chain of start-message releases broke (dispatch.py)
            counts["released"] += 1
        stalled = store.list_targets(run_id, unfinished_due_before=stalled_before,
                                     admitted=True if run.get("rollout") else None)  # the controller starts others
        released = str(run.get("releasedThrough") or "")
        # Overdue machines left to the run's poll rounds get no message each: one round polls them all (below).
        in_rounds = [t for t in stalled if t["state"] == MachineState.RUNNING.value and t.get("pollRound") is True]
        for target in stalled:
            if target.get("pollRound") is True and target["state"] == MachineState.RUNNING.value:
                continue
            due = str(target.get("nextActionAt") or "")
            if target.seq == 0 and target["state"] == MachineState.QUEUED.value and released:
                if due >= released:
                    continue  # not released yet: its window comes with the release chain (held under backpressure)
                due = iso(start_message_due(run, parse_iso(due)))
                if due >= stalled_before:
                    continue  # its start message went out later than its slot: not overdue yet
            if counts["requeued"] >= MAX_REQUEUED_PER_SWEEP:
                break  # a backlog looks like lost messages; more copies would only deepen it (next sweep goes on)
            poll = target["state"] != MachineState.QUEUED.value
            if due >= lost_before:
                if poll not in behind:
                    behind[poll] = _waiting(deps, poll)
                if behind[poll]:
                    counts["behind"] += 1  # its message most likely waits in a backlog a live host works through
                    continue
            deps.queues.send_step(run_id, target.key, target.seq, poll=poll)
            counts["requeued"] += 1
        for subscription in sorted({subscription_of(t.key) for t in in_rounds}):  # a chain per subscription
            if deps.poll_rounds.revive(run_id, subscription, now - stall_after):
                counts["rounds"] += 1
        if run.get("scopeCount"):  # a discovery page whose message was lost
            for row in store.list_scopes(run_id, unfinished_due_before=stalled_before):
                deps.queues.send_discovery(run_id, row.index, int(row["page"]))
                counts["relisted"] += 1
        # A lost advance message (soak ended, slot freed) or a close nobody made is found here.
        if deps.hooks.progressed(run_id):
            counts["completed"] += 1
    if counts["redispatched"] or counts["released"] or counts["requeued"] or counts["relisted"] or counts["rounds"]:
        log.warning("sweep re-queued work: %s", counts)
    return counts


def _waiting(deps: SweepDeps, poll: bool) -> bool:
    """Whether the step queue has a visible message; a queue that cannot be read counts as not backlogged (copy,
    as before the look: a duplicate is harmless, a sweep that stops halfway is not)."""
    try:
        return deps.queues.waiting(poll=poll)
    except AzureError:  # the queue service failed or could not be reached: fall back to copying
        log.warning("sweep: could not peek the %s queue; copying overdue steps", "polls" if poll else "operations",
                    exc_info=True)
        return False
