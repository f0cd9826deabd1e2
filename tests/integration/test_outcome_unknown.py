"""Machines whose outcome cannot be known, in-process against Azurite and the ARM simulator.

Azure RBAC on polls: a resource-group role without
`Microsoft.Compute/locations/operations/read` at the subscription lets installPatches start but not be
followed (the status URL lies under the subscription). Each machine then ends `OutcomeUnknown` with ARM's
403 kept in its error details, and a rollout does not spend its error budget on it.
tests/integration/test_local_host_rbac.py runs the same through the local Functions host.
A claim abandoned mid-call (installPatches maybe sent) ends the same way, never sent twice."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func
import pytest

from shared.composition import Components
from tests.app import runs_api
from tests.integration.queue_pump import QueuePump
from tests.support.bodies import INSTALL_LINUX_OTHER
from tests.support.fleet import sim_config
from tests.support.roles import PATCH_ACTIONS, POLL_ACTIONS  # what infra/ grants
from tools.azure_simulator import Simulator, SimulatorConfig


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return sim_config(vms=12, seed=21, time_scale=36000.0)


def one_resource_group(sim: Simulator) -> tuple[str, list[str]]:
    """The resource group holding the most VMs, and those VMs."""
    groups: dict[str, list[str]] = {}
    for vm in sim.vm_ids():
        groups.setdefault("/".join(vm.split("/")[:5]).lower(), []).append(vm)
    scope = max(groups, key=lambda g: len(groups[g]))
    return scope, groups[scope]


def post(body: dict[str, Any]) -> str:
    resp = runs_api.create_run(func.HttpRequest("POST", "http://127.0.0.1:7071/api/runs",
                                                body=json.dumps(body).encode()))
    assert resp.status_code == 202, resp.get_body()
    return str(json.loads(resp.get_body())["id"])


def view(run_id: str) -> dict[str, Any]:
    resp = runs_api.get_run(func.HttpRequest("GET", "http://127.0.0.1/api/runs/x", body=b"",
                                             route_params={"runId": run_id}))
    return dict(json.loads(resp.get_body()))


def test_rollout_without_the_subscription_poll_grant_ends_unknown_and_spends_no_error_budget(
        services: Components, simulator: Simulator) -> None:
    scope, vms = one_resource_group(simulator)
    assert len(vms) >= 3
    simulator.set_role_assignments([{"scope": scope, "actions": PATCH_ACTIONS}])
    run_id = post({"machines": vms, "installPatches": INSTALL_LINUX_OTHER,
                   "rollout": {"waves": [{"name": "canary", "machines": [vms[0]]}, {"size": "rest"}],
                               "maxFailures": 1, "maxConcurrency": 4}})
    QueuePump(services).run_until(lambda: view(run_id)["status"] not in ("Accepted", "InProgress"), timeout=60)

    run = view(run_id)
    assert run["status"] == "CompletedWithWarnings", run["states"]  # not Failed, not Halted
    assert "halted" not in run.get("rollout", {})
    assert run["outcomes"] == {"unknown": len(vms)} and run["states"] == {"OutcomeUnknown": len(vms)}
    calls = simulator.calls()["byVm"]
    for machine in run["machines"]:
        assert calls[machine["id"].lower()]["installPatchesAccepted"] == 1  # Azure took it and patches on
        error = machine["error"]
        assert error["code"] == "PollForbidden"
        assert "Microsoft.Compute/locations/operations/read" in error["message"]
        [arm] = error["details"]  # ARM's 403, whole
        assert arm["code"] == "AuthorizationFailed"
        assert f"over scope '/subscriptions/{vms[0].split('/')[2]}/providers/Microsoft.Compute/locations/" \
            in arm["message"]  # the status URL, outside the resource group
        assert "status" not in machine  # no operation status was ever seen, so none is claimed


def test_the_subscription_poll_grant_lets_a_resource_group_target_complete(
        services: Components, simulator: Simulator) -> None:
    scope, vms = one_resource_group(simulator)
    subscription = "/".join(scope.split("/")[:3])
    simulator.set_role_assignments([{"scope": scope, "actions": PATCH_ACTIONS},
                                    {"scope": subscription, "actions": POLL_ACTIONS}])
    run_id = post({"machines": vms, "installPatches": INSTALL_LINUX_OTHER})
    QueuePump(services).run_until(lambda: view(run_id)["status"] not in ("Accepted", "InProgress"), timeout=60)
    run = view(run_id)
    assert run["states"] == {"Completed": len(vms)}, [m.get("error") for m in run["machines"]]
