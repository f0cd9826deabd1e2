"""A host killed (SIGKILL) mid-run, between its claims and ARM's answers: a new host finishes the run
with every machine right and one installation each, well within the messages' 10-minute lease.

The settings that bound recovery are shortened as an operator could (CLAIM_TIMEOUT_SECONDS,
STALL_AFTER_SECONDS, SWEEP_SCHEDULE); host.json's singleton timings (the sweeper timer's listener lock,
15 s) are the repository's own."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.data.tables import TableClient

from tests.integration.local_host_process import HostProcess
from tests.support.bodies import INSTALL
from tests.support.fleet import sim_config
from tools.azure_simulator import Simulator, SimulatorConfig

FAST_RECOVERY = {"CLAIM_TIMEOUT_SECONDS": "5", "STALL_AFTER_SECONDS": "5", "SWEEP_SCHEDULE": "*/5 * * * * *"}
LATENCY_MS = 3000  # every ARM request: the kill lands while POSTs are in flight


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return sim_config(vms=16, seed=17)


def states(host: HostProcess, run_id: str) -> tuple[int, dict[str, Any]]:
    resp = requests.get(f"{host.base_url}/api/runs/{run_id}", timeout=10)
    return resp.status_code, resp.json()


def test_a_host_killed_between_claims_and_answers_recovers_every_machine_once(
        app_settings: dict[str, str], simulator: Simulator, tmp_path: Path) -> None:
    settings = {**app_settings, **FAST_RECOVERY}
    simulator.set_faults(latency_ms=LATENCY_MS)
    targets = TableClient.from_connection_string(settings["AzureWebJobsStorage"], settings["TARGETS_TABLE"])

    def machines() -> list[dict[str, object]]:  # the machine rows, not the run's counter rows ("~counts-NN")
        return [dict(t) for t in targets.query_entities("RowKey lt '~'")]

    first = HostProcess(settings, tmp_path / "first.log").wait_ready()
    try:
        vms = simulator.vm_ids()
        resp = requests.post(f"{first.base_url}/api/runs", json={"machines": vms, "installPatches": INSTALL},
                             timeout=30)
        assert resp.status_code == 202, resp.text
        run_id = resp.json()["id"]
        deadline = time.monotonic() + 30
        while sum(t["state"] == "Starting" for t in machines()) < 4:  # straight from the Table
            assert time.monotonic() < deadline, [t["state"] for t in machines()]
            time.sleep(0.05)
        time.sleep(LATENCY_MS / 1000 + 0.5)  # past the check of the instance view: installPatches in flight
    finally:
        first.process.kill()  # SIGKILL: no graceful drain, messages stay leased for 10 minutes
        first.process.wait()
    killed = time.monotonic()
    time.sleep(LATENCY_MS / 1000 + 0.5)  # POSTs the dead host had in flight reach the simulator
    simulator.set_faults(latency_ms=0)

    second = HostProcess(settings, tmp_path / "second.log").wait_ready()
    try:
        status, run = states(second, run_id)
        assert status == 202 and run["states"].get("Starting", 0) >= 4, run  # what the crash left
        while status != 200:  # not a speed goal: the dead host's messages stay invisible for 600 s
            assert time.monotonic() - killed < 120, run
            time.sleep(1)
            status, run = states(second, run_id)
        recovered = time.monotonic() - killed
    finally:
        second.stop()
    print(f"recovered {len(vms)} machines {recovered:.1f} s after the kill")
    # The POSTs in flight at the kill reached Azure: those machines were settled from the instance view
    # (their record shows no installPatches: its answer died with the host), the others sent it once.
    settled = Counter("installPatches" not in str(t.get("armCalls")) for t in machines())
    print(f"settled from the instance view: {settled[True]}, sent after the kill: {settled[False]}")
    assert settled[True] >= 1, settled

    calls = simulator.calls()["byVm"]
    ops = {vm["id"].lower(): [op for op in vm["operations"] if op["kind"] == "installPatches"]
           for vm in simulator.state()["vms"]}
    assert run["machineCount"] == len(vms)
    for machine in run["machines"]:
        vm = machine["id"].lower()
        assert machine["state"] == "Completed", machine  # no OutcomeUnknown
        assert calls[vm]["installPatchesAccepted"] == 1 and len(ops[vm]) == 1, vm
        assert machine["installationActivityId"] == ops[vm][0]["result"]["installationActivityId"], vm
        assert machine["status"] == ops[vm][0]["result"]["status"], vm
