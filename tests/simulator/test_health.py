"""Machine health after patching (tools/azure_simulator/health.py) over HTTP: Resource Health's availability
status, Azure Monitor alerts, vmHealth and the VM agent in the instance view, the /_probe workload probe, the
per-machine health model (afterPatch, recoverAfterSeconds, lagSeconds) and unhealthy_after_patch_rate."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from tests.simulator.conftest import API
from tests.simulator.test_http import wait_done
from tests.support.bodies import INSTALL
from tools.azure_simulator import Simulator

RH = "providers/Microsoft.ResourceHealth/availabilityStatuses/current?api-version=2022-10-01"
ALERTS_API = "api-version=2019-05-05-preview"


def when(text: str) -> datetime:
    """An ISO timestamp (Compute's 7 fractional digits or Resource Health's 6, Z or +00:00) as a datetime."""
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00"))


def status(arm: requests.Session, sim: Simulator, machine: str) -> dict[str, Any]:
    resp = arm.get(f"{sim.url}{machine}/{RH}")
    assert resp.status_code == 200, resp.text
    return resp.json()["properties"]


def install(arm: requests.Session, sim: Simulator, machine: str, api: str = API) -> datetime:
    """Run installPatches to its end; returns the operation's endTime."""
    started = arm.post(f"{sim.url}{machine}/installPatches?{api}", json=INSTALL)
    assert started.status_code == 202, started.text
    assert wait_done(arm, started.headers["Location"]).status_code == 200
    return when(sim.operation(started.headers["x-ms-request-id"])["endTime"])


def assess(arm: requests.Session, sim: Simulator, machine: str) -> None:
    started = arm.post(f"{sim.url}{machine}/assessPatches?{API}")
    assert started.status_code == 202
    assert wait_done(arm, started.headers["Location"]).status_code == 200


def probe(sim: Simulator, name: str) -> int:
    """The probe's HTTP status, or 0 when the connection closes without an answer."""
    try:
        return requests.get(f"{sim.url}/_probe/{name}", timeout=5).status_code
    except requests.ConnectionError:
        return 0


def alerts(arm: requests.Session, sim: Simulator, query: str = "") -> list[dict[str, Any]]:
    url: str | None = (
        f"{sim.url}/subscriptions/{sim.subscriptions()[0]}/providers/Microsoft.AlertsManagement/alerts?"
        f"{ALERTS_API}{query}"
    )
    out: list[dict[str, Any]] = []
    while url:
        resp = arm.get(url)
        assert resp.status_code == 200, resp.text
        out += resp.json()["value"]
        url = resp.json().get("nextLink")
    return out


# --------------------------------------------------------------------------------- Resource Health
def test_resource_health_shape_bucket_and_counts(sim: Simulator, arm: requests.Session) -> None:
    vm = sim.vm_ids()[0]
    before = time.time()
    resp = arm.get(f"{sim.url}{vm.lower()}/{RH}")
    assert resp.status_code == 200
    body = resp.json()
    assert body["id"] == f"{vm}/providers/Microsoft.ResourceHealth/availabilityStatuses/current"
    assert (body["name"], body["type"], body["location"]) == (
        "current", "Microsoft.ResourceHealth/AvailabilityStatuses", "westus")
    props = body["properties"]
    assert props["availabilityState"] == "Available" and props["title"] == "Available" and props["summary"]
    assert when(props["occuredTime"]) <= when(props["reportedTime"]) <= datetime.now(UTC)
    assert when(props["reportedTime"]).timestamp() > before - 60  # real wall clock, not the simulated one
    # ARM's read bucket: 250 tokens, this was the first read of the subscription.
    assert resp.headers["x-ms-ratelimit-remaining-subscription-reads"] == "249"
    assert sim.calls()["byVm"][vm.lower()]["resourceHealth"] == 1
    assert arm.post(f"{sim.url}{vm}/{RH}").status_code == 405


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("{rg}/providers/Microsoft.Compute/virtualMachines/no-such-vm", "ResourceNotFound"),
        ("{rg}/providers/Microsoft.HybridCompute/machines/no-such-machine", "ResourceNotFound"),
        ("/subscriptions/{sub}/resourceGroups/no-such-rg/providers/Microsoft.Compute/virtualMachines/x",
         "ResourceGroupNotFound"),
        ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Compute/"
         "virtualMachines/x", "SubscriptionNotFound"),
    ],
)
def test_resource_health_404s(sim: Simulator, arm: requests.Session, path: str, code: str) -> None:
    vm = sim.vm_ids()[0]
    url = path.format(rg=vm.split("/providers/")[0], sub=sim.subscriptions()[0])
    resp = arm.get(f"{sim.url}{url}/{RH}")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("power", "expected"),
    [
        ("running", ("Available", None, "Available")),
        ("deallocated", ("Unavailable", "Customer Initiated", "Stopped and deallocated")),
        ("stopped", ("Unavailable", "Customer Initiated", "Stopped")),
    ],
)
def test_power_state_drives_availability(
    sim: Simulator, arm: requests.Session, power: str, expected: tuple[str, str | None, str]
) -> None:
    vm = sim.vm_ids()[1]
    sim.set_power(vm, power)
    props = status(arm, sim, vm)
    assert (props["availabilityState"], props["reasonType"], props["title"]) == expected


