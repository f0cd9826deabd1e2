"""Pure parts of assessments: schedule slots, scopes, request parsing, the not-running 409, power
states, run status while discovering, Azure timestamps, and the compliance report."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from requests.structures import CaseInsensitiveDict

from shared.arm.client import ArmResponse
from shared.arm.operations import VM_NOT_RUNNING, Failed, Retry, classify_read, classify_start
from shared.assessments.compliance import compliance_report
from shared.assessments.results import parse_azure_time, patch_facts
from shared.core.errors import ValidationError
from shared.core.messages import BadMessageError, parse_discovery
from shared.core.states import summarize, with_discovery
from shared.runs.discovery import os_type
from shared.scheduling.slots import current_slot
from shared.storage.fleet_store import inverted_key, patch_key
from shared.validation.assessment_request import parse_assessment_request
from shared.validation.scopes import covering_scopes, parse_scope, parse_scopes

SUB = "00000000-0000-0000-0000-0000000000aa"
VM = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("expression", "now", "slot"), [
    ("0 0 3 * * *", "2026-11-20T03:00:00", "2026-11-20T03:00:00"),  # on time
    ("0 0 3 * * *", "2026-11-20T09:41:00", "2026-11-20T03:00:00"),  # late (past_due): same slot
    ("0 0 3 * * *", "2026-11-20T02:59:50", "2026-11-20T03:00:00"),  # a few seconds early still counts
    ("0 0 3 * * *", "2026-11-20T02:58:00", "2026-11-19T03:00:00"),  # well before: yesterday's slot
    ("0 */5 * * * *", "2026-11-20T10:07:13", "2026-11-20T10:05:00"),
    ("0 30 2 * * SUN", "2026-11-20T12:00:00", "2026-11-15T02:30:00"),  # weekly, looks back days
    ("0 0 0 1 1 *", "2026-11-20T12:00:00", "2026-01-01T00:00:00"),  # yearly, looks back months
    ("*/10 * * * * *", "2026-11-20T10:00:04", "2026-11-20T10:00:30"),  # sub-minute: tolerance reaches ahead
])
def test_current_slot(expression: str, now: str, slot: str) -> None:
    assert current_slot(expression, at(now)) == at(slot)


def test_current_slot_of_a_date_that_never_comes_is_none() -> None:
    assert current_slot("0 0 0 30 2 *", at("2026-11-20T00:00:00")) is None


def test_scopes_parse_normalise_and_reject() -> None:
    assert parse_scope(f"/subscriptions/{SUB.upper()}/resourceGroups/RG-1", target="s").resource_group == "RG-1"
    assert parse_scope(f"/subscriptions/{SUB.upper()}", target="s").subscription_id == SUB
    with pytest.raises(ValidationError) as err:
        parse_scopes([f"/subscriptions/{SUB}", f"/subscriptions/{SUB}/resourceGroups/rg"], target="scopes")
    assert err.value.target == "scopes[1]"
    with pytest.raises(ValidationError):
        parse_scopes([], target="scopes")
    assert covering_scopes([parse_scope(f"/subscriptions/{SUB}/resourceGroups/rg", target="s"),
                            parse_scope(f"/subscriptions/{SUB}", target="s"),
                            parse_scope(f"/subscriptions/{SUB}", target="s")]) == (parse_scope(f"/subscriptions/{SUB}",
                                                                                               target="s"),)


def test_assessment_request_fingerprints_equal_for_equal_meaning() -> None:
    a = parse_assessment_request(json.dumps({"machines": [VM]}).encode(), max_bytes=10_000, max_machines=5)
    b = parse_assessment_request(json.dumps({"machines": [VM.upper().replace("SUBSCRIPTIONS", "subscriptions")
                                                          .replace("RESOURCEGROUPS", "resourceGroups")
                                                          .replace("PROVIDERS", "providers")
                                                          .replace("MICROSOFT.COMPUTE/VIRTUALMACHINES",
                                                                   "Microsoft.Compute/virtualMachines")]}).encode(),
                                 max_bytes=10_000, max_machines=5)
    c = parse_assessment_request(json.dumps({"scopes": [f"/subscriptions/{SUB}"]}).encode(), max_bytes=10_000,
                                 max_machines=5)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert a.operation == c.operation == "assessPatches" and c.scopes and not c.machines
    with pytest.raises(ValidationError) as err:
        parse_assessment_request(json.dumps({"machines": [VM] * 6}).encode(), max_bytes=10_000, max_machines=5)
    assert err.value.target == "machines"


def resp(status: int, body: Any = None, **headers: str) -> ArmResponse:
    return ArmResponse(status, CaseInsensitiveDict({k.replace("_", "-"): v for k, v in headers.items()}), body, "u")


@pytest.mark.parametrize("message", [
    "Operation 'assessPatches' is not allowed on VM 'vm1' since the VM is either deallocated or marked to be "
    "deallocated.",
    "The operation requires the VM to be running (or set to run).",
])
def test_409_for_a_vm_that_is_not_running_is_final(message: str) -> None:
    out = classify_start(resp(409, {"error": {"code": "OperationNotAllowed", "message": message}}),
                         default_retry_after=60)
    assert out == Failed(VM_NOT_RUNNING, message)


def test_409_for_an_operation_in_progress_is_still_a_conflict() -> None:
    out = classify_start(resp(409, {"error": {"code": "OperationNotAllowed", "message":
                                              "Operation 'assessPatches' is not allowed on VM 'vm1' since another "
                                              "operation is in progress."}}), default_retry_after=60)
    assert isinstance(out, Retry) and out.kind == "conflict"


def test_list_page_answers() -> None:
    assert classify_read(resp(200, {"value": []}), default_retry_after=60) is None
    throttled = classify_read(resp(429, Retry_After="17"), default_retry_after=60)
    assert isinstance(throttled, Retry) and throttled.retry_after == 17
    assert isinstance(classify_read(resp(503), default_retry_after=60), Retry)
    assert classify_read(resp(404, {"error": {"code": "SubscriptionNotFound", "message": "m"}}),
                         default_retry_after=60) == Failed("SubscriptionNotFound", "m")


def test_os_from_a_listed_vm() -> None:
    vm = {"properties": {"storageProfile": {"osDisk": {"osType": "Linux"}}}}
    assert os_type(vm) == "Linux" and os_type({}) == ""


def test_discovery_messages() -> None:
    msg = parse_discovery(json.dumps({"runId": "0123456789a-0123abcd", "scope": 1, "page": 4}))
    assert (msg.scope, msg.page) == (1, 4)
    for bad in ({"runId": "0123456789a-0123abcd", "scope": -1, "page": 0},
                {"runId": "0123456789a-0123abcd", "scope": 0, "page": True}, {"runId": "x", "scope": 0, "page": 0}):
        with pytest.raises(BadMessageError):
            parse_discovery(json.dumps(bad))


def test_run_status_waits_for_discovery_and_fails_on_an_unlisted_scope() -> None:
    done = [{"state": "Completed", "status": "Succeeded"}, {"state": "Skipped"}]
    status = summarize(done)["status"]
    assert status == "Succeeded" and summarize(done)["outcomes"] == {"succeeded": 1, "skipped": 1}
    assert with_discovery(status, [{"done": True}, {"done": False}], 2) == "InProgress"
    assert with_discovery(status, [{"done": True}, {"done": True, "errorCode": "AuthorizationFailed"}], 2) == "Failed"
    assert with_discovery(status, [{"done": True}], 2) == "Succeeded"
    # An empty subscription: nothing listed is a finished run, not one forever "Accepted".
    empty = summarize([])["status"]
    assert empty == "Accepted" and with_discovery(empty, [{"done": True}], 0) == "Succeeded"
    assert with_discovery(empty, [{"done": True, "errorCode": "SubscriptionNotFound"}], 0) == "Failed"
    assert with_discovery(empty, [], 0) == "Accepted"  # not a discovery run: unchanged


def test_azure_timestamps_and_keys() -> None:
    assert parse_azure_time("2020-04-24T21:02:04.2556154Z") == datetime(2020, 4, 24, 21, 2, 4, 255615, tzinfo=UTC)
    assert parse_azure_time("2020-04-24T21:02:04Z") == datetime(2020, 4, 24, 21, 2, 4, tzinfo=UTC)
    assert parse_azure_time("yesterday") is None and parse_azure_time(None) is None
    early, late = at("2026-01-01T00:00:00"), at("2026-01-02T00:00:00")
    assert inverted_key(late) < inverted_key(early) and len(inverted_key(early)) == 13
    assert patch_key({"kbId": "5034441"}) == patch_key({"kbId": "KB5034441"}) == "KB5034441"
    assert patch_key({"name": "openssl", "version": "3.0.2"}) == "openssl"


def row(**fields: Any) -> dict[str, Any]:
    return {"osType": "Windows", "powerState": "running", **fields}


def test_compliance_report_counts() -> None:
    now = at("2026-11-20T12:00:00")
    fresh, stale = "2026-11-20T03:00:00.000000Z", "2026-11-10T03:00:00.000000Z"
    facts = patch_facts([{"kbId": "1", "classifications": ["Security"]}, {"kbId": "2", "classifications": ["Critical"]},
                         {"name": "x", "classifications": ["Security"]}])
    rows = [
        row(assessedAt=fresh, criticalAndSecurityPatchCount=3, otherPatchCount=0, rebootPending=True, **facts),
        row(assessedAt=fresh, criticalAndSecurityPatchCount=0, otherPatchCount=0,
            **patch_facts([])),
        row(assessedAt=stale, criticalAndSecurityPatchCount=1, otherPatchCount=0, lastAttemptState="Failed",
            **patch_facts([{"kbId": "1", "classifications": ["Security"]}])),
        row(osType="Linux", powerState="deallocated", lastAttemptState="Skipped"),
        row(osType="Linux", lastAttemptState="TimedOut"),
    ]
    report = compliance_report(rows, now=now, freshness_hours=36, top=2)
    expected = {"machines": 5, "assessed": 2, "stale": 1, "neverAssessed": 2, "failed": 2, "notRunning": 1,
                "missingCriticalOrSecurity": 2, "rebootPending": 1, "upToDate": 1}
    assert {k: report[k] for k in expected} == expected
    assert report["byOsType"] == {"Linux": 2, "Windows": 3}
    assert report["byClassification"] == {"Critical": {"missingPatches": 1, "machines": 1},
                                          "Security": {"missingPatches": 3, "machines": 2}}
    assert report["mostWidespreadMissingPatches"] == [
        {"patch": "KB1", "classification": "Security", "machines": 2},
        {"patch": "KB2", "classification": "Critical", "machines": 1}]
    assert compliance_report([], now=now, freshness_hours=36)["machines"] == 0
    # The freshness window is the setting: 300 hours covers the machine assessed 10 days ago.
    assert compliance_report(rows, now=now, freshness_hours=300)["stale"] == 0


def test_the_snapshot_patch_list_fits_a_table_property() -> None:
    long_titles = [{"name": f"{'Cumulative Update for a very long product name ' * 3}{i}",
                    "classifications": ["Security"]} for i in range(400)]
    facts = patch_facts(long_titles)
    assert len(facts["missingPatches"]) <= 30_000 and facts["missingPatchesTruncated"] is True
    assert json.loads(facts["missingPatches"])  # still valid JSON, with what fits
    assert patch_facts(long_titles[:3])["missingPatchesTruncated"] is False


def test_compliance_report_by_subscription() -> None:
    now = at("2026-11-20T12:00:00")
    fresh, stale = "2026-11-20T03:00:00.000000Z", "2026-11-10T03:00:00.000000Z"
    a, b = "00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b"

    def vm(sub: str, name: str) -> str:
        return f"/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}"

    rows = [
        row(resourceId=vm(a, "1"), assessedAt=fresh, criticalAndSecurityPatchCount=2, otherPatchCount=0),
        row(resourceId=vm(a.upper(), "2"), assessedAt=stale, criticalAndSecurityPatchCount=1, otherPatchCount=0),
        row(resourceId=vm(b, "3"), assessedAt=fresh, criticalAndSecurityPatchCount=0, otherPatchCount=4),
        row(resourceId=vm(b, "4")),
    ]
    report = compliance_report(rows, now=now, freshness_hours=36)
    assert report["bySubscription"] == {
        a: {"machines": 2, "missingCriticalOrSecurity": 2, "stale": 1, "neverAssessed": 0},
        b: {"machines": 2, "missingCriticalOrSecurity": 0, "stale": 0, "neverAssessed": 1}}
    per_sub = report["bySubscription"].values()
    assert sum(s["missingCriticalOrSecurity"] for s in per_sub) == report["missingCriticalOrSecurity"]
