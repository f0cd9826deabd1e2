"""Azure Arc-enabled servers beside Azure VMs, end to end through the local Functions host: one scope assessment
and one rollout run over a mixed fleet (Windows and Linux VMs, Windows and Linux Arc machines, one Arc machine whose
agent is Disconnected), and the compliance view over HTTP equal to what the simulator holds.

What Azure gives differs by kind and the expectations follow it: an Arc assessment reports counts per
classification, no patch list (HybridCompute.json, MachineAssessPatchesResult), so Arc machines count in every
number but the most widespread missing patches."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
import requests

from tests.infra.bicep import INFRA, parse
from tests.integration.local_host_process import HostProcess
from tests.integration.test_local_host_runs import follow
from tests.support.bodies import INSTALL
from tests.support.compliance import api_name, assert_compliance_matches, compliance_of
from tests.support.events import Receiver, received, webhook_settings
from tests.support.fleet import sim_config
from tools.azure_simulator import Simulator, SimulatorConfig


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    # Pages of 3: both kinds' listings cross page boundaries in every subscription.
    return sim_config(vms=8, subscriptions=2, seed=41, arc_machines=6, arc_disconnected=1, page_size=3)


@pytest.fixture
def host_settings(app_settings: dict[str, str], receiver: Receiver) -> dict[str, str]:
    return {**app_settings, **webhook_settings(receiver)}


def fleet(sim: Simulator) -> list[dict[str, Any]]:
    """Every machine as the simulator holds it, with its kind."""
    state = sim.state()
    return ([{**v, "kind": "virtualMachines"} for v in state["vms"]]
            + [{**m, "kind": "hybridMachines"} for m in state["arcMachines"]])


def assessable(machine: dict[str, Any]) -> bool:
    if machine["kind"] == "hybridMachines":
        return bool(machine["agentStatus"] == "Connected")
    return bool(machine["powerState"] == "running")


def expected_compliance(sim: Simulator, kind: str | None = None) -> dict[str, Any]:
    """The compliance numbers computed independently from the simulator's own state."""
    machines = [m for m in fleet(sim) if kind is None or m["kind"] == kind]
    assessed = [m for m in machines if assessable(m)]
    return {
        # only Compute lists the patches themselves
        **compliance_of(machines, assessed, lists_patches=lambda m: m["kind"] == "virtualMachines"),
        "notRunning": sum(1 for m in machines if m["kind"] == "virtualMachines" and m["powerState"] != "running"),
        "notConnected": sum(1 for m in machines if m["kind"] == "hybridMachines" and m["agentStatus"] != "Connected"),
        "byOsType": dict(sorted(Counter(m["osType"] for m in machines).items())),
        "byMachineKind": dict(sorted(Counter(m["kind"] for m in machines).items())),
    }


