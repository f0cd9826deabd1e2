"""Health checks of rollouts (#20), without Azurite or HTTP: what `rollout.healthCheck` accepts and refuses, what
each of Azure's answers means for a signal (shared/arm/health.py), and how the machine step walks a machine
through its baseline, Verifying and its end with in-memory fakes of its ports (tests/unit/test_machine_step.py).
The local-host scenarios against the simulator are in tests/integration/test_health_gated_rollouts.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.arm.calls import INSTALL_PATCHES, INSTANCE_VIEW, LIST_ALERTS, POLL_OPERATION, READS, RESOURCE_HEALTH
from shared.arm.health import (
    HEALTHY,
    UNHEALTHY,
    UNREADABLE,
    WAITING,
    arc_reading,
    fired_alerts,
    probe_reading,
    resource_health_reading,
    vm_reading,
)
from shared.core.clock import iso
from shared.core.counters import failure_kinds
from shared.core.errors import ValidationError
from shared.core.records import HealthCheck
from shared.core.states import machine_outcome, summarize
from shared.egress.policy import parse_networks
from shared.runs.machine_worker import StepResult
from shared.validation.health_check import parse_health_check
from shared.validation.rollout import parse_rollout
from tests.unit.test_machine_step import ACCEPTED, NO_INSTALLATION, RESULT, VM, answer, harness

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
AT = iso(NOW)


# -- what healthCheck accepts and refuses ------------------------------------------------------------------------

def test_defaults_are_filled_in_and_durations_kept_as_seconds() -> None:
    assert parse_health_check({}) == {"after": "PT5M", "afterSeconds": 300, "within": "PT20M", "withinSeconds": 1200,
                                      "signals": ["vmHealth", "resourceHealth"]}
    spec = parse_health_check({"after": "pt0s", "within": "PT1M30S", "signals": ["PROBE", "alerts", "alerts"],
                               "alerts": {"severities": ["sev2"], "scope": "ResourceGroup"},
                               "probe": {"url": "https://{machineName}.example.com/healthz",
                                         "expectStatus": [204, 200]}})
    assert spec["signals"] == ["alerts", "probe"] and spec["afterSeconds"] == 0 and spec["withinSeconds"] == 90
    assert spec["alerts"] == {"severities": ["Sev2"], "scope": "resourceGroup"}
    assert spec["probe"]["expectStatus"] == [200, 204]


@pytest.mark.parametrize(("body", "target"), [
    ({"after": "5 minutes"}, "rollout.healthCheck.after"),
    ({"after": "P1Y"}, "rollout.healthCheck.after"),
    ({"after": "PT7H"}, "rollout.healthCheck.after"),
    ({"after": 300}, "rollout.healthCheck.after"),
    ({"within": "PT0.5S"}, "rollout.healthCheck.within"),
    ({"within": "P2D"}, "rollout.healthCheck.within"),
    ({"signals": []}, "rollout.healthCheck.signals"),
    ({"signals": ["vmHealth", "ping"]}, "rollout.healthCheck.signals[1]"),
    ({"signals": "vmHealth"}, "rollout.healthCheck.signals"),
    ({"signals": ["vmHealth"], "alerts": {}}, "rollout.healthCheck.alerts"),
    ({"signals": ["alerts"], "alerts": {"severities": ["Sev5"]}}, "rollout.healthCheck.alerts.severities[0]"),
    ({"signals": ["alerts"], "alerts": {"scope": "subscription"}}, "rollout.healthCheck.alerts.scope"),
    ({"signals": ["probe"]}, "rollout.healthCheck.probe"),
    ({"signals": ["probe"], "probe": {"url": "http://vm.example.com/"}}, "rollout.healthCheck.probe.url"),
    ({"signals": ["probe"], "probe": {"url": "https://10.0.0.4/healthz"}}, "rollout.healthCheck.probe.url"),
    ({"signals": ["probe"], "probe": {"url": "https://169.254.169.254/metadata"}}, "rollout.healthCheck.probe.url"),
    ({"signals": ["probe"], "probe": {"url": "https://{vmName}.example.com/"}}, "rollout.healthCheck.probe.url"),
    ({"signals": ["probe"], "probe": {"url": "https://a.example.com/", "expectStatus": [99]}},
     "rollout.healthCheck.probe.expectStatus"),
    ({"signals": ["probe"], "probe": {"url": "https://a.example.com/", "redirects": True}},
     "rollout.healthCheck.probe.redirects"),
    ({"timeout": "PT1M"}, "rollout.healthCheck.timeout"),
])
def test_bad_input_is_refused_naming_the_field(body: dict[str, Any], target: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_rollout({"healthCheck": body})
    assert caught.value.target == target


def test_a_private_probe_address_is_accepted_only_inside_the_networks_an_operator_opened() -> None:
    networks = parse_networks("10.0.0.0/16")
    probe = {"signals": ["probe"], "probe": {"url": "https://10.0.0.4/healthz"}}
    assert parse_health_check(probe, probe_networks=networks)["probe"]["url"] == "https://10.0.0.4/healthz"
    with pytest.raises(ValidationError):
        parse_health_check({"signals": ["probe"], "probe": {"url": "https://10.1.0.4/healthz"}},
                           probe_networks=networks)
    with pytest.raises(ValueError, match="platform address"):
        parse_networks("169.254.0.0/16")


def test_a_health_check_counts_unhealthy_machines_against_the_budget_unless_failure_on_says_otherwise() -> None:
    assert "Unhealthy" in parse_rollout({"healthCheck": {}})["failureOn"]
    assert parse_rollout({"healthCheck": {}, "failureOn": ["Failed"]})["failureOn"] == ["Failed"]
    assert "failureOn" not in parse_rollout({"maxFailures": 1})
    assert parse_rollout({"healthCheck": {}})["maxFailures"] == 1  # a bad patch halts the rollout by itself
    assert parse_rollout({"healthCheck": {}, "maxFailures": "10%"})["maxFailures"] == "10%"
    unhealthy = {"state": "Unhealthy", "status": "Succeeded", "errorCode": "HealthUnknown"}
    assert failure_kinds(unhealthy) == ("Unhealthy",) and machine_outcome(unhealthy) == "unhealthy"
    assert summarize([unhealthy, {"state": "Completed", "status": "Succeeded"}])["status"] == "Failed"
    skipped = {"state": "Skipped", "errorCode": "UnhealthyBeforePatching"}
    # not the patch's fault (no budget spent), but not a clean run either: some machines were not patched
    assert failure_kinds(skipped) == () and summarize([skipped])["status"] == "CompletedWithWarnings"


# -- what Azure's answers mean for a signal ----------------------------------------------------------------------

def view(power: str = "running", agent: str | None = "Ready", health: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"statuses": [{"code": "ProvisioningState/succeeded"}, {"code": f"PowerState/{power}"}]}
    if agent is not None:
        body["vmAgent"] = {"statuses": [{"displayStatus": agent}]}
    if health is not None:
        body["vmHealth"] = {"status": {"code": f"HealthState/{health}"}}
    return body


@pytest.mark.parametrize(("status", "body", "verdict"), [
    (200, view(), HEALTHY),  # no Application Health extension: running and agent Ready pass
    (200, view(health="healthy"), HEALTHY),
    (200, view(health="unhealthy"), UNHEALTHY),
    (200, view(health="unknown"), WAITING),
    (200, view(power="stopped"), UNHEALTHY),
    (200, view(agent="Not Ready"), UNHEALTHY),
    (200, view(agent=None), WAITING),  # the agent reports a minute after boot
    (200, {"statuses": []}, WAITING),
    (403, {"error": {"code": "AuthorizationFailed", "message": "no"}}, UNREADABLE),
    (500, None, UNREADABLE),
])
def test_the_instance_view(status: int, body: Any, verdict: str) -> None:
    assert vm_reading(answer(status, body), AT).verdict == verdict


@pytest.mark.parametrize(("state", "reported", "verdict"), [
    ("Available", NOW, HEALTHY),
    ("Unavailable", NOW, UNHEALTHY),
    ("Degraded", NOW, UNHEALTHY),
    ("Unknown", NOW, WAITING),
    ("Unavailable", NOW - timedelta(minutes=10), WAITING),  # reported before the installation started: stale
    ("Available", NOW - timedelta(minutes=10), WAITING),
])
def test_resource_health(state: str, reported: datetime, verdict: str) -> None:
    body = {"properties": {"availabilityState": state, "reportedTime": iso(reported), "summary": "s"}}
    started = NOW - timedelta(minutes=1)
    assert resource_health_reading(answer(200, body), AT, since=started).verdict == verdict
    assert resource_health_reading(answer(403, {"error": {"code": "AuthorizationFailed"}}), AT,
                                   since=started).verdict == UNREADABLE


def alert(severity: str, condition: str, started: datetime, target: str = VM.resource_id) -> dict[str, Any]:
    return {"name": "High CPU", "properties": {"essentials": {
        "severity": severity, "monitorCondition": condition, "startDateTime": iso(started), "targetResource": target}}}


@pytest.mark.parametrize(("alerts", "since", "count"), [
    ([alert("Sev1", "Fired", NOW)], NOW - timedelta(minutes=5), 1),
    ([alert("Sev1", "Resolved", NOW)], NOW - timedelta(minutes=5), 0),  # Fired until Resolved
    ([alert("Sev3", "Fired", NOW)], NOW - timedelta(minutes=5), 0),  # not a chosen severity
    ([alert("Sev1", "Fired", NOW - timedelta(hours=1))], NOW - timedelta(minutes=5), 0),  # before the operation
    ([alert("Sev1", "Fired", NOW - timedelta(hours=1))], None, 1),  # the baseline: anything firing now
    ([alert("Sev0", "Fired", NOW, target=VM.resource_id.upper())], NOW - timedelta(minutes=5), 1),  # ids: any case
    ([alert("Sev0", "Fired", NOW, target=VM.resource_id + "x")], NOW - timedelta(minutes=5), 0),
])
def test_alerts(alerts: list[dict[str, Any]], since: datetime | None, count: int) -> None:
    found = fired_alerts(answer(200, {"value": alerts}), severities=["Sev0", "Sev1"], since=since,
                         machine_id=VM.resource_id, scope="machine")
    assert len(found) == count


def test_an_arc_machine_passes_when_its_agent_is_connected_whenever_its_status_last_changed() -> None:
    # lastStatusChange moves only when the agent's status flips; a reboot shorter than its disconnect threshold
    # never flips it, so a rebooted machine must pass on Connected alone.
    body = {"properties": {"status": "Connected", "lastStatusChange": iso(NOW - timedelta(days=30))}}
    assert arc_reading(answer(200, body), AT).verdict == HEALTHY
    gone = {"properties": {"status": "Disconnected", "lastStatusChange": iso(NOW)}}
    reading = arc_reading(answer(200, gone), AT)
    assert reading.verdict == UNHEALTHY and reading.code == "NotRunning"
    assert arc_reading(answer(404, {"error": {"code": "ResourceNotFound"}}), AT).verdict == UNREADABLE


def test_the_probe() -> None:
    assert probe_reading(200, "", AT, expect=[200]).verdict == HEALTHY
    assert probe_reading(500, "", AT, expect=[200]).verdict == UNHEALTHY
    assert probe_reading(None, "could not connect in time", AT, expect=[200]).verdict == UNREADABLE


# -- the machine step ----------------------------------------------------------------------------------------------

CHECK = HealthCheck(after_seconds=120, within_seconds=600, signals=("vmHealth", "resourceHealth"))


def available() -> Any:
    return answer(200, {"properties": {"availabilityState": "Available",
                                       "reportedTime": iso(datetime.now(UTC) + timedelta(seconds=5))}})


def unavailable() -> Any:
    return answer(200, {"properties": {"availabilityState": "Unavailable",
                                       "reportedTime": iso(datetime.now(UTC) + timedelta(seconds=5))}})


def installed(h: Any) -> None:
    """Start and finish the machine's installation (Succeeded): it is then Verifying."""
    assert h.step() is StepResult.STARTED
    assert h.step() is StepResult.VERIFYING


