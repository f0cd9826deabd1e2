"""A run's maintained counters (shared.core.counters, `~counts-NN` rows) against Azurite and the simulator:
they equal a fresh count of the machine rows after runs whose every message was delivered twice (with
failures, unknown outcomes and skips), after racing writers, and after a retried creation; rollout
decisions read the same number of Table round-trips at 50 machines as at 1,200; and a run stored before
counters existed is still shown right (from its rows)."""

from __future__ import annotations

import json
import secrets
import threading
from collections import Counter
from typing import Any

import azure.functions as func
import pytest
from azure.data.tables import UpdateMode

from shared.composition import Components
from shared.core.clock import iso, utcnow
from shared.core.counters import count_rows
from shared.core.errors import ConflictError
from shared.core.records import MachineRecord
from shared.core.states import summarize
from shared.rollouts.controller import advance
from shared.runs import views
from shared.runs.completion import complete_run_if_done
from shared.runs.dispatch import create_targets, queued_target
from shared.storage.run_store import COUNTERS_PREFIX, SHARDS, counter_shard
from tests.app import runs_api
from tests.integration.queue_pump import QueuePump
from tests.integration.test_outcome_unknown import one_resource_group
from tests.support.bodies import INSTALL_LINUX_OTHER
from tests.support.fleet import sim_config
from tests.support.roles import PATCH_ACTIONS
from tools import metrics
from tools.azure_simulator import Simulator, SimulatorConfig

SUB = "00000000-0000-0000-0000-00000000000a"


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return sim_config(vms=12, seed=21, time_scale=36000.0)


def post(body: dict[str, Any]) -> str:
    resp = runs_api.create_run(func.HttpRequest("POST", "http://127.0.0.1:7071/api/runs",
                                                body=json.dumps(body).encode()))
    assert resp.status_code == 202, resp.get_body()
    return str(json.loads(resp.get_body())["id"])


def get(fn: Any, run_id: str) -> dict[str, Any]:
    resp = fn(func.HttpRequest("GET", "http://127.0.0.1/api/runs/x", body=b"", route_params={"runId": run_id}))
    return dict(json.loads(resp.get_body()))


def finished(run_id: str) -> bool:
    return get(runs_api.get_run, run_id)["status"] not in ("Accepted", "InProgress")


def assert_exact(svc: Components, run_id: str) -> Counter[str]:
    """The stored counters equal a fresh count of the machine rows (and say the same as summarize)."""
    rows = svc.store.list_targets(run_id)
    assert all(not t.key.startswith("~") for t in rows)
    counters = svc.store.run_counters(run_id, counted=True)
    assert dict(counters.counts) == dict(count_rows(rows))
    assert counters.summary() == summarize(rows)
    shards = list(svc.store.targets.query_entities("PartitionKey eq @run and RowKey ge '~'",
                                                   parameters={"run": run_id}))
    assert 0 < len(shards) <= SHARDS and all(s["RowKey"].startswith(COUNTERS_PREFIX) for s in shards)
    return Counter(t["state"] for t in rows)


def test_counters_equal_the_rows_after_runs_with_every_message_delivered_twice(
        services: Components, simulator: Simulator) -> None:
    vms = simulator.vm_ids()
    # A plain run: two VMs deallocated fail, the rest complete.
    simulator.set_power(vms[0], "deallocated")
    simulator.set_power(vms[1], "deallocated")
    plain = post({"machines": vms, "installPatches": INSTALL_LINUX_OTHER})
    QueuePump(services, duplicate=True).run_until(lambda: finished(plain), timeout=90)
    states = assert_exact(services, plain)
    assert states["Failed"] == 2 and states["Completed"] == len(vms) - 2
    view = get(runs_api.get_run, plain)
    assert view["status"] == "Failed" and view["states"] == dict(states)

    # A rollout without the poll grant: its resource group's machines end OutcomeUnknown (no budget spent),
    # the others are refused (403: Failed) until maxFailures halts the run and the rest are Skipped.
    scope, in_group = one_resource_group(simulator)
    simulator.set_power(vms[0], "running")
    simulator.set_power(vms[1], "running")
    simulator.set_role_assignments([{"scope": scope, "actions": PATCH_ACTIONS}])
    others = [vm for vm in vms if vm not in in_group]
    assert len(in_group) >= 2 and len(others) >= 4
    rollout = post({"machines": in_group + others, "installPatches": INSTALL_LINUX_OTHER,
                    "rollout": {"waves": [{"machines": in_group}, {"size": "rest"}], "maxFailures": 2,
                                "maxConcurrency": 2}})
    QueuePump(services, duplicate=True).run_until(lambda: finished(rollout), timeout=90)
    states = assert_exact(services, rollout)
    assert states["OutcomeUnknown"] == len(in_group) and states["Failed"] >= 2 and states["Skipped"] >= 1
    view = get(runs_api.get_run, rollout)
    assert view["status"] == "Halted" and view["states"] == dict(states)
    summary = get(runs_api.get_run_summary, rollout)
    assert summary["states"] == dict(states)
    assert summary["waves"]["0"] == {"OutcomeUnknown": len(in_group)}
    assert sum(summary["waves"]["1"].values()) == len(others)


