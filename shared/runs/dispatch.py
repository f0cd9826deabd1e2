"""Fan a run out into one step message per machine, off the HTTP path.

The HTTP function stores the machine list and queues a single dispatch message, so a
1,000-machine request answers in milliseconds; this worker creates the target rows (one
transaction per 100 machines) and sends the per-machine messages in parallel. A duplicate or
retried dispatch is harmless: target rows are created, never overwritten, and each machine's
`seq` and ETag let only one delivery of a step act.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from shared.core.clock import iso, utcnow
from shared.core.messages import DispatchMessage
from shared.core.records import MachineRecord
from shared.core.states import MachineState, RunStatus
from shared.runs.services import Services
from shared.validation.resource_ids import parse_machine_id

log = logging.getLogger(__name__)
SEND_PARALLELISM = 16


def dispatch_run(msg: DispatchMessage, svc: Services) -> int:
    """Returns how many machines were queued."""
    run = svc.store.get_run(msg.run_id)
    if run is None:
        log.warning("dispatch: run %s does not exist; dropping", msg.run_id)
        return 0
    if run.get("dispatchedAt"):
        log.info("dispatch: run %s already dispatched at %s", msg.run_id, run["dispatchedAt"])
        return 0
    create_targets(msg.run_id, svc)
    if run.get("rollout"):  # machines wait for the rollout controller to admit them
        svc.store.update_run(msg.run_id, {"dispatchedAt": iso(utcnow()), "status": RunStatus.IN_PROGRESS.value})
        svc.send_advance(msg.run_id)
        return 0
    queued = svc.store.list_targets(msg.run_id, state=MachineState.QUEUED.value, seq=0)
    with ThreadPoolExecutor(max_workers=SEND_PARALLELISM) as pool:
        list(pool.map(lambda t: svc.send_step(msg.run_id, t.key, t.seq), queued))
    svc.store.update_run(msg.run_id, {"dispatchedAt": iso(utcnow()), "status": RunStatus.IN_PROGRESS.value})
    log.info("dispatch: run %s queued %d machines", msg.run_id, len(queued))
    return len(queued)


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


def create_targets(run_id: str, svc: Services) -> int:
    """Create the target rows chunk by chunk; chunks created by an earlier attempt are skipped."""
    now = iso(utcnow())
    created = 0
    for chunk in svc.store.machine_chunks(run_id):
        if svc.store.create_targets([queued_target(run_id, rid, now) for rid in chunk]):
            created += len(chunk)
    return created


def undispatched_targets(run_id: str, svc: Services) -> list[MachineRecord]:
    """Before dispatch has created its rows, a run's machines are all Queued: show them from the request."""
    existing = {t.key: t for t in svc.store.list_targets(run_id)}
    now = iso(utcnow())
    return [existing.get(t.key, t) for chunk in svc.store.machine_chunks(run_id)
            for t in (queued_target(run_id, rid, now) for rid in chunk)]
