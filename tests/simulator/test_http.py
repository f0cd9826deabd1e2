"""The simulator over real HTTP with `requests`: ARM reads, LROs, errors, throttling and faults."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.simulator.conftest import API, TOKEN
from tests.support.bodies import INSTALL
from tools.azure_simulator import Simulator


def wait_done(arm: requests.Session, location: str, timeout: float = 10) -> requests.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = arm.get(location)
        if resp.status_code != 202:
            return resp
        time.sleep(0.02)
    raise AssertionError("operation did not finish")


def vm_of(sim: Simulator, os_type: str) -> str:
    return next(v["id"] for v in sim.state()["vms"] if v["osType"] == os_type)


def test_list_pages_via_next_link(make_sim: Callable[..., Simulator], arm: requests.Session) -> None:
    sim = make_sim(vms=7, page_size=3)
    url: str | None = (
        f"{sim.url}/subscriptions/{sim.subscriptions()[0]}/providers/Microsoft.Compute/virtualMachines?{API}"
    )
    seen: list[str] = []
    pages = 0
    while url:
        resp = arm.get(url)
        assert resp.status_code == 200
        body = resp.json()
        assert len(body["value"]) <= 3
        seen += [vm["id"] for vm in body["value"]]
        url = body.get("nextLink")
        assert url is None or url.startswith(sim.url)
        pages += 1
    assert pages == 3 and seen == sim.vm_ids()


def test_list_by_resource_group_and_location(sim: Simulator, arm: requests.Session) -> None:
    vm = sim.vm_ids()[0]
    sub, rg = vm.split("/")[2], vm.split("/")[4]
    resp = arm.get(
        f"{sim.url}/subscriptions/{sub}/resourceGroups/{rg.upper()}/providers/Microsoft.Compute/"
        f"virtualMachines?{API}"
    )
    assert resp.status_code == 200
    assert {v["id"] for v in resp.json()["value"]} == {i for i in sim.vm_ids() if i.split("/")[4] == rg}
    resp = arm.get(
        f"{sim.url}/subscriptions/{sub}/providers/Microsoft.Compute/locations/WestUS/virtualMachines?{API}"
    )
    assert len(resp.json()["value"]) == len(sim.vm_ids())
    resp = arm.get(
        f"{sim.url}/subscriptions/{sub}/resourceGroups/nope/providers/Microsoft.Compute/virtualMachines?{API}"
    )
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "ResourceGroupNotFound"


def test_get_is_case_insensitive_and_expands_instance_view(sim: Simulator, arm: requests.Session) -> None:
    vm = sim.vm_ids()[0]
    resp = arm.get(
        f"{sim.url}{vm.lower()}?{API}&$expand=instanceView",
        headers={"x-ms-correlation-request-id": "corr-1", "x-ms-client-request-id": "client-1"},
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["id"] == vm  # original casing
    assert resp.headers["x-ms-correlation-request-id"] == "corr-1"
    assert resp.headers["x-ms-client-request-id"] == "client-1"
    assert (
        resp.headers["x-ms-request-id"]
        and int(resp.headers["x-ms-ratelimit-remaining-subscription-reads"]) > 0
    )
    view = body["properties"]["instanceView"]
    assert [s["code"] for s in view["statuses"]] == ["ProvisioningState/succeeded", "PowerState/running"]
    summary = view["patchStatus"]["availablePatchSummary"]
    pending = next(v for v in sim.state()["vms"] if v["id"] == vm)["pendingPatches"]
    assert summary["criticalAndSecurityPatchCount"] + summary["otherPatchCount"] == len(pending)


@pytest.mark.parametrize(
    ("path", "code"),
    [
        (
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Compute/"
            "virtualMachines/x",
            "SubscriptionNotFound",
        ),
        ("{rg}/providers/Microsoft.Compute/virtualMachines/does-not-exist", "ResourceNotFound"),
    ],
)
def test_not_found_errors_in_arm_shape(sim: Simulator, arm: requests.Session, path: str, code: str) -> None:
    rg = sim.vm_ids()[0].split("/providers/")[0]
    resp = arm.get(f"{sim.url}{path.format(rg=rg)}?{API}")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == code and resp.json()["error"]["message"]
    assert resp.headers["x-ms-request-id"]


def test_auth_and_api_version(sim: Simulator) -> None:
    url = f"{sim.url}{sim.vm_ids()[0]}"
    missing = requests.get(f"{url}?{API}")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "AuthenticationFailed"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer ")
    wrong = requests.get(f"{url}?{API}", headers={"Authorization": "Bearer other"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "InvalidAuthenticationToken"
    no_version = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert (
        no_version.status_code == 400 and no_version.json()["error"]["code"] == "MissingApiVersionParameter"
    )
    assert sim.calls()["byVm"][sim.vm_ids()[0].lower()]["get"] == 3


def test_install_202_poll_202_then_200_and_conflict_while_running(
    make_sim: Callable[..., Simulator], arm: requests.Session
) -> None:
    # 3000 s overhead + the patches, at 20000x: a few hundred milliseconds of real time.
    sim = make_sim(time_scale=20000.0, operation_seconds=(3000.0, 3000.0), retry_after_seconds=1)
    vm = vm_of(sim, "Windows")
    body = {**INSTALL, "maximumDuration": "PT4H"}
    resp = arm.post(f"{sim.url}{vm}/installPatches?{API}", json=body)
    assert resp.status_code == 202 and resp.content == b""
    location, async_url = resp.headers["Location"], resp.headers["Azure-AsyncOperation"]
    op_id = resp.headers["x-ms-request-id"]
    sub = vm.split("/")[2]
    assert location.startswith(
        f"{sim.url}/subscriptions/{sub}/providers/Microsoft.Compute/locations/westus/operations/{op_id}?p="
    )
    assert "monitor=true" in location and "api-version=2025-04-01" in location
    assert "monitor" not in async_url and async_url.split("?")[0] == location.split("?")[0]
    assert resp.headers["Retry-After"] == "1"
    assert resp.headers["x-ms-ratelimit-remaining-subscription-writes"].isdigit()
    # Exactly what a real installPatches 202 reported after one call (Azure CLI's recorded test, 2024-11).
    assert resp.headers["x-ms-ratelimit-remaining-resource"] == (
        "Microsoft.Compute/VMGuestPatchOperationSubscriptionMaximum;599,Microsoft.Compute/VMGuestPatchOperationResource;5"
    )

    conflict = arm.post(f"{sim.url}{vm}/assessPatches?{API}")
    assert conflict.status_code == 409
    error = conflict.json()["error"]
    assert error["code"] == "OperationNotAllowed" and "another operation is in progress" in error["message"]
    assert error["details"][0]["target"] == "installPatches"

    first = arm.get(location)
    assert (
        first.status_code == 202
        and first.headers["Location"] == location
        and first.headers["Retry-After"] == "1"
    )
    running = arm.get(async_url).json()
    assert running["status"] == "InProgress" and running["name"] == op_id and "endTime" not in running

    final = wait_done(arm, location)
    assert final.status_code == 200
    result = final.json()
    assert result["installationActivityId"] == op_id and result["status"] == "Succeeded"
    done = arm.get(async_url).json()
    assert done["status"] == "Succeeded" and done["endTime"] and done["properties"]["output"] == result

    state = next(v for v in sim.state()["vms"] if v["id"] == vm)
    installed = {p["patchId"] for p in state["installedPatches"]}
    assert len(installed) == result["installedPatchCount"] > 0
    assert not installed & {p["patchId"] for p in state["pendingPatches"]}
    assert state["operations"][0]["request"] == body and state["operations"][0]["result"] == result
    calls = sim.calls()["byVm"][vm.lower()]
    assert (
        calls["installPatches"] == 1 and calls["installPatchesAccepted"] == 1 and calls["assessPatches"] == 1
    )
    assert calls["assessPatchesAccepted"] == 0 and calls["poll"] >= 4

    assessed = wait_done(arm, arm.post(f"{sim.url}{vm}/assessPatches?{API}").headers["Location"]).json()
    assert {p["patchId"] for p in assessed["availablePatches"]} == {
        p["patchId"] for p in state["pendingPatches"]
    }
    assert all(p["assessmentState"] == "Available" for p in assessed["availablePatches"])
    view = arm.get(f"{sim.url}{vm}/instanceView?{API}").json()["patchStatus"]
    assert view["lastPatchInstallationSummary"]["installationActivityId"] == op_id
    assert view["availablePatchSummary"]["assessmentActivityId"] == assessed["assessmentActivityId"]


def test_bad_bodies_and_wrong_os_parameters(sim: Simulator, arm: requests.Session) -> None:
    linux = vm_of(sim, "Linux")
    resp = arm.post(
        f"{sim.url}{linux}/installPatches?{API}",
        json={"rebootSetting": "Never", "windowsParameters": {"classificationsToInclude": ["Critical"]}},
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == {
        "code": "InvalidParameter",
        "target": "installPatchesInput.linuxParameters",
        "message": resp.json()["error"]["message"],
    }
    resp = arm.post(
        f"{sim.url}{linux}/installPatches?{API}",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "InvalidRequestContent"
    assert sim.calls()["byVm"][linux.lower()]["installPatches"] == 2
    assert sim.calls()["byVm"][linux.lower()]["installPatchesAccepted"] == 0


def test_deallocated_and_stopped_vms_refuse(sim: Simulator, arm: requests.Session) -> None:
    vm = sim.vm_ids()[0]
    sim.set_power(vm, "deallocated")
    resp = arm.post(f"{sim.url}{vm}/installPatches?{API}", json=INSTALL)
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "OperationNotAllowed"
    assert "deallocated" in resp.json()["error"]["message"]
    view = arm.get(f"{sim.url}{vm}/instanceView?{API}").json()
    assert view["statuses"][1]["code"] == "PowerState/deallocated"
    stop = arm.post(f"{sim.url}/_sim/vms{vm}/power", json={"powerState": "stopped"})
    assert stop.status_code == 200 and stop.json()["powerState"] == "stopped"
    resp = arm.post(f"{sim.url}{vm}/assessPatches?{API}")
    assert resp.status_code == 409 and "requires the VM to be running" in resp.json()["error"]["message"]


def test_arm_subscription_read_bucket_429(make_sim: Callable[..., Simulator], arm: requests.Session) -> None:
    sim = make_sim(read_burst=3, read_rate=0.5)
    url = f"{sim.url}{sim.vm_ids()[0]}?{API}"
    statuses = [arm.get(url) for _ in range(4)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    assert [r.headers.get("x-ms-ratelimit-remaining-subscription-reads") for r in statuses[:3]] == [
        "2",
        "1",
        "0",
    ]
    throttled = statuses[3]
    assert throttled.headers["Retry-After"] == "2"
    assert throttled.json()["error"]["code"] == "SubscriptionRequestsThrottled"
    assert "Please try again after '2' seconds" in throttled.json()["error"]["message"]
    assert sim.calls()["throttled"] == 1


def test_compute_guest_patch_policy_429(make_sim: Callable[..., Simulator], arm: requests.Session) -> None:
    sim = make_sim(patch_ops_per_vm_burst=2, patch_ops_per_vm_per_min=1, time_scale=1e7)
    vm = sim.vm_ids()[0]
    for _ in range(2):
        accepted = arm.post(f"{sim.url}{vm}/assessPatches?{API}")
        assert accepted.status_code == 202
        wait_done(arm, accepted.headers["Location"])
    resp = arm.post(f"{sim.url}{vm}/assessPatches?{API}")
    assert resp.status_code == 429
    assert 50 <= int(resp.headers["Retry-After"]) <= 60
    assert resp.headers["x-ms-ratelimit-remaining-resource"].endswith(
        ",Microsoft.Compute/VMGuestPatchOperationResource;0"
    )
    error = resp.json()["error"]
    assert error["code"] == "OperationNotAllowed" and error["details"][0]["code"] == "TooManyRequests"
    other = arm.post(f"{sim.url}{sim.vm_ids()[1]}/assessPatches?{API}")
    assert other.status_code == 202  # the limit is per VM


def test_unknown_operation_is_404(sim: Simulator, arm: requests.Session) -> None:
    sub = sim.subscriptions()[0]
    resp = arm.get(
        f"{sim.url}/subscriptions/{sub}/providers/Microsoft.Compute/locations/westus/operations/"
        f"00000000-0000-0000-0000-000000000000?monitor=true&{API}"
    )
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "NotFound"


def _post(sim: Simulator, arm: requests.Session, vm: str, body: Any = INSTALL) -> requests.Response:
    return arm.post(f"{sim.url}{vm}/installPatches?{API}", json=body)


def test_faults_error_throttle_conflict(sim: Simulator, arm: requests.Session) -> None:
    vm = sim.vm_ids()[0]
    sim.set_faults(error_rate=1.0)
    resp = arm.get(f"{sim.url}{vm}?{API}")
    assert resp.status_code in (500, 503) and resp.json()["error"]["code"] in (
        "InternalServerError",
        "ServiceUnavailable",
    )
    sim.set_faults(error_rate=0.0, throttle_rate=1.0, throttle_retry_after=7)
    resp = _post(sim, arm, vm)
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "7"
    assert resp.json()["error"]["code"] == "SubscriptionRequestsThrottled"
    settings = arm.post(f"{sim.url}/_sim/faults", json={"throttle_rate": 0, "conflict_rate": 1.0}).json()
    assert settings["conflict_rate"] == 1.0 and settings["throttle_rate"] == 0.0
    resp = _post(sim, arm, vm)
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "OperationNotAllowed"
    calls = arm.get(f"{sim.url}/_sim/calls").json()
    assert (
        calls["byVm"][vm.lower()]["installPatches"] == 2
        and calls["byVm"][vm.lower()]["installPatchesAccepted"] == 0
    )
    assert calls["faults"] == 3 and calls["throttled"] == 1
    assert sim.state()["vms"][0]["operations"] == []


def test_dropped_connections_are_unprocessed(sim: Simulator, arm: requests.Session) -> None:
    vm = sim.vm_ids()[0]
    sim.set_faults(drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        _post(sim, arm, vm)
    sim.set_faults(drop_rate=0.0)
    assert sim.state()["vms"][0]["operations"] == []
    assert _post(sim, requests.Session(), vm).status_code == 401  # server is still healthy
    assert sim.calls()["faultsByKind"] == {"drop": 1}


def test_latency_and_patch_failures(sim: Simulator, arm: requests.Session) -> None:
    vm = vm_of(sim, "Windows")
    sim.set_faults(latency_ms=150, patch_failure_rate=1.0)
    started = time.monotonic()
    resp = _post(sim, arm, vm)
    assert resp.status_code == 202 and time.monotonic() - started >= 0.15
    sim.set_faults(latency_ms=0)
    result = wait_done(arm, resp.headers["Location"]).json()
    assert (
        result["status"] == "Failed" and result["failedPatchCount"] > 0 and result["installedPatchCount"] == 0
    )
    assert result["error"]["details"]


def test_admin_reset_and_operation_lookup(sim: Simulator, arm: requests.Session) -> None:
    vm = sim.vm_ids()[0]
    op_id = _post(sim, arm, vm).headers["x-ms-request-id"]
    op = arm.get(f"{sim.url}/_sim/operations/{op_id}").json()
    assert op["opId"] == op_id and op["kind"] == "installPatches" and op["request"] == INSTALL
    assert arm.post(f"{sim.url}/_sim/reset").status_code == 200
    assert arm.get(f"{sim.url}/_sim/operations/{op_id}").status_code == 404
    assert sim.calls()["total"]["installPatches"] == 0
    assert sim.vm_ids()[0] == vm  # same seed, same fleet
