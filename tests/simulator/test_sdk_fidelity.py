"""Microsoft's own clients (azure-mgmt-compute, and for machine health azure-mgmt-resourcehealth and
azure-mgmt-alertsmanagement) against the simulator: if the SDK's ARMPolling, paging and model deserialisation
accept our responses, our LRO, list and health contract matches what Azure's clients expect.

Plain-http loopback needs `enforce_https=False`, azure-core's supported per-operation option for bearer
auth over http; begin_* operations pass it on to their pollers and list operations to every page.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.mgmt.alertsmanagement import AlertsManagementClient
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import (
    LinuxParameters,
    VirtualMachineInstallPatchesParameters,
    WindowsParameters,
)
from azure.mgmt.resourcehealth import ResourceHealthMgmtClient

from tests.simulator.conftest import TOKEN
from tools.azure_simulator import Simulator

HTTP = {"enforce_https": False}


class StaticToken:
    """A TokenCredential that always returns the simulator's token."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(TOKEN, int(time.time()) + 3600)


def client_for(sim: Simulator, sub: str | None = None) -> ComputeManagementClient:
    return ComputeManagementClient(StaticToken(), sub or sim.subscriptions()[0], base_url=sim.url)


def split(vm_id: str) -> tuple[str, str]:
    parts = vm_id.split("/")
    return parts[4], parts[8]


def test_list_all_follows_next_links(make_sim: Callable[..., Simulator]) -> None:
    sim = make_sim(vms=11, subscriptions=2, page_size=2)
    sub = sim.subscriptions()[1]
    vms = list(client_for(sim, sub).virtual_machines.list_all(**HTTP))
    expected = [i for i in sim.vm_ids() if i.split("/")[2] == sub]
    assert [vm.id for vm in vms] == expected and len(expected) == 5
    assert sim.calls()["total"]["list"] == 3
    assert {vm.storage_profile.os_disk.os_type for vm in vms} <= {"Windows", "Linux"}


def test_install_patches_through_arm_polling(sim: Simulator) -> None:
    vm_id = next(v["id"] for v in sim.state()["vms"] if v["osType"] == "Windows")
    rg, name = split(vm_id)
    client = client_for(sim)
    before = client.virtual_machines.instance_view(rg, name, **HTTP)
    assert before.statuses[1].code == "PowerState/running"
    summary = before.patch_status.available_patch_summary
    params = VirtualMachineInstallPatchesParameters(
        maximum_duration="PT4H",
        reboot_setting="IfRequired",
        windows_parameters=WindowsParameters(classifications_to_include=["Critical", "Security"]),
    )
    poller = client.virtual_machines.begin_install_patches(rg, name, params, polling_interval=0, **HTTP)
    result = poller.result()
    assert poller.status() == "Succeeded"
    assert result.status == "Succeeded" and result.reboot_status == "Completed"
    assert result.installed_patch_count == summary.critical_and_security_patch_count > 0
    assert result.not_selected_patch_count == summary.other_patch_count
    assert len(result.patches) == result.installed_patch_count + result.not_selected_patch_count
    assert {p.installation_state for p in result.patches} == {"Installed", "NotSelected"}
    assert all(p.kb_id for p in result.patches)
    calls = sim.calls()["byVm"][vm_id.lower()]
    assert calls["installPatchesAccepted"] == 1 and calls["poll"] >= 1

    after = client.virtual_machines.instance_view(rg, name, **HTTP).patch_status
    last = after.last_patch_installation_summary
    assert last.installation_activity_id == result.installation_activity_id
    # What PatchPilot records when it settles a lost answer from here (shared/arm/patch_status.py).
    assert (last.status, last.installed_patch_count, last.failed_patch_count, last.not_selected_patch_count,
            last.start_time) == (result.status, result.installed_patch_count, result.failed_patch_count,
                                 result.not_selected_patch_count, result.start_date_time)
    assert after.available_patch_summary.critical_and_security_patch_count == 0


def test_assess_patches_on_linux(sim: Simulator) -> None:
    vm_id = next(v["id"] for v in sim.state()["vms"] if v["osType"] == "Linux")
    rg, name = split(vm_id)
    pending = next(v for v in sim.state()["vms"] if v["id"] == vm_id)["pendingPatches"]
    result = (
        client_for(sim).virtual_machines.begin_assess_patches(rg, name, polling_interval=0, **HTTP).result()
    )
    assert result.status == "Succeeded"
    assert len(result.available_patches) == len(pending)
    assert result.critical_and_security_patch_count + result.other_patch_count == len(pending)
    assert {p.name for p in result.available_patches} == {p["name"] for p in pending}
    assert all(p.version and p.assessment_state == "Available" for p in result.available_patches)


