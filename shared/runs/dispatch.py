"""Fan a run out into one step message per machine, off the HTTP path.

The HTTP function queues a single dispatch message so a 1,000-machine request answers in
milliseconds; this worker sends the per-machine messages in parallel. A duplicate dispatch is
harmless: each machine's `seq` and ETag let only one delivery act.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from shared.runs.messages import DispatchMessage
from shared.runs.model import MachineState, RunStatus, iso, utcnow
from shared.runs.services import Services

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
    queued = svc.store.list_targets(msg.run_id, where=f"state eq '{MachineState.QUEUED.value}'")
    with ThreadPoolExecutor(max_workers=SEND_PARALLELISM) as pool:
        list(pool.map(lambda t: svc.send_step(msg.run_id, t["RowKey"], int(t["seq"])), queued))
    svc.store.update_run(msg.run_id, {"dispatchedAt": iso(utcnow()), "status": RunStatus.IN_PROGRESS.value})
    log.info("dispatch: run %s queued %d machines", msg.run_id, len(queued))
    return len(queued)
