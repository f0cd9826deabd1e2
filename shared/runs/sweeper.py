"""The safety net: re-queue work whose message was lost, on a timer.

A step records its outcome and *then* queues the next step; a process that dies between the two
leaves a machine with no message. The queue's own redelivery covers every other crash (the message
reappears after its 10-minute lease). So the sweeper looks for unfinished machines whose next
action is overdue by more than that lease plus slack, and queues a step at their current `seq`;
if the original message does turn up, `seq` and ETags let only one of them act.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from shared.core.clock import iso
from shared.runs.completion import complete_run_if_done
from shared.runs.services import Services

log = logging.getLogger(__name__)
STALL_AFTER = timedelta(minutes=15)  # > the 10-minute lease a crashed host's message waits out
UNDISPATCHED_AFTER = timedelta(minutes=2)


def sweep(svc: Services, now: datetime) -> dict[str, int]:
    counts = {"runs": 0, "redispatched": 0, "requeued": 0, "relisted": 0, "completed": 0}
    store = svc.store
    stalled_before = iso(now - STALL_AFTER)
    for run in store.list_active_runs():
        store.ops["sweepRuns"] += 1
        counts["runs"] += 1
        run_id = run.run_id
        if not run.get("dispatchedAt"):
            if run["createdAt"] < iso(now - UNDISPATCHED_AFTER):
                svc.send_dispatch(run_id)
                counts["redispatched"] += 1
            continue
        stalled = store.list_targets(run_id, unfinished_due_before=stalled_before,
                                     admitted=True if run.get("rollout") else None)  # the controller starts others
        for target in stalled:
            svc.send_step(run_id, target.key, target.seq)
            counts["requeued"] += 1
        if run.get("scopeCount"):  # a discovery page whose message was lost
            for row in store.list_scopes(run_id, unfinished_due_before=stalled_before):
                svc.send_discovery(run_id, row.index, int(row["page"]))
                counts["relisted"] += 1
        if run.get("rollout"):
            svc.hooks.advance_run(run_id, svc)  # a lost advance message (soak ended, slot freed) is found here
        elif complete_run_if_done(run_id, svc):
            counts["completed"] += 1
    if counts["redispatched"] or counts["requeued"] or counts["relisted"]:
        log.warning("sweep re-queued work: %s", counts)
    return counts
