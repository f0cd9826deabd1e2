"""The long-running-operation classifier: every ARM answer maps to exactly one next move."""

from __future__ import annotations

from typing import Any

from requests.structures import CaseInsensitiveDict

from shared.arm.client import ArmResponse, parse_retry_after
from shared.arm.operations import (
    Done,
    Failed,
    OutcomeUnknown,
    Pending,
    Retry,
    Started,
    classify_poll,
    classify_start,
)

LOC = "https://management.azure.com/subscriptions/s/providers/Microsoft.Compute/locations/westus/operations/op1"


def resp(status: int, body: Any = None, **headers: str) -> ArmResponse:
    return ArmResponse(status, CaseInsensitiveDict({k.replace("_", "-"): v for k, v in headers.items()}), body, "u")


def test_202_with_location_and_async_operation_tracks_the_status_and_keeps_the_location_for_the_result() -> None:
    # Azure's rule: "If your operation returns [Azure-AsyncOperation], always use it (instead of Location) to track
    # the status" (learn.microsoft.com/azure/azure-resource-manager/management/async-operations).
    out = classify_start(resp(202, Location=LOC + "?monitor=true", Azure_AsyncOperation=LOC, Retry_After="15"),
                         default_retry_after=60)
    assert out == Started(LOC, "async", 15, LOC, LOC + "?monitor=true")


def test_202_without_retry_after_waits_arms_default() -> None:
    out = classify_start(resp(202, Location=LOC), default_retry_after=60)
    assert isinstance(out, Started) and out.retry_after == 60


def test_202_with_only_async_operation_uses_it() -> None:
    out = classify_start(resp(202, Azure_AsyncOperation=LOC), default_retry_after=60)
    assert isinstance(out, Started) and out.mode == "async"


def test_202_without_any_url_fails() -> None:
    assert isinstance(classify_start(resp(202), default_retry_after=60), Failed)


def test_synchronous_200_is_done() -> None:
    out = classify_start(resp(200, {"status": "Succeeded", "installedPatchCount": 1}), default_retry_after=60)
    assert out == Done({"status": "Succeeded", "installedPatchCount": 1})


def test_finished_is_not_succeeded_the_status_is_kept() -> None:
    out = classify_poll(resp(200, {"status": "Failed", "error": {"code": "X"}, "failedPatchCount": 1}),
                        mode="location", default_retry_after=60)
    assert isinstance(out, Done) and out.result["status"] == "Failed"
    # a 200 that is no result (an operation status: no counts, no activity id) is not taken for one
    status_only = classify_poll(resp(200, {"name": "op", "status": "Succeeded", "startTime": "2026-12-04T10:00:00Z"}),
                                mode="location", default_retry_after=60)
    assert isinstance(status_only, OutcomeUnknown) and status_only.code == "NoResult"


def test_409_is_a_conflict_retry() -> None:
    out = classify_start(resp(409, {"error": {"code": "Conflict", "message": "busy"}}), default_retry_after=60)
    assert out == Retry("conflict", None, "Conflict", "busy")


def test_429_waits_exactly_retry_after() -> None:
    out = classify_start(resp(429, {"error": {"code": "TooManyRequests", "message": "m"}}, Retry_After="1200"),
                         default_retry_after=60)
    assert out == Retry("throttled", 1200, "TooManyRequests", "m")


def test_5xx_is_transient_without_hint() -> None:
    out = classify_start(resp(503, None), default_retry_after=60)
    assert isinstance(out, Retry) and out.kind == "transient" and out.retry_after is None


def test_other_4xx_fails_with_arms_error() -> None:
    out = classify_start(resp(400, {"error": {"code": "InvalidParameter", "message": "bad", "target": "x"}}),
                         default_retry_after=60)
    assert out == Failed("InvalidParameter", "bad")


def test_poll_202_is_pending_and_may_move_location() -> None:
    out = classify_poll(resp(202, Location=LOC + "2", Retry_After="5"), mode="location", default_retry_after=60)
    assert out == Pending(5, LOC + "2")


def test_poll_404_fails() -> None:
    assert isinstance(classify_poll(resp(404, None), mode="location", default_retry_after=60), Failed)


FORBIDDEN = {"error": {"code": "AuthorizationFailed", "message": (
    "The client 'c' with object id 'o' does not have authorization to perform action "
    "'Microsoft.Compute/locations/operations/read' over scope '/subscriptions/s' or the scope is invalid. "
    "If access was recently granted, please refresh your credentials.")}}


def test_poll_403_means_the_outcome_is_unknown_not_that_the_operation_failed() -> None:
    for mode in ("location", "async"):
        out = classify_poll(resp(403, FORBIDDEN), mode=mode, default_retry_after=60)
        assert isinstance(out, OutcomeUnknown), mode
        assert out.code == "PollForbidden"
        assert "Microsoft.Compute/locations/operations/read" in out.message and "subscription" in out.message
        assert out.detail == FORBIDDEN["error"]  # ARM's error, whole


def test_start_403_is_a_failure() -> None:
    # Refused before anything ran: installPatches was never accepted, so this one is known.
    out = classify_start(resp(403, FORBIDDEN), default_retry_after=60)
    assert isinstance(out, Failed) and out.code == "AuthorizationFailed"


def test_async_mode_reads_status_and_output() -> None:
    running = classify_poll(resp(200, {"status": "InProgress"}, Retry_After="3"), mode="async", default_retry_after=60)
    assert running == Pending(3)
    done = classify_poll(resp(200, {"status": "Succeeded", "properties": {"output": {"status": "Succeeded"}}}),
                         mode="async", default_retry_after=60)
    assert done == Done({"status": "Succeeded"})
    failed = classify_poll(resp(200, {"status": "Failed", "error": {"code": "E", "message": "m"}}), mode="async",
                           default_retry_after=60)
    assert failed == Failed("E", "m")  # final, with the status's error (as azure-core's pollers take it)


def test_retry_after_parsing() -> None:
    assert parse_retry_after("17", 60) == 17
    assert parse_retry_after(None, 60) == 60
    assert parse_retry_after("soon", 60) == 60
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 60) == 0
