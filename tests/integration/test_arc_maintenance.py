"""Azure Arc-enabled servers in maintenance configurations, against Azurite and the ARM simulator: a dynamic
scope whose `resourceTypes` names Microsoft.HybridCompute/machines (Azure's ConfigurationAssignmentFilterProperties)
resolves to Arc machines only when the window opens, beside a VM assigned by its id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.composition import Components
from shared.maintenance.windows import open_due_windows
from tests.app import assessments_api
from tests.integration.queue_pump import QueuePump
from tests.integration.test_assessments import call, compliance, run_finished
from tests.integration.test_maintenance import assign, configuration, finished, occurrences, put, run_of
from tests.support.fleet import sim_config
from tools.azure_simulator import Simulator, SimulatorConfig


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return sim_config(vms=6, seed=43, arc_machines=6, arc_disconnected=0, page_size=4)


def test_a_dynamic_scope_of_arc_machines_and_a_static_vm(services: Components, simulator: Simulator) -> None:
    # The compliance view knows the whole subscription first (an unfiltered listing).
    status, body, _ = call(assessments_api.create_assessment, "POST", "/api/assessments",
                           body={"scopes": [f"/subscriptions/{simulator.subscriptions()[0]}"]})
    assert status == 202, body
    QueuePump(services).run_until(lambda: run_finished(body["id"]), timeout=90)
    everything = {"virtualMachines": 6, "hybridMachines": 6}
    assert compliance()["byMachineKind"] == everything

    begin = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    put("arc-nightly", configuration(begin))
    arcs = simulator.state()["arcMachines"]
    linux_arcs = {m["id"].lower(): m for m in arcs if m["osType"] == "Linux"}
    assert len(linux_arcs) >= 2 and any(m["osType"] == "Windows" for m in arcs)
    away = sorted(linux_arcs)[0]
    simulator.set_agent_status(linux_arcs[away]["id"], "Expired")  # skipped with the reason, nothing posted
    static = simulator.vm_ids()[0]
    assign("arc-nightly", "on-prem-linux", {
        "resourceId": f"/subscriptions/{simulator.subscriptions()[0]}",
        "filter": {"resourceTypes": ["microsoft.hybridcompute/machines"], "osTypes": ["Linux"]}})
    assign("arc-nightly", "one-vm", {"resourceId": static})

    assert open_due_windows(services, begin)["opened"] == 1
    run_id = occurrences("arc-nightly", begin, 1)[0]["runId"]
    QueuePump(services).run_until(lambda: finished(run_id), timeout=90)
    run = run_of(run_id)
    assert {m["id"].lower() for m in run["machines"]} == set(linux_arcs) | {static.lower()}
    calls = simulator.calls()["byVm"]
    for key in linux_arcs:
        mine = next(m for m in run["machines"] if m["id"].lower() == key)
        if key != away:
            assert mine["state"] == "Completed" and calls[key]["installPatchesAccepted"] == 1, mine
        else:
            assert mine["state"] == "Skipped" and mine["error"]["code"] == "MachineNotConnected"
            assert "Expired" in mine["error"]["message"] and mine["agentStatus"] == "Expired"
            assert calls[key]["installPatches"] == 0
    assert calls[static.lower()]["installPatchesAccepted"] == 1
    others = [k for k in calls if k not in linux_arcs and k != static.lower()]
    assert others and all(calls[k]["installPatches"] == 0 for k in others)
    # A filtered listing saw part of the subscription only: it removes nothing from the compliance view.
    assert compliance()["byMachineKind"] == everything