@pytest.mark.parametrize("state", ["Available", "Unavailable", "Degraded", "Unknown"])
def test_set_availability_state_is_reported_now(sim: Simulator, arm: requests.Session, state: str) -> None:
    vm = sim.vm_ids()[0]
    before = datetime.now(UTC)
    resp = requests.post(f"{sim.url}/_sim/health", json={"machine": vm, "availabilityState": state.lower()})
    assert resp.status_code == 200 and resp.json()["availabilityState"] == state
    props = status(arm, sim, vm)
    assert props["availabilityState"] == state
    assert when(props["reportedTime"]) >= before - timedelta(milliseconds=1)
    assert requests.get(f"{sim.url}/_sim/health", params={"machine": vm}).json()["resourceHealth"] == props


# --------------------------------------------------------------------------------- afterPatch
def test_after_patch_applies_when_the_install_completes_and_only_then(
    make_sim: Callable[..., Simulator], arm: requests.Session
) -> None:
    sim = make_sim(time_scale=3600.0)  # an installation takes about a real second: we look while it runs
    vm = sim.vm_ids()[0]
    sim.set_health(vm, vm_health="healthy", after_patch={"availabilityState": "Unavailable", "vmHealth": "unhealthy",
                                                         "agentReady": False, "probeStatus": 503})
    assess(arm, sim, vm)  # an assessment never triggers it
    assert status(arm, sim, vm)["availabilityState"] == "Available"
    assert sim.health(vm)["afterPatch"]["availabilityState"] == "Unavailable"

    started = arm.post(f"{sim.url}{vm}/installPatches?{API}", json=INSTALL)
    assert status(arm, sim, vm)["availabilityState"] == "Available"
    assert probe(sim, vm.rsplit("/", 1)[1]) == 200
    assert sim.operation(started.headers["x-ms-request-id"])["status"] == "InProgress"  # we looked while it ran
    assert wait_done(arm, started.headers["Location"]).json()["status"] == "Succeeded"  # Azure says Succeeded...
    ended = when(sim.operation(started.headers["x-ms-request-id"])["endTime"])
    props = status(arm, sim, vm)  # ... but the machine comes back down
    assert props["availabilityState"] == "Unavailable" and props["reasonType"] == "Unplanned"
    assert abs(when(props["occuredTime"]) - ended) < timedelta(milliseconds=1)
    assert when(props["reportedTime"]) >= ended - timedelta(milliseconds=1)
    view = arm.get(f"{sim.url}{vm}/instanceView?{API}").json()
    assert view["vmHealth"]["status"]["code"] == "HealthState/unhealthy"
    assert view["vmAgent"]["statuses"][0]["displayStatus"] == "Not Ready"
    assert probe(sim, vm.rsplit("/", 1)[1]) == 503
    model = sim.health(vm)
    assert model["afterPatch"] is None and model["recoverAt"] is None  # used up; never recovers

    sim.set_health(vm, availabilityState="Available", vmHealth="healthy", agentReady=True, probeStatus=200)
    install(arm, sim, vm)  # the next installation has no afterPatch: the machine stays as it is
    assert status(arm, sim, vm)["availabilityState"] == "Available"


