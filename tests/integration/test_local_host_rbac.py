"""Azure RBAC through the local Functions host (real HTTP, Azurite, the ARM simulator enforcing role assignments).

A deployment with resource-group targets, as infra/ sets it up, holds the patch role on the resource group and the
operation-status role at its subscription: its runs complete. Without the subscription grant, ARM accepts
installPatches and refuses every poll (403 AuthorizationFailed: the status URL lies outside the resource group), so
each machine's outcome is reported unknown with that reason; never as the operation having failed."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from tests.integration.local_host_process import HostProcess
from tests.support.bodies import INSTALL_LINUX_OTHER
from tests.support.fleet import sim_config
from tests.support.roles import PATCH_ACTIONS, POLL_ACTIONS
from tools.azure_simulator import Simulator, SimulatorConfig


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return sim_config(vms=10, seed=23, time_scale=36000.0)


def run_to_end(host: HostProcess, vms: list[str], key: str, **extra: Any) -> dict[str, Any]:
    """POST a run (`extra`: more body fields) and follow its Location (honouring Retry-After) until it stops
    answering 202."""
    resp = requests.post(f"{host.base_url}/api/runs",
                         json={"machines": vms, "installPatches": INSTALL_LINUX_OTHER, **extra},
                         headers={"Idempotency-Key": key}, timeout=30)
    assert resp.status_code == 202, resp.text
    url, deadline = resp.headers["Location"], time.monotonic() + 120
    while (resp := requests.get(url, timeout=10)).status_code == 202:
        assert time.monotonic() < deadline, f"run still running: {resp.json()['states']}"
        url = resp.headers["Location"]
        time.sleep(int(resp.headers["Retry-After"]))
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_resource_group_targets_complete_with_the_poll_role_and_end_unknown_without(
        host: HostProcess, simulator: Simulator) -> None:
    groups: dict[str, list[str]] = {}
    for vm in simulator.vm_ids():
        groups.setdefault("/".join(vm.split("/")[:5]), []).append(vm)
    scope, vms = max(groups.items(), key=lambda g: len(g[1]))
    subscription = "/".join(scope.split("/")[:3])
    other = [vm for vm in simulator.vm_ids() if vm not in vms]
    assert other, "the fleet needs a second resource group"

    # As deployed: patch role on the resource group, operation-status role at its subscription.
    simulator.set_role_assignments([{"scope": scope, "actions": PATCH_ACTIONS},
                                    {"scope": subscription, "actions": POLL_ACTIONS}])
    run = run_to_end(host, vms, "granted")
    assert run["status"] in ("Succeeded", "CompletedWithWarnings"), run["states"]
    assert run["states"] == {"Completed": len(vms)}
    assert all(m.get("status") for m in run["machines"])  # Azure's operation status, read by polling

    # The poll role missing: Azure accepts installPatches and patches on, but no poll is answered.
    simulator.set_role_assignments([{"scope": scope, "actions": PATCH_ACTIONS}])
    before = {vm.lower(): c["installPatchesAccepted"] for vm, c in simulator.calls()["byVm"].items()}
    run = run_to_end(host, vms, "no-poll-role")
    assert run["status"] == "CompletedWithWarnings", run["states"]  # not Failed: nothing is known to have failed
    assert run["states"] == {"OutcomeUnknown": len(vms)} and run["outcomes"] == {"unknown": len(vms)}
    calls = simulator.calls()["byVm"]
    for machine in run["machines"]:
        vm = machine["id"].lower()
        assert calls[vm]["installPatchesAccepted"] == before.get(vm, 0) + 1  # sent once, accepted by Azure
        assert "status" not in machine  # no operation status claimed, least of all Failed
        assert machine["error"]["code"] == "PollForbidden"
        assert "Microsoft.Compute/locations/operations/read" in machine["error"]["message"]
        [arm] = machine["error"]["details"]
        assert arm["code"] == "AuthorizationFailed" and f"over scope '{subscription}/providers/" in arm["message"]

    # Outside the granted resource group nothing starts: a 403 on installPatches is a plain failure.
    run = run_to_end(host, other[:1], "outside")
    [machine] = run["machines"]
    assert machine["state"] == "Failed" and machine["error"]["code"] == "AuthorizationFailed"


def test_infras_roles_let_every_health_signal_be_read(host: HostProcess, simulator: Simulator) -> None:
    """As deployed for a resource-group target, the health reads of a rollout's healthCheck are granted: Resource
    Health on the machines (patch role), alerts at the subscription (operation-status role). Every machine passes
    on what it read, none on what it could not."""
    groups: dict[str, list[str]] = {}
    for vm in simulator.vm_ids():
        groups.setdefault("/".join(vm.split("/")[:5]), []).append(vm)
    scope, vms = max(groups.items(), key=lambda g: len(g[1]))
    simulator.set_role_assignments([{"scope": scope, "actions": PATCH_ACTIONS},
                                    {"scope": "/".join(scope.split("/")[:3]), "actions": POLL_ACTIONS}])
    run = run_to_end(host, vms, "health", rollout={
        "maxFailures": 1, "healthCheck": {"after": "PT0S", "within": "PT0S",
                                          "signals": ["vmHealth", "resourceHealth", "alerts"]}})
    assert run["status"] in ("Succeeded", "CompletedWithWarnings"), run["states"]
    for machine in run["machines"]:
        assert machine["health"]["status"] == "Healthy"
        assert {r["verdict"] for r in machine["health"]["after"] + machine["health"]["before"]} == {"healthy"}
