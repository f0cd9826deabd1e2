"""End to end over real HTTP: the local Functions host runs function_app.py, Azurite stores,
the ARM simulator plays Azure with faults injected. What lands in Table storage must equal what
the simulator did, with exactly one accepted installPatches per machine."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from tests.integration.local_host_process import HostProcess
from tests.support.bodies import INSTALL_WIDE
from tests.support.fleet import sim_config
from tools.azure_simulator import Simulator, SimulatorConfig

INSTALL = {**INSTALL_WIDE, "maximumDuration": "PT3H"}


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return sim_config(vms=60, subscriptions=2, seed=11)


def follow(url: str, timeout: float) -> requests.Response:
    """What Logic Apps does: GET the Location until it stops answering 202, waiting Retry-After."""
    deadline = time.monotonic() + timeout
    while True:
        resp = requests.get(url, timeout=10)
        if resp.status_code != 202:
            return resp
        assert time.monotonic() < deadline, f"run still running: {resp.json()['states']}"
        url = resp.headers["Location"]
        time.sleep(int(resp.headers["Retry-After"]))


def test_mixed_fleet_with_faults_lands_exactly_what_the_simulator_did(host: HostProcess,
                                                                     simulator: Simulator) -> None:
    vms = simulator.vm_ids()
    state = {v["id"].lower(): v for v in simulator.state()["vms"]}
    assert {state[v.lower()]["osType"] for v in vms} == {"Windows", "Linux"}
    simulator.set_faults(error_rate=0.08, throttle_rate=0.05, throttle_retry_after=1, conflict_rate=0.1,
                         drop_rate=0.03, seed=5)

    resp = requests.post(f"{host.base_url}/api/runs", json={"machines": vms, "installPatches": INSTALL},
                         headers={"Idempotency-Key": "e2e-1"}, timeout=30)
    assert resp.status_code == 202, resp.text
    assert resp.headers["Location"].startswith(f"{host.base_url}/api/runs/")
    final = follow(resp.headers["Location"], timeout=240)
    assert final.status_code == 200
    run = final.json()
    assert run["machineCount"] == len(vms) == len(run["machines"])
    simulator.set_faults(error_rate=0.0, throttle_rate=0.0, conflict_rate=0.0, drop_rate=0.0)

    calls = simulator.calls()
    state = {v["id"].lower(): v for v in simulator.state()["vms"]}
    assert calls["faults"] > 0 and calls["throttled"] > 0  # the faults really happened
    for machine in run["machines"]:
        vm = machine["id"].lower()
        assert calls["byVm"][vm]["installPatchesAccepted"] == 1, vm
        ops = [op for op in state[vm]["operations"] if op["kind"] == "installPatches"]
        assert len(ops) == 1
        result: dict[str, Any] = ops[0]["result"]
        assert machine["state"] == "Completed", machine
        for field in ("status", "installationActivityId", "rebootStatus", "maintenanceWindowExceeded",
                      "installedPatchCount", "failedPatchCount", "pendingPatchCount", "excludedPatchCount",
                      "notSelectedPatchCount", "startDateTime"):
            assert machine.get(field) == result.get(field), (vm, field)
        # What was sent is the VM's own OS's part of the request, normalised.
        sent = ops[0]["request"]
        own = "windowsParameters" if state[vm]["osType"] == "Windows" else "linuxParameters"
        assert set(sent) == {"maximumDuration", "rebootSetting", own}

    # Per-patch details for a sample of machines, through the API.
    for machine in run["machines"][:5]:
        detail = requests.get(f"{host.base_url}/api/runs/{run['id']}/machines{machine['id']}", timeout=10)
        assert detail.status_code == 200
        result = next(op for op in state[machine["id"].lower()]["operations"])["result"]
        assert detail.json()["patches"] == result["patches"]

    # The same Idempotency-Key returns the same run; listing shows it.
    again = requests.post(f"{host.base_url}/api/runs", json={"machines": vms, "installPatches": INSTALL},
                          headers={"Idempotency-Key": "e2e-1"}, timeout=30)
    assert again.json()["id"] == run["id"]
    listed = requests.get(f"{host.base_url}/api/runs?top=5", timeout=10).json()
    assert [r["id"] for r in listed["value"]] == [run["id"]]