def test_after_patch_recovers_and_resolves_its_alert(sim: Simulator, arm: requests.Session) -> None:
    vm = sim.vm_ids()[0]
    sim.set_health(vm, vmHealth="healthy", afterPatch={
        "availabilityState": "Degraded", "vmHealth": "unhealthy", "agentReady": False, "probeStatus": 0,
        "recoverAfterSeconds": 0.8, "fireAlert": {"severity": "Sev1", "name": "High CPU"},
    })
    ended = install(arm, sim, vm)
    assert status(arm, sim, vm)["availabilityState"] == "Degraded"
    assert probe(sim, vm.rsplit("/", 1)[1]) == 0
    fired = alerts(arm, sim, f"&targetResource={vm}")
    assert [a["properties"]["essentials"]["monitorCondition"] for a in fired] == ["Fired"]
    essentials = fired[0]["properties"]["essentials"]
    assert (essentials["severity"], fired[0]["name"]) == ("Sev1", "High CPU")
    assert abs(when(essentials["startDateTime"]) - ended) < timedelta(milliseconds=1)
    assert "monitorConditionResolvedDateTime" not in essentials

    time.sleep(max(0.0, (ended + timedelta(seconds=0.85) - datetime.now(UTC)).total_seconds()))
    props = status(arm, sim, vm)
    assert props["availabilityState"] == "Available"
    recovered = ended + timedelta(seconds=0.8)
    assert abs(when(props["occuredTime"]) - recovered) < timedelta(milliseconds=1)
    view = arm.get(f"{sim.url}{vm}/instanceView?{API}").json()
    assert view["vmHealth"]["status"] == {**view["vmHealth"]["status"], "code": "HealthState/healthy", "level": "Info",
                                          "displayStatus": "The VM is healthy"}
    assert view["vmAgent"]["statuses"][0]["displayStatus"] == "Ready"
    assert probe(sim, vm.rsplit("/", 1)[1]) == 200
    essentials = alerts(arm, sim, f"&targetResource={vm}")[0]["properties"]["essentials"]
    assert essentials["monitorCondition"] == "Resolved"
    assert abs(when(essentials["monitorConditionResolvedDateTime"]) - recovered) < timedelta(milliseconds=1)


def test_lag_answers_the_pre_patch_state_with_its_old_reported_time(sim: Simulator, arm: requests.Session) -> None:
    vm = sim.vm_ids()[0]
    sim.set_health(vm, afterPatch={"availabilityState": "Unavailable", "lagSeconds": 0.8})
    before = status(arm, sim, vm)
    ended = install(arm, sim, vm)
    lagging = status(arm, sim, vm)
    assert lagging == before  # the pre-patch answer, reportedTime and all
    assert when(lagging["reportedTime"]) < ended  # a client reads this as "not yet known"
    assert sim.health(vm)["availabilityState"] == "Unavailable"  # the machine itself is already down

    time.sleep(max(0.0, (ended + timedelta(seconds=0.85) - datetime.now(UTC)).total_seconds()))
    caught_up = status(arm, sim, vm)
    assert caught_up["availabilityState"] == "Unavailable"
    assert abs(when(caught_up["occuredTime"]) - ended) < timedelta(milliseconds=1)  # when it happened
    assert abs(when(caught_up["reportedTime"]) - (ended + timedelta(seconds=0.8))) < timedelta(milliseconds=1)


def test_after_patch_applies_when_arm_answers_the_post_with_the_final_result(
    sim: Simulator, arm: requests.Session
) -> None:
    vm = sim.vm_ids()[0]
    sim.set_health(vm, afterPatch={"availabilityState": "Unavailable"})
    with sim.faults_set(sync_rate=1.0):
        answered = arm.post(f"{sim.url}{vm}/installPatches?{API}", json=INSTALL)
    assert answered.status_code == 200 and answered.json()["status"] == "Succeeded"
    assert status(arm, sim, vm)["availabilityState"] == "Unavailable"


def test_install_without_after_patch_is_taken_in_as_healthy(sim: Simulator, arm: requests.Session) -> None:
    vm = sim.vm_ids()[0]
    occurred = status(arm, sim, vm)["occuredTime"]
    ended = install(arm, sim, vm)
    props = status(arm, sim, vm)
    assert props["availabilityState"] == "Available" and props["occuredTime"] == occurred
    assert abs(when(props["reportedTime"]) - ended) < timedelta(milliseconds=1)


