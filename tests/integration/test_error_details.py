"""An operation's whole error (ARM's `details`, `innererror`) reaches every view: the run's machine,
the machine's assessment, and the machine.completed event; a clean result shows no error.
Against Azurite and the ARM simulator over HTTP, delivered in-process."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func

from shared.composition import Components
from shared.validation.resource_ids import parse_vm_id
from tests.app import assessments_api, runs_api
from tests.integration.queue_pump import QueuePump
from tests.integration.test_events import configure
from tests.integration.test_events import start as start_run
from tests.integration.test_events import view as run_view
from tests.support.events import Receiver
from tools.azure_simulator import Simulator


def finished(run_id: str) -> bool:
    return run_view(run_id).get("status") not in (None, "Accepted", "InProgress", "Running")


def install_result(sim: Simulator, vm_id: str) -> dict[str, Any]:
    state = next(v for v in sim.state()["vms"] if v["id"].lower() == vm_id.lower())
    return next(op for op in state["operations"] if op["kind"] == "installPatches")["result"]


def test_failed_installs_keep_their_details_in_the_run_view_and_the_event(services: Components, simulator: Simulator,
                                                                          receiver: Receiver) -> None:
    svc = configure(receiver)
    simulator.set_faults(patch_failure_rate=1.0)  # every selected patch fails: one detail per patch
    vms = simulator.vm_ids()[:2]
    run_id = start_run(vms)

    def done_and_told() -> bool:
        return finished(run_id) and sum(e["type"] == "patchpilot.machine.completed"
                                        for e in receiver.events()) >= len(vms)

    QueuePump(svc).run_until(done_and_told, timeout=60)
    machines = {m["id"].lower(): m for m in run_view(run_id)["machines"]}
    events = {e["data"]["machine"].lower(): e["data"] for e in receiver.events()
              if e["type"] == "patchpilot.machine.completed"}
    checked = 0
    for vm in vms:
        result = install_result(simulator, vm)
        if not result["failedPatchCount"]:
            assert machines[vm.lower()]["error"] is None
            continue
        checked += 1
        assert result["error"]["details"], result  # the simulator says why, per patch
        assert machines[vm.lower()]["error"] == result["error"]  # ARM's shape, details and all
        assert events[vm.lower()]["error"] == result["error"]
        assert events[vm.lower()]["errorCode"] == result["error"]["code"]
    assert checked, "no machine had a failed patch: the test checked nothing"


def test_a_clean_install_shows_no_error(services: Components, simulator: Simulator, receiver: Receiver) -> None:
    svc = configure(receiver)
    run_id = start_run(simulator.vm_ids()[:2])
    QueuePump(svc).run_until(lambda: finished(run_id), timeout=60)
    assert all(m["error"] is None for m in run_view(run_id)["machines"])


def test_an_assessment_refused_by_arm_keeps_arms_error_in_the_machine_view(services: Components,
                                                                          simulator: Simulator) -> None:
    vm = simulator.vm_ids()[0]
    simulator.set_power(vm, "deallocated")
    resp = assessments_api.create_assessment(func.HttpRequest(
        "POST", "http://127.0.0.1/api/assessments", body=json.dumps({"machines": [vm]}).encode()))
    assert resp.status_code == 202, resp.get_body()
    run_id = json.loads(resp.get_body())["id"]

    def assessed() -> bool:
        return assessments_api.get_assessment(func.HttpRequest(
            "GET", "http://127.0.0.1/x", body=b"", route_params={"runId": run_id})).status_code == 200

    QueuePump(services).run_until(assessed, timeout=60)
    ref = parse_vm_id(vm, target="vm")
    machine = json.loads(assessments_api.get_machine_assessment(func.HttpRequest(
        "GET", "http://127.0.0.1/x", body=b"", route_params={
            "subscriptionId": ref.subscription_id, "resourceGroupName": ref.resource_group,
            "vmName": ref.name})).get_body())
    error = machine["lastError"]
    assert error["code"] == "VMNotRunning"
    arm = error["details"][0]  # ARM's own 409, as ARM gave it
    assert arm["code"] == "OperationNotAllowed" and "deallocated" in arm["message"]
    run_machine = json.loads(runs_api.get_run(func.HttpRequest(
        "GET", "http://127.0.0.1/x", body=b"", route_params={"runId": run_id})).get_body())["machines"][0]
    assert run_machine["error"] == error
