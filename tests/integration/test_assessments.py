"""Assessments against Azurite and the ARM simulator over real HTTP, delivered in-process by the pump:
periodic sweeps (one per slot, duplicates harmless), on-demand assessments, history retention,
VMs coming and going, and the compliance view checked against what the simulator holds."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from shared.assessments.periodic import start_periodic_sweep
from shared.composition import Components
from shared.validation.resource_ids import parse_vm_id
from tests.app import assessment_workers, assessments_api, get_services, reset_services, runs_api
from tests.integration.queue_pump import QueuePump
from tests.support.compliance import api_named, assert_compliance_matches, expected_compliance
from tests.support.fleet import sim_config
from tools.azure_simulator import Simulator, SimulatorConfig

SLOT = datetime(2026, 11, 20, 3, 0, 5, tzinfo=UTC)  # just after the default 03:00 UTC occurrence


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    # 2 subscriptions, some VMs stopped, and pages of 7 so every subscription's listing has page boundaries.
    return sim_config(vms=40, subscriptions=2, seed=21, stopped_ratio=0.15, page_size=7)


def configure(svc: Components, sim: Simulator, **extra: str) -> Components:
    """Point the periodic assessment at the simulator's subscriptions (and any other settings)."""
    os.environ.update({"ASSESSMENT_SCOPES": ",".join(f"/subscriptions/{s}" for s in sim.subscriptions()),
                       "ASSESSMENT_SCHEDULE": "0 0 3 * * *", **extra})  # daily, as in production
    reset_services()
    return get_services()