# --------------------------------------------------------------------------------- instance view
@pytest.mark.parametrize(
    ("vm_health", "power", "expected"),
    [
        (None, "running", None),  # no Application Health extension: no vmHealth at all
        ("healthy", "running", ("HealthState/healthy", "Info", "The VM is healthy")),
        ("unhealthy", "running", ("HealthState/unhealthy", "Warning", "The VM is unhealthy")),
        ("unknown", "running", ("HealthState/unknown", "Warning", "The VM health is unknown")),
        ("healthy", "deallocated", None),
    ],
)
def test_vm_health_in_the_instance_view(
    sim: Simulator, arm: requests.Session, vm_health: str | None, power: str, expected: tuple[str, str, str] | None
) -> None:
    vm = sim.vm_ids()[0]
    sim.set_health(vm, vm_health=vm_health)
    sim.set_power(vm, power)
    view = arm.get(f"{sim.url}{vm}/instanceView?{API}").json()
    if expected is None:
        assert "vmHealth" not in view
    else:
        got = view["vmHealth"]["status"]
        assert (got["code"], got["level"], got["displayStatus"]) == expected
        assert when(got["time"]) <= datetime.now(UTC)
    expanded = arm.get(f"{sim.url}{vm}?{API}&$expand=instanceView").json()["properties"]["instanceView"]
    assert expanded.get("vmHealth") == view.get("vmHealth")


@pytest.mark.parametrize(
    ("ready", "expected"),
    [
        (True, ("ProvisioningState/succeeded", "Info", "Ready")),
        (False, ("ProvisioningState/Unavailable", "Warning", "Not Ready")),
    ],
)
def test_vm_agent_status(sim: Simulator, arm: requests.Session, ready: bool, expected: tuple[str, str, str]) -> None:
    vm = sim.vm_ids()[0]
    requests.post(f"{sim.url}/_sim/health", json={"machine": vm, "agentReady": ready})
    agent = arm.get(f"{sim.url}{vm}/instanceView?{API}").json()["vmAgent"]["statuses"][0]
    assert (agent["code"], agent["level"], agent["displayStatus"]) == expected


# --------------------------------------------------------------------------------- probe
@pytest.mark.parametrize(("configured", "expected"), [(None, 200), (200, 200), (503, 503), (500, 500), (0, 0)])
def test_probe_answers_the_configured_status(
    sim: Simulator, configured: int | None, expected: int
) -> None:
    vm = sim.vm_ids()[0]
    name = vm.rsplit("/", 1)[1]
    if configured is not None:
        sim.set_health(vm, probe_status=configured)
    assert probe(sim, name) == expected
    assert probe(sim, name.upper()) == expected  # names match case-insensitively
    if expected:
        body = requests.get(f"{sim.url}/_probe/{vm}").json()  # a full resource id works too
        assert body == {"status": "ok" if expected == 200 else "unhealthy"}
    assert sim.health(vm)["probeCount"] == (3 if expected else 2)


def test_probe_is_outside_arm(sim: Simulator) -> None:
    vm = sim.vm_ids()[0]
    sim.set_power(sim.vm_ids()[1], "deallocated")
    assert probe(sim, sim.vm_ids()[1].rsplit("/", 1)[1]) == 0  # a deallocated VM never answers
    assert requests.get(f"{sim.url}/_probe/no-such-machine").status_code == 404
    assert requests.get(f"{sim.url}/_probe/{vm.rsplit('/', 1)[1]}").status_code == 200  # no token needed
    with sim.faults_set(drop_rate=1.0, throttle_rate=1.0):  # ARM's faults do not apply
        assert probe(sim, vm.rsplit("/", 1)[1]) == 200
    calls = sim.calls()
    assert calls["statuses"] == {} and sum(calls["total"].values()) == 0


