"""Closing a run: the last machine to finish (or the rollout controller) records its final status; an install
run then adds each machine's installation to its history (shared/runs/install_history.py), from which later
runs predict durations."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from shared.core.clock import iso, utcnow
from shared.core.states import with_discovery, with_rollout
from shared.events.publish import DeliveryQueue, emit, run_subject
from shared.runs.install_history import Durations, record_run
from shared.runs.operation_kinds import INSTALL
from shared.runs.ports import RunRows

log = logging.getLogger(__name__)


class RunCloser(RunRows, DeliveryQueue, Durations, Protocol):
    """What closing a run uses."""


def complete_run_if_done(run_id: str, deps: RunCloser, *, machine: str | None = None) -> bool:
    """Called after each terminal transition; the last machine to finish closes the run.

    Each caller checks *after* its own update, so whichever finishes last sees no unfinished
    machine. A caller naming the `machine` that just ended skips even the counters' read while that machine's own
    shard still counts unfinished ones (RunStore.shard_unfinished): only the last to end in each shard reads.
    Two callers may both close it; the write is the same either way. Reads the run's counter
    rows (shared.core.counters), not its machines: one query per call; when they say finished, one
    small query confirms no machine row is unfinished, and the run is read to close it. After the close, an
    install run's durations go to the machines' histories (one query of its rows, then per subscription one
    query and a write per 100 machines; a failure there is logged and the run stays closed).
    """
    store = deps.store
    spec = deps.run_spec(run_id)  # cached per process: no read
    if spec is None:
        return False
    if machine is not None and spec.counted and store.shard_unfinished(run_id, machine):
        # `machine` just ended in this process: its counter shard, as that write left it, still counts unfinished
        # machines, so the run was not finished then; the shard's last machine to end looks (no read here)
        return False
    counters = store.run_counters(run_id, counted=spec.counted)
    if counters.unfinished:
        return False
    if spec.counted and store.has_unfinished_targets(run_id):
        # The counters say done and a row disagrees: a writer that did not count (an instance of an older
        # version during a deployment, a hand edit). Never close a run whose machines still run.
        log.error("run %s: its counters say finished but a machine row is not; not closing", run_id)
        return False
    scopes = store.list_scopes(run_id) if spec.discovers else []
    if any(not s.get("done") for s in scopes):
        return False  # more machines may still be listed
    run = store.get_run(run_id)
    if run is None:
        return False
    summary = counters.summary()
    summary["status"] = with_discovery(summary["status"], scopes, summary["machineCount"])
    columns: Mapping[str, Any] = run
    summary["status"] = with_rollout(summary["status"], columns)
    store.update_run(run_id, {
        "machineCount": summary["machineCount"],
        "active": False,
        "status": summary["status"],
        "completedAt": iso(utcnow()),
        "summary": json.dumps(summary),
    })
    log.info("run %s completed: %s", run_id, summary["status"])
    outcome = {"runId": run_id, "status": summary["status"], "machineCount": summary["machineCount"],
               "outcomes": summary["outcomes"]}
    emit(deps, "patchpilot.run.completed", run_subject(run_id), outcome, key=str(columns.get("resumes") or 0))
    post_hook = (run.rollout or {}).get("postHook")
    if post_hook:  # told once per close; a receiver dedupes a rare second close by runId
        deps.send_delivery({"kind": "posthook", "url": post_hook["url"], "body": outcome})
    if spec.operation == INSTALL.action:  # after the events: they need not wait for the histories
        record_run(run_id, deps)
    return True