def test_a_machine_that_comes_back_healthy_completes_after_one_round() -> None:
    h = harness({INSTANCE_VIEW.name: [answer(200, view()), NO_INSTALLATION, answer(200, view())],
                 RESOURCE_HEALTH.name: [available(), available()], INSTALL_PATCHES.name: [ACCEPTED],
                 POLL_OPERATION.name: [RESULT]}, health_check=CHECK, osType="Windows")
    installed(h)
    assert h.row["state"] == "Verifying" and h.queue.delays[-1] == 120  # `after`, then the first read
    assert json.loads(h.row["healthBaseline"])[0]["verdict"] == "healthy"
    assert h.step() is StepResult.COMPLETED
    assert h.row["health"] == "Healthy" and h.progressed == ["run-1"]  # told once, at the end, not at Verifying
    ops = [c["op"] for c in json.loads(h.row["armCalls"])]
    assert ops == ["instanceView", "resourceHealth", "instanceView", "installPatches", "poll", "instanceView",
                   "resourceHealth"]


def test_a_machine_unhealthy_until_within_runs_out_ends_unhealthy_naming_the_signal() -> None:
    check = HealthCheck(after_seconds=0, within_seconds=0, signals=("resourceHealth",))
    h = harness({RESOURCE_HEALTH.name: [available(), unavailable()], INSTANCE_VIEW.name: [NO_INSTALLATION],
                 INSTALL_PATCHES.name: [ACCEPTED], POLL_OPERATION.name: [RESULT]}, health_check=check,
                osType="Windows")
    installed(h)
    assert h.step() is StepResult.UNHEALTHY
    assert h.row["errorCode"] == "Unhealthy" and h.row["unhealthySignals"] == "resourceHealth"
    assert "resourceHealth unhealthy: Unavailable" in h.row["errorMessage"]
    assert h.row["status"] == "Succeeded"  # what Azure said is kept beside what PatchPilot saw


