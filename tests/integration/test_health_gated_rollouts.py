"""Health-gated rollouts (#20) end to end through the local Functions host against the ARM simulator: machines whose
installation Azure calls `Succeeded` but that come back unavailable, with an alert, or with a failing workload
probe halt the rollout before its next wave, naming the machine and the signal; a signal PatchPilot may not read
is `HealthUnknown`, never healthy; a machine unhealthy before patching is shown and spends no error budget; a
healthy fleet goes through every wave with one round of reads per machine."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
import requests

from tests.integration.local_host_process import HostProcess
from tests.integration.test_local_host_runs import follow
from tests.support.bodies import INSTALL
from tests.support.events import Receiver, received, webhook_settings
from tests.support.fleet import sim_config
from tests.support.roles import PATCH_ACTIONS, POLL_ACTIONS
from tools.azure_simulator import Simulator, SimulatorConfig

RESOURCE_HEALTH_READ = "Microsoft.ResourceHealth/availabilityStatuses/read"


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return sim_config(vms=5, subscriptions=1, seed=41, time_scale=36000.0)


@pytest.fixture
def host_settings(app_settings: dict[str, str], receiver: Receiver) -> dict[str, str]:
    return {**app_settings, **webhook_settings(receiver), "HEALTH_RECHECK_SECONDS": "1"}


def run(host: HostProcess, vms: list[str], health: dict[str, Any], *, canary: str | None = None,
        max_failures: int = 1) -> dict[str, Any]:
    """POST a two-wave rollout (the canary, then the rest) with `health`, and follow it to its end."""
    body = {"machines": vms, "installPatches": INSTALL,
            "rollout": {"waves": [{"name": "canary", "machines": [canary or vms[0]]}, {"size": "rest"}],
                        "maxFailures": max_failures,
                        "healthCheck": {"after": "PT1S", "within": "PT4S", **health}}}
    resp = requests.post(f"{host.base_url}/api/runs", json=body, timeout=30)
    assert resp.status_code == 202, resp.text
    final = follow(resp.headers["Location"], timeout=120)
    assert final.status_code == 200
    return final.json()


def machine(view: dict[str, Any], vm: str) -> dict[str, Any]:
    return next(m for m in view["machines"] if m["id"].lower() == vm.lower())


def installs(sim: Simulator) -> int:
    return sum(c["installPatchesAccepted"] for c in sim.calls()["byVm"].values())


def assert_halted_by(view: dict[str, Any], vm: str, signal: str, code: str = "Unhealthy") -> None:
    assert view["status"] == "Halted", view.get("states")
    halted = view["rollout"]["halted"]
    assert halted["machines"] == [vm] and signal in halted["reason"]
    assert halted["details"] == [{"machine": vm, "kind": "Unhealthy", "state": "Unhealthy", "errorCode": code,
                                  "signals": [signal]}]
    canary = machine(view, vm)
    assert canary["state"] == "Unhealthy" and canary["status"] == "Succeeded"  # what Azure said, kept
    assert canary["health"]["status"] == code and canary["health"]["failedSignals"] == [signal]
    assert canary["error"]["code"] == code and signal in canary["error"]["message"]
    assert {m["state"] for m in view["machines"] if m["id"] != vm} == {"Skipped"}


@pytest.mark.parametrize(("signals", "after_patch"), [
    (["vmHealth", "resourceHealth"], {"availabilityState": "Unavailable"}),  # (a) it does not come back
    (["alerts"], {"fireAlert": {"severity": "Sev1", "name": "Heartbeat lost"}}),  # (b) an alert fires
    (["probe"], {"probeStatus": 500}),  # (c) the service behind it answers 500
], ids=["resourceHealth", "alerts", "probe"])
def test_a_canary_that_succeeds_but_comes_back_broken_halts_the_run_before_the_next_wave(
        host: HostProcess, simulator: Simulator, receiver: Receiver, signals: list[str],
        after_patch: dict[str, Any]) -> None:
    vms = simulator.vm_ids()
    simulator.set_health(vms[0], after_patch=after_patch)
    health: dict[str, Any] = {"signals": signals}
    if "probe" in signals:
        health["probe"] = {"url": f"{simulator.url}/_probe/{{machineName}}"}
    view = run(host, vms, health)
    signal = signals[-1]
    assert_halted_by(view, vms[0], signal)
    assert installs(simulator) == 1  # only the canary was patched
    halted = received(receiver, "patchpilot.run.halted")
    assert halted[0]["data"]["details"][0]["signals"] == [signal]
    unhealthy = received(receiver, "patchpilot.machine.unhealthy")
    assert unhealthy[0]["data"]["machine"] == vms[0] and unhealthy[0]["data"]["phase"] == "after"
    assert unhealthy[0]["data"]["signals"][0]["signal"] == signal


def test_a_signal_forbidden_by_rbac_is_health_unknown_never_healthy(host: HostProcess, simulator: Simulator) -> None:
    vms = simulator.vm_ids()
    sub = f"/subscriptions/{simulator.subscriptions()[0]}"
    actions = [a for a in (*PATCH_ACTIONS, *POLL_ACTIONS) if a.lower() != RESOURCE_HEALTH_READ.lower()]
    simulator.set_role_assignments([{"scope": sub, "actions": actions}])
    view = run(host, vms, {"signals": ["resourceHealth"]})
    assert_halted_by(view, vms[0], "resourceHealth", code="HealthUnknown")
    after = machine(view, vms[0])["health"]["after"]
    assert after[0]["verdict"] == "unreadable" and after[0]["code"] == "AuthorizationFailed"


def test_a_machine_unhealthy_before_patching_is_reported_and_spends_no_error_budget(
        host: HostProcess, simulator: Simulator) -> None:
    vms = simulator.vm_ids()
    simulator.set_health(vms[2], availability_state="Degraded")  # broken already: not the patch's doing
    view = run(host, vms, {"signals": ["vmHealth", "resourceHealth"]})
    assert view["status"] == "CompletedWithWarnings", view["states"]  # not Halted: maxFailures 1 was not spent
    broken = machine(view, vms[2])
    assert broken["state"] == "Skipped" and broken["error"]["code"] == "UnhealthyBeforePatching"
    assert broken["health"]["status"] == "UnhealthyBeforePatching"
    assert broken["health"]["before"][1]["observed"].startswith("Degraded")
    assert simulator.calls()["byVm"].get(vms[2].lower(), {}).get("installPatchesAccepted", 0) == 0
    assert installs(simulator) == len(vms) - 1


def test_a_healthy_fleet_completes_every_wave_after_one_round_of_reads(host: HostProcess,
                                                                      simulator: Simulator) -> None:
    vms = simulator.vm_ids()
    view = run(host, vms, {"signals": ["vmHealth", "resourceHealth", "alerts"]})
    assert view["status"] == "Succeeded", view["states"]
    for m in view["machines"]:
        assert m["state"] == "Completed" and m["health"]["status"] == "Healthy"
        assert m["health"]["reads"] == 1  # no wait beyond `after` and the reads themselves
        assert [r["signal"] for r in m["health"]["after"]] == ["vmHealth", "resourceHealth", "alerts"]
        finished = datetime.fromisoformat(m["completedAt"].replace("Z", "+00:00"))
        verified = datetime.fromisoformat(m["health"]["since"].replace("Z", "+00:00"))
        assert 1 <= (finished - verified).total_seconds() < 15  # `after` (1 s) plus the reads and queueing
    ops = [c["op"] for m in view["machines"] for c in m["armCalls"]]
    assert ops.count("resourceHealth") == ops.count("alerts") == 2 * len(vms)  # before and after, once each



@pytest.mark.parametrize("simulator_config", [sim_config(vms=1, seed=42, time_scale=36000.0, arc_machines=3,
                                                         arc_disconnected=0)])
def test_arc_machines_that_reboot_pass_on_their_agent_and_resource_health(host: HostProcess,
                                                                        simulator: Simulator) -> None:
    """An Arc machine's lastStatusChange does not move over a short reboot: it passes on `Connected`."""
    arc = simulator.machine_ids()
    view = run(host, arc, {"signals": ["vmHealth", "resourceHealth"]})
    assert view["status"] == "Succeeded", view["states"]
    for m in view["machines"]:
        assert m["machineKind"] == "hybridMachines" and m["health"]["status"] == "Healthy", m.get("health")
        assert [c["op"] for c in m["armCalls"]].count("getMachine") >= 2  # the agent's status, before and after