def test_a_mixed_fleet_through_the_local_host(host: HostProcess, simulator: Simulator, receiver: Receiver) -> None:
    machines = fleet(simulator)
    arcs = [m for m in machines if m["kind"] == "hybridMachines"]
    assert {(m["kind"], m["osType"]) for m in machines} == {
        (k, os) for k in ("virtualMachines", "hybridMachines") for os in ("Windows", "Linux")}
    disconnected = [m["id"] for m in arcs if m["agentStatus"] != "Connected"]
    assert len(disconnected) == 1
    gone = disconnected[0].lower()
    # The identity holds exactly the custom role infra/ defines, on each subscription: it covers every call made.
    role = parse(INFRA / "app" / "patch-role.bicep")["resources"]["patchOperator"]["config"]["properties"]
    actions = role["permissions"][0]["actions"]
    simulator.set_role_assignments([{"scope": f"/subscriptions/{s}", "actions": actions}
                                    for s in simulator.subscriptions()])

    # One assessment of every subscription: VMs and Arc machines are both discovered, the disconnected one skipped.
    resp = requests.post(f"{host.base_url}/api/assessments", timeout=30,
                         json={"scopes": [f"/subscriptions/{s}" for s in simulator.subscriptions()]})
    assert resp.status_code == 202, resp.text
    run = follow(resp.headers["Location"], timeout=120).json()
    assert run["status"] == "Succeeded", run
    assert run["machineCount"] == len(machines) and sum(s["listed"] for s in run["scopes"]) == len(machines)
    by_id = {m["id"].lower(): m for m in run["machines"]}
    assert {m["machineKind"] for m in run["machines"]} == {"virtualMachines", "hybridMachines"}
    skipped = by_id[gone]
    assert skipped["state"] == "Skipped" and skipped["error"]["code"] == "MachineNotConnected", skipped
    assert "Disconnected" in skipped["error"]["message"]
    assert all(by_id[m["id"].lower()]["state"] == "Completed" for m in machines if m["id"].lower() != gone)
    calls = simulator.calls()["byVm"]
    assert calls[gone]["assessPatches"] == 0  # skipped before any POST
    assert all(calls[m["id"].lower()]["assessPatchesAccepted"] == 1 for m in machines if m["id"].lower() != gone)

    # The compliance view equals the simulator: the whole fleet, and each kind on its own.
    def compliance(**params: str) -> dict[str, Any]:
        answer = requests.get(f"{host.base_url}/api/compliance", params=params, timeout=30)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    assert_compliance_matches(compliance(), expected_compliance(simulator))
    for kind in ("hybridMachines", "virtualMachines"):
        assert_compliance_matches(compliance(machineKind=kind), expected_compliance(simulator, kind))
    refused = requests.get(f"{host.base_url}/api/compliance", params={"machineKind": "scaleSets"}, timeout=30)
    assert refused.status_code == 400 and refused.json()["error"]["target"] == "machineKind"
    # One Arc machine by its own id: HybridCompute's counts per classification, no patch list.
    arc = next(m for m in arcs if m["id"].lower() != gone)
    view = requests.get(f"{host.base_url}/api/machines{arc['id']}/assessment", timeout=30)
    assert view.status_code == 200, view.text
    latest = view.json()["latest"]
    assert latest["classificationCounts"] == dict(Counter(api_name(p["classification"]) for p in arc["pendingPatches"]))
    assert latest["availablePatches"] == [] and view.json()["id"] == arc["id"]
    assert view.json()["machineKind"] == "hybridMachines" and view.json()["agentStatus"] == "Connected"

    # One rollout run over the whole mixed fleet, by name: Arc machines are installed like VMs.
    body = {"machines": [m["id"] for m in machines], "installPatches": INSTALL,
            "rollout": {"waves": [{"name": "canary", "machines": [arcs[0]["id"] if arcs[0]["id"] != disconnected[0]
                                                                   else arcs[1]["id"]]},
                                  {"size": "rest"}],
                        "maxConcurrency": 4, "maxFailures": 0}}
    resp = requests.post(f"{host.base_url}/api/runs", json=body, timeout=30)
    assert resp.status_code == 202, resp.text
    run = follow(resp.headers["Location"], timeout=180).json()
    assert run["status"] in ("Succeeded", "CompletedWithWarnings"), run.get("states")
    by_id = {m["id"].lower(): m for m in run["machines"]}
    assert by_id[gone]["state"] == "Skipped" and by_id[gone]["error"]["code"] == "MachineNotConnected"
    calls = simulator.calls()["byVm"]
    assert calls[gone]["installPatches"] == 0
    for m in machines:
        key = m["id"].lower()
        if key != gone:
            assert by_id[key]["state"] == "Completed" and calls[key]["installPatchesAccepted"] == 1, by_id[key]
    one = requests.get(f"{host.base_url}/api/runs/{run['id']}/machines{arc['id']}", timeout=30)
    assert one.status_code == 200 and one.json()["machineKind"] == "hybridMachines", one.text
    assert one.json()["installedPatchCount"] == by_id[arc["id"].lower()]["installedPatchCount"]
    after = {m["id"].lower(): m for m in fleet(simulator)}
    for m in arcs:  # what the run reports is what Azure did on the machine
        key = m["id"].lower()
        if key != gone:
            installed = len(after[key]["installedPatches"]) - len(m["installedPatches"])
            assert by_id[key]["installedPatchCount"] == installed and by_id[key]["osType"] == m["osType"]

    assert simulator.calls()["statuses"].get("403", 0) == 0
    finished = [e["data"] for e in received(receiver, "patchpilot.machine.completed")]
    assert any(d["machine"].lower() == gone and d["machineKind"] == "hybridMachines" and d["state"] == "Skipped"
               for d in finished), json.dumps(finished)[:2000]