def test_linux_install_with_package_masks(sim: Simulator) -> None:
    vm_id = next(v["id"] for v in sim.state()["vms"] if v["osType"] == "Linux")
    rg, name = split(vm_id)
    first = next(v for v in sim.state()["vms"] if v["id"] == vm_id)["pendingPatches"][0]["name"]
    params = VirtualMachineInstallPatchesParameters(
        maximum_duration="PT1H",
        reboot_setting="Never",
        linux_parameters=LinuxParameters(
            classifications_to_include=["Critical", "Security", "Other"],
            package_name_masks_to_exclude=[first],
        ),
    )
    result = (
        client_for(sim)
        .virtual_machines.begin_install_patches(rg, name, params, polling_interval=0, **HTTP)
        .result()
    )
    assert result.excluded_patch_count == 1
    excluded = [p for p in result.patches if p.installation_state == "Excluded"]
    assert [p.name for p in excluded] == [first]


def test_sdk_surfaces_arm_errors(sim: Simulator) -> None:
    rg, _ = split(sim.vm_ids()[0])
    client = client_for(sim)
    with pytest.raises(HttpResponseError) as caught:
        client.virtual_machines.begin_install_patches(
            rg,
            "no-such-vm",
            VirtualMachineInstallPatchesParameters(reboot_setting="Never"),
            polling_interval=0,
            **HTTP,
        )
    assert caught.value.status_code == 404 and caught.value.error is not None
    assert caught.value.error.code == "ResourceNotFound"


def test_resource_health_through_the_sdk(make_sim: Callable[..., Simulator]) -> None:
    """azure-mgmt-resourcehealth 1.0.0 sends api-version 2025-05-01 (the spec's 2022-10-01 is accepted too) and
    builds the URL as `/{resourceUri}/providers/...`: resource_uri goes without its leading slash."""
    sim = make_sim(arc_machines=2)
    vm, machine = sim.vm_ids()[0], sim.machine_ids()[0]
    client = ResourceHealthMgmtClient(StaticToken(), sim.subscriptions()[0], base_url=sim.url)
    before = datetime.now(UTC) - timedelta(seconds=1)
    sim.set_health(vm, availability_state="Degraded")
    for resource, state in ((vm, "Degraded"), (machine, "Available")):
        status = client.availability_statuses.get_by_resource(resource_uri=resource.lstrip("/"), **HTTP)
        assert status.id == f"{resource}/providers/Microsoft.ResourceHealth/availabilityStatuses/current"
        assert status.properties.availability_state == state
        assert isinstance(status.properties.occured_time, datetime)
        assert before - timedelta(hours=1) <= status.properties.occured_time <= datetime.now(UTC)
        assert status.properties.reported_time >= status.properties.occured_time
    assert status.properties.reported_time.tzinfo is not None
    with pytest.raises(HttpResponseError) as caught:
        client.availability_statuses.get_by_resource(resource_uri=vm.lstrip("/") + "-gone", **HTTP)
    assert caught.value.status_code == 404


def test_alerts_through_the_sdk(sim: Simulator) -> None:
    """azure-mgmt-alertsmanagement 1.0.x: api-version 2019-05-05-preview; it follows nextLink verbatim."""
    vm, other = sim.vm_ids()[:2]
    for i in range(3):
        sim.fire_alert(vm.lower(), f"Sev{i}", f"rule-{i}")
    sim.fire_alert(other, "Sev1", "elsewhere")
    resolved = sim.fire_alert(vm, "Sev1", "resolved")["id"].rsplit("/", 1)[1]
    sim.resolve_alert(resolved)
    client = AlertsManagementClient(StaticToken(), sim.subscriptions()[0], base_url=sim.url)
    fired = list(client.alerts.get_all(target_resource=vm.upper(), monitor_condition="Fired", time_range="1d",
                                       page_count=2, **HTTP))
    assert [a.name for a in fired] == ["rule-2", "rule-1", "rule-0"]  # newest first, over two pages
    assert sim.calls()["total"]["alerts"] == 2
    essentials = fired[0].properties.essentials
    assert (essentials.severity, essentials.monitor_condition, essentials.target_resource) == ("Sev2", "Fired", vm)
    assert isinstance(essentials.start_date_time, datetime) and essentials.start_date_time <= datetime.now(UTC)
    assert essentials.target_resource_type == "virtualmachines"
    sev1 = list(client.alerts.get_all(severity="Sev1", monitor_condition="Resolved", **HTTP))
    assert [a.name for a in sev1] == ["resolved"]
    assert sev1[0].properties.essentials.monitor_condition_resolved_date_time is not None