def test_an_unhealthy_reading_is_read_again_while_within_lasts() -> None:
    check = HealthCheck(after_seconds=0, within_seconds=600, signals=("resourceHealth",))
    h = harness({RESOURCE_HEALTH.name: [available(), unavailable(), available()],
                 INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [ACCEPTED],
                 POLL_OPERATION.name: [RESULT]}, health_check=check, osType="Windows")
    installed(h)
    assert h.step() is StepResult.VERIFYING and h.queue.delays[-1] == 60  # HEALTH_RECHECK_SECONDS
    assert h.row["health"] == "Verifying" and h.row["lastVerdict"] == "Unhealthy"
    assert h.step() is StepResult.COMPLETED and h.row["healthReads"] == 2


def test_a_forbidden_signal_is_health_unknown_never_a_pass() -> None:
    check = HealthCheck(after_seconds=0, within_seconds=0, signals=("resourceHealth",))
    forbidden = answer(403, {"error": {"code": "AuthorizationFailed", "message": "no access"}})
    h = harness({RESOURCE_HEALTH.name: [forbidden, forbidden], INSTANCE_VIEW.name: [NO_INSTALLATION],
                 INSTALL_PATCHES.name: [ACCEPTED], POLL_OPERATION.name: [RESULT]}, health_check=check,
                osType="Windows")
    installed(h)  # the baseline could not read it either: that is no reason to hold the machine back
    assert h.step() is StepResult.UNHEALTHY
    assert h.row["errorCode"] == "HealthUnknown" and "AuthorizationFailed" in h.row["errorMessage"]


