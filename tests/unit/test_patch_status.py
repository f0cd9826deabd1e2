"""Settling an installPatches whose answer was lost, from the VM's instance view: which installation
is this run's (started at or after the first claim), and what it says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from requests.structures import CaseInsensitiveDict

from shared.arm.client import ArmResponse
from shared.arm.operations import Done, Failed, Pending, Retry
from shared.arm.patch_status import (
    OUTCOME_UNKNOWN,
    classify_instance_view,
    installation_outcome,
    installation_since,
    parse_time,
)
from shared.rollouts.plan import failure_kind

# azure-rest-api-specs Compute examples, VirtualMachine_Get_InstanceView.json: its patchStatus, verbatim.
EXAMPLE = {"patchStatus": {
    "availablePatchSummary": {
        "status": "Succeeded", "assessmentActivityId": "68f8b292-dfc2-4646-9781-33cc88631968", "rebootPending": True,
        "criticalAndSecurityPatchCount": 1, "otherPatchCount": 2, "startTime": "2020-04-24T21:02:04.2556154Z",
        "lastModifiedTime": "2020-04-24T21:02:04.2556154Z", "error": None},
    "lastPatchInstallationSummary": {
        "status": "Succeeded", "installationActivityId": "68f8b292-dfc2-4646-9981-33cc88631968",
        "maintenanceWindowExceeded": False, "notSelectedPatchCount": 1, "excludedPatchCount": 1,
        "pendingPatchCount": 1, "installedPatchCount": 1, "failedPatchCount": 1,
        "startTime": "2020-04-24T21:02:04.2556154Z", "lastModifiedTime": "2020-04-24T21:02:04.2556154Z",
        "error": None},
}}
CLAIMED = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def view(status: str = "Succeeded", start: datetime | str = CLAIMED + timedelta(seconds=3),
         activity: str = "a1") -> dict[str, Any]:
    return {"patchStatus": {"lastPatchInstallationSummary": {
        "status": status, "installationActivityId": activity, "maintenanceWindowExceeded": False,
        "notSelectedPatchCount": 1, "excludedPatchCount": 0, "pendingPatchCount": 0, "installedPatchCount": 4,
        "failedPatchCount": 0, "startTime": start if isinstance(start, str) else start.isoformat(),
        "lastModifiedTime": "2026-03-01T12:20:00.1234567Z", "error": None}}}


def resp(status: int, body: Any = None, **headers: str) -> ArmResponse:
    return ArmResponse(status, CaseInsensitiveDict(headers), body, "u")


def test_an_installation_started_after_the_claim_is_this_runs() -> None:
    assert installation_since(view(), CLAIMED) is not None
    assert installation_since(view(start=CLAIMED), CLAIMED) is not None  # the same instant counts


def test_an_installation_started_before_the_claim_is_not_even_by_a_second() -> None:
    assert installation_since(view(start=CLAIMED - timedelta(seconds=1)), CLAIMED) is None
    assert installation_since(view(start=CLAIMED - timedelta(days=3)), CLAIMED) is None


def test_no_installation_at_all_means_the_post_never_reached_azure() -> None:
    assert installation_since({"patchStatus": {"availablePatchSummary": {"status": "Succeeded"}}}, CLAIMED) is None
    assert installation_since({}, CLAIMED) is None
    assert installation_since(None, CLAIMED) is None
    unstamped = view()
    unstamped["patchStatus"]["lastPatchInstallationSummary"]["startTime"] = None
    assert installation_since(unstamped, CLAIMED) is None


def test_azures_seven_digit_times_and_offsets_parse() -> None:
    assert parse_time("2020-04-24T21:02:04.2556154Z") == datetime(2020, 4, 24, 21, 2, 4, 255615, tzinfo=UTC)
    assert parse_time("2020-04-24T21:02:04.2556154+00:00") == parse_time("2020-04-24T21:02:04.2556154Z")
    assert parse_time("2020-04-24T21:02:04") is None  # no zone: cannot be compared
    assert parse_time("yesterday") is None and parse_time(7) is None
    after = view(start="2026-03-01T12:00:00.0000001Z")
    assert installation_since(after, CLAIMED) is not None


def test_the_spec_example_reads_as_a_finished_installation() -> None:
    summary = installation_since(EXAMPLE, datetime(2020, 4, 24, 21, 0, tzinfo=UTC))
    assert summary is not None
    out = installation_outcome(summary, retry_after=60)
    assert isinstance(out, Done)
    assert out.result["installationActivityId"] == "68f8b292-dfc2-4646-9981-33cc88631968"
    assert out.result["startDateTime"] == "2020-04-24T21:02:04.2556154Z"
    assert out.result["status"] == "Succeeded" and out.result["failedPatchCount"] == 1


def test_in_progress_is_followed_and_finished_is_recorded_in_result_names() -> None:
    assert installation_outcome(view(status="InProgress")["patchStatus"]["lastPatchInstallationSummary"],
                                retry_after=30) == Pending(30)
    done = installation_outcome(view(status="CompletedWithWarnings")["patchStatus"]["lastPatchInstallationSummary"],
                                retry_after=30)
    assert isinstance(done, Done)
    assert done.result == {"status": "CompletedWithWarnings", "installationActivityId": "a1",
                           "maintenanceWindowExceeded": False, "excludedPatchCount": 0, "notSelectedPatchCount": 1,
                           "pendingPatchCount": 0, "installedPatchCount": 4, "failedPatchCount": 0,
                           "startDateTime": (CLAIMED + timedelta(seconds=3)).isoformat()}


def test_polling_the_instance_view_follows_only_the_installation_found() -> None:
    assert classify_instance_view(resp(200, view(status="InProgress")), "a1", default_retry_after=20) == Pending(20)
    assert isinstance(classify_instance_view(resp(200, view()), "a1", default_retry_after=20), Done)
    replaced = classify_instance_view(resp(200, view(activity="other")), "a1", default_retry_after=20)
    assert isinstance(replaced, Failed) and replaced.code == OUTCOME_UNKNOWN
    busy = resp(429, {"error": {"code": "TooMany", "message": "m"}}, **{"Retry-After": "7"})
    throttled = classify_instance_view(busy, "a1", default_retry_after=20)
    assert isinstance(throttled, Retry) and throttled.kind == "throttled" and throttled.retry_after == 7
    assert isinstance(classify_instance_view(resp(503), "a1", default_retry_after=20), Retry)
    gone = classify_instance_view(resp(404, {"error": {"code": "ResourceNotFound", "message": "m"}}), "a1",
                                  default_retry_after=20)
    assert isinstance(gone, Failed) and gone.code == "ResourceNotFound"


def test_an_unknown_outcome_does_not_spend_a_rollouts_error_budget() -> None:
    unknown = {"state": "Failed", "errorCode": OUTCOME_UNKNOWN}
    assert failure_kind(unknown) is None
    assert failure_kind({"state": "Failed", "errorCode": "OperationFailed"}) == "Failed"