# --------------------------------------------------------------------------------- alerts
@pytest.fixture
def fired(sim: Simulator) -> dict[str, Any]:
    """Alerts on two VMs in different resource groups, some old, one resolved."""
    ids = sim.vm_ids()
    a = ids[0]
    b = next(i for i in ids if i.split("/")[4] != a.split("/")[4])
    now = datetime.now(UTC)
    made = {
        "a-sev1": sim.fire_alert(a, "Sev1", "High CPU"),
        "a-sev3-resolved": sim.fire_alert(a, "Sev3", "Disk"),
        "b-sev1": sim.fire_alert(b, "Sev1", "High CPU"),
        "a-2h": sim.fire_alert(a, "Sev2", "Old", startDateTime=(now - timedelta(hours=2)).isoformat()),
        "a-3d": sim.fire_alert(a, "Sev0", "Older", startDateTime=(now - timedelta(days=3)).isoformat()),
        "b-40d": sim.fire_alert(b, "Sev4", "Ancient", startDateTime=(now - timedelta(days=40)).isoformat()),
    }
    sim.resolve_alert(made["a-sev3-resolved"]["id"].rsplit("/", 1)[1])
    ids_by_name = {k: v["id"] for k, v in made.items()}
    return {"a": a, "b": b, "ids": ids_by_name}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {"a-sev1", "a-sev3-resolved", "b-sev1", "a-2h"}),  # timeRange defaults to 1d
        ("&timeRange=1h", {"a-sev1", "a-sev3-resolved", "b-sev1"}),
        ("&timeRange=7d", {"a-sev1", "a-sev3-resolved", "b-sev1", "a-2h", "a-3d"}),
        ("&timeRange=30d", {"a-sev1", "a-sev3-resolved", "b-sev1", "a-2h", "a-3d"}),
        ("&targetResource={a_lower}", {"a-sev1", "a-sev3-resolved", "a-2h"}),  # case-insensitive
        ("&targetResource={b}&timeRange=30d", {"b-sev1"}),
        ("&monitorCondition=Fired", {"a-sev1", "b-sev1", "a-2h"}),
        ("&monitorCondition=Resolved", {"a-sev3-resolved"}),
        ("&severity=Sev1", {"a-sev1", "b-sev1"}),
        ("&severity=Sev1&targetResource={a}", {"a-sev1"}),
        ("&targetResourceGroup={b_rg}", {"b-sev1"}),
        ("&targetResourceType=virtualmachines&severity=Sev2", {"a-2h"}),
        ("&targetResource=/subscriptions/x/resourceGroups/y/providers/Microsoft.Compute/virtualMachines/z", set()),
    ],
)
def test_alert_filters(
    sim: Simulator, arm: requests.Session, fired: dict[str, Any], query: str, expected: set[str]
) -> None:
    a, b = fired["a"], fired["b"]
    query = query.format(a=a, a_lower=a.lower(), b=b, b_rg=b.split("/")[4].upper())
    got = alerts(arm, sim, query)
    names = {v: k for k, v in fired["ids"].items()}
    assert {names[x["id"]] for x in got} == expected
    for alert in got:
        ess = alert["properties"]["essentials"]
        assert alert["type"] == "Microsoft.AlertsManagement/alerts"
        assert ess["targetResourceType"] == "virtualmachines" and ess["targetResource"] in (a, b)
        assert ("monitorConditionResolvedDateTime" in ess) == (ess["monitorCondition"] == "Resolved")


@pytest.mark.parametrize(
    "query", ["&severity=Sev5", "&monitorCondition=Gone", "&timeRange=2d", "&pageCount=0", "&pageCount=251"]
)
def test_alert_filter_values_are_checked(sim: Simulator, arm: requests.Session, query: str) -> None:
    resp = arm.get(f"{sim.url}/subscriptions/{sim.subscriptions()[0]}/providers/Microsoft.AlertsManagement/alerts?"
                   f"{ALERTS_API}{query}")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "InvalidParameter"


def test_alerts_page_newest_first(sim: Simulator, arm: requests.Session) -> None:
    vm = sim.vm_ids()[0]
    now = datetime.now(UTC)
    made = [sim.fire_alert(vm, "Sev2", f"alert-{i}", startDateTime=(now - timedelta(minutes=i)).isoformat())["id"]
            for i in range(5)]
    sub = sim.subscriptions()[0]
    url = (f"{sim.url}/subscriptions/{sub}/providers/Microsoft.AlertsManagement/alerts?{ALERTS_API}&pageCount=2"
           f"&targetResource={vm}&severity=Sev2")
    pages = []
    while url:
        body = arm.get(url).json()
        pages.append([a["id"] for a in body["value"]])
        url = body.get("nextLink")
        assert url is None or ("severity=Sev2" in url and "api-version=2019-05-05-preview" in url)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i for p in pages for i in p] == made  # newest first
    assert sim.calls()["total"]["alerts"] == 3


