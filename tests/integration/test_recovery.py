"""Crashes at the wrong moment, settled from Azure (Azurite + the ARM simulator over HTTP, in-process
delivery): a machine left `Starting` whose POST did or did not reach Azure, a re-dispatch after storage
lost acknowledged writes, and an instance view that cannot be read. Each VM gets one installation, and
its result is what Azure did."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from azure.data.tables import UpdateMode

from shared.arm.calls import INSTALL_PATCHES
from shared.composition import Components
from shared.core.clock import iso, utcnow
from shared.validation.install_parameters import parameters_for_os
from shared.validation.resource_ids import parse_vm_id
from tests.app import runs_api
from tests.integration.conftest import unique_settings
from tests.integration.queue_pump import QueuePump
from tests.support.bodies import INSTALL
from tests.support.fleet import sim_config
from tools.azure_simulator import Simulator, SimulatorConfig
from tools.azurite import Azurite

import azure.functions as func  # isort: skip


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    # 900x: an installation lasts a few real seconds, so one found right after its POST is InProgress.
    return sim_config(vms=4, seed=21, time_scale=900.0)


@pytest.fixture
def app_settings(azurite: Azurite, simulator: Simulator) -> dict[str, str]:
    return {**unique_settings(azurite, simulator.url), "MAX_TRANSIENT_RETRIES": "2"}


def start_run(vms: list[str]) -> str:
    resp = runs_api.create_run(func.HttpRequest(
        "POST", "http://127.0.0.1:7071/api/runs", headers={"Content-Type": "application/json"},
        body=json.dumps({"machines": vms, "installPatches": INSTALL}).encode()))
    assert resp.status_code == 202, resp.get_body()
    return str(json.loads(resp.get_body())["id"])


def run_view(run_id: str) -> tuple[int, dict[str, Any]]:
    resp = runs_api.get_run(func.HttpRequest("GET", f"http://127.0.0.1:7071/api/runs/{run_id}", body=b"",
                                             route_params={"runId": run_id}))
    return resp.status_code, json.loads(resp.get_body())


def finish(services: Components, run_id: str) -> dict[str, Any]:
    QueuePump(services).run_until(lambda: run_view(run_id)[0] == 200, timeout=60)
    return run_view(run_id)[1]


def crash_after_claim(services: Components, run_id: str, ago: timedelta) -> None:
    """What a host killed right after its claims leaves: every machine `Starting`, claimed `ago`, no answer."""
    claimed = iso(utcnow() - ago)
    for target in services.store.list_targets(run_id):
        services.store.update_target(target, {"state": "Starting", "claimedAt": claimed, "firstClaimedAt": claimed})


def installations(simulator: Simulator) -> dict[str, list[dict[str, Any]]]:
    return {vm["id"].lower(): [op for op in vm["operations"] if op["kind"] == "installPatches"]
            for vm in simulator.state()["vms"]}


def assert_one_install_each_recorded_as_azure_did(run: dict[str, Any], simulator: Simulator) -> None:
    ops = installations(simulator)
    accepted = simulator.calls()["byVm"]
    for machine in run["machines"]:
        vm = machine["id"].lower()
        assert accepted[vm]["installPatchesAccepted"] == 1, vm
        assert len(ops[vm]) == 1, vm
        result = ops[vm][0]["result"]
        assert machine["state"] == "Completed", machine
        for field in ("status", "installationActivityId", "installedPatchCount", "failedPatchCount",
                      "pendingPatchCount", "notSelectedPatchCount", "excludedPatchCount"):
            assert machine.get(field) == result.get(field), (vm, field)


def test_a_machine_left_starting_whose_post_reached_azure_is_followed_not_failed(
        services: Components, simulator: Simulator) -> None:
    vms = simulator.vm_ids()
    run_id = start_run(vms)
    QueuePump(services).pump_once(only="dispatch")
    crash_after_claim(services, run_id, timedelta(seconds=services.settings.retries.claim_timeout_seconds + 30))
    os_type = {vm["id"].lower(): vm["osType"] for vm in simulator.state()["vms"]}
    for vm in vms:  # the POSTs the dead host sent: Azure accepted them, nobody recorded the answer
        body = parameters_for_os(INSTALL, os_type[vm.lower()])
        assert services.arm.send(INSTALL_PATCHES, parse_vm_id(vm, target="vm"), body).status == 202

    run = finish(services, run_id)
    assert_one_install_each_recorded_as_azure_did(run, simulator)
    assert not any((m.get("error") or {}).get("code") == "OutcomeUnknown" for m in run["machines"])
    assert run["status"] != "Failed" or any(m["status"] == "Failed" for m in run["machines"])
    # Found still running, they were followed through the instance view until they finished.
    modes = {t.get("pollMode") for t in services.store.list_targets(run_id)}
    assert modes == {"instanceView"}


def test_a_machine_left_starting_whose_post_never_reached_azure_is_installed_once(
        services: Components, simulator: Simulator) -> None:
    vms = simulator.vm_ids()
    run_id = start_run(vms)
    QueuePump(services).pump_once(only="dispatch")
    crash_after_claim(services, run_id, timedelta(seconds=services.settings.retries.claim_timeout_seconds + 30))

    run = finish(services, run_id)
    assert_one_install_each_recorded_as_azure_did(run, simulator)
    for machine in run["machines"]:
        # settled from Azure (nothing since the claim), then sent again with no second check
        assert [c["op"] for c in machine["armCalls"]][:3] == ["instanceView", "getVm", "installPatches"], machine


def test_a_fresh_claim_is_left_alone_until_it_runs_out(services: Components, simulator: Simulator) -> None:
    vm = simulator.vm_ids()[0]
    run_id = start_run([vm])
    QueuePump(services).pump_once(only="dispatch")
    crash_after_claim(services, run_id, timedelta(seconds=0))
    QueuePump(services).pump_once(only="operations")
    (target,) = services.store.list_targets(run_id)
    assert target["state"] == "Starting" and json.loads(target.get("armCalls") or "[]") == []
    assert simulator.calls()["total"].get("instanceView", 0) == 0  # no ARM call while the claim may be live
    # ... and a look is queued for when the claim runs out (not left to the next sweep), on the polls queue:
    # the machine is claimed
    peeked = services.account.queue(services.settings.queues.polls).peek_messages(max_messages=32)
    assert peeked == []  # delayed: invisible now
    props = services.account.queue(services.settings.queues.polls).get_queue_properties()
    assert props.approximate_message_count == 1


def test_a_redispatch_after_storage_lost_its_writes_follows_the_installation_that_ran(
        services: Components, simulator: Simulator) -> None:
    vms = simulator.vm_ids()
    run_id = start_run(vms)
    QueuePump(services).pump_once(only="dispatch")
    store = services.store
    lost = [(table, list(table.list_entities())) for table in (store.runs, store.targets)]  # as acknowledged then
    first = finish(services, run_id)
    assert_one_install_each_recorded_as_azure_did(first, simulator)

    for table, entities in lost:  # storage loses every write since: the run is back to just dispatched
        for entity in entities:
            table.upsert_entity(entity, mode=UpdateMode.REPLACE)
    restored = store.list_targets(run_id)
    assert {t["state"] for t in restored} == {"Queued"}
    for target in restored:  # their first step messages come round again (a redelivery, or the sweeper)
        services.queues.send_step(run_id, target.key, target.seq)

    again = finish(services, run_id)
    assert_one_install_each_recorded_as_azure_did(again, simulator)  # still one installation per VM
    for machine in again["machines"]:
        ops = [c["op"] for c in machine["armCalls"]]
        assert "installPatches" not in ops and "instanceView" in ops, ops


def test_only_an_unreadable_instance_view_ends_as_outcome_unknown(services: Components,
                                                                  simulator: Simulator) -> None:
    vm = simulator.vm_ids()[0]
    run_id = start_run([vm])
    QueuePump(services).pump_once(only="dispatch")
    crash_after_claim(services, run_id, timedelta(seconds=services.settings.retries.claim_timeout_seconds + 30))
    simulator.set_faults(error_rate=1.0)  # every ARM request: 500, before any processing

    run = finish(services, run_id)
    simulator.set_faults(error_rate=0.0)
    (machine,) = run["machines"]
    assert machine["state"] == "OutcomeUnknown" and machine["error"]["code"] == "OutcomeUnknown", machine
    assert [c["op"] for c in machine["armCalls"]] == ["instanceView"] * 3  # first read + MAX_TRANSIENT_RETRIES
    assert "could not say whether installPatches reached it" in machine["error"]["message"]
    assert simulator.calls()["total"].get("installPatches", 0) == 0
    assert run["status"] == "CompletedWithWarnings" and run["outcomes"] == {"unknown": 1}  # not a failure
