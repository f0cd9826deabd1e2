"""Installation histories and longest first against Azurite and the ARM simulator: an install run that closes
writes each machine's installation to its history (shared/runs/install_history.py), and the next run's rows carry
the durations predicted from them (basis "machine"), its start slots going to the longest first; a rollout admits
each wave's machines in that order."""

from __future__ import annotations

import itertools
import json
from typing import Any

import azure.functions as func
import pytest

from shared.composition import Components
from shared.core.clock import parse_iso
from shared.core.records import MachineRecord
from shared.validation.resource_ids import parse_machine_id
from tests.app import runs_api
from tests.integration.queue_pump import QueuePump
from tests.integration.test_machine_worker import finished, reconfigure, start
from tests.support.bodies import INSTALL
from tests.support.fleet import sim_config
from tools.azure_simulator import Simulator, SimulatorConfig

VMS = 8


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    # Installations of 5-30 simulated minutes take 1-6 s here, polled every second: durations that differ.
    return sim_config(vms=VMS, seed=21, time_scale=300.0)


def first_run(services: Components, vms: list[str]) -> dict[str, MachineRecord]:
    """An install run of `vms` to its end (no history yet: every machine predicted the default): its rows."""
    run_id = start(vms)
    QueuePump(services).run_until(lambda: finished(run_id), timeout=90)
    return {t.key: t for t in services.store.list_targets(run_id)}


def seconds_between(start: str, end: str) -> float:
    return (parse_iso(end) - parse_iso(start)).total_seconds()


def non_increasing(values: list[Any]) -> bool:
    return all(a >= b for a, b in itertools.pairwise(values))


def test_a_closed_run_writes_histories_and_the_next_run_predicts_from_them(services: Components,
                                                                          simulator: Simulator) -> None:
    vms = simulator.vm_ids()
    targets = first_run(services, vms)
    assert {t["predictionBasis"] for t in targets.values()} == {"default"}
    assert {t["predictedSeconds"] for t in targets.values()} == {services.settings.plans.default_install_seconds}
    histories = services.durations.histories(vms[0].split("/")[2])
    assert set(histories) == set(targets)  # written by the step that closed the run
    assert any(t.get("runningSeenAt") for t in targets.values())  # some were polled while running
    for machine, row in histories.items():
        target = targets[machine]
        (sample,) = row["samples"]
        # the end: at the poll that saw it, or midway from the last poll that saw it running (install_history)
        seen = took = seconds_between(target["operationStartedAt"], target["completedAt"])
        between: dict[str, Any] = {}
        if target.get("runningSeenAt"):
            running = seconds_between(target["operationStartedAt"], target["runningSeenAt"])
            took = running + (took - running) / 2
            between = {"seen": pytest.approx(seen, abs=0.06)}  # the poll that saw the end: times the first poll
        assert sample == {"at": target["operationStartedAt"], **between,
                          "seconds": pytest.approx(took, abs=0.06),
                          "patches": target["installedPatchCount"],
                          "rebooted": target.get("rebootStatus") == "Completed",
                          "predicted": target["predictedSeconds"]}
        assert row["osType"] == target["osType"] and sample["seconds"] > 0

    # The next run, paced to one start a second: its rows carry what each machine took, longest first.
    svc = reconfigure(GUEST_PATCH_BURST="1", GUEST_PATCH_PER_MINUTE="60", PACING_LATE_SECONDS="0")
    run_id = start(vms)
    QueuePump(svc).pump_once(only="dispatch")
    rows = svc.store.list_targets(run_id)
    assert {t["predictionBasis"] for t in rows} == {"machine"}
    assert {t.key: t["predictedSeconds"] for t in rows} == {
        k: round(h["samples"][0]["seconds"]) for k, h in histories.items()}
    assert {t.key: t["shortestSeconds"] for t in rows} == {  # times the first poll (retry_policy.first_poll_delay)
        k: round(h["samples"][0].get("seen", h["samples"][0]["seconds"])) for k, h in histories.items()}
    assert not non_increasing([round(histories[key(vm)]["samples"][0]["seconds"]) for vm in vms])  # not so asked
    by_slot = sorted(rows, key=lambda t: (t["nextActionAt"], t.key))
    assert len({t["nextActionAt"] for t in rows}) == VMS  # one slot each
    assert non_increasing([t["predictedSeconds"] for t in by_slot])
    QueuePump(svc).run_until(lambda: finished(run_id), timeout=90)
    # Each machine first polled at 90% of its shortest installation, not one Retry-After (1 s) after its start.
    # (Nothing is left to install the second time, so each installation ends at once and is seen at that poll.)
    ended = {t.key: seconds_between(t["operationStartedAt"], t["completedAt"]) for t in svc.store.list_targets(run_id)}
    shortest = {t.key: t["shortestSeconds"] for t in rows}
    assert max(shortest.values()) >= 5
    assert all(ended[k] >= int(0.9 * s) - 0.5 for k, s in shortest.items()), (ended, shortest)
    again = services.durations.histories(vms[0].split("/")[2])
    assert all(len(h["samples"]) == 2 for h in again.values())  # one more installation each
    assert all(h["samples"][0]["predicted"] == round(h["samples"][1]["seconds"]) for h in again.values())


def test_a_rollout_admits_its_waves_longest_predicted_first(services: Components, simulator: Simulator) -> None:
    vms = simulator.vm_ids()
    first_run(services, vms)
    histories = services.durations.histories(vms[0].split("/")[2])
    predicted = [round(histories[key(vm)]["samples"][0]["seconds"]) for vm in vms]
    assert not non_increasing(predicted[2:])  # the request's order is not already longest first
    body = {"machines": vms, "installPatches": INSTALL,
            "rollout": {"waves": [{"size": 2}, {"size": "rest"}], "maxConcurrency": 1}}
    resp = runs_api.create_run(func.HttpRequest("POST", "http://127.0.0.1:7071/api/runs",
                                                body=json.dumps(body).encode()))
    assert resp.status_code == 202, resp.get_body()
    run_id = json.loads(resp.get_body())["id"]
    QueuePump(services).run_until(lambda: finished(run_id), timeout=120)
    rows = services.store.list_targets(run_id)
    assert {t["state"] for t in rows} == {"Completed"}
    assert {t["predictionBasis"] for t in rows} == {"machine"}
    for wave in (0, 1):  # one at a time (maxConcurrency 1): the order they were admitted in is their start order
        admitted = sorted((t for t in rows if t["wave"] == wave), key=lambda t: t["admittedAt"])
        assert [t["startRank"] for t in admitted] == list(range(len(admitted)))
        assert non_increasing([t["predictedSeconds"] for t in admitted]), [(t.key, t["predictedSeconds"])
                                                                          for t in admitted]


def key(vm: str) -> str:
    return parse_machine_id(vm, target="machines").key
