"""RBAC: a principal's role assignments decide what it may do; everything else is ARM's 403 AuthorizationFailed."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.mgmt.compute.models import LinuxParameters, VirtualMachineInstallPatchesParameters, WindowsParameters

from tests.simulator.conftest import API
from tests.simulator.test_http import wait_done
from tests.simulator.test_sdk_fidelity import HTTP, client_for, split
from tests.support.bodies import INSTALL
from tools.azure_simulator import Simulator
from tools.azure_simulator.rbac import RoleAssignment

OPERATIONS_READ = "Microsoft.Compute/locations/operations/read"
CLIENT, OBJECT = "11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-000000000000"


def denial(action: str, scope: str) -> str:
    return (
        f"The client '{CLIENT}' with object id '{OBJECT}' does not have authorization to perform action "
        f"'{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please "
        "refresh your credentials."
    )


@pytest.fixture
def scoped(make_sim: Callable[..., Simulator]) -> tuple[Simulator, str, str, str]:
    """A simulator whose principal has full access to one resource group only; returns (sim, sub, inside, outside)."""
    sim = make_sim(principal_client_id=CLIENT, principal_object_id=OBJECT)
    ids = sim.vm_ids()
    rg = split(ids[0])[0]
    outside = next(i for i in ids if split(i)[0] != rg)
    sub = sim.subscriptions()[0]
    sim.set_role_assignments([{"scope": f"/subscriptions/{sub}/resourceGroups/{rg}", "actions": ["*"]}])
    return sim, sub, ids[0], outside


def test_resource_group_principal_installs_inside_and_is_refused_outside(
    scoped: tuple[Simulator, str, str, str], arm: requests.Session
) -> None:
    sim, sub, inside, outside = scoped
    started = arm.post(f"{sim.url}{inside}/installPatches?{API}", json=INSTALL)
    assert started.status_code == 202
    assert arm.get(f"{sim.url}{inside}?{API}").status_code == 200

    refused = arm.post(f"{sim.url}{outside}/installPatches?{API}", json=INSTALL)
    assert refused.status_code == 403
    assert refused.json() == {
        "error": {
            "code": "AuthorizationFailed",
            "message": denial("Microsoft.Compute/virtualMachines/installPatches/action", outside),
        }
    }
    assert int(refused.headers["x-ms-ratelimit-remaining-subscription-writes"]) >= 0
    assert sim.calls()["byVm"][outside.lower()]["installPatchesAccepted"] == 0  # nothing started
    assert next(v for v in sim.state()["vms"] if v["id"] == outside)["operations"] == []

    listing = arm.get(f"{sim.url}/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines?{API}")
    assert listing.status_code == 403
    expected = denial("Microsoft.Compute/virtualMachines/read", f"/subscriptions/{sub}")
    assert listing.json()["error"]["message"] == expected
    missing = arm.get(f"{sim.url}{outside.rsplit('/', 1)[0]}/no-such-vm?{API}")
    assert missing.status_code == 403  # ARM authorises before the RP says 404


def test_polling_needs_operations_read_at_the_subscription(
    scoped: tuple[Simulator, str, str, str], arm: requests.Session
) -> None:
    sim, sub, inside, _ = scoped
    started = arm.post(f"{sim.url}{inside}/installPatches?{API}", json=INSTALL)
    location = started.headers["Location"]
    path = location.removeprefix(sim.url).split("?")[0]
    assert path.startswith(f"/subscriptions/{sub}/providers/Microsoft.Compute/locations/")

    polled = arm.get(location)
    assert polled.status_code == 403
    assert polled.json()["error"]["message"] == denial(OPERATIONS_READ, path)
    rg_scope = inside.split("/providers/")[0]
    sim.set_role_assignments([
        {"scope": rg_scope, "actions": ["*"]},
        {"scope": rg_scope, "actions": [OPERATIONS_READ]},  # granted at the resource group: still not enough
    ])
    assert arm.get(location).status_code == 403

    sim.set_role_assignments([
        {"scope": rg_scope, "actions": ["*"]},
        {"scope": f"/subscriptions/{sub}", "actions": [OPERATIONS_READ]},
    ])
    done = wait_done(arm, location)
    assert done.status_code == 200 and done.json()["status"] == "Succeeded"
    # The subscription-level grant is for operations only: other VMs stay out of reach.
    other = next(i for i in sim.vm_ids() if not i.startswith(rg_scope + "/"))
    assert arm.get(f"{sim.url}{other}?{API}").status_code == 403


def test_sdk_poller_surfaces_the_403(scoped: tuple[Simulator, str, str, str]) -> None:
    sim, _, inside, _ = scoped
    rg, name = split(inside)
    params = VirtualMachineInstallPatchesParameters(
        maximum_duration="PT1H", reboot_setting="Never",
        windows_parameters=WindowsParameters(classifications_to_include=["Critical"]),
        linux_parameters=LinuxParameters(classifications_to_include=["Critical"]),
    )
    poller = client_for(sim).virtual_machines.begin_install_patches(rg, name, params, polling_interval=0, **HTTP)
    with pytest.raises(HttpResponseError) as caught:
        poller.result()
    assert caught.value.status_code == 403 and caught.value.error.code == "AuthorizationFailed"


def test_default_allows_everything_and_admin_endpoint_configures(sim: Simulator, arm: requests.Session) -> None:
    assert requests.get(f"{sim.url}/_sim/rbac").json() == {"roleAssignments": None}
    vm = sim.vm_ids()[0]
    assert arm.get(f"{sim.url}{vm}/instanceView?{API}").status_code == 200
    resp = requests.post(f"{sim.url}/_sim/rbac", json={"roleAssignments": [{"scope": vm, "actions": ["*/read"]}]})
    assert resp.json() == {"roleAssignments": [{"scope": vm, "actions": ["*/read"]}]}
    assert arm.get(f"{sim.url}{vm}/instanceView?{API}").status_code == 200
    assert arm.post(f"{sim.url}{vm}/assessPatches?{API}").status_code == 403
    assert requests.post(f"{sim.url}/_sim/rbac", json={"roleAssignments": [{"actions": ["*"]}]}).status_code == 400
    requests.post(f"{sim.url}/_sim/rbac", json={"roleAssignments": None})
    assert arm.post(f"{sim.url}{vm}/assessPatches?{API}").status_code == 202


def test_role_assignment_matching() -> None:
    rg = RoleAssignment.parse(
        {"scope": "/subscriptions/S/resourceGroups/rg-a", "actions": ["Microsoft.Compute/*/read"]}
    )
    assert rg.covers_scope("/subscriptions/s/resourcegroups/RG-A/providers/Microsoft.Compute/virtualMachines/v")
    assert not rg.covers_scope("/subscriptions/S/resourceGroups/rg-ab/providers/Microsoft.Compute/virtualMachines/v")
    assert not rg.covers_scope("/subscriptions/S")
    assert rg.grants("microsoft.compute/virtualMachines/instanceView/read")
    assert not rg.grants("Microsoft.Compute/virtualMachines/installPatches/action")
    assert RoleAssignment.parse({"scope": "/"}).covers_scope("/subscriptions/any")
    with pytest.raises(ValueError):
        RoleAssignment.parse({"scope": "subscriptions/S"})


RH_READ = "Microsoft.ResourceHealth/availabilityStatuses/read"
ALERTS_READ = "Microsoft.AlertsManagement/alerts/read"
RH = "providers/Microsoft.ResourceHealth/availabilityStatuses/current"


@pytest.mark.parametrize(
    ("target", "assignments", "denied"),
    [
        # Resource Health: the action at any scope covering the machine's id.
        ("vm", [("{vm}", [RH_READ])], None),
        ("vm", [("{rg}", ["*/read"])], None),
        ("vm", [("{sub}", ["Microsoft.ResourceHealth/*"])], None),
        ("vm", [("{sub}", ["Microsoft.Compute/*"])], RH_READ),
        ("vm", [("{other_vm}", [RH_READ])], RH_READ),
        ("arc", [("{arc_rg}", [RH_READ])], None),
        ("arc", [("{rg}", ["*"])], RH_READ),
        # Alerts: the action at the subscription; a resource-group assignment never covers the list.
        ("alerts", [("{sub}", [ALERTS_READ])], None),
        ("alerts", [("/", ["Microsoft.AlertsManagement/alerts/*"])], None),
        ("alerts", [("{rg}", ["*"])], ALERTS_READ),
        ("alerts", [("{sub}", [RH_READ, "Microsoft.Compute/*"])], ALERTS_READ),
    ],
)
def test_health_reads_need_their_actions(
    make_sim: Callable[..., Simulator],
    arm: requests.Session,
    target: str,
    assignments: list[tuple[str, list[str]]],
    denied: str | None,
) -> None:
    sim = make_sim(principal_client_id=CLIENT, principal_object_id=OBJECT, arc_machines=2)
    vm, other_vm = sim.vm_ids()[:2]
    arc_machine = sim.machine_ids()[0]
    sub = sim.subscriptions()[0]
    scopes = {"vm": vm, "other_vm": other_vm, "rg": vm.split("/providers/")[0], "sub": f"/subscriptions/{sub}",
              "arc_rg": arc_machine.split("/providers/")[0]}
    sim.set_role_assignments([{"scope": s.format(**scopes), "actions": a} for s, a in assignments])
    path, scope = {
        "vm": (f"{vm}/{RH}", f"{vm}/{RH}"),
        "arc": (f"{arc_machine}/{RH}", f"{arc_machine}/{RH}"),
        "alerts": (f"/subscriptions/{sub}/providers/Microsoft.AlertsManagement/alerts", f"/subscriptions/{sub}"),
    }[target]
    api = "api-version=2019-05-05-preview" if target == "alerts" else "api-version=2022-10-01"
    resp = arm.get(f"{sim.url}{path}?{api}")
    if denied is None:
        assert resp.status_code == 200, resp.text
    else:
        assert resp.status_code == 403
        assert resp.json() == {"error": {"code": "AuthorizationFailed", "message": denial(denied, scope)}}
        assert int(resp.headers["x-ms-ratelimit-remaining-subscription-reads"]) >= 0


def test_resource_health_authorises_before_the_404(scoped: tuple[Simulator, str, str, str],
                                                    arm: requests.Session) -> None:
    sim, _, inside, outside = scoped
    gone = f"{outside.rsplit('/', 1)[0]}/no-such-vm/{RH}?api-version=2022-10-01"
    assert arm.get(f"{sim.url}{gone}").status_code == 403  # outside the assignment: ARM says 403 first
    missing = f"{inside.rsplit('/', 1)[0]}/no-such-vm/{RH}?api-version=2022-10-01"
    resp = arm.get(f"{sim.url}{missing}")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "ResourceNotFound"
