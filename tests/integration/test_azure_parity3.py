"""What Azure does, part III (#23), against Azurite and the ARM simulator answering as the field reports Azure does
(its opt-in faults, docs/simulator.md "Azure's other answers"): one table or scenario per family.

1. Errors in other shapes are read, retried when 5xx, and Azure's words kept.
2. A Retry-After that cannot fit the machine's maintenance window ends it Skipped (WindowClosed), not Failed.
3. Display-name classifications land in the API's names; Ubuntu's security fixes classed Other are shown.
4. Arc operations answered with Azure-AsyncOperation + Location and no Retry-After are followed to their result.
5. 409s while a host update holds a machine are waits: inside a window, until the window says stop."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from shared.composition import Components
from shared.maintenance.windows import open_due_windows
from tests.app import assessments_api, get_services, reset_services, runs_api
from tests.integration.queue_pump import QueuePump
from tests.integration.test_maintenance import assign, configuration, occurrences, put, run_of
from tests.support.bodies import INSTALL
from tests.support.fleet import sim_config
from tools.azure_simulator import Simulator, SimulatorConfig

SECURITY_ONLY = {"maximumDuration": "PT2H", "rebootSetting": "IfRequired",
                 "windowsParameters": {"classificationsToInclude": ["Critical", "Security"]},
                 "linuxParameters": {"classificationsToInclude": ["Critical", "Security"]}}


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return sim_config(vms=6, seed=61, time_scale=36000.0, arc_machines=3, arc_disconnected=0,
                      ubuntu_other_security_share=0.5)


def start(machines: list[str], install: dict[str, Any] | None = None) -> str:
    body = json.dumps({"machines": machines, "installPatches": install or INSTALL}).encode()
    resp = runs_api.create_run(func.HttpRequest("POST", "http://127.0.0.1:7071/api/runs", body=body))
    assert resp.status_code == 202, resp.get_body()
    return str(json.loads(resp.get_body())["id"])


def finish(services: Components, run_id: str, timeout: float = 120) -> dict[str, Any]:
    QueuePump(services).run_until(lambda: run_of(run_id)["status"] not in ("Accepted", "InProgress"),
                                  timeout=timeout)
    return run_of(run_id)


def vms(simulator: Simulator) -> list[str]:
    return [v for v in simulator.vm_ids() if "/Microsoft.Compute/" in v]


# -- 1. errors in other shapes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", ["pascal", "bare", "toplevel"])
def test_5xx_in_any_shape_are_retried_and_4xx_keep_azures_words(services: Components, simulator: Simulator,
                                                                 shape: str) -> None:
    machines = vms(simulator)
    stopped, rest = machines[0], machines[1:]
    simulator.set_power(stopped, "deallocated")
    simulator.set_faults(error_shape=shape, error_rate=0.25, failure_cause_header=True, seed=7)
    run = finish(services, start(machines))
    assert simulator.calls()["faults"] > 0  # Azure's 5xx were met ...
    by_id = {m["id"]: m for m in run["machines"]}
    assert all(by_id[v]["state"] == "Completed" for v in rest)  # ... retried, never taken for success
    assert all(by_id[v].get("status") for v in rest)  # the result was read, not assumed
    # The 409 on a deallocated VM, in this shape: Azure's message is what tells it apart from a busy VM.
    refused = by_id[stopped]
    assert refused["state"] == "Failed" and refused["error"]["code"] == "VMNotRunning", refused["error"]
    assert "deallocated" in json.dumps(refused["error"])


# -- 2. a Retry-After weighed against the window -----------------------------------------------------------------

def test_a_20_minute_retry_after_that_cannot_fit_the_window_skips_instead_of_failing(
        services: Components, simulator: Simulator) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    put("closing", configuration(now - timedelta(minutes=50), duration="01:30"))  # about 40 minutes left
    assign("closing", "vms", {"resourceId": vms(simulator)[0]})
    simulator.set_faults(throttle_rate=1.0, throttle_retry_after=1200, throttle_remaining_reads=11999)
    assert open_due_windows(services, datetime.now(UTC))["opened"] == 1
    run_id = occurrences("closing", now - timedelta(hours=1), 1)[0]["runId"]
    run = finish(services, run_id, timeout=60)
    [machine] = run["machines"]
    assert machine["state"] == "Skipped" and machine["error"]["code"] == "WindowClosed", machine
    assert "1200 s" in machine["error"]["message"]  # Azure's Retry-After, though the counters showed 11999 left
    assert run["status"] != "Failed"


# -- 5. collisions: waits, bounded by the window ----------------------------------------------------------------

def test_a_host_update_409_is_waited_out_inside_a_window_past_the_retry_count(
        services: Components, simulator: Simulator) -> None:
    os.environ["MAX_CONFLICT_RETRIES"] = "1"  # the count a run outside a window stops at
    reset_services()
    svc = get_services()
    windowed, plain = vms(simulator)[:2]
    simulator.set_faults(conflict_style="hostupdate")
    for vm in (windowed, plain):
        simulator.start_host_update(vm, seconds=6)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    put("hosted", configuration(now - timedelta(minutes=1)))
    assign("hosted", "vm", {"resourceId": windowed})
    assert open_due_windows(svc, datetime.now(UTC))["opened"] == 1
    window_run = occurrences("hosted", now - timedelta(minutes=5), 1)[0]["runId"]
    plain_run = start([plain])
    [in_window] = finish(svc, window_run)["machines"]
    [outside] = finish(svc, plain_run)["machines"]
    assert in_window["state"] == "Completed", in_window  # retried until the host update ended
    assert outside["state"] == "Failed" and outside["error"]["code"] == "OperationNotAllowed"
    assert "ongoing update to complete the resource" in outside["error"]["message"]
    assert simulator.calls()["faultsByKind"].get("hostUpdate", 0) >= 3


# -- 4. Arc operations ------------------------------------------------------------------------------------------

def test_arc_operations_answered_with_status_and_location_and_no_retry_after(services: Components,
                                                                           simulator: Simulator) -> None:
    arc = simulator.machine_ids()
    simulator.set_faults(arc_lro_style="async")
    run = finish(services, start(arc))
    assert run["status"] in ("Succeeded", "CompletedWithWarnings"), run["states"]
    for machine in run["machines"]:
        assert machine["state"] == "Completed" and machine["status"] in ("Succeeded", "CompletedWithWarnings")
        assert "installedPatchCount" in machine  # the result, read from operationresults
        polls = [c for c in machine["armCalls"] if c["op"] == "poll"]
        assert polls and all(c["status"] in (200, 202) for c in polls)
    state = simulator.calls()
    assert state["byVm"][arc[0].lower()]["installPatchesAccepted"] == 1


# -- 3. result shapes ---------------------------------------------------------------------------------------------

def test_display_names_land_as_the_apis_and_ubuntus_other_fixes_are_shown(services: Components,
                                                                         simulator: Simulator) -> None:
    simulator.set_faults(classification_style="display")
    machines = vms(simulator)
    run = finish(services, start(machines, SECURITY_ONLY))
    linux = [m for m in run["machines"] if m.get("osType") == "Linux"]
    assert any((m.get("notSelectedByClassification") or {}).get("Other") for m in linux), linux
    status, body, _ = _call(assessments_api.create_assessment, "POST", {"machines": machines})
    assert status == 202, body
    QueuePump(services).run_until(lambda: _call(assessments_api.get_assessment, "GET", None,
                                                route={"runId": body["id"]})[0] == 200, timeout=60)
    _, report, _ = _call(assessments_api.get_compliance, "GET", None)
    names = set(report["byClassification"])
    assert names and not any(" " in n for n in names), names  # "Security Updates" became "Security"
    assert report["linuxOtherUpdates"]["machines"] >= 1


def _call(fn: Any, method: str, body: Any, route: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    raw = json.dumps(body).encode() if body is not None else b""
    resp = fn(func.HttpRequest(method, "http://127.0.0.1:7071/api/x", body=raw, route_params=route or {},
                               headers={"Content-Type": "application/json"}))
    return resp.status_code, json.loads(resp.get_body() or b"{}"), dict(resp.headers)