def test_alerts_are_per_subscription(make_sim: Callable[..., Simulator], arm: requests.Session) -> None:
    sim = make_sim(subscriptions=2)
    first, second = sim.subscriptions()
    vm = next(i for i in sim.vm_ids() if i.split("/")[2] == second)
    sim.fire_alert(vm, "Sev1", "High CPU")
    listing = f"providers/Microsoft.AlertsManagement/alerts?{ALERTS_API}"
    assert arm.get(f"{sim.url}/subscriptions/{first}/{listing}").json() == {"value": []}
    assert len(arm.get(f"{sim.url}/subscriptions/{second}/{listing}").json()["value"]) == 1
    missing = arm.get(f"{sim.url}/subscriptions/00000000-0000-0000-0000-000000000000/{listing}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "SubscriptionNotFound"


def test_alert_admin_api(sim: Simulator) -> None:
    vm = sim.vm_ids()[0]
    before = datetime.now(UTC)
    resp = requests.post(f"{sim.url}/_sim/alerts",
                         json={"machine": vm, "severity": "Sev1", "name": "High CPU", "monitorCondition": "Fired"})
    assert resp.status_code == 201
    alert = resp.json()
    guid = alert["id"].rsplit("/", 1)[1]
    assert alert["id"] == f"/subscriptions/{sim.subscriptions()[0]}/providers/Microsoft.AlertsManagement/alerts/{guid}"
    ess = alert["properties"]["essentials"]
    assert ess["targetResource"] == vm and ess["targetResourceName"] == vm.rsplit("/", 1)[1]
    assert ess["targetResourceGroup"] == vm.split("/")[4] and ess["alertRule"].endswith("/metricAlerts/High CPU")
    assert (ess["signalType"], ess["alertState"], ess["monitorService"]) == ("Metric", "New", "Platform")
    assert when(ess["startDateTime"]) >= before - timedelta(milliseconds=1)
    resolved = requests.post(f"{sim.url}/_sim/alerts/{guid}/resolve").json()["properties"]["essentials"]
    assert resolved["monitorCondition"] == "Resolved"
    assert when(resolved["monitorConditionResolvedDateTime"]) >= when(ess["startDateTime"])
    assert [a["id"] for a in requests.get(f"{sim.url}/_sim/alerts").json()["value"]] == [alert["id"]]
    assert requests.post(f"{sim.url}/_sim/alerts/{'0' * 8}/resolve").status_code == 404
    for bad in ({"machine": vm, "severity": "Sev9"}, {"machine": vm, "colour": "red"}, {"severity": "Sev1"}):
        assert requests.post(f"{sim.url}/_sim/alerts", json=bad).status_code == 400


# --------------------------------------------------------------------------------- admin API
@pytest.mark.parametrize(
    "body",
    [
        {"availabilityState": "Fine"},
        {"vmHealth": "great"},
        {"agentReady": "yes"},
        {"probeStatus": 42},
        {"colour": "red"},
        {"afterPatch": {"recoverAfterSeconds": -1}},
        {"afterPatch": {"fireAlert": {"severity": "Sev7"}}},
        {"afterPatch": "down"},
    ],
)
def test_health_admin_api_refuses_bad_fields(sim: Simulator, body: dict[str, Any]) -> None:
    vm = sim.vm_ids()[0]
    resp = requests.post(f"{sim.url}/_sim/health", json={"machine": vm, **body})
    assert resp.status_code == 400, resp.text
    assert sim.health(vm)["availabilityState"] == "Available" and sim.health(vm)["afterPatch"] is None


def test_health_admin_api_round_trip_and_reset(sim: Simulator, arm: requests.Session) -> None:
    vm = sim.vm_ids()[0]
    after = {"availabilityState": "Unavailable", "recoverAfterSeconds": 60, "lagSeconds": 5,
             "fireAlert": {"severity": "Sev1", "name": "Heartbeat"}}
    resp = requests.post(f"{sim.url}/_sim/health", json={"machine": vm, "vmHealth": "healthy", "afterPatch": after})
    model = resp.json()
    assert (model["availabilityState"], model["vmHealth"], model["agentReady"], model["probeStatus"]) == (
        "Available", "healthy", True, 200)
    assert model["afterPatch"] == {**after, "recoverAfterSeconds": 60.0, "lagSeconds": 5.0}
    assert requests.get(f"{sim.url}/_sim/health", params={"machine": vm.lower()}).json() == model
    assert requests.get(f"{sim.url}/_sim/health").json() == {"ok": True, "vms": 8}  # liveness as before
    assert requests.post(f"{sim.url}/_sim/health", json={"vmHealth": "healthy"}).status_code == 400
    cleared = requests.post(f"{sim.url}/_sim/health", json={"machine": vm, "afterPatch": None}).json()
    assert cleared["afterPatch"] is None and cleared["vmHealth"] == "healthy"  # omitted fields keep their value

    sim.set_health(vm, availability_state="Degraded")
    sim.fire_alert(vm, "Sev1", "High CPU")
    requests.post(f"{sim.url}/_sim/reset")
    assert sim.health(vm)["availabilityState"] == "Available" and sim.health(vm)["vmHealth"] is None
    assert sim.alerts() == [] and alerts(arm, sim) == []


# --------------------------------------------------------------------------------- fleet-level fault rate
def test_unhealthy_after_patch_rate(make_sim: Callable[..., Simulator], arm: requests.Session) -> None:
    sim = make_sim(faults={"unhealthy_after_patch_rate": 1.0})
    first, second, third = sim.vm_ids()[:3]
    sim.set_health(first, vm_health="healthy")
    install(arm, sim, first)
    model = sim.health(first)
    assert (model["availabilityState"], model["vmHealth"], model["agentReady"], model["probeStatus"]) == (
        "Unavailable", "unhealthy", False, 0)
    assert model["recoverAt"] is None  # never recovers
    assert probe(sim, first.rsplit("/", 1)[1]) == 0
    assess(arm, sim, second)  # assessments never count
    assert sim.health(second)["availabilityState"] == "Available"
    install(arm, sim, second)
    assert sim.health(second)["vmHealth"] is None  # no extension: none appears

    sim.set_health(third, afterPatch={"availabilityState": "Degraded"})  # an explicit afterPatch wins
    install(arm, sim, third)
    assert sim.health(third)["availabilityState"] == "Degraded" and sim.health(third)["probeStatus"] == 200

    sim.set_faults(unhealthy_after_patch_rate=0.0)
    sim.set_health(first, availabilityState="Available", agentReady=True, probeStatus=200)
    install(arm, sim, first)
    assert sim.health(first)["availabilityState"] == "Available"
    with pytest.raises(ValueError, match="between 0 and 1"):
        sim.set_faults(unhealthy_after_patch_rate=1.5)


def test_unhealthy_after_patch_rate_is_seeded(make_sim: Callable[..., Simulator], arm: requests.Session) -> None:
    def down_after_installing_all(sim: Simulator) -> list[str]:
        for vm in sim.vm_ids():
            install(arm, sim, vm)
        return [vm for vm in sim.vm_ids() if sim.health(vm)["availabilityState"] == "Unavailable"]

    settings = {"vms": 12, "faults": {"unhealthy_after_patch_rate": 0.5, "seed": 3}}
    down = down_after_installing_all(make_sim(**settings))
    assert 0 < len(down) < 12
    assert down_after_installing_all(make_sim(**settings)) == down


# --------------------------------------------------------------------------------- Arc machines
def test_arc_machine_health(make_sim: Callable[..., Simulator], arm: requests.Session) -> None:
    sim = make_sim(arc_machines=3, arc_disconnected=1)
    state = sim.state()["arcMachines"]
    connected = next(m["id"] for m in state if m["agentStatus"] == "Connected")
    disconnected = next(m["id"] for m in state if m["agentStatus"] == "Disconnected")
    assert status(arm, sim, connected)["availabilityState"] == "Available"
    props = status(arm, sim, disconnected)
    assert (props["availabilityState"], props["title"]) == ("Unavailable", "Disconnected")

    sim.set_health(connected, afterPatch={"availabilityState": "Unavailable",
                                          "fireAlert": {"severity": "Sev0", "name": "Heartbeat"}})
    install(arm, sim, connected, api="api-version=2024-07-10")
    assert status(arm, sim, connected)["availabilityState"] == "Unavailable"
    fired = alerts(arm, sim, f"&targetResource={connected.upper()}")
    assert [(a["name"], a["properties"]["essentials"]["targetResourceType"]) for a in fired] == [
        ("Heartbeat", "machines")]

    sim.set_health(connected, agentReady=False)  # an Arc machine's agent: Disconnected
    assert sim.machine_state(sim._vm_by_id(connected))["agentStatus"] == "Disconnected"
    sim.set_health(connected, agentReady=True, availabilityState="Available")
    assert sim.machine_state(sim._vm_by_id(connected))["agentStatus"] == "Connected"
    assert status(arm, sim, connected)["availabilityState"] == "Available"
