"""Field-reported ways Azure answers ("What works here works in Azure", part III), each an opt-in setting:
error shapes, a far-off Retry-After beside a full read counter, HybridCompute's ARM-RPC async LRO, host-update
collisions, display classifications and old api-versions' result names, and Ubuntu security fixes classified
Other. Every default keeps the simulator's earlier answers (checked here too)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import requests
from azure.mgmt.hybridcompute import HybridComputeManagementClient
from azure.mgmt.hybridcompute.models import LinuxParameters, MachineInstallPatchesParameters, WindowsParameters

from tests.simulator.conftest import API
from tests.simulator.test_http import vm_of, wait_done
from tests.simulator.test_sdk_fidelity import HTTP, StaticToken, split
from tests.support.bodies import INSTALL, INSTALL_LINUX_OTHER
from tools.azure_simulator import Simulator, SimulatorConfig
from tools.azure_simulator.config import FaultSettings
from tools.azure_simulator.patching import DISPLAY_CLASSIFICATIONS

ARC_API = "api-version=2024-07-10"
WINDOWS_NAMES = {"Security", "Critical", "Definition Updates", "Update Rollups", "FeaturePack", "ServicePack",
                 "Tools", "Updates"}
LINUX_NAMES = {"Security", "Critical", "Other"}


def op_id(url: str) -> str:
    return url.split("?", maxsplit=1)[0].rstrip("/").rsplit("/", 1)[1]


def slow_sim(make_sim: Callable[..., Simulator], **settings: Any) -> Simulator:
    """Operations that stay InProgress (minutes of real time) until a test ends them with finish_now."""
    return make_sim(time_scale=1.0, **settings)


def finish(sim: Simulator, url: str) -> None:
    op = sim.engine.get(op_id(url))
    assert op is not None
    sim.engine.finish_now(op)


# ---------------------------------------------------------------------------------------------- 1. error shapes
def _trigger(sim: Simulator, arm: requests.Session, kind: str) -> requests.Response:
    """An error of `kind` from ARM's surface."""
    vm = vm_of(sim, "Windows")
    if kind == "5xx":
        with sim.faults_set(error_rate=1.0):
            return arm.get(f"{sim.url}{vm}?{API}")
    if kind == "429":
        with sim.faults_set(throttle_rate=1.0):
            return arm.get(f"{sim.url}{vm}?{API}")
    if kind == "404":
        return arm.get(f"{sim.url}{vm}-gone?{API}")
    if kind == "400":
        return arm.post(f"{sim.url}{vm}/installPatches?{API}", json={"maximumDuration": "PT1H"})
    if kind == "409":
        sim.set_power(vm, "deallocated")
        return arm.post(f"{sim.url}{vm}/assessPatches?{API}")
    if kind == "403":
        sim.set_role_assignments([{"scope": "/subscriptions/00000000-0000-0000-0000-000000000000"}])
        return arm.get(f"{sim.url}{vm}?{API}")
    raise AssertionError(kind)


CODES = {"5xx": ("InternalServerError", "ServiceUnavailable"), "429": ("SubscriptionRequestsThrottled",),
         "404": ("ResourceNotFound",), "400": ("InvalidParameter",), "409": ("OperationNotAllowed",),
         "403": ("AuthorizationFailed",)}


@pytest.mark.parametrize("kind", list(CODES))
@pytest.mark.parametrize(
    ("shape", "failure_cause"),
    [("arm", False), ("arm", True), ("pascal", False), ("bare", False), ("toplevel", False), ("toplevel", True)],
)
def test_error_shapes(
    sim: Simulator, arm: requests.Session, shape: str, failure_cause: bool, kind: str
) -> None:
    sim.set_faults(error_shape=shape, failure_cause_header=failure_cause)
    resp = _trigger(sim, arm, kind)
    body, server_side = resp.json(), kind == "5xx"
    assert resp.status_code >= 500 if server_side else str(resp.status_code) == kind
    header = resp.headers.get("x-ms-failure-cause")
    assert header == ("service" if server_side and (failure_cause or shape == "bare") else None)
    if shape == "bare" and server_side:
        assert body == {"Message": "An error has occurred."}
    elif shape == "pascal":
        assert set(body) == {"Error"} and set(body["Error"]) == {"Code", "Message", "Target", "Details"}
        assert body["Error"]["Code"] in CODES[kind] and body["Error"]["Message"]
        assert isinstance(body["Error"]["Details"], list)
        if kind == "400":
            assert body["Error"]["Target"] == "installPatchesInput.rebootSetting"
    elif shape == "toplevel":
        assert "error" not in body and body["code"] in CODES[kind] and body["message"]
    else:  # "arm", and "bare" for anything not a 5xx
        assert set(body) == {"error"} and body["error"]["code"] in CODES[kind]
    # ARM's headers stay whatever the body: request ids, the subscription's remaining budget, Retry-After.
    budget = "reads" if resp.request.method == "GET" else "writes"
    assert resp.headers["x-ms-request-id"] and resp.headers[f"x-ms-ratelimit-remaining-subscription-{budget}"]
    if kind == "429":
        assert resp.headers["Retry-After"] == "2"