def test_a_machine_unhealthy_before_patching_is_skipped_and_nothing_is_posted() -> None:
    h = harness({RESOURCE_HEALTH.name: [unavailable()]}, health_check=HealthCheck(0, 0, ("resourceHealth",)),
                osType="Windows")
    assert h.step() is StepResult.SKIPPED
    assert h.row["errorCode"] == "UnhealthyBeforePatching" and "installPatches" not in h.journal.kinds()
    assert json.loads(h.row["healthBaseline"])[0]["observed"].startswith("Unavailable")


def test_a_round_the_budget_interrupts_goes_on_without_reading_a_signal_twice() -> None:
    check = HealthCheck(after_seconds=0, within_seconds=0, signals=("vmHealth", "resourceHealth"))
    h = harness({INSTANCE_VIEW.name: [answer(200, view()), NO_INSTALLATION, answer(200, view())],
                 RESOURCE_HEALTH.name: [available(), available()], INSTALL_PATCHES.name: [ACCEPTED],
                 POLL_OPERATION.name: [RESULT]}, health_check=check, osType="Windows")
    installed(h)
    reads = iter([0.0, 30.0])  # the instance view now, the Resource Health read in 30 s

    @dataclass
    class Waits:
        def get(self, name: str, default: float) -> float:
            return next(reads, 0.0) if name == READS else default
    h.pacer.waits = Waits()  # type: ignore[assignment]
    assert h.step() is StepResult.PACED and h.queue.sent[-1].held == (READS,)
    assert [r["signal"] for r in json.loads(h.row["healthRound"])["readings"]] == ["vmHealth"]
    assert h.step() is StepResult.COMPLETED
    ops = [c["op"] for c in json.loads(h.row["armCalls"])]
    assert ops[-2:] == ["instanceView", "resourceHealth"] and ops.count("resourceHealth") == 2
    assert ops.count("instanceView") == 3  # baseline, settle, after: the interrupted round read it once


