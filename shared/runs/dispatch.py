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
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from shared.core.clock import iso, utcnow
from shared.core.messages import DispatchMessage
from shared.core.records import MachineRecord
from shared.core.states import MachineState, RunStatus
from shared.runs.budget import GUEST_PATCH
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
    if run.get("rollout"):  # machines wait for the rollout controller to admit them
        create_targets(msg.run_id, svc)
        svc.store.update_run(msg.run_id, {"dispatchedAt": iso(utcnow()), "status": RunStatus.IN_PROGRESS.value})
        svc.send_advance(msg.run_id)
        return 0
    now = utcnow()
    slots = start_slots(svc, svc.store.machine_chunks(msg.run_id))
    create_targets(msg.run_id, svc, {key: iso(now + timedelta(seconds=s)) for key, s in slots.items()})
    queued = svc.store.list_targets(msg.run_id, state=MachineState.QUEUED.value, seq=0)

    def send(target: MachineRecord) -> None:
        wait = slots.get(target.key)
        if wait is None:  # not in this dispatch's block (a row from an earlier attempt): reserves itself
            svc.send_step(msg.run_id, target.key, target.seq)
        else:
            svc.send_step(msg.run_id, target.key, target.seq, wait, held=(GUEST_PATCH,))
    with ThreadPoolExecutor(max_workers=SEND_PARALLELISM) as pool:
        list(pool.map(send, queued))
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


def start_slots(svc: Services, chunks: list[list[str]]) -> dict[str, int]:
    """Reserve a guest-patch token per machine, one block per subscription: {machine key: whole seconds
    from now until its start is due}. Machine keys repeat nowhere (validation refuses duplicates)."""
    by_subscription: dict[str, list[str]] = defaultdict(list)
    for rid in (rid for chunk in chunks for rid in chunk):
        vm = parse_machine_id(rid, target="machines")
        by_subscription[vm.subscription_id].append(vm.key)
    slots: dict[str, int] = {}
    for subscription, keys in by_subscription.items():
        due = svc.pacer.reserve_block(subscription, GUEST_PATCH, len(keys))
        slots.update((key, math.ceil(d)) for key, d in zip(keys, due, strict=True))
    return slots


def create_targets(run_id: str, svc: Services, due: dict[str, str] | None = None) -> bool:
    """Create the run's target rows (and count them); rows an earlier attempt created stay as they are.
    `due`: {machine key: ISO time its first step is due} (default: now). False if some existed already."""
    now = iso(utcnow())
    targets = [queued_target(run_id, rid, now) for chunk in svc.store.machine_chunks(run_id) for rid in chunk]
    if due:
        targets = [t.with_changes({"nextActionAt": due.get(t.key, now)}, t.etag) for t in targets]
    return svc.store.create_targets(targets)


def undispatched_targets(run_id: str, svc: Services) -> list[MachineRecord]:
    """Before dispatch has created its rows, a run's machines are all Queued: show them from the request."""
    existing = {t.key: t for t in svc.store.list_targets(run_id)}
    now = iso(utcnow())
    return [existing.get(t.key, t) for chunk in svc.store.machine_chunks(run_id)
            for t in (queued_target(run_id, rid, now) for rid in chunk)]
