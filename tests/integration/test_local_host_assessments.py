"""The periodic assessment end to end through the local Functions host: its timer function invoked the
way Core Tools' admin API does, discovery and steps on real queues with faults injected, and the
compliance view over HTTP equal to what the simulator holds."""

from __future__ import annotations

import time

import pytest
import requests

from tests.integration.local_host_process import HostProcess
from tests.integration.test_local_host_runs import follow
from tests.support.compliance import assert_compliance_matches, expected_compliance
from tests.support.fleet import sim_config
from tools.azure_simulator import Simulator, SimulatorConfig


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    # 210 VMs in 2 subscriptions, ~10% stopped or deallocated, listed in pages of 50.
    return sim_config(vms=210, subscriptions=2, seed=33, stopped_ratio=0.1, page_size=50)


@pytest.fixture
def host_settings(app_settings: dict[str, str], simulator: Simulator) -> dict[str, str]:
    scopes = ",".join(f"/subscriptions/{s}" for s in simulator.subscriptions())
    return {**app_settings, "ASSESSMENT_SCOPES": scopes, "ASSESSMENT_SCHEDULE": "0 0 3 * * *"}


def test_periodic_sweep_of_210_vms_through_the_local_host(host: HostProcess, simulator: Simulator) -> None:
    simulator.set_faults(error_rate=0.03, throttle_rate=0.03, throttle_retry_after=1, drop_rate=0.01, seed=9)
    resp = requests.post(f"{host.base_url}/admin/functions/periodic_assessment", json={"input": ""}, timeout=10)
    assert resp.status_code == 202

    deadline = time.monotonic() + 30
    runs: list[dict[str, object]] = []
    while not runs and time.monotonic() < deadline:
        runs = requests.get(f"{host.base_url}/api/runs?top=5", timeout=10).json()["value"]
        time.sleep(0.2)
    assert len(runs) == 1 and runs[0]["operation"] == "assessPatches" and runs[0]["origin"] == "schedule"
    final = follow(f"{host.base_url}/api/assessments/{runs[0]['id']}", timeout=240)
    simulator.set_faults(error_rate=0.0, throttle_rate=0.0, drop_rate=0.0)
    run = final.json()
    assert final.status_code == 200 and run["status"] == "Succeeded", run.get("states")
    assert run["machineCount"] == 210 and all(s["done"] and s["listed"] == 105 for s in run["scopes"])

    calls = simulator.calls()
    assert calls["faults"] > 0 and calls["total"]["list"] >= 6  # 3 pages per subscription, plus retries
    for vm in simulator.state()["vms"]:
        assert calls["byVm"][vm["id"].lower()]["assessPatchesAccepted"] == (vm["powerState"] == "running"), vm["id"]

    report = requests.get(f"{host.base_url}/api/compliance", timeout=30).json()
    assert_compliance_matches(report, expected_compliance(simulator))
    assert report["notRunning"] == 21
    for sub in simulator.subscriptions():
        by_sub = requests.get(f"{host.base_url}/api/compliance", params={"subscriptionId": sub}, timeout=30).json()
        assert_compliance_matches(by_sub, expected_compliance(simulator, subscription=sub))