def test_alerts_are_read_page_by_page_each_page_paced() -> None:
    check = HealthCheck(0, 0, ("alerts",), alert_severities=("Sev1",))
    later = (datetime.now(UTC) + timedelta(seconds=30))
    page1 = answer(200, {"value": [], "nextLink": "https://management.azure.com/next"})
    page2 = answer(200, {"value": [alert("Sev1", "Fired", later)]})
    h = harness({LIST_ALERTS.name: [answer(200, {"value": []}), page1, page2], INSTANCE_VIEW.name: [NO_INSTALLATION],
                 INSTALL_PATCHES.name: [ACCEPTED], POLL_OPERATION.name: [RESULT]}, health_check=check,
                osType="Windows")
    installed(h)
    del h.journal.entries[:]
    assert h.step() is StepResult.UNHEALTHY
    assert h.journal.entries[:4] == [("reserve", READS), ("arm", "alerts"), ("reserve", READS), ("arm", "alerts")]
    assert h.row["unhealthySignals"] == "alerts"


def test_the_probe_is_called_with_the_machines_names_and_never_through_arm() -> None:
    seen: list[str] = []

    @dataclass
    class Reply:
        status: int | None
        error: str = ""

    def probe(url: str) -> Reply:
        seen.append(url)
        return Reply(500 if len(seen) > 1 else 200)
    check = HealthCheck(0, 0, ("probe",), probe_url="https://{machineName}.{resourceGroup}.example.com/{subscriptionId}")
    h = harness({INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [ACCEPTED],
                 POLL_OPERATION.name: [RESULT]}, health_check=check, probe=probe, osType="Windows")
    installed(h)
    assert h.step() is StepResult.UNHEALTHY and h.row["unhealthySignals"] == "probe"
    assert seen == [f"https://web-01.rg.example.com/{VM.subscription_id}"] * 2


def test_a_maintenance_configuration_carries_a_health_check_and_names_its_fields_under_properties() -> None:
    from shared.maintenance.configuration import parse_configuration
    from tests.unit.test_maintenance_stored import BODIES

    body = json.loads(json.dumps(BODIES[0]))
    body["properties"]["rollout"]["healthCheck"] = {"within": "PT10M", "signals": ["resourceHealth"]}
    config = parse_configuration("nightly", body)
    assert config.rollout is not None and config.rollout["healthCheck"]["withinSeconds"] == 600
    assert "Unhealthy" in config.rollout["failureOn"]
    body["properties"]["rollout"]["healthCheck"]["signals"] = ["heartbeat"]
    with pytest.raises(ValidationError) as caught:
        parse_configuration("nightly", body)
    assert caught.value.target == "properties.rollout.healthCheck.signals[0]"
    assert caught.value.message.startswith("properties.rollout.healthCheck.signals[0]")


