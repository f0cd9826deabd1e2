"""Azure Arc-enabled servers (Microsoft.HybridCompute/machines) over HTTP, and through Microsoft's own
azure-mgmt-hybridcompute client (its LRO poller, paging and models accept our responses)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.mgmt.hybridcompute import HybridComputeManagementClient
from azure.mgmt.hybridcompute.models import LinuxParameters, MachineInstallPatchesParameters, WindowsParameters

from tests.simulator.test_http import wait_done
from tests.simulator.test_sdk_fidelity import HTTP, StaticToken, split
from tests.support.bodies import INSTALL
from tools.azure_simulator import Simulator

API = "api-version=2024-07-10"


@pytest.fixture
def arc_sim(make_sim: Callable[..., Simulator]) -> Simulator:
    return make_sim(arc_machines=4, page_size=3)


def machine(sim: Simulator, os_type: str, status: str = "Connected") -> dict:
    return next(m for m in sim.state()["arcMachines"] if m["osType"] == os_type and m["agentStatus"] == status)


def test_list_and_get_machines(arc_sim: Simulator, arm: requests.Session) -> None:
    sub = arc_sim.subscriptions()[0]
    url: str | None = f"{arc_sim.url}/subscriptions/{sub}/providers/Microsoft.HybridCompute/machines?{API}"
    listed = []
    while url:
        body = arm.get(url).json()
        listed += body["value"]
        url = body.get("nextLink")
    assert [m["id"] for m in listed] == arc_sim.machine_ids() and len(listed) == 4
    assert {m["type"] for m in listed} == {"Microsoft.HybridCompute/machines"}
    assert sorted(m["properties"]["osType"] for m in listed) == ["linux", "linux", "windows", "windows"]
    assert sorted(m["properties"]["status"] for m in listed) == ["Connected"] * 3 + ["Disconnected"]
    assert arc_sim.vm_ids() and not set(arc_sim.vm_ids()) & set(arc_sim.machine_ids())  # VM lists stay apart

    first = listed[0]
    rg = first["id"].split("/")[4]
    by_rg = arm.get(f"{arc_sim.url}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.HybridCompute/"
                    f"machines?{API}").json()
    assert len(by_rg["value"]) == 3 and "nextLink" in by_rg
    got = arm.get(f"{arc_sim.url}{first['id'].upper()}?{API}")
    assert got.status_code == 200 and got.json()["id"] == first["id"]
    missing = arm.get(f"{arc_sim.url}{first['id']}-gone?{API}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "ResourceNotFound"


def test_install_polls_location_to_hybrid_result(arc_sim: Simulator, arm: requests.Session) -> None:
    target = machine(arc_sim, "Windows")
    started = arm.post(f"{arc_sim.url}{target['id']}/installPatches?{API}", json=INSTALL)
    assert started.status_code == 202
    assert "Azure-AsyncOperation" not in started.headers and int(started.headers["Retry-After"]) >= 0
    location = started.headers["Location"]
    assert "/providers/Microsoft.HybridCompute/locations/westus/updateCenterOperationResults/" in location
    result = wait_done(arm, location).json()
    assert result["status"] == "Succeeded" and result["osType"] == "Windows" and result["patchServiceUsed"] == "WU"
    assert "patches" not in result and result["startedBy"] == "User" and result["errorDetails"] is None
    selected = [p for p in target["pendingPatches"] if p["classification"] in ("Critical", "Security")]
    assert result["installedPatchCount"] == len(selected) > 0
    after = next(m for m in arc_sim.state()["arcMachines"] if m["id"] == target["id"])
    assert {p["patchId"] for p in after["installedPatches"]} == {p["patchId"] for p in selected}

    no_duration = arm.post(f"{arc_sim.url}{target['id']}/installPatches?{API}",
                           json={k: v for k, v in INSTALL.items() if k != "maximumDuration"})
    assert no_duration.status_code == 400
    assert no_duration.json()["error"]["target"] == "installPatchesInput.maximumDuration"


def test_disconnected_machine_refuses_until_it_reconnects(arc_sim: Simulator, arm: requests.Session) -> None:
    target = next(m for m in arc_sim.state()["arcMachines"] if m["agentStatus"] == "Disconnected")
    refused = arm.post(f"{arc_sim.url}{target['id']}/assessPatches?{API}")
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "OperationNotAllowed" and "'Disconnected'" in error["message"]
    assert error["details"][0]["code"] == "MachineNotConnected"
    arc_sim.set_agent_status(target["id"], "Expired")
    assert "'Expired'" in arm.post(f"{arc_sim.url}{target['id']}/assessPatches?{API}").json()["error"]["message"]
    assert arc_sim.calls()["byVm"][target["id"].lower()]["assessPatchesAccepted"] == 0

    resp = requests.post(f"{arc_sim.url}/_sim/machines{target['id']}/status", json={"status": "Connected"})
    assert resp.status_code == 200 and resp.json()["agentStatus"] == "Connected"
    assert arm.post(f"{arc_sim.url}{target['id']}/assessPatches?{API}").status_code == 202


def test_arc_polling_needs_update_center_read_at_the_subscription(arc_sim: Simulator, arm: requests.Session) -> None:
    target = machine(arc_sim, "Linux")
    sub, rg_scope = arc_sim.subscriptions()[0], target["id"].split("/providers/")[0]
    arc_sim.set_role_assignments([{"scope": rg_scope, "actions": ["Microsoft.HybridCompute/machines/*"]}])
    location = arm.post(f"{arc_sim.url}{target['id']}/assessPatches?{API}").headers["Location"]
    denied = arm.get(location)
    assert denied.status_code == 403
    assert "action 'Microsoft.HybridCompute/locations/updateCenterOperationResults/read'" in (
        denied.json()["error"]["message"]
    )
    status_read = "Microsoft.HybridCompute/locations/updateCenterOperationResults/read"
    arc_sim.set_role_assignments([
        {"scope": rg_scope, "actions": ["Microsoft.HybridCompute/machines/*"]},
        {"scope": f"/subscriptions/{sub}", "actions": [status_read]},
    ])
    assert wait_done(arm, location).status_code == 200


def client_for(sim: Simulator) -> HybridComputeManagementClient:
    return HybridComputeManagementClient(StaticToken(), sim.subscriptions()[0], base_url=sim.url)


def test_sdk_installs_and_assesses(arc_sim: Simulator) -> None:
    client = client_for(arc_sim)
    listed = list(client.machines.list_by_subscription(**HTTP))
    assert [m.id for m in listed] == arc_sim.machine_ids()
    assert {m.properties.status for m in listed} == {"Connected", "Disconnected"}

    windows = machine(arc_sim, "Windows")
    rg, name = split(windows["id"])
    params = MachineInstallPatchesParameters(
        maximum_duration=timedelta(hours=3),
        reboot_setting="IfRequired",
        windows_parameters=WindowsParameters(classifications_to_include=["Critical", "Security"]),
    )
    poller = client.machines.begin_install_patches(rg, name, params, polling_interval=0, **HTTP)
    installed = poller.result()
    assert poller.status() == "Succeeded" and installed.status == "Succeeded"
    assert installed.installed_patch_count > 0 and installed.os_type == "Windows"
    assert installed.start_date_time <= installed.last_modified_date_time

    linux = machine(arc_sim, "Linux")
    rg, name = split(linux["id"])
    assessed = client.machines.begin_assess_patches(rg, name, polling_interval=0, **HTTP).result()
    counts = assessed.available_patch_count_by_classification
    assert assessed.status == "Succeeded" and assessed.os_type == "Linux"
    assert counts.critical + counts.security + counts.other == len(linux["pendingPatches"])

    linux_params = MachineInstallPatchesParameters(
        maximum_duration=timedelta(hours=1), reboot_setting="Never",
        linux_parameters=LinuxParameters(classifications_to_include=["Critical", "Security", "Other"]),
    )
    installed = client.machines.begin_install_patches(rg, name, linux_params, polling_interval=0, **HTTP).result()
    assert installed.installed_patch_count == len(linux["pendingPatches"])
    assert installed.patch_service_used in ("APT", "YUM")


def test_sdk_surfaces_the_disconnected_refusal(arc_sim: Simulator) -> None:
    offline = next(m for m in arc_sim.state()["arcMachines"] if m["agentStatus"] == "Disconnected")
    rg, name = split(offline["id"])
    with pytest.raises(HttpResponseError) as caught:
        client_for(arc_sim).machines.begin_assess_patches(rg, name, polling_interval=0, **HTTP)
    assert caught.value.status_code == 409 and caught.value.error.code == "OperationNotAllowed"
