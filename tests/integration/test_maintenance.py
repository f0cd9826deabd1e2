"""Maintenance configurations against Azurite and the ARM simulator: the API, windows that open
exactly once (concurrent and late ticks), windows recorded as skipped with the reason, dynamic
scopes resolved when the window opens, and a VM in two overlapping windows patched once."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from shared.composition import Components
from shared.core.clock import iso
from shared.maintenance.windows import open_due_windows
from tests.app import maintenance_api, runs_api
from tests.integration.queue_pump import QueuePump
from tests.support.fleet import sim_config
from tools.azure_simulator import Simulator, SimulatorConfig


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return sim_config(vms=16, seed=5)


def call(fn: Any, method: str, route: dict[str, str], body: Any = None,
         params: dict[str, str] | None = None) -> tuple[int, Any]:
    raw = json.dumps(body).encode() if body is not None else b""
    resp = fn(func.HttpRequest(method, "http://127.0.0.1:7071/api/x", body=raw, route_params=route,
                               params=params or {}))
    return resp.status_code, json.loads(resp.get_body() or b"null")


def local(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def configuration(start: datetime, *, duration: str = "03:00", recur: str = "Day") -> dict[str, Any]:
    return {"location": "westus", "properties": {
        "maintenanceScope": "InGuestPatch",
        "maintenanceWindow": {"startDateTime": local(start), "duration": duration, "timeZone": "UTC",
                              "recurEvery": recur},
        "installPatches": {"rebootSetting": "IfRequired",
                           "windowsParameters": {"classificationsToInclude": ["Critical", "Security"]},
                           "linuxParameters": {"classificationsToInclude": ["Critical", "Security"]}}}}


def put(name: str, body: dict[str, Any]) -> int:
    status, resp = call(maintenance_api.put_configuration, "PUT", {"name": name}, body)
    assert status in (200, 201), resp
    return status


def assign(config: str, name: str, properties: dict[str, Any]) -> None:
    status, resp = call(maintenance_api.put_assignment, "PUT", {"name": config, "assignmentName": name},
                        {"properties": properties})
    assert status in (200, 201), resp


def occurrences(name: str, since: datetime, count: int = 5) -> list[dict[str, Any]]:
    status, body = call(maintenance_api.list_occurrences, "GET", {"name": name},
                        params={"from": iso(since), "count": str(count)})
    assert status == 200, body
    return body["value"]


def run_of(run_id: str) -> dict[str, Any]:
    resp = runs_api.get_run(func.HttpRequest("GET", "http://127.0.0.1/api/runs/x", body=b"",
                                             route_params={"runId": run_id}))
    return json.loads(resp.get_body())


def finished(run_id: str) -> bool:
    return run_of(run_id)["status"] not in ("Accepted", "InProgress")


def test_configuration_and_assignment_api(services: Components, simulator: Simulator) -> None:
    start = datetime(2026, 1, 1, 22, 0, tzinfo=UTC)
    body = configuration(start, recur="Month Second Tuesday Offset2")
    assert put("patch-tuesday", body) == 201
    assert put("patch-tuesday", body) == 200
    status, got = call(maintenance_api.get_configuration, "GET", {"name": "Patch-Tuesday"})
    assert status == 200 and got["name"] == "patch-tuesday"
    assert got["properties"]["maintenanceWindow"]["recurEvery"] == "Month Second Tuesday Offset2"
    assert got["properties"]["maintenanceWindow"]["expirationDateTime"] == "9999-12-31 23:59"
    _, listed = call(maintenance_api.list_configurations, "GET", {})
    assert [c["name"] for c in listed["value"]] == ["patch-tuesday"]

    windows = occurrences("patch-tuesday", start, 3)
    assert [w["startDateTime"][:16] for w in windows] == ["2026-01-15T22:00", "2026-02-12T22:00", "2026-03-12T22:00"]
    assert windows[0]["startLocal"] == "2026-01-15T22:00+00:00" and windows[0]["maximumDuration"] == "PT2H50M"

    vm = simulator.vm_ids()[0]
    assign("patch-tuesday", "one-vm", {"resourceId": vm})
    assign("patch-tuesday", "payments", {"resourceId": f"/subscriptions/{simulator.subscriptions()[0]}",
                                         "filter": {"tagSettings": {"tags": {"owner": ["payments"]}}}})
    _, listed = call(maintenance_api.list_assignments, "GET", {"name": "patch-tuesday"})
    assert sorted(a["name"] for a in listed["value"]) == ["one-vm", "payments"]
    assert call(maintenance_api.delete_assignment, "DELETE", {"name": "patch-tuesday",
                                                              "assignmentName": "one-vm"})[0] == 200
    assert call(maintenance_api.delete_assignment, "DELETE", {"name": "patch-tuesday",
                                                              "assignmentName": "one-vm"})[0] == 204

    bad = configuration(start, duration="04:00")
    status, err = call(maintenance_api.put_configuration, "PUT", {"name": "too-long"}, bad)
    assert status == 400 and err["error"]["target"] == "properties.maintenanceWindow.duration"
    assert call(maintenance_api.get_configuration, "GET", {"name": "too-long"})[0] == 404  # nothing written
    status, err = call(maintenance_api.put_assignment, "PUT", {"name": "nope", "assignmentName": "a"},
                       {"properties": {"resourceId": vm}})
    assert status == 404

    assert call(maintenance_api.delete_configuration, "DELETE", {"name": "patch-tuesday"})[0] == 200
    assert call(maintenance_api.delete_configuration, "DELETE", {"name": "patch-tuesday"})[0] == 204
    assert services.maintenance.list_assignments("patch-tuesday") == []


def test_a_window_opens_exactly_once_with_its_dynamic_scope(services: Components, simulator: Simulator) -> None:
    now = datetime.now(UTC)
    begin = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
    put("nightly", configuration(begin))
    vms = simulator.state()["vms"]
    payments = {v["id"].lower() for v in vms if v["tags"]["owner"] == "payments"}
    static = next(v["id"] for v in vms if v["tags"]["owner"] != "payments")
    assert payments
    assign("nightly", "payments", {"resourceId": f"/subscriptions/{simulator.subscriptions()[0]}",
                                   "filter": {"resourceTypes": ["Microsoft.Compute/virtualMachines"],
                                              "tagSettings": {"tags": {"owner": ["payments"]}}}})
    assign("nightly", "extra", {"resourceId": static})

    totals: Counter[str] = Counter()
    ticks = [begin, begin, begin, begin + timedelta(seconds=20)]  # two hosts at once, a retry, a late tick
    threads = [threading.Thread(target=lambda t=t: totals.update(open_due_windows(services, t))) for t in ticks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert totals["opened"] == 1, totals
    window = occurrences("nightly", begin, 1)[0]
    assert window["state"] == "Started"
    run_id = window["runId"]

    QueuePump(services).run_until(lambda: finished(run_id), timeout=90)
    run = run_of(run_id)
    assert run["status"] in ("Succeeded", "CompletedWithWarnings"), run["states"]
    assert run["origin"] == "maintenance" and run["maintenanceWindow"]["configuration"] == "nightly"
    assert {m["id"].lower() for m in run["machines"]} == payments | {static.lower()}
    calls = simulator.calls()["byVm"]
    state = {v["id"].lower(): v for v in simulator.state()["vms"]}
    for vm in state:
        expected = 1 if vm in payments or vm == static.lower() else 0
        assert calls[vm]["installPatchesAccepted"] == expected, vm
        if expected:  # what was left of the window when the VM started, minus the 10-minute reboot reserve
            sent = state[vm]["operations"][0]["request"]["maximumDuration"]
            assert sent in ("PT2H50M", "PT2H49M", "PT2H48M", "PT2H47M"), sent
    # Opened by the on-time ticks (the whole window) or by the one 20 s late, whichever claimed it first.
    assert run["installPatches"]["maximumDuration"] in ("PT2H50M", "PT2H49M")
    assert open_due_windows(services, begin + timedelta(hours=1))["opened"] == 0


def test_windows_that_cannot_open_are_recorded_with_the_reason(services: Components, simulator: Simulator) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    put("late", configuration(now - timedelta(hours=1), duration="01:30"))
    assign("late", "vm", {"resourceId": simulator.vm_ids()[0]})
    put("empty", configuration(now - timedelta(minutes=5)))
    put("missed", configuration(now + timedelta(hours=2), duration="01:30"))
    assign("missed", "vm", {"resourceId": simulator.vm_ids()[1]})

    counts = open_due_windows(services, now + timedelta(minutes=10))  # "late" has 20 minutes left
    assert counts["skipped-TooLate"] == 1 and counts["skipped-NoAssignments"] == 1 and counts["opened"] == 0
    late = occurrences("late", now - timedelta(hours=1), 1)[0]
    assert late["state"] == "Skipped" and late["error"]["code"] == "TooLate"
    assert "20 minutes" in late["error"]["message"]
    assert occurrences("empty", now - timedelta(minutes=5), 1)[0]["error"]["code"] == "NoAssignments"

    # No tick for a day: two windows of "missed" came and went; each is recorded, not lost.
    open_due_windows(services, now + timedelta(days=1, hours=5))
    gone = occurrences("missed", now, 3)
    assert [(w["state"], w["error"]["code"]) for w in gone[:2]] == [("Skipped", "Missed")] * 2
    assert "state" not in gone[2]  # the next one is still to come
    assert sum(simulator.calls()["byVm"][v.lower()]["installPatches"] for v in simulator.vm_ids()) == 0


def test_a_vm_caught_by_two_windows_at_once_is_patched_once(services: Components, simulator: Simulator) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    shared_vm, other = simulator.vm_ids()[:2]
    put("first", configuration(now - timedelta(minutes=2)))
    put("second", configuration(now - timedelta(minutes=1)))
    assign("first", "vm", {"resourceId": shared_vm})
    assign("first", "other", {"resourceId": other})
    assign("second", "vm", {"resourceId": shared_vm})
    assert open_due_windows(services, now)["opened"] == 2
    runs = [occurrences(name, now - timedelta(minutes=5), 1)[0]["runId"] for name in ("first", "second")]
    QueuePump(services).run_until(lambda: all(finished(r) for r in runs), timeout=90)

    assert simulator.calls()["byVm"][shared_vm.lower()]["installPatchesAccepted"] == 1
    assert simulator.calls()["byVm"][other.lower()]["installPatchesAccepted"] == 1
    outcomes = [next(m for m in run_of(r)["machines"] if m["id"] == shared_vm) for r in runs]
    skipped = [m for m in outcomes if m["state"] == "Skipped"]
    assert len(skipped) == 1 and skipped[0]["error"]["code"] == "PatchedByOtherWindow"
    assert sorted(m["state"] for m in outcomes) == ["Completed", "Skipped"]


def test_one_broken_configuration_does_not_keep_other_windows_shut(services: Components,
                                                                   simulator: Simulator) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    broken = configuration(now - timedelta(minutes=1))
    broken["properties"]["maintenanceWindow"]["recurEvery"] = "Fortnightly"  # stored by an older version, say
    services.maintenance.put_config("broken", broken, now - timedelta(hours=1))
    put("good", configuration(now - timedelta(minutes=1)))
    assign("good", "vm", {"resourceId": simulator.vm_ids()[0]})
    counts = open_due_windows(services, now)
    assert counts["failed"] == 1 and counts["opened"] == 1


def test_a_window_opened_by_a_tick_that_died_is_not_recorded_as_skipped(services: Components,
                                                                       simulator: Simulator) -> None:
    from shared.maintenance.configuration import configuration_from_stored, parse_assignment
    from shared.maintenance.windows import window_key, window_run
    from shared.runs.accept import accept

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    put("nightly", configuration(now - timedelta(minutes=1), duration="01:30"))
    assign("nightly", "vm", {"resourceId": simulator.vm_ids()[0]})
    stored = services.maintenance.get_config("nightly")
    assert stored is not None
    config = configuration_from_stored("nightly", stored)
    begin, end = config.schedule.window_at(now) or (now, now)
    assignments = [parse_assignment("vm", {"properties": {"resourceId": simulator.vm_ids()[0]}})]
    run, _ = accept(window_run(config, assignments, begin, end, end - now - timedelta(minutes=10)),
                    window_key(config, begin), services)  # ... and the tick dies before recording it
    open_due_windows(services, end - timedelta(minutes=15))  # the next tick finds 15 minutes left
    recorded = occurrences("nightly", begin, 1)[0]
    assert recorded["state"] == "Started" and recorded["runId"] == run.run_id


def test_a_vm_whose_turn_comes_after_its_window_is_not_started(services: Components, simulator: Simulator) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    begin = now - timedelta(minutes=80)  # a 01:30 window with 10 minutes left in real time
    put("short", configuration(begin, duration="01:30"))
    assign("short", "vm", {"resourceId": simulator.vm_ids()[0]})
    assert open_due_windows(services, begin)["opened"] == 1  # opened on time; the steps come late
    run_id = occurrences("short", begin, 1)[0]["runId"]
    QueuePump(services).run_until(lambda: finished(run_id), timeout=30)
    machine = run_of(run_id)["machines"][0]
    assert machine["state"] == "Skipped" and machine["error"]["code"] == "WindowClosed"
    assert simulator.calls()["byVm"][simulator.vm_ids()[0].lower()]["installPatches"] == 0


def test_a_vm_the_first_window_failed_to_patch_is_patched_by_the_second(services: Components,
                                                                        simulator: Simulator) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    vm = next(v["id"] for v in simulator.state()["vms"] if v["osType"] == "Windows")
    put("first", configuration(now - timedelta(minutes=2)))
    put("second", configuration(now - timedelta(minutes=1)))
    assign("first", "vm", {"resourceId": vm})
    assign("second", "vm", {"resourceId": vm})
    simulator.set_faults(patch_failure_rate=1.0)  # every selected patch fails in the first install
    assert open_due_windows(services, now - timedelta(seconds=90))["opened"] == 1  # only "first" is open yet
    first = occurrences("first", now - timedelta(minutes=5), 1)[0]["runId"]
    QueuePump(services).run_until(lambda: finished(first), timeout=60)
    assert run_of(first)["status"] == "Failed"
    simulator.set_faults(patch_failure_rate=0.0)
    assert open_due_windows(services, now)["opened"] == 1
    second = occurrences("second", now - timedelta(minutes=5), 1)[0]["runId"]
    QueuePump(services).run_until(lambda: finished(second), timeout=60)
    assert run_of(second)["machines"][0]["state"] == "Completed"
    assert simulator.calls()["byVm"][vm.lower()]["installPatchesAccepted"] == 2


@pytest.mark.parametrize("simulator_config", [sim_config(vms=8, seed=5)])  # operations of 1-4 s, so they overlap
def test_a_window_run_follows_the_configurations_rollout(services: Components, simulator: Simulator) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    body = configuration(now - timedelta(minutes=1))
    body["properties"]["rollout"] = {"waves": [{"name": "canary", "size": 1}, {"size": "rest"}],
                                     "maxConcurrency": 2, "healthCheck": {"after": "PT0S", "within": "PT0S"}}
    put("careful", body)
    assign("careful", "all", {"resourceId": f"/subscriptions/{simulator.subscriptions()[0]}"})
    assert open_due_windows(services, now)["opened"] == 1
    run_id = occurrences("careful", now - timedelta(minutes=5), 1)[0]["runId"]
    QueuePump(services).run_until(lambda: finished(run_id), timeout=120)
    run = run_of(run_id)
    assert run["status"] in ("Succeeded", "CompletedWithWarnings") and run["rollout"]["maxConcurrency"] == 2
    assert sorted(m["wave"] for m in run["machines"]) == [0] + [1] * 7
    assert {m["health"]["status"] for m in run["machines"]} == {"Healthy"}  # the configuration's healthCheck
    assert simulator.calls()["peakConcurrentBySubscription"]["*"] <= 2
    windows_sent = [v["operations"][0]["request"] for v in simulator.state()["vms"] if v["osType"] == "Windows"]
    assert all("maxPatchPublishDate" in r["windowsParameters"] for r in windows_sent)  # one patch set
