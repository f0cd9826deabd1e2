"""What assessments need of the simulator: lists with instance views, VMs that appear and disappear,
and patches published as simulated time passes, all seen through ARM's own HTTP surface."""

from __future__ import annotations

import time
from collections.abc import Callable

import requests

from tests.simulator.conftest import API
from tests.simulator.test_http import wait_done
from tools.azure_simulator import Simulator


def assess(sim: Simulator, arm: requests.Session, vm: str) -> dict[str, object]:
    resp = arm.post(f"{sim.url}{vm}/assessPatches?{API}")
    assert resp.status_code == 202, resp.text
    done = wait_done(arm, resp.headers["Location"])
    assert done.status_code == 200
    return done.json()


def test_lists_give_power_state_only_as_azure_documents(make_sim: Callable[..., Simulator],
                                                        arm: requests.Session) -> None:
    sim = make_sim(vms=10, stopped_ratio=0.3)
    sub = sim.subscriptions()[0]
    listing = f"{sim.url}/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines?{API}"
    plain = arm.get(listing).json()["value"]
    assert all("instanceView" not in vm["properties"] for vm in plain)
    assert {vm["properties"]["storageProfile"]["osDisk"]["osType"] for vm in plain} == {"Windows", "Linux"}
    refused = arm.get(f"{listing}&$expand=instanceView")  # needs a $filter on lists
    assert refused.status_code == 400 and refused.json()["error"]["target"] == "$expand"
    status = arm.get(f"{listing}&statusOnly=true").json()["value"]
    power = {vm["id"]: next(s["code"] for s in vm["properties"]["instanceView"]["statuses"]
                            if s["code"].startswith("PowerState/")) for vm in status}
    assert power == {v["id"]: f"PowerState/{v['powerState']}" for v in sim.state()["vms"]}
    assert len([v for v in sim.state()["vms"] if v["powerState"] != "running"]) == 3


def test_vms_appear_and_disappear(sim: Simulator, arm: requests.Session) -> None:
    sub = sim.subscriptions()[0]
    listing = f"{sim.url}/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines?{API}"
    added = requests.post(f"{sim.url}/_sim/vms", json={"count": 2, "osType": "Linux"}, timeout=5).json()["added"]
    assert len(added) == 2 and len(arm.get(listing).json()["value"]) == 10
    assert arm.get(f"{sim.url}{added[0]}?{API}").json()["properties"]["storageProfile"]["osDisk"]["osType"] == "Linux"
    assert assess(sim, arm, added[0])["status"] == "Succeeded"

    gone = sim.vm_ids()[0]
    assert requests.delete(f"{sim.url}/_sim/vms{gone}", timeout=5).status_code == 200
    ids = [vm["id"] for vm in arm.get(listing).json()["value"]]
    assert gone not in ids and len(ids) == 9
    missing = arm.get(f"{sim.url}{gone}?{API}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "ResourceNotFound"


def test_a_published_patch_shows_in_the_next_assessment(sim: Simulator, arm: requests.Session) -> None:
    vm = next(v["id"] for v in sim.state()["vms"] if v["osType"] == "Windows")
    before = assess(sim, arm, vm)
    patch = requests.post(f"{sim.url}/_sim/publish", json={"osType": "Windows", "classification": "Critical"},
                          timeout=5).json()
    after = assess(sim, arm, vm)
    new = [p for p in after["availablePatches"] if p["patchId"] == patch["patchId"]]  # type: ignore[union-attr]
    assert len(new) == 1 and new[0]["classifications"] == ["Critical"] and new[0]["kbId"] == patch["kbId"]
    assert after["criticalAndSecurityPatchCount"] == before["criticalAndSecurityPatchCount"] + 1  # type: ignore[operator]


def test_upcoming_patches_publish_as_simulated_time_passes(make_sim: Callable[..., Simulator],
                                                           arm: requests.Session) -> None:
    # 3 updates per OS type within 10 simulated hours; at 36000x that is 1 s of real time.
    sim = make_sim(upcoming_patches=3, upcoming_within_hours=10.0, operation_seconds=(1.0, 1.0))
    vm = next(v["id"] for v in sim.state()["vms"] if v["osType"] == "Linux")
    first = assess(sim, arm, vm)["availablePatches"]
    time.sleep(1.2)
    later = assess(sim, arm, vm)["availablePatches"]
    new_then = {p["name"] for p in first if p["name"].startswith("libsim")}  # type: ignore[index,union-attr]
    new_now = [p for p in later if p["name"].startswith("libsim")]  # type: ignore[index,union-attr]
    assert len(new_now) == 3 and len(new_then) < 3  # published during the test, not before it
    # Publish dates are simulated time: from the simulator's start onwards.
    assert all(p["publishedDate"] >= time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))  # type: ignore[index]
               for p in new_now)
