"""The compliance view from per-subscription rollups (shared/storage/fleet_rollup.py), against Azurite: after any
mix of writes (listings, assessment results delivered twice or out of order, failures, forgotten and removed
machines, several subscriptions, concurrent writers, a build racing a write) the rollup-based view equals
compliance_report over the rows, and it reads the same number of pages whatever the number of machines."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from azure.data.tables import UpdateMode

from shared.assessments.compliance import compliance_report, compliance_view, load_snapshot
from shared.assessments.periodic import start_periodic_sweep
from shared.assessments.results import patch_facts
from shared.composition import Components
from shared.core.clock import iso, utcnow
from shared.core.errors import StorageContentionError
from shared.core.ids import HYBRID_MACHINES, VIRTUAL_MACHINES, MachineRef
from shared.storage.fleet_rollup import SHARDS, shard_key
from shared.storage.fleet_store import FleetStore, machine_row_key
from shared.validation.resource_ids import parse_machine_id
from tests.app import assessments_api
from tests.integration.queue_pump import QueuePump
from tests.support.fleet import sim_config
from tools import metrics
from tools.azure_simulator import Simulator, SimulatorConfig

from .test_assessments import SLOT, call, configure, run_finished

SUBS = ["00000000-0000-0000-0000-0000000000a1", "00000000-0000-0000-0000-0000000000b2",
        "00000000-0000-0000-0000-0000000000c3"]
PATCHES = [{"kbId": "5031", "classifications": ["Security"]}, {"kbId": "5032", "classifications": ["Critical"]},
           {"kbId": "5033", "classifications": ["Updates"]}, {"name": "openssl", "classifications": ["Security"]},
           {"name": "bash", "classifications": ["Other"]}, {"name": "curl", "classifications": ["Critical"]}]
F = 36  # the default ASSESSMENT_FRESHNESS_HOURS, which the stores' writes use
DELIVERIES = 5  # a queue message's deliveries here (host.json maxDequeueCount is the real bound)
FILTERS: list[dict[str, Any]] = [{}, {"os_type": "Linux"}, {"machine_kind": HYBRID_MACHINES},
                                 {"os_type": "Windows", "machine_kind": VIRTUAL_MACHINES}]


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return sim_config(vms=16, subscriptions=2, seed=5, stopped_ratio=0.2, page_size=5)


def machine(sub: str, i: int) -> MachineRef:
    if i % 7 == 6:
        return parse_machine_id(f"/subscriptions/{sub}/resourceGroups/rg-arc/providers/Microsoft.HybridCompute/"
                                f"machines/arc{i}", target="id")
    return parse_machine_id(f"/subscriptions/{sub}/resourceGroups/rg{i % 2}/providers/Microsoft.Compute/"
                            f"virtualMachines/vm{i}", target="id")


def inventory(vm: MachineRef, rnd: random.Random, seen: str) -> dict[str, Any]:
    columns: dict[str, Any] = {"resourceId": vm.resource_id, "resourceGroup": vm.resource_group, "name": vm.name,
                               "machineKind": vm.kind, "lastSeenAt": seen}
    if rnd.random() < 0.8:  # a listing without an OS type keeps the one known (merge)
        columns["osType"] = rnd.choice(["Windows", "Linux"])
    if vm.is_hybrid:
        columns["agentStatus"] = rnd.choice(["Connected", "Disconnected"])
    return columns


def success(vm: MachineRef, rnd: random.Random, when: datetime) -> dict[str, Any]:
    patches = rnd.sample(PATCHES, rnd.randint(0, len(PATCHES)))
    critical = sum(p["classifications"][0] in ("Critical", "Security") for p in patches)
    return {"resourceId": vm.resource_id, "lastAttemptState": "Completed", "assessedAt": iso(when),
            "assessmentStatus": "Succeeded", "rebootPending": rnd.random() < 0.3, "powerState": "running",
            "criticalAndSecurityPatchCount": critical, "otherPatchCount": len(patches) - critical,
            "errorCode": "", **patch_facts(patches)}


def failure(vm: MachineRef, rnd: random.Random) -> dict[str, Any]:
    state = rnd.choice(["Failed", "TimedOut", "Skipped"])
    changes: dict[str, Any] = {"resourceId": vm.resource_id, "lastAttemptState": state, "errorCode": "X"}
    if state == "Skipped":
        changes["powerState"] = rnd.choice(["deallocated", "stopped"])
    return changes


def rows_report(fleet: FleetStore, now: datetime, freshness_hours: int = F, subscription: str | None = None,
                **flt: Any) -> dict[str, Any]:
    """The definition: the pure report over every row in scope."""
    rows = load_snapshot(fleet, subscription_id=subscription, resource_group=None, os_type=flt.get("os_type"),
                         machine_kind=flt.get("machine_kind"))
    return compliance_report(rows, now=now, freshness_hours=freshness_hours, top=100)


def view(fleet: FleetStore, now: datetime, freshness_hours: int = F, subscription: str | None = None,
         **flt: Any) -> tuple[dict[str, Any], int]:
    """The rollup-based view and how many machine-row pages it read (0: the rollups answered)."""
    before = metrics.table_operations("fleet")["queryMachines"]
    report = compliance_view(fleet, subscription_id=subscription, resource_group=None, os_type=flt.get("os_type"),
                             machine_kind=flt.get("machine_kind"), now=now, freshness_hours=freshness_hours, top=100)
    return report, metrics.table_operations("fleet")["queryMachines"] - before


def assert_view_is_rows(fleet: FleetStore, one: str = SUBS[1], *, from_rollups: bool = True) -> None:
    now = utcnow()
    for flt in FILTERS:
        for subscription in (None, one):
            report, row_pages = view(fleet, now, subscription=subscription, **flt)
            assert report == rows_report(fleet, now, subscription=subscription, **flt), (flt, subscription)
            if from_rollups:
                assert row_pages == 0, (flt, subscription)


@pytest.fixture
def fleet(services: Components) -> Iterator[FleetStore]:
    yield services.fleet


def test_rollups_follow_every_kind_of_write_exactly(fleet: FleetStore) -> None:
    rnd = random.Random(14)
    now = utcnow()
    machines = [machine(sub, i) for sub in SUBS for i in range(14)]
    fleet.note_subscriptions(SUBS)
    assert view(fleet, now)[1] == 3 and fleet.read_rollup(SUBS[0]) == {}  # no machines: nothing built, no rows
    fleet.upsert_machines([(vm, inventory(vm, rnd, iso(now))) for vm in machines])
    assert view(fleet, now)[1] == 3  # the first view reads the rows, and builds the rollups: the writes keep them
    assert len(fleet.read_rollup(SUBS[0])) == SHARDS
    assert_view_is_rows(fleet)

    for step in range(90):
        vm = rnd.choice(machines)
        action = rnd.random()
        if action < 0.45:  # a result, sometimes delivered twice, sometimes older than the one kept
            changes = success(vm, rnd, now - timedelta(hours=rnd.uniform(0, 24 * 5)))
            for _ in range(rnd.choice([1, 1, 2])):
                fleet.record_attempt(vm, changes, assessed_at=changes["assessedAt"])
        elif action < 0.65:
            changes = failure(vm, rnd)
            for _ in range(rnd.choice([1, 2])):
                fleet.record_attempt(vm, changes, assessed_at=None)
        elif action < 0.75:
            fleet.forget_machine(vm)
            fleet.forget_machine(vm)  # a redelivered message: already gone
        elif action < 0.9:  # a listing (again): some machines come back, others change OS or agent status
            seen = rnd.sample(machines, 6)
            fleet.upsert_machines([(m, inventory(m, rnd, iso(utcnow()))) for m in [*seen, seen[0]]])
        else:  # a complete listing of one scope: what it did not see leaves
            sub = rnd.choice(SUBS)
            rg = rnd.choice([None, "rg0", "rg-arc"])
            started = iso(utcnow())
            listed = [m for m in machines if m.subscription_id == sub and (rg is None or m.resource_group == rg)
                      and rnd.random() < 0.7]
            fleet.upsert_machines([(m, inventory(m, rnd, iso(utcnow()))) for m in listed])
            fleet.remove_unseen(sub, rg, listed_since=started)
            assert fleet.remove_unseen(sub, rg, listed_since=started) == 0  # redelivered: nothing more to remove
        if step == 44:
            assert_view_is_rows(fleet)
    assert_view_is_rows(fleet)
    report, _ = view(fleet, utcnow())
    assert report["stale"] and report["assessed"] and report["failed"] and report["notConnected"]  # all exercised
    assert report["mostWidespreadMissingPatches"] and report["mostWidespreadMissingPatchesApproximate"] is False


def test_concurrent_writers_and_builds_keep_the_rollups_exact(fleet: FleetStore) -> None:
    sub = SUBS[0]
    machines = [machine(sub, i) for i in range(24)]
    fleet.note_subscriptions([sub])
    seed_rnd = random.Random(3)
    fleet.upsert_machines([(vm, inventory(vm, seed_rnd, iso(utcnow()))) for vm in machines])
    errors: list[BaseException] = []

    def delivered(step: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """As the queue runs a worker's step: a StorageContentionError (a writer that lost WRITE_ATTEMPTS rounds)
        fails the message and it is delivered again. Any other error, or losing every delivery, is a failure."""
        for _ in range(DELIVERIES - 1):
            try:
                step(*args, **kwargs)
                return
            except StorageContentionError:
                continue
        step(*args, **kwargs)

    def relist(vm: MachineRef, listed: dict[str, Any]) -> None:  # ARM said gone, then a listing saw it again
        fleet.forget_machine(vm)
        fleet.upsert_machines([(vm, listed)])

    def writer(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for _ in range(25):
                vm = rnd.choice(machines[:8])  # few machines, few shards: real contention
                if rnd.random() < 0.7:
                    changes = success(vm, rnd, utcnow() - timedelta(hours=rnd.uniform(0, 72)))
                    delivered(fleet.record_attempt, vm, changes, assessed_at=changes["assessedAt"])
                elif rnd.random() < 0.5:
                    delivered(fleet.record_attempt, vm, failure(vm, rnd), assessed_at=None)
                else:
                    delivered(relist, vm, inventory(vm, rnd, iso(utcnow())))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(5)]
    before = metrics.table_operations("fleet")
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):  # views (and the builds they start) race the writers
        view(fleet, utcnow())
    for t in threads:
        t.join()
    assert not errors, errors
    assert (metrics.table_operations("fleet") - before)["writeConflict"] > 0  # the writers did contend
    view(fleet, utcnow())  # builds now if every build so far lost to a writer
    assert_view_is_rows(fleet, sub)


def test_a_build_racing_a_write_is_not_kept(fleet: FleetStore) -> None:
    rnd = random.Random(8)
    sub = SUBS[2]
    machines = [machine(sub, i) for i in range(10)]
    fleet.note_subscriptions([sub])
    # Rows from before rollups existed: written straight to the table.
    for vm in machines:
        fleet.machines.upsert_entity({"PartitionKey": vm.subscription_id, "RowKey": machine_row_key(vm),
                                      **inventory(vm, rnd, iso(utcnow())), **success(vm, rnd, utcnow())})
    # A view starts a build (read the shards, then the rows) and a result lands before the build is written.
    read = fleet.read_rollup(sub)
    rows = fleet.query_machines(sub)
    changes = failure(machines[0], rnd)
    fleet.record_attempt(machines[0], {**changes, "powerState": "stopped"}, assessed_at=None)
    assert fleet.build_rollup(sub, read, rows, utcnow(), F) is False  # the write touched its shard
    _, row_pages = view(fleet, utcnow())
    assert row_pages > 0  # answered from the rows (and built from them) once
    assert_view_is_rows(fleet, sub)
    # Built now: a build from stale shard rows fails whatever it was about to write.
    read = fleet.read_rollup(sub)
    fleet.forget_machine(machines[1])
    assert fleet.build_rollup(sub, read, rows, utcnow(), F) is False
    assert_view_is_rows(fleet, sub)


def test_an_approximate_rollup_is_built_again_after_a_day(fleet: FleetStore) -> None:
    sub = SUBS[0]
    fleet.note_subscriptions([sub])
    rnd = random.Random(2)
    vm = machine(sub, 0)
    fleet.record_attempt(vm, success(vm, rnd, utcnow()), assessed_at=iso(utcnow()))
    assert view(fleet, utcnow())[1] > 0 and view(fleet, utcnow())[1] == 0  # built, then used
    # As if shard 0 had dropped per-patch counts to fit (fleet_rollup.shard_entity) a day ago.
    shard = fleet.read_rollup(sub)[0]
    fleet.machines.update_entity({"PartitionKey": sub, "RowKey": shard_key(0), "approximate": True,
                                  "builtAt": iso(utcnow() - timedelta(hours=23))}, mode=UpdateMode.MERGE)
    assert view(fleet, utcnow())[1] == 0  # not yet a day old: used as it is
    fleet.machines.update_entity({"PartitionKey": sub, "RowKey": shard_key(0), "builtAt": shard["builtAt"][:4]},
                                 mode=UpdateMode.MERGE)  # built long ago
    assert view(fleet, utcnow())[1] > 0  # answered from the rows, and built again
    assert view(fleet, utcnow())[1] == 0 and fleet.read_rollup(sub)[0]["approximate"] is False
    assert_view_is_rows(fleet, sub)


def test_view_reads_do_not_grow_with_the_fleet(fleet: FleetStore) -> None:
    rnd = random.Random(5)

    def grow(count: int) -> None:
        machines = [machine(sub, i) for sub in SUBS[:2] for i in range(count)]
        fleet.upsert_machines([(vm, inventory(vm, rnd, iso(utcnow()))) for vm in machines])
        for vm in machines[-count // 2:]:
            changes = success(vm, rnd, utcnow() - timedelta(hours=rnd.uniform(0, 60)))
            fleet.record_attempt(vm, changes, assessed_at=changes["assessedAt"])

    def reads() -> int:
        now = utcnow()
        before = metrics.table_operations("fleet")
        report, _ = view(fleet, now)
        ops = metrics.table_operations("fleet") - before
        pages = sum(n for op, n in ops.items() if op in ("listSubscriptions", "readRollup", "queryMachines"))
        assert report == rows_report(fleet, now)
        return pages

    fleet.note_subscriptions(SUBS[:2])
    grow(10)  # 20 machines
    view(fleet, utcnow())  # builds the rollups
    small = reads()
    grow(100)  # 200 machines (the first 10 of each subscription again, and 90 more)
    assert reads() == small == 1 + 2  # the subscriptions, then one page of rollup rows per subscription


def test_stale_from_the_minute_freshness_hours_ago(fleet: FleetStore) -> None:
    sub = SUBS[0]
    vm, old = machine(sub, 0), machine(sub, 1)
    fleet.note_subscriptions([sub])
    minute = utcnow().replace(second=0, microsecond=0) - timedelta(hours=3)
    assessed = minute + timedelta(seconds=30)
    rnd = random.Random(1)
    fleet.record_attempt(vm, success(vm, rnd, assessed), assessed_at=iso(assessed))
    forty_hours = utcnow() - timedelta(hours=40)  # older than the writes' collapse boundary (36 h + 1 h)
    fleet.record_attempt(old, success(old, rnd, forty_hours), assessed_at=iso(forty_hours))

    def counts(now: datetime, hours: int) -> tuple[int, int]:
        report, _ = view(fleet, now, hours)
        assert report == rows_report(fleet, now, hours)
        return report["assessed"], report["stale"]

    # now - 1 h falls 15 s after the assessment, in its minute: still assessed; from the next minute on, stale.
    assert counts(assessed + timedelta(hours=1, seconds=15), 1) == (1, 1)
    assert counts(minute + timedelta(hours=1, minutes=1), 1) == (0, 2)
    assert counts(minute + timedelta(hours=1, minutes=1) - timedelta(microseconds=1), 1) == (1, 1)
    # A view whose freshness window reaches past what the writes merged (the setting raised to 48 h) reads the
    # rows once, and builds a rollup that keeps that much.
    _, row_pages = view(fleet, utcnow(), 48)
    assert row_pages > 0
    assert counts(utcnow(), 48) == (2, 0)
    assert view(fleet, utcnow(), 48)[1] == 0
    # A newer result of a machine counted in the merged minutes moves it out of them.
    fleet.record_attempt(old, success(old, rnd, utcnow()), assessed_at=iso(utcnow()))
    assert counts(utcnow(), F) == (2, 0)


def test_assessments_delivered_twice_keep_the_rollups_exact(services: Components, simulator: Simulator) -> None:
    """The real pipeline: a sweep, then VMs deleted, added, stopped, and assessed again, every message twice."""
    svc = configure(services, simulator)
    run_id, _ = start_periodic_sweep(svc, SLOT)
    assert run_id
    QueuePump(svc, duplicate=True).run_until(lambda: run_finished(run_id), timeout=120)
    view(svc.fleet, utcnow())  # builds the rollups from the sweep's rows
    assert_live_view_is_rows(svc.fleet)

    states = simulator.state()["vms"]
    running = [v["id"] for v in states if v["powerState"] == "running"]
    simulator.remove_vm(running[0])  # a VM deleted: an on-demand assessment of it forgets it
    simulator.remove_vm(running[1])  # another: the next complete listing removes it
    simulator.add_vms(2, subscription=simulator.subscriptions()[1])
    simulator.set_power(running[2], "deallocated")
    simulator.publish_patch("Linux", "Critical")
    for body in ({"machines": [running[0], running[2]]},
                 {"scopes": [f"/subscriptions/{s}" for s in simulator.subscriptions()]}):
        status, run, _ = call(assessments_api.create_assessment, "POST", "/api/assessments", body=body)
        assert status == 202, run
        QueuePump(svc, duplicate=True).run_until(lambda rid=run["id"]: run_finished(rid), timeout=120)
    assert_live_view_is_rows(svc.fleet)
    report, _ = view(svc.fleet, utcnow())
    assert report["machines"] == len(simulator.state()["vms"]) and report["notRunning"] >= 1


def assert_live_view_is_rows(fleet: FleetStore) -> None:
    now = utcnow()
    for flt in FILTERS:
        report, row_pages = view(fleet, now, **flt)
        assert report == rows_report(fleet, now, **flt) and row_pages == 0, flt
    for sub in fleet.subscriptions():
        assert sorted(shard_key(s) for s in fleet.read_rollup(sub)) == [shard_key(s) for s in range(SHARDS)]