def call(fn: Any, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None,
         route: dict[str, str] | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    raw = json.dumps(body).encode() if body is not None else b""
    resp = fn(func.HttpRequest(method, f"http://127.0.0.1:7071{path}", body=raw, params=params or {},
                               route_params=route or {}, headers={"Content-Type": "application/json"}))
    return resp.status_code, json.loads(resp.get_body() or b"{}"), dict(resp.headers)


def run_finished(run_id: str) -> bool:
    status, _, _ = call(assessments_api.get_assessment, "GET", f"/api/assessments/{run_id}", route={"runId": run_id})
    return status == 200


def compliance(**params: str) -> dict[str, Any]:
    status, body, _ = call(assessments_api.get_compliance, "GET", "/api/compliance", params=params)
    assert status == 200, body
    return body


def vm_route(vm_id: str) -> dict[str, str]:
    ref = parse_vm_id(vm_id, target="vm")
    return {"subscriptionId": ref.subscription_id, "resourceGroupName": ref.resource_group, "vmName": ref.name}


def test_sweep_assesses_running_vms_once_and_compliance_equals_the_simulator(services: Components,
                                                                            simulator: Simulator) -> None:
    svc = configure(services, simulator)
    states = simulator.state()["vms"]
    stopped = {v["id"].lower() for v in states if v["powerState"] != "running"}
    assert stopped and len({v["subscriptionId"] for v in states}) == 2

    run_id, created = start_periodic_sweep(svc, SLOT)
    assert created and run_id
    pump = QueuePump(svc, duplicate=True)  # every discovery page and step delivered twice
    pump.run_until(lambda: run_finished(run_id), timeout=120)

    status, run, _ = call(assessments_api.get_assessment, "GET", f"/api/assessments/{run_id}",
                          route={"runId": run_id})
    assert status == 200 and run["status"] == "Succeeded", run
    assert run["origin"] == "schedule" and run["machineCount"] == len(states)
    assert all(s["done"] and s["listed"] == len(states) // 2 for s in run["scopes"])
    by_id = {m["id"].lower(): m for m in run["machines"]}
    for vm_key, calls in simulator.calls()["byVm"].items():
        expected = 0 if vm_key in stopped else 1
        assert calls["assessPatchesAccepted"] == expected, vm_key
        assert by_id[vm_key]["state"] == ("Skipped" if vm_key in stopped else "Completed")
    assert all(by_id[k]["error"]["code"] == "VMNotRunning" for k in stopped)

    assert_compliance_matches(compliance(), expected_compliance(simulator))
    sub = simulator.subscriptions()[1]
    assert_compliance_matches(compliance(subscriptionId=sub), expected_compliance(simulator, subscription=sub))
    assert_compliance_matches(compliance(osType="linux"), expected_compliance(simulator, os_type="Linux"))

    # One machine's latest result is what the simulator returned, every patch included (classes by the API's names).
    vm_id = next(v["id"] for v in states if v["powerState"] == "running")
    status, view, _ = call(assessments_api.get_machine_assessment, "GET", "/api/machines/x/assessment",
                           route=vm_route(vm_id))
    op = next(o for o in simulator.state()["vms"] if o["id"] == vm_id)["operations"][0]
    assert status == 200
    assert view["latest"]["availablePatches"] == [api_named(p) for p in op["result"]["availablePatches"]]
    assert view["latest"]["assessmentActivityId"] == op["result"]["assessmentActivityId"]
    assert len(view["history"]) == 1


def test_one_sweep_per_schedule_slot_whatever_the_ticks(services: Components, simulator: Simulator) -> None:
    svc = configure(services, simulator)
    results: list[tuple[str | None, bool]] = []
    # Two hosts firing the same occurrence at once, a retried invocation, and a late (past_due) tick.
    threads = [threading.Thread(target=lambda: results.append(start_periodic_sweep(get_services(), SLOT)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.append(start_periodic_sweep(svc, SLOT + timedelta(hours=7)))
    assert len({run_id for run_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1

    next_day, created = start_periodic_sweep(svc, SLOT + timedelta(days=1))
    assert created and next_day != results[0][0]
    listed = json.loads(runs_api.list_runs(func.HttpRequest("GET", "http://127.0.0.1/api/runs", body=b"",
                                                            params={"top": "10"})).get_body())
    assert len(listed["value"]) == 2

    # The timer function itself: the first tick claims today's real slot; a second, late one starts nothing.
    assessment_workers.periodic_assessment(TimerRequest(past_due=False))
    after_first = len(svc.store.list_runs(10, None)[0])
    assessment_workers.periodic_assessment(TimerRequest(past_due=True))
    assert len(svc.store.list_runs(10, None)[0]) == after_first == 3


def test_on_demand_assessment_follows_the_async_pattern(services: Components, simulator: Simulator) -> None:
    svc = configure(services, simulator)
    states = simulator.state()["vms"]
    running = [v["id"] for v in states if v["powerState"] == "running"][:3]
    stopped = next(v["id"] for v in states if v["powerState"] == "deallocated")

    status, body, headers = call(assessments_api.create_assessment, "POST", "/api/assessments?code=k",
                                 body={"machines": [*running, stopped]})
    assert status == 202, body
    run_id = body["id"]
    assert headers["Location"] == f"http://127.0.0.1:7071/api/assessments/{run_id}?code=k"
    assert int(headers["Retry-After"]) >= 1
    status, _, headers = call(assessments_api.get_assessment, "GET", f"/api/assessments/{run_id}",
                              route={"runId": run_id})
    assert status == 202 and headers["Location"].endswith(f"/api/assessments/{run_id}")

    QueuePump(svc).run_until(lambda: run_finished(run_id), timeout=60)
    _, run, _ = call(assessments_api.get_assessment, "GET", f"/api/assessments/{run_id}", route={"runId": run_id})
    assert run["status"] == "Succeeded" and run["outcomes"] == {"succeeded": 3, "skipped": 1}
    skipped = next(m for m in run["machines"] if m["id"] == stopped)
    assert skipped["state"] == "Skipped" and "deallocated" in skipped["error"]["message"]
    assert simulator.calls()["byVm"][stopped.lower()]["assessPatchesAccepted"] == 0
    report = compliance()  # the skipped machine counts as not running and never assessed
    assert (report["machines"], report["assessed"], report["notRunning"], report["neverAssessed"]) == (4, 3, 1, 1)

    # The machine detail of the run shows the assessment's patches (kept in the machine's history).
    detail = json.loads(runs_api.get_run_machine(func.HttpRequest(
        "GET", "http://127.0.0.1/api/runs/x/machines/y", body=b"", route_params={"runId": run_id,
                                                                                  **vm_route(running[0])})).get_body())
    op = next(v for v in simulator.state()["vms"] if v["id"] == running[0])["operations"][0]
    assert detail["patches"] == [api_named(p) for p in op["result"]["availablePatches"]]

    # A run id of the wrong kind is not an assessment.
    only_critical = {"classificationsToInclude": ["Critical"]}
    install = runs_api.create_run(func.HttpRequest("POST", "http://127.0.0.1/api/runs", body=json.dumps({
        "machines": running[:1], "installPatches": {"maximumDuration": "PT1H", "rebootSetting": "Never",
                                                    "windowsParameters": only_critical,
                                                    "linuxParameters": only_critical}}).encode()))
    install_id = json.loads(install.get_body())["id"]
    status, err, _ = call(assessments_api.get_assessment, "GET", "/x", route={"runId": install_id})
    assert status == 404 and err["error"]["code"] == "AssessmentNotFound"


@pytest.mark.parametrize(("body", "target"), [
    ({"machines": [], "scopes": ["/subscriptions/00000000-0000-0000-0000-000000000001"]}, "machines"),
    ({}, None),
    ({"scopes": ["/subscriptions/not-a-guid"]}, "scopes[0]"),
    ({"scopes": ["/subscriptions/00000000-0000-0000-0000-000000000001",
                 "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg"]}, "scopes[1]"),
    ({"machines": ["/subscriptions/x/vm"]}, "machines[0]"),
    ({"machines": ["/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/"
                   "Microsoft.Compute/virtualMachines/vm"], "extra": 1}, "extra"),
])
def test_bad_assessment_requests_are_400_and_write_nothing(services: Components, simulator: Simulator,
                                                          body: dict[str, Any], target: str | None) -> None:
    status, err, _ = call(assessments_api.create_assessment, "POST", "/api/assessments", body=body)
    assert status == 400 and err["error"].get("target") == target, err
    assert services.store.list_runs(10, None)[0] == []


@pytest.mark.parametrize(("params", "target"), [({"osType": "Solaris"}, "osType"), ({"top": "0"}, "top"),
                                                ({"resourceGroup": "rg"}, "resourceGroup"),
                                                ({"subscriptionId": "nope"}, "subscriptionId")])
def test_bad_compliance_filters_are_400(services: Components, simulator: Simulator, params: dict[str, str],
                                        target: str) -> None:
    status, err, _ = call(assessments_api.get_compliance, "GET", "/api/compliance", params=params)
    assert status == 400 and err["error"]["target"] == target


def test_history_is_kept_and_pruned_after_retention(services: Components, simulator: Simulator) -> None:
    svc = configure(services, simulator, ASSESSMENT_RETENTION_DAYS="2")
    vm_id = next(v["id"] for v in simulator.state()["vms"] if v["powerState"] == "running")
    vm = parse_vm_id(vm_id, target="vm")
    now = datetime.now(UTC)
    old_key = svc.fleet.save_history(vm, now - timedelta(days=5), "old-activity", {"status": "Succeeded"},
                                     [{"patchId": "p1", "name": "old"}, {"patchId": "p2", "name": "older"}])
    kept_key = svc.fleet.save_history(vm, now - timedelta(days=1), "recent-activity", {"status": "Succeeded"}, [])

    for _ in range(2):  # two assessments: both stay, with the recent one; the 5-day-old one goes
        status, body, _ = call(assessments_api.create_assessment, "POST", "/api/assessments",
                               body={"machines": [vm_id]})
        assert status == 202
        QueuePump(svc).run_until(lambda run_id=body["id"]: run_finished(run_id), timeout=60)

    keys = [h["historyKey"] for h in svc.fleet.list_history(vm, 50)]
    assert len(keys) == 3 and kept_key in keys and old_key not in keys
    assert svc.fleet.history_patches(vm, old_key) == []
    _, view, _ = call(assessments_api.get_machine_assessment, "GET", "/x", route=vm_route(vm_id),
                      params={"history": "2"})
    assert len(view["history"]) == 2 and view["history"][0]["at"] > view["history"][1]["at"]


def test_vms_that_appear_disappear_or_get_new_patches_between_sweeps(services: Components,
                                                                    simulator: Simulator) -> None:
    svc = configure(services, simulator)
    first, _ = start_periodic_sweep(svc, SLOT)
    QueuePump(svc).run_until(lambda: run_finished(first), timeout=90)
    assert compliance()["machines"] == 40

    gone = [v["id"] for v in simulator.state()["vms"]][:2]
    for vm_id in gone:
        simulator.remove_vm(vm_id)
    added = simulator.add_vms(3, subscription=simulator.subscriptions()[0])
    published = simulator.publish_patch("Windows", "Critical", "Emergency Update (KB5999999)")

    second, _ = start_periodic_sweep(svc, SLOT + timedelta(days=1))
    QueuePump(svc).run_until(lambda: run_finished(second), timeout=90)
    report = compliance()
    assert_compliance_matches(report, expected_compliance(simulator))
    assert report["machines"] == 41
    for vm_id in gone:
        status, _, _ = call(assessments_api.get_machine_assessment, "GET", "/x", route=vm_route(vm_id))
        assert status == 200  # history is kept; the machine is no longer in the compliance view
    status, view, _ = call(assessments_api.get_machine_assessment, "GET", "/x", route=vm_route(added[0]))
    assert status == 200 and view["assessmentStatus"] == "Succeeded"
    windows_running = sum(1 for v in simulator.state()["vms"] if v["osType"] == "Windows"
                          and v["powerState"] == "running")
    top = {p["patch"]: p["machines"] for p in report["mostWidespreadMissingPatches"]}
    assert top[f"KB{published['kbId']}"] == windows_running


def test_a_scope_that_cannot_be_listed_fails_the_sweep_with_the_reason(services: Components,
                                                                      simulator: Simulator) -> None:
    missing = "/subscriptions/00000000-0000-0000-0000-00000000dead"
    svc = configure(services, simulator)
    status, body, _ = call(assessments_api.create_assessment, "POST", "/api/assessments",
                           body={"scopes": [missing, f"/subscriptions/{simulator.subscriptions()[0]}"]})
    assert status == 202
    QueuePump(svc).run_until(lambda: run_finished(body["id"]), timeout=60)
    _, run, _ = call(assessments_api.get_assessment, "GET", "/x", route={"runId": body["id"]})
    assert run["status"] == "Failed"
    failed = next(s for s in run["scopes"] if s["scope"] == missing)
    assert failed["error"]["code"] == "SubscriptionNotFound"
    assert sum(s["listed"] for s in run["scopes"]) == run["machineCount"] == 20


def test_sweeper_relists_a_scope_whose_page_message_was_lost(services: Components, simulator: Simulator) -> None:
    from shared.core.clock import iso, utcnow
    from shared.runs.sweeper import sweep

    svc = configure(services, simulator)
    run_id, _ = start_periodic_sweep(svc, SLOT)
    assert run_id
    # the timer's host "died" after creating the run, before queuing
    svc.account.queue(svc.settings.queues.discovery).clear_messages()
    assert sweep(svc, utcnow())["relisted"] == 0  # not overdue yet: nothing duplicated
    for index in range(2):
        row = svc.store.get_scope(run_id, index)
        assert row is not None
        svc.store.update_scope(row, {"nextActionAt": iso(utcnow() - timedelta(minutes=20))})
    assert sweep(svc, utcnow())["relisted"] == 2
    QueuePump(svc).run_until(lambda: run_finished(run_id), timeout=90)
    _, run, _ = call(assessments_api.get_assessment, "GET", "/x", route={"runId": run_id})
    assert run["status"] == "Succeeded" and run["machineCount"] == 40


def test_a_poisoned_page_ends_its_scope_and_the_sweep_still_finishes(services: Components,
                                                                    simulator: Simulator) -> None:
    svc = configure(services, simulator)
    run_id, _ = start_periodic_sweep(svc, SLOT)
    pump = QueuePump(svc)
    client = pump.routes[2][0]
    msgs = list(client.receive_messages(max_messages=2, visibility_timeout=2))  # the other reappears in 2 s
    assert len(msgs) == 2
    first = msgs[0]  # as if it had failed maxDequeueCount times and moved to the poison queue
    assessment_workers.discovery_poison(func.QueueMessage(id=first.id, body=first.content.encode()))
    client.delete_message(first)
    pump.run_until(lambda: run_finished(str(run_id)), timeout=90)
    _, run, _ = call(assessments_api.get_assessment, "GET", "/x", route={"runId": run_id})
    assert run["status"] == "Failed" and run["machineCount"] == 20
    assert sorted(str((s.get("error") or {}).get("code")) for s in run["scopes"]) == ["None", "PoisonMessage"]


def test_a_scope_with_no_vms_finishes(services: Components, simulator: Simulator) -> None:
    svc = configure(services, simulator)
    vms = simulator.state()["vms"]
    group, sub = vms[0]["resourceGroup"], vms[0]["subscriptionId"]
    for vm in vms:
        if vm["resourceGroup"] == group and vm["subscriptionId"] == sub:
            simulator.remove_vm(vm["id"])
    status, body, _ = call(assessments_api.create_assessment, "POST", "/api/assessments",
                           body={"scopes": [f"/subscriptions/{sub}/resourceGroups/{group}"]})
    assert status == 202
    QueuePump(svc).run_until(lambda: run_finished(body["id"]), timeout=30)
    _, run, _ = call(assessments_api.get_assessment, "GET", "/x", route={"runId": body["id"]})
    assert run["status"] == "Succeeded" and run["machineCount"] == 0 and run["scopes"][0]["listed"] == 0


def test_overlapping_listings_never_remove_machines_that_exist(services: Components, simulator: Simulator) -> None:
    svc = configure(services, simulator)
    sweep_id, _ = start_periodic_sweep(svc, SLOT)
    sub = simulator.subscriptions()[0]
    _, on_demand, _ = call(assessments_api.create_assessment, "POST", "/api/assessments",
                           body={"scopes": [f"/subscriptions/{sub}"]})
    pump = QueuePump(svc)  # both listings' pages interleave
    pump.run_until(lambda: run_finished(str(sweep_id)) and run_finished(on_demand["id"]), timeout=90)
    assert compliance()["machines"] == 40


def test_an_assessment_of_a_deleted_vm_leaves_no_phantom_machine(services: Components,
                                                                 simulator: Simulator) -> None:
    svc = configure(services, simulator)
    gone = "/subscriptions/00000000-0000-0000-0000-0000000000ff/resourceGroups/rg/providers/" \
           "Microsoft.Compute/virtualMachines/deleted-vm"
    _, body, _ = call(assessments_api.create_assessment, "POST", "/api/assessments", body={"machines": [gone]})
    QueuePump(svc).run_until(lambda: run_finished(body["id"]), timeout=30)
    _, run, _ = call(assessments_api.get_assessment, "GET", "/x", route={"runId": body["id"]})
    assert run["status"] == "Failed" and run["machines"][0]["error"]["code"] in ("SubscriptionNotFound",
                                                                              "ResourceNotFound")
    assert compliance()["machines"] == 0
