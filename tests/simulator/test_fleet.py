"""The generated fleet: deterministic from the seed, realistic in shape."""

from __future__ import annotations

import re

from tools.azure_simulator.fleet import build_fleet

VM_ID = re.compile(
    r"^/subscriptions/[0-9a-f-]{36}/resourceGroups/[^/]+/providers/Microsoft\.Compute/"
    r"virtualMachines/[^/]+$"
)


def test_same_seed_same_fleet_other_seed_other_fleet() -> None:
    a = build_fleet(30, 2, seed=5)
    b = build_fleet(30, 2, seed=5)
    c = build_fleet(30, 2, seed=6)
    assert [vm.id for vm in a.vms] == [vm.id for vm in b.vms]
    assert [[p.patch_id for p in vm.pending] for vm in a.vms] == [
        [p.patch_id for p in vm.pending] for vm in b.vms
    ]
    assert a.subscriptions != c.subscriptions


def test_shape_counts_and_ids() -> None:
    fleet = build_fleet(40, 2, seed=1, windows_ratio=0.25, stopped_ratio=0.1)
    assert len(fleet.vms) == 40 and len(fleet.subscriptions) == 2
    assert sum(vm.os_type == "Windows" for vm in fleet.vms) == 10
    assert sum(vm.power_state != "running" for vm in fleet.vms) == 4
    assert len({vm.key for vm in fleet.vms}) == 40
    assert all(VM_ID.match(vm.id) for vm in fleet.vms)
    assert {vm.subscription_id for vm in fleet.vms} == set(fleet.subscriptions)
    assert all(vm.pending for vm in fleet.vms)


def test_windows_and_linux_patches_look_like_azures() -> None:
    fleet = build_fleet(20, 1, seed=3)
    windows = [p for vm in fleet.vms if vm.os_type == "Windows" for p in vm.pending]
    linux = [p for vm in fleet.vms if vm.os_type == "Linux" for p in vm.pending]
    assert windows and linux
    assert all(p.kb_id and p.kb_id.isdigit() and f"KB{p.kb_id}" in p.name for p in windows)
    assert all(p.version == "" for p in windows)
    assert {p.classification for p in windows} <= {
        "Critical",
        "Security",
        "Update Rollups",
        "FeaturePack",
        "ServicePack",
        "Definition Updates",
        "Tools",
        "Updates",
    }
    assert any("Cumulative Update for Windows Server" in p.name for p in windows)
    assert all(p.kb_id is None and p.version for p in linux)
    assert {p.classification for p in linux} <= {"Critical", "Security", "Other"}
    assert {p.reboot_behavior for p in windows + linux} <= {
        "NeverReboots",
        "AlwaysRequiresReboot",
        "CanRequestReboot",
    }


def test_model_has_the_fields_clients_read() -> None:
    vm = build_fleet(4, 1, seed=1, windows_ratio=1.0).vms[0]
    model = vm.model()
    props = model["properties"]
    assert model["type"] == "Microsoft.Compute/virtualMachines" and model["id"] == vm.id
    assert props["storageProfile"]["osDisk"]["osType"] == "Windows"
    assert props["osProfile"]["windowsConfiguration"]["patchSettings"]["patchMode"] == vm.patch_mode
    assert props["provisioningState"] == "Succeeded" and props["vmId"] == vm.vm_id