def test_counters_equal_the_rows_of_a_run_over_a_scope_listed_twice(services: Components,
                                                                     simulator: Simulator) -> None:
    (sub,) = simulator.subscriptions()
    # Every page message is delivered twice (at once, or one after the other): the copy that finds the page's
    # machines created already leaves them, and their counts, as they are.
    run_id = post({"scopes": [f"/subscriptions/{sub}"], "installPatches": INSTALL_LINUX_OTHER})
    QueuePump(services, duplicate=True).run_until(lambda: finished(run_id), timeout=90)
    states = assert_exact(services, run_id)
    assert sum(states.values()) == len(simulator.vm_ids())
    assert get(runs_api.get_run, run_id)["states"] == dict(states)


def new_run(svc: Components, n: int, *, counted: bool = True, rollout: dict[str, Any] | None = None) -> str:
    """A run stored as accept_run stores one (or, `counted` False, as runs were before counters)."""
    run_id = f"{secrets.token_hex(6)[:11]}-{secrets.token_hex(4)}"
    ids = [f"/subscriptions/{SUB}/resourceGroups/rg-{i % 7}/providers/Microsoft.Compute/virtualMachines/vm-{i:05d}"
           for i in range(n)]
    columns: dict[str, Any] = {"operation": "installPatches", "installPatches": json.dumps(INSTALL_LINUX_OTHER),
                               "machineCount": n, "createdAt": iso(utcnow()), "active": True, "status": "Accepted"}
    if rollout is not None:
        columns["rollout"] = json.dumps(rollout)
    svc.store.save_machine_chunks(run_id, ids)
    assert svc.store.create_run(run_id, columns)
    if not counted:  # as stored before counters: no countersVersion
        svc.store.runs.upsert_entity({"PartitionKey": "run", "RowKey": run_id, **columns}, mode=UpdateMode.REPLACE)
    return run_id