def test_bare_shape_applies_to_4xx_as_arm(sim: Simulator, arm: requests.Session) -> None:
    sim.set_faults(error_shape="bare")
    for kind in ("400", "404"):
        assert "error" in _trigger(sim, arm, kind).json()


def test_pascal_details_are_pascal_too(make_sim: Callable[..., Simulator], arm: requests.Session) -> None:
    sim = slow_sim(make_sim, faults={"error_shape": "pascal"})
    vm = vm_of(sim, "Linux")
    assert arm.post(f"{sim.url}{vm}/installPatches?{API}", json=INSTALL).status_code == 202
    busy = arm.post(f"{sim.url}{vm}/assessPatches?{API}")
    assert busy.status_code == 409
    error = busy.json()["Error"]
    assert error["Code"] == "OperationNotAllowed" and error["Target"] is None
    assert error["Details"][0]["Code"] == "OperationInProgress" and error["Details"][0]["Target"] == "installPatches"


def test_admin_api_keeps_arm_shape_and_sets_shapes(sim: Simulator) -> None:
    resp = requests.post(f"{sim.url}/_sim/faults", json={"error_shape": "toplevel", "failure_cause_header": True})
    assert resp.status_code == 200 and resp.json()["error_shape"] == "toplevel"
    assert resp.json()["failure_cause_header"] is True
    refused = requests.post(f"{sim.url}/_sim/faults", json={"error_shape": "Pascal"})
    assert refused.status_code == 400 and "error" in refused.json()
    assert sim.faults.settings.error_shape == "toplevel"


# ------------------------------------------------------------------------------- 2. Retry-After vs the counter
@pytest.mark.parametrize(
    ("method", "remaining", "expected_reads"),
    [("GET", 11999, "11999"), ("GET", None, "bucket"), ("POST", 11999, None)],
)
def test_injected_429_retry_after_beyond_the_counter(
    sim: Simulator, arm: requests.Session, method: str, remaining: int | None, expected_reads: str | None
) -> None:
    sim.set_faults(throttle_rate=1.0, throttle_retry_after=1200, throttle_remaining_reads=remaining)
    vm = vm_of(sim, "Windows")
    resp = arm.get(f"{sim.url}{vm}?{API}") if method == "GET" else arm.post(f"{sim.url}{vm}/assessPatches?{API}")
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "1200"
    assert "'1200' seconds" in resp.json()["error"]["message"]
    if expected_reads == "bucket":
        assert 0 < int(resp.headers["x-ms-ratelimit-remaining-subscription-reads"]) <= 250
    elif expected_reads is None:  # a write reports its write budget, never the reads knob
        assert "x-ms-ratelimit-remaining-subscription-reads" not in resp.headers
        assert int(resp.headers["x-ms-ratelimit-remaining-subscription-writes"]) <= 200
    else:
        assert resp.headers["x-ms-ratelimit-remaining-subscription-reads"] == expected_reads
    assert sim.calls()["throttledByBucket"]["injected"] == 1


# ------------------------------------------------------------------------------------ 3. Arc LRO style "async"
def arc_machine(sim: Simulator, os_type: str) -> dict:
    return next(m for m in sim.state()["arcMachines"] if m["osType"] == os_type and m["agentStatus"] == "Connected")