def test_more_alert_pages_than_are_read_is_unreadable_never_a_pass() -> None:
    from shared.runs.health_check import MAX_ALERT_PAGES

    check = HealthCheck(0, 0, ("alerts",), alert_severities=("Sev1",))
    page = answer(200, {"value": [alert("Sev3", "Fired", datetime.now(UTC) + timedelta(seconds=30))],
                        "nextLink": "https://management.azure.com/next"})
    h = harness({LIST_ALERTS.name: [answer(200, {"value": []}), *[page] * MAX_ALERT_PAGES],
                 INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [ACCEPTED],
                 POLL_OPERATION.name: [RESULT]}, health_check=check, osType="Windows")
    installed(h)
    assert h.step() is StepResult.UNHEALTHY and h.row["errorCode"] == "HealthUnknown"
    assert "pages of fired alerts" in h.row["errorMessage"]


@pytest.mark.parametrize("transient", [
    answer(503, {"Message": "An error has occurred."}),
    answer(429, {"error": {"code": "TooManyRequests", "message": "slow"}}, Retry_After="7"),
], ids=["5xx", "429"])
def test_a_transient_failure_is_read_again_in_the_round_not_taken_as_unknown(transient: Any) -> None:
    check = HealthCheck(0, 0, ("resourceHealth",))
    h = harness({RESOURCE_HEALTH.name: [available(), transient, available()], INSTANCE_VIEW.name: [NO_INSTALLATION],
                 INSTALL_PATCHES.name: [ACCEPTED], POLL_OPERATION.name: [RESULT]}, health_check=check,
                osType="Windows")
    installed(h)
    assert h.step() is StepResult.PACED  # read again after ARM's Retry-After (or a backoff), same round
    assert h.queue.delays[-1] == (7 if transient.status == 429 else 5)
    assert h.step() is StepResult.COMPLETED and h.row["health"] == "Healthy"


def test_a_stopped_machine_is_not_unhealthy_before_patching_its_start_answers_it() -> None:
    stopped = answer(200, {"properties": {"availabilityState": "Unavailable", "reasonType": "Customer Initiated",
                                          "reportedTime": iso(datetime.now(UTC))}})
    not_running = answer(409, {"error": {"code": "OperationNotAllowed", "message": "Operation 'installPatches' is "
                                         "not allowed on VM 'x' since the VM is either deallocated or marked to be "
                                         "deallocated."}})
    h = harness({INSTANCE_VIEW.name: [answer(200, view(power="deallocated")), NO_INSTALLATION],
                 RESOURCE_HEALTH.name: [stopped], INSTALL_PATCHES.name: [not_running]},
                health_check=HealthCheck(0, 0, ("vmHealth", "resourceHealth")), osType="Windows")
    assert h.step() is StepResult.FAILED and h.row["errorCode"] == "VMNotRunning"  # as without a health check


def test_probe_urls_are_filled_in_percent_encoded_and_braces_must_close() -> None:
    from shared.validation.health_check import expand_probe_url

    names = {"machineName": "web 01", "resourceGroup": "rg(prod)", "subscriptionId": "s"}
    assert expand_probe_url("https://h/{machineName}/{resourceGroup}", names) == "https://h/web%2001/rg%28prod%29"
    with pytest.raises(ValidationError) as caught:
        parse_health_check({"signals": ["probe"], "probe": {"url": "https://x.example.com/{machineName"}})
    assert caught.value.target == "rollout.healthCheck.probe.url" and "unclosed" in caught.value.message
    with pytest.raises(ValidationError) as caught:
        parse_health_check({"signals": [None]})
    assert "is null" in caught.value.message