def test_racing_writers_leave_the_counters_exact(services: Components) -> None:
    store = services.store
    run_id = new_run(services, 120)
    create_targets(run_id, services)
    store.update_run(run_id, {"dispatchedAt": iso(utcnow())})
    rows = store.list_targets(run_id)
    shard = Counter(counter_shard(t.key) for t in rows).most_common(1)[0][0]
    same_shard = [t for t in rows if counter_shard(t.key) == shard][:8]
    contested = same_shard[0]
    barrier = threading.Barrier(len(same_shard) + 1)
    results: list[str] = []

    def write(target: MachineRecord, state: str) -> None:
        barrier.wait()
        try:
            store.update_target(target, {"state": state, "seq": target.seq + 1})
            results.append(f"{target.key}:{state}")
        except ConflictError:
            results.append("conflict")

    # Two deliveries race on one machine (Failed or Completed: one wins); seven machines of the same counter
    # shard change at once (each wins, re-reading the shard when another got there first).
    threads = [threading.Thread(target=write, args=(contested, "Failed")),
               *(threading.Thread(target=write, args=(t, "Running")) for t in same_shard[1:]),
               threading.Thread(target=write, args=(contested, "Completed"))]
    before = metrics.table_operations("runs")
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count("conflict") == 1 and len(results) == len(same_shard) + 1
    states = assert_exact(services, run_id)
    assert states["Running"] == len(same_shard) - 1 and states["Failed"] + states["Completed"] == 1
    # threads of one process take turns on the shard: none lost its ETag race to another, none read it again
    assert (metrics.table_operations("runs") - before)["counterRetry"] == 0

    # Two processes (stores with their own shard copies) still race, and the ETag keeps the counts exact.
    from shared.core.settings import Settings
    other = Components(Settings.from_env()).store
    more = [t for t in rows if counter_shard(t.key) == shard][8:16]
    barrier = threading.Barrier(len(more))

    def write_from(owner: Any, target: MachineRecord) -> None:
        barrier.wait()
        owner.update_target(target, {"state": "Running", "seq": target.seq + 1})
    threads = [threading.Thread(target=write_from, args=((store, other)[i % 2], t)) for i, t in enumerate(more)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    states = assert_exact(services, run_id)
    assert states["Running"] == len(same_shard) - 1 + len(more)

    stale = store.get_target(run_id, same_shard[1].key)
    assert stale is not None
    store.update_target(stale, {"state": "Failed", "seq": stale.seq + 1})
    with pytest.raises(ConflictError):  # a duplicate that lost the ETag changes nothing, counts included
        store.update_target(stale, {"state": "Completed", "seq": stale.seq + 1})
    assert assert_exact(services, run_id)["Failed"] == states["Failed"] + 1


def test_a_retried_creation_counts_each_machine_once(services: Components) -> None:
    store = services.store
    run_id = new_run(services, 150)
    now = iso(utcnow())
    ids = [rid for chunk in store.machine_chunks(run_id) for rid in chunk]
    assert store.create_targets([queued_target(run_id, rid, now) for rid in ids[:40]]) is True
    assert create_targets(run_id, services) is False  # the 40 exist: the others are created around them
    assert create_targets(run_id, services) is False  # and again: nothing changes
    assert assert_exact(services, run_id) == {"Queued": 150}
    assert len(store.list_targets(run_id)) == 150


READS = ("getRun", "readCounters", "listTargets", "listScopes", "machineChunks", "subscriptionCounts", "pins")


def decision_reads(svc: Components, run_id: str) -> tuple[str, dict[str, int]]:
    before = metrics.table_operations("runs")
    outcome = advance(run_id, svc)
    return outcome, {k: n for k, n in (metrics.table_operations("runs") - before).items() if k in READS}


def rollout_decisions(svc: Components, n: int) -> list[tuple[str, dict[str, int]]]:
    """The reads of each decision of a rollout of `n` machines: admitting, full, one finished, one failed,
    and, once halted (that decision lists the machines it skips), one more finished."""
    run_id = new_run(svc, n, rollout={"maxConcurrency": 5, "maxFailures": 2})
    create_targets(run_id, svc)
    svc.store.update_run(run_id, {"dispatchedAt": iso(utcnow())})
    assert advance(run_id, svc) == "planned"  # lists every machine, once
    decisions = [decision_reads(svc, run_id), decision_reads(svc, run_id)]
    admitted = svc.store.list_targets(run_id, admitted=True)
    assert len(admitted) == 5
    first, second = admitted[0], admitted[1]
    svc.store.update_target(first, {"state": "Completed", "status": "Succeeded", "seq": first.seq + 1})
    decisions.append(decision_reads(svc, run_id))
    svc.store.update_target(second, {"state": "Failed", "seq": second.seq + 1})
    decisions.append(decision_reads(svc, run_id))
    third = svc.store.list_targets(run_id, admitted=True, state="Queued")[0]
    svc.store.update_target(third, {"state": "Failed", "seq": third.seq + 1})
    assert advance(run_id, svc) == "stopped"  # the second failure: the run halts, the waiting are skipped
    halted = get(runs_api.get_run_summary, run_id)
    assert halted["rollout"]["halted"]["machines"] == sorted([second["resourceId"], third["resourceId"]])
    assert halted["states"] == {"Completed": 1, "Failed": 2, "Queued": 4, "Skipped": n - 7}
    fourth = svc.store.list_targets(run_id, admitted=True, state="Queued")[0]
    svc.store.update_target(fourth, {"state": "Completed", "status": "Succeeded", "seq": fourth.seq + 1})
    decisions.append(decision_reads(svc, run_id))
    assert_exact(svc, run_id)
    return decisions


def test_rollout_decisions_read_the_same_whatever_the_run_size(services: Components) -> None:
    small = rollout_decisions(services, 50)
    big = rollout_decisions(services, 1200)  # more than one page (1,000) of machines
    assert [outcome for outcome, _ in small] == ["admitted-5", "admitted-0", "admitted-1", "admitted-1", "stopped"]
    assert small == big, (small, big)


def test_a_run_stored_before_counters_is_shown_from_its_rows(services: Components,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    store = services.store
    run_id = new_run(services, 30, counted=False)
    now = iso(utcnow())
    for i, rid in enumerate(rid for chunk in store.machine_chunks(run_id) for rid in chunk):
        target = queued_target(run_id, rid, now)
        state = ("Completed", "Failed", "Running")[i % 3]
        store.targets.create_entity({"PartitionKey": run_id, "RowKey": target.key, **target.columns,
                                     "state": state, **({"status": "Succeeded"} if state == "Completed" else {})})
    # A counter row an in-flight old run may have got since (partial): never read for such a run.
    store.targets.create_entity({"PartitionKey": run_id, "RowKey": f"{COUNTERS_PREFIX}00",
                                 "counts": json.dumps({"state:Failed": -3})})
    store.update_run(run_id, {"dispatchedAt": now, "status": "InProgress"})
    expected = {"Completed": 10, "Failed": 10, "Running": 10}
    assert get(runs_api.get_run, run_id)["states"] == expected
    monkeypatch.setattr(views, "INLINE_MACHINES", 5)  # shown as a big run: counts only
    view = get(runs_api.get_run, run_id)
    assert view["states"] == expected and view["status"] == "InProgress" and "machines" not in view
    assert get(runs_api.get_run_summary, run_id)["states"] == expected
    assert complete_run_if_done(run_id, services) is False
    for target in store.list_targets(run_id, state="Running"):
        store.update_target(target, {"state": "Completed", "status": "Succeeded"})
    assert complete_run_if_done(run_id, services) is True
    run = store.get_run(run_id)
    assert run is not None and run["status"] == "Failed" and json.loads(run["summary"])["states"] == {
        "Completed": 20, "Failed": 10}