@pytest.mark.parametrize("action", ["installPatches", "assessPatches"])
def test_arc_async_lro_contract(
    make_sim: Callable[..., Simulator], arm: requests.Session, action: str
) -> None:
    sim = slow_sim(make_sim, arc_machines=4, faults={"arc_lro_style": "async"})
    target = arc_machine(sim, "Windows")
    sub = target["id"].split("/")[2]
    body = INSTALL if action == "installPatches" else None
    started = arm.post(f"{sim.url}{target['id']}/{action}?{ARC_API}", json=body)
    assert started.status_code == 202 and "Retry-After" not in started.headers
    status_url, result_url = started.headers["Azure-AsyncOperation"], started.headers["Location"]
    op = op_id(status_url)
    base = f"{sim.url}/subscriptions/{sub}/providers/Microsoft.HybridCompute/locations/westus"
    assert status_url == f"{base}/operationstatus/{op}?{ARC_API}"
    assert result_url == f"{base}/operationresults/{op}?{ARC_API}"

    running = arm.get(status_url)
    assert running.status_code == 200 and "Retry-After" not in running.headers
    path = f"/subscriptions/{sub}/providers/Microsoft.HybridCompute/locations/westus/operationstatus/{op}"
    assert running.json().keys() == {"id", "name", "status", "startTime"}
    assert running.json()["id"] == path and running.json()["name"] == op
    assert running.json()["status"] == "InProgress"
    pending = arm.get(result_url)
    assert pending.status_code == 202 and pending.content == b""
    assert pending.headers["Location"] == result_url and "Retry-After" not in pending.headers

    finish(sim, status_url)
    done = arm.get(status_url).json()
    assert done["status"] == "Succeeded" and done["endTime"] >= done["startTime"]
    assert "properties" not in done and "error" not in done
    result = arm.get(result_url)
    legacy = arm.get(f"{base}/updateCenterOperationResults/{op}?{ARC_API}")
    assert result.status_code == legacy.status_code == 200 and result.json() == legacy.json()
    assert result.json()["status"] == "Succeeded"
    assert ("installedPatchCount" if action == "installPatches" else "availablePatchCountByClassification") in (
        result.json()
    )


def test_arc_async_failed_operation(make_sim: Callable[..., Simulator], arm: requests.Session) -> None:
    sim = make_sim(arc_machines=4, faults={"arc_lro_style": "async", "patch_failure_rate": 1.0})
    target = arc_machine(sim, "Linux")
    started = arm.post(f"{sim.url}{target['id']}/installPatches?{ARC_API}", json=INSTALL)
    status = wait_until(lambda: arm.get(started.headers["Azure-AsyncOperation"]).json(),
                        lambda b: b["status"] != "InProgress")
    assert status["status"] == "Failed" and status["error"]["code"] == "OperationFailed"
    result = arm.get(started.headers["Location"])
    assert result.status_code == 200 and result.json()["status"] == "Failed"
    assert result.json()["failedPatchCount"] > 0


