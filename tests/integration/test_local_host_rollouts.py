"""A rollout end to end through the local Functions host, as a Logic App would drive it: POST a run with
waves, a concurrency limit and a pre-run hook, follow its Location to the end, and check on the
simulator's side that the limit held, and on a webhook receiver that signed events arrived."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests

from tests.integration.local_host_process import HostProcess
from tests.integration.test_local_host_runs import follow
from tests.support.bodies import INSTALL
from tests.support.events import Receiver, received, signed, webhook_settings
from tests.support.fleet import sim_config
from tools.azure_simulator import Simulator, SimulatorConfig


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return sim_config(vms=24, subscriptions=2, seed=31)


@pytest.fixture
def host_settings(app_settings: dict[str, str], receiver: Receiver) -> dict[str, str]:
    return {**app_settings, **webhook_settings(receiver)}


def test_a_rollout_through_the_local_host(host: HostProcess, simulator: Simulator, receiver: Receiver) -> None:
    body: dict[str, Any] = {
        "machines": simulator.vm_ids(),
        "installPatches": INSTALL,
        "rollout": {"waves": [{"name": "canary", "size": 1}, {"size": "25%"}, {"size": "rest"}],
                    "maxConcurrency": 4, "maxConcurrencyPerSubscription": 3, "maxFailures": "10%",
                    "preHook": {"url": f"{receiver.url}/pre"}}}
    resp = requests.post(f"{host.base_url}/api/runs", json=body, timeout=30)
    assert resp.status_code == 202, resp.text
    final = follow(resp.headers["Location"], timeout=240)
    run = final.json()
    assert final.status_code == 200 and run["status"] in ("Succeeded", "CompletedWithWarnings"), run.get("states")
    assert sorted({m["wave"] for m in run["machines"]}) == [0, 1, 2]

    peaks = simulator.calls()["peakConcurrentBySubscription"]
    assert 2 <= peaks["*"] <= 4 and all(n <= 3 for sub, n in peaks.items() if sub != "*")
    assert set(c["installPatchesAccepted"] for c in simulator.calls()["byVm"].values()) == {1}

    deadline = time.monotonic() + 30  # events are delivered by their own worker, a moment later
    while not any(json.loads(r["body"]).get("type") == "patchpilot.run.completed" for r in receiver.requests
                  if r["path"] == "/events"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert all(signed(r) for r in receiver.requests)
    types = [json.loads(r["body"])["type"] for r in receiver.requests if r["path"] == "/events"]
    assert types.count("patchpilot.wave.completed") == 2 and types.count("patchpilot.machine.completed") >= 24
    assert [r["path"] for r in receiver.requests].count("/pre") == 1


@pytest.mark.parametrize("simulator_config", [sim_config(vms=100, subscriptions=2, seed=32, time_scale=36000.0)])
def test_a_failing_canary_halts_100_vms_through_the_local_host(host: HostProcess, simulator: Simulator,
                                                               receiver: Receiver) -> None:
    receiver.fail_first = 1  # the first event delivery fails; it is retried
    vms = simulator.vm_ids()
    simulator.set_power(vms[0], "deallocated")
    body = {"machines": vms, "installPatches": INSTALL,
            "rollout": {"waves": [{"name": "canary", "machines": [vms[0]]}, {"size": "rest"}], "maxFailures": 1}}
    resp = requests.post(f"{host.base_url}/api/runs", json=body, timeout=30)
    run = follow(resp.headers["Location"], timeout=120).json()
    assert run["status"] == "Halted" and run["rollout"]["halted"]["machines"] == [vms[0]]
    assert sum(c["installPatches"] for c in simulator.calls()["byVm"].values()) == 1  # the canary's, refused
    halted = received(receiver, "patchpilot.run.halted")
    assert halted and halted[0]["data"]["machines"] == [vms[0]]
    assert all(signed(r) for r in receiver.requests)
    first = json.loads(receiver.requests[0]["body"])["id"]
    deadline = time.monotonic() + 30  # the failed delivery comes again after its backoff
    while [json.loads(r["body"])["id"] for r in receiver.requests].count(first) < 2:
        assert time.monotonic() < deadline, "the failed event delivery was not retried"
        time.sleep(0.2)


def test_a_pre_hook_veto_and_a_cancel_through_the_local_host(host: HostProcess, simulator: Simulator,
                                                             receiver: Receiver) -> None:
    receiver.status, receiver.answer = 503, b"change freeze"
    vetoed = requests.post(f"{host.base_url}/api/runs", timeout=30, json={
        "machines": simulator.vm_ids()[:4], "installPatches": INSTALL,
        "rollout": {"preHook": {"url": f"{receiver.url}/pre", "timeoutSeconds": 5}}})
    run = follow(vetoed.headers["Location"], timeout=60).json()
    assert run["status"] == "Canceled" and run["rollout"]["canceledReason"] == "the pre-run hook answered HTTP 503"
    assert "change freeze" not in json.dumps(run)  # the hook's body is never shown
    receiver.status, receiver.answer = 200, b"ok"

    slow = requests.post(f"{host.base_url}/api/runs", timeout=30, json={
        "machines": simulator.vm_ids()[4:16], "installPatches": INSTALL, "rollout": {"maxConcurrency": 1}})
    run_url = slow.headers["Location"]
    deadline = time.monotonic() + 60
    while sum(c["installPatchesAccepted"] for c in simulator.calls()["byVm"].values()) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    canceled = requests.post(run_url.split("?")[0] + "/cancel", timeout=30)
    assert canceled.status_code in (200, 202), canceled.text
    started = sum(c["installPatchesAccepted"] for c in simulator.calls()["byVm"].values())
    run = follow(run_url, timeout=60).json()
    assert run["status"] == "Canceled"
    # The host runs on while we count: at most the one machine already admitted (maxConcurrency 1)
    # may still have been posting its install as the cancel landed; nothing after it.
    final = sum(c["installPatchesAccepted"] for c in simulator.calls()["byVm"].values())
    assert started <= final <= started + 1 and final < 12
    assert sum(1 for m in run["machines"] if m["state"] == "Skipped") == 12 - final