def wait_until(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = read()
        if done(value):
            return value
        time.sleep(0.02)
    raise AssertionError("condition not reached")


@pytest.mark.parametrize("kind", ["operationstatus", "operationresults"])
@pytest.mark.parametrize("wrong", ["id", "location", "compute-op"])
def test_arc_async_urls_404_for_unknown_operations(
    make_sim: Callable[..., Simulator], arm: requests.Session, kind: str, wrong: str
) -> None:
    sim = make_sim(arc_machines=4, faults={"arc_lro_style": "async"})
    target = arc_machine(sim, "Windows")
    url = arm.post(f"{sim.url}{target['id']}/assessPatches?{ARC_API}").headers["Azure-AsyncOperation"]
    url = url.replace("operationstatus", kind)
    assert arm.get(url).status_code == 200 or kind == "operationresults"
    if wrong == "id":
        url = url.replace(op_id(url), "00000000-0000-0000-0000-000000000000")
    elif wrong == "location":
        url = url.replace("/locations/westus/", "/locations/eastus/")
    else:  # a Compute VM's operation id is not HybridCompute's
        vm = vm_of(sim, "Windows")
        compute_op = op_id(arm.post(f"{sim.url}{vm}/assessPatches?{API}").headers["Location"])
        url = url.replace(op_id(url), compute_op)
    missing = arm.get(url)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NotFound"


@pytest.mark.parametrize(
    ("kind", "action"),
    [("operationstatus", "Microsoft.HybridCompute/locations/operationstatus/read"),
     ("operationresults", "Microsoft.HybridCompute/locations/operationresults/read")],
)
def test_arc_async_urls_need_their_read_at_the_subscription(
    make_sim: Callable[..., Simulator], arm: requests.Session, kind: str, action: str
) -> None:
    sim = make_sim(arc_machines=4, faults={"arc_lro_style": "async"})
    target = arc_machine(sim, "Linux")
    sub, rg_scope = target["id"].split("/")[2], target["id"].split("/providers/")[0]
    started = arm.post(f"{sim.url}{target['id']}/assessPatches?{ARC_API}")
    url = started.headers["Azure-AsyncOperation"].replace("operationstatus", kind)
    other = ({"operationstatus", "operationresults"} - {kind}).pop()
    sim.set_role_assignments([
        {"scope": rg_scope, "actions": ["Microsoft.HybridCompute/machines/*"]},
        {"scope": f"/subscriptions/{sub}", "actions": [f"Microsoft.HybridCompute/locations/{other}/read"]},
        {"scope": rg_scope, "actions": [action]},  # at the resource group: does not cover the subscription's URL
    ])
    denied = arm.get(url)
    assert denied.status_code == 403 and f"action '{action}'" in denied.json()["error"]["message"]
    sim.set_role_assignments([
        {"scope": rg_scope, "actions": ["Microsoft.HybridCompute/machines/*"]},
        {"scope": f"/subscriptions/{sub}", "actions": [action]},
    ])
    assert wait_done(arm, url).status_code == 200


def test_arc_default_style_is_unchanged(make_sim: Callable[..., Simulator], arm: requests.Session) -> None:
    sim = make_sim(arc_machines=4)
    assert sim.faults.settings.arc_lro_style == "location"
    started = arm.post(f"{sim.url}{arc_machine(sim, 'Linux')['id']}/assessPatches?{ARC_API}")
    assert "Azure-AsyncOperation" not in started.headers and "Retry-After" in started.headers
    assert "/updateCenterOperationResults/" in started.headers["Location"]


def test_sdk_poller_completes_against_arc_async_style(make_sim: Callable[..., Simulator]) -> None:
    """Microsoft's azure-mgmt-hybridcompute LRO poller follows Azure-AsyncOperation to Succeeded, then reads the
    result from Location: proof the "async" shape is one Azure's own client completes."""
    sim = make_sim(arc_machines=4, faults={"arc_lro_style": "async"})
    client = HybridComputeManagementClient(StaticToken(), sim.subscriptions()[0], base_url=sim.url)
    seen: list[tuple[str, int]] = []

    def hook(response: Any) -> None:
        seen.append((response.http_request.url, response.http_response.status_code))

    windows = arc_machine(sim, "Windows")
    rg, name = split(windows["id"])
    params = MachineInstallPatchesParameters(
        maximum_duration=timedelta(hours=3), reboot_setting="IfRequired",
        windows_parameters=WindowsParameters(classifications_to_include=["Critical", "Security"]),
    )
    poller = client.machines.begin_install_patches(rg, name, params, polling_interval=0, raw_response_hook=hook,
                                                   **HTTP)
    installed = poller.result(timeout=30)  # None if the poller never saw a terminal status
    assert poller.status() == "Succeeded" and installed is not None and installed.status == "Succeeded"
    assert installed.installed_patch_count > 0 and installed.os_type == "Windows"
    assert any("/operationstatus/" in url for url, _ in seen)
    assert "/operationresults/" in seen[-1][0] and seen[-1][1] == 200
    assert not any("/updateCenterOperationResults/" in url for url, _ in seen)

    linux = arc_machine(sim, "Linux")
    rg, name = split(linux["id"])
    assessed = client.machines.begin_assess_patches(rg, name, polling_interval=0, **HTTP).result()
    counts = assessed.available_patch_count_by_classification
    assert counts.critical + counts.security + counts.other == len(linux["pendingPatches"])
    linux_params = MachineInstallPatchesParameters(
        maximum_duration=timedelta(hours=1), reboot_setting="Never",
        linux_parameters=LinuxParameters(classifications_to_include=["Critical", "Security", "Other"]),
    )
    installed = client.machines.begin_install_patches(rg, name, linux_params, polling_interval=0, **HTTP).result()
    assert installed.installed_patch_count == len(linux["pendingPatches"])


# ------------------------------------------------------------------------------------------------ 4. collisions
@pytest.mark.parametrize(("arc", "first", "second"), [
    (False, "installPatches", "assessPatches"), (False, "assessPatches", "installPatches"),
    (False, "assessPatches", "assessPatches"), (True, "installPatches", "assessPatches"),
])
def test_real_collision_with_a_running_operation(
    make_sim: Callable[..., Simulator], arm: requests.Session, arc: bool, first: str, second: str
) -> None:
    sim = slow_sim(make_sim, arc_machines=2, arc_disconnected=0)
    target = arc_machine(sim, "Windows")["id"] if arc else vm_of(sim, "Windows")
    api = ARC_API if arc else API
    started = arm.post(f"{sim.url}{target}/{first}?{api}", json=INSTALL if first == "installPatches" else None)
    assert started.status_code == 202
    refused = arm.post(f"{sim.url}{target}/{second}?{api}", json=INSTALL if second == "installPatches" else None)
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "OperationNotAllowed" and "another operation is in progress" in error["message"]
    assert f"'{second}'" in error["message"] and error["details"][0]["target"] == first
    finish(sim, started.headers["Location"])
    again = arm.post(f"{sim.url}{target}/{second}?{api}", json=INSTALL if second == "installPatches" else None)
    assert again.status_code == 202


@pytest.mark.parametrize(("style", "fragment"), [
    ("operation", "since another operation is in progress"),
    ("hostupdate", "is not allowed since the VM is waiting for an ongoing update to complete the resource."),
])
@pytest.mark.parametrize("action", ["installPatches", "assessPatches"])
def test_conflict_styles(sim: Simulator, arm: requests.Session, style: str, fragment: str, action: str) -> None:
    sim.set_faults(conflict_rate=1.0, conflict_style=style)
    resp = arm.post(f"{sim.url}{vm_of(sim, 'Linux')}/{action}?{API}",
                    json=INSTALL if action == "installPatches" else None)
    assert resp.status_code == 409
    error = resp.json()["error"]
    assert error["code"] == "OperationNotAllowed" and fragment in error["message"] and f"'{action}'" in error["message"]
    assert ("details" in error) == (style == "operation")
    assert sim.calls()["faultsByKind"]["conflict"] == 1


@pytest.mark.parametrize("via", ["python", "http", "default-seconds"])
def test_host_update_window(sim: Simulator, arm: requests.Session, via: str) -> None:
    vm, other = (v["id"] for v in sim.state()["vms"][:2])
    if via == "python":
        window = sim.start_host_update(vm, 0.4)
    elif via == "http":
        window = requests.post(f"{sim.url}/_sim/vms{vm}/hostupdate", json={"seconds": 0.4}).json()
    else:
        sim.set_faults(host_update_seconds=0.4)
        window = requests.post(f"{sim.url}/_sim/vms{vm}/hostupdate").json()
    assert window["seconds"] == 0.4 and window["id"] == vm
    for action in ("assessPatches", "installPatches"):
        resp = arm.post(f"{sim.url}{vm}/{action}?{API}", json=INSTALL_LINUX_OTHER)
        assert resp.status_code == 409, action
        assert resp.json()["error"]["message"] == (
            f"The operation '{action}' is not allowed since the VM is waiting for an ongoing update to complete the "
            "resource."
        )
    assert arm.post(f"{sim.url}{other}/assessPatches?{API}").status_code == 202  # only that VM
    assert arm.get(f"{sim.url}{vm}?{API}").status_code == 200  # reads are not refused
    assert sim.calls()["faultsByKind"]["hostUpdate"] == 2
    time.sleep(0.45)
    assert arm.post(f"{sim.url}{vm}/assessPatches?{API}").status_code == 202


def test_host_update_needs_a_length(sim: Simulator) -> None:
    vm = sim.vm_ids()[0]
    with pytest.raises(ValueError, match="seconds > 0"):
        sim.start_host_update(vm)
    assert requests.post(f"{sim.url}/_sim/vms{vm}/hostupdate", json={}).status_code == 400
    assert requests.post(f"{sim.url}/_sim/vms{vm}-gone/hostupdate", json={"seconds": 1}).status_code == 404
    assert not sim.host_updating(sim.engine.fleet.vms[0])


# ---------------------------------------------------------------------------------------------- 5. result shapes
def _results(sim: Simulator, arm: requests.Session, vm: str, action: str, api: str = API) -> list[dict]:
    """The result as the monitor Location and as the Azure-AsyncOperation's properties.output say it."""
    started = arm.post(f"{sim.url}{vm}/{action}?{api}", json=INSTALL_LINUX_OTHER if action == "installPatches"
                       else None)
    assert started.status_code == 202
    final = wait_done(arm, started.headers["Location"])
    output = arm.get(started.headers["Azure-AsyncOperation"]).json()["properties"]["output"]
    return [final.json(), output]


@pytest.mark.parametrize("action", ["assessPatches", "installPatches"])
@pytest.mark.parametrize("case", [  # (osType, classification_style, classifications allowed, Linux kbId null)
    ("Windows", "name", WINDOWS_NAMES, False),
    ("Windows", "display", set(DISPLAY_CLASSIFICATIONS.values()), False),
    ("Linux", "name", LINUX_NAMES, False),
    ("Linux", "display", LINUX_NAMES, True),
])
def test_classification_styles(
    sim: Simulator, arm: requests.Session, action: str, case: tuple[str, str, set[str], bool]
) -> None:
    os_type, style, expected, kb_null = case
    sim.set_faults(classification_style=style)
    for result in _results(sim, arm, vm_of(sim, os_type), action):
        patches = result["availablePatches" if action == "assessPatches" else "patches"]
        assert patches
        names = {c for p in patches for c in p["classifications"]}
        assert names <= expected and names
        if os_type == "Windows" and style == "display":
            assert names & {"Security Updates", "Critical Updates"}
            assert all(p["kbId"] for p in patches)
        if os_type == "Linux":
            assert all(("kbId" in p and p["kbId"] is None) == kb_null for p in patches)
    # the engine's own record stays canonical
    assert sim.state()["vms"][0]["pendingPatches"][0]["classification"] in WINDOWS_NAMES | LINUX_NAMES


def test_display_style_on_synchronous_answers(sim: Simulator, arm: requests.Session) -> None:
    sim.set_faults(classification_style="display", sync_rate=1.0)
    resp = arm.post(f"{sim.url}{vm_of(sim, 'Windows')}/assessPatches?{API}")
    assert resp.status_code == 200
    assert {c for p in resp.json()["availablePatches"] for c in p["classifications"]} <= set(
        DISPLAY_CLASSIFICATIONS.values())


def test_display_style_keeps_arc_counts(make_sim: Callable[..., Simulator], arm: requests.Session) -> None:
    sim = make_sim(arc_machines=4, faults={"classification_style": "display"})
    target = arc_machine(sim, "Windows")
    started = arm.post(f"{sim.url}{target['id']}/assessPatches?{ARC_API}")
    counts = wait_done(arm, started.headers["Location"]).json()["availablePatchCountByClassification"]
    assert sum(counts.values()) == len(target["pendingPatches"])


@pytest.mark.parametrize(("api_version", "key"), [
    ("2020-06-01", "patches"), ("2020-11-30", "patches"), ("2020-12-01", "availablePatches"),
    ("2025-04-01", "availablePatches"),
])
def test_assessment_list_name_follows_the_api_version(
    sim: Simulator, arm: requests.Session, api_version: str, key: str
) -> None:
    for result in _results(sim, arm, vm_of(sim, "Linux"), "assessPatches", f"api-version={api_version}"):
        other = ({"patches", "availablePatches"} - {key}).pop()
        assert result[key] and other not in result


def test_old_api_version_install_keeps_patches(sim: Simulator, arm: requests.Session) -> None:
    for result in _results(sim, arm, vm_of(sim, "Linux"), "installPatches", "api-version=2020-06-01"):
        assert result["patches"] and "availablePatches" not in result


@pytest.mark.parametrize("arc", [False, True])
def test_window_exceeded_install(make_sim: Callable[..., Simulator], arm: requests.Session, arc: bool) -> None:
    sim = make_sim(arc_machines=2, arc_disconnected=0)
    target = arc_machine(sim, "Windows")["id"] if arc else vm_of(sim, "Windows")
    body = {**INSTALL, "maximumDuration": "PT1M"}  # shorter than an operation's fixed overhead
    started = arm.post(f"{sim.url}{target}/installPatches?{ARC_API if arc else API}", json=body)
    result = wait_done(arm, started.headers["Location"]).json()
    assert result["status"] == "Failed" and result["maintenanceWindowExceeded"] is True
    assert result["pendingPatchCount"] > 0 and result["installedPatchCount"] == 0
    error = result["errorDetails" if arc else "error"]
    assert error["details"][-1]["code"] == "MaintenanceWindowExceeded"


# --------------------------------------------------------------------------------- 6. Ubuntu -updates pocket
def ubuntu_patches(sim: Simulator) -> list[dict]:
    return [p for v in sim.state()["vms"] if v["osName"] == "ubuntu" for p in v["pendingPatches"]]


@pytest.mark.parametrize(("share", "some", "all_"), [(0.0, False, False), (0.5, True, False), (1.0, True, True)])
def test_ubuntu_security_fixes_classified_other(
    make_sim: Callable[..., Simulator], share: float, some: bool, all_: bool
) -> None:
    base = make_sim(vms=30, windows_ratio=0.0)
    sim = make_sim(vms=30, windows_ratio=0.0, ubuntu_other_security_share=share)
    before, after = base.state()["vms"], sim.state()["vms"]
    # the same fleet, the same packages: only the classification of chosen Ubuntu security fixes moves
    assert [(v["id"], [p["patchId"] for p in v["pendingPatches"]]) for v in before] == [
        (v["id"], [p["patchId"] for p in v["pendingPatches"]]) for v in after]
    fixes = [p for p in ubuntu_patches(sim) if p.get("securityFix")]
    was_security = {p["patchId"] for p in ubuntu_patches(base) if p["classification"] == "Security"}
    assert all(p["classification"] == "Other" and p["patchId"] in was_security for p in fixes)
    assert bool(fixes) == some
    assert ({p["patchId"] for p in fixes} == was_security) == all_
    assert not any(p.get("securityFix") for v in after if v["osName"] != "ubuntu" for p in v["pendingPatches"])
    if all_:  # e.g. openssh-server 1:8.9p1-3ubuntu0.13: a security fix from the -updates pocket, reported Other
        assert any(p["name"] == "openssh-server" and "ubuntu0." in p["version"] for p in fixes)


def test_ubuntu_security_fix_in_other_is_not_selected(make_sim: Callable[..., Simulator],
                                                      arm: requests.Session) -> None:
    sim = make_sim(vms=12, windows_ratio=0.0, ubuntu_other_security_share=1.0)
    vm = next(v for v in sim.state()["vms"] if any(p.get("securityFix") for p in v["pendingPatches"]))
    started = arm.post(f"{sim.url}{vm['id']}/installPatches?{API}", json=INSTALL)  # Critical and Security only
    patches = wait_done(arm, started.headers["Location"]).json()["patches"]
    fixes = {p["patchId"] for p in vm["pendingPatches"] if p.get("securityFix")}
    assert {p["installationState"] for p in patches if p["patchId"] in fixes} == {"NotSelected"}


# ------------------------------------------------------------------------------------------ settings validation
@pytest.mark.parametrize(("values", "message"), [
    ({"error_shape": "xml"}, "error_shape must be one of arm, pascal, bare, toplevel"),
    ({"arc_lro_style": "azure-async"}, "arc_lro_style must be one of location, async"),
    ({"conflict_style": "host"}, "conflict_style must be one of operation, hostupdate"),
    ({"classification_style": "Display"}, "classification_style must be one of name, display"),
    ({"failure_cause_header": "yes"}, "failure_cause_header must be true or false"),
    ({"host_update_seconds": -1}, "host_update_seconds must be >= 0"),
    ({"throttle_remaining_reads": -5}, "throttle_remaining_reads must be >= 0"),
    ({"error_shape": "pascal", "conflict_rate": 2}, "conflict_rate must be between 0 and 1"),
])
def test_new_settings_validate_all_or_nothing(values: dict[str, Any], message: str) -> None:
    settings = FaultSettings()
    with pytest.raises(ValueError, match=message):
        settings.update(values)
    assert settings == FaultSettings()


def test_defaults_are_todays_behaviour() -> None:
    defaults = FaultSettings()
    assert (defaults.error_shape, defaults.failure_cause_header, defaults.throttle_remaining_reads,
            defaults.arc_lro_style, defaults.conflict_style, defaults.host_update_seconds,
            defaults.classification_style) == ("arm", False, None, "location", "operation", 0.0, "name")
    assert SimulatorConfig().ubuntu_other_security_share == 0.0
    with pytest.raises(ValueError, match="ubuntu_other_security_share"):
        SimulatorConfig(ubuntu_other_security_share=1.5)
    settings = FaultSettings()
    settings.update({"throttle_remaining_reads": 12000, "host_update_seconds": "2.5"})
    settings.update({"throttle_remaining_reads": None})
    assert settings.throttle_remaining_reads is None and settings.host_update_seconds == 2.5
