"""What Azure does, part III (#23): one table per family of field-reported behaviour, without HTTP. The same
rules against the simulator's answers are in tests/integration/test_azure_parity3.py.

1. Errors in other shapes: PascalCase `Error`, a bare `{"Message"}` with `x-ms-failure-cause`, a top-level
   `{"code", "message"}`, no body: Azure's words are kept, a 5xx is retried, never success.
2. Retry-After beats the counters, and a wait that cannot fit the machine's window ends it Skipped, not Failed.
3. An installation Azure ends `Failed` only because the window ran out is "window exceeded", not a failure.
4. Arc operations: Azure-AsyncOperation (operationstatus) is tracked, the result read from Location
   (operationresults); no Retry-After waits ARM's default.
5. Collisions: 409s while another operation or a host update holds the machine are waits, bounded by the window.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.arm.calls import INSTALL_PATCHES, INSTANCE_VIEW, POLL_OPERATION, READS
from shared.arm.errors import answer_error
from shared.arm.operations import (
    NO_RESULT,
    VM_NOT_RUNNING,
    Done,
    Failed,
    OutcomeUnknown,
    Pending,
    Retry,
    Started,
    classify_poll,
    classify_start,
)
from shared.core.counters import failure_kinds
from shared.core.records import RunSpec
from shared.core.states import machine_outcome, summarize
from shared.maintenance.limits import MIN_REMAINING
from shared.maintenance.window_guard import WithinWindow
from shared.runs.budget import Bucket, observe, penalize
from shared.runs.hooks import Fits, Skip, WaitContext
from shared.runs.machine_worker import StepResult
from tests.unit.test_machine_step import ENDPOINT, NO_INSTALLATION, VM, answer, harness

# -- 1. errors in other shapes ---------------------------------------------------------------------------------

PASCAL = {"Error": {"Code": "InvalidMaintenanceWindow", "Message": "Duration must be at least 1:30.",
                    "Details": [{"Code": "Inner", "Message": "why"}]}}


@pytest.mark.parametrize(("body", "cause", "code", "message"), [
    ({"error": {"code": "Conflict", "message": "busy"}}, None, "Conflict", "busy"),
    (PASCAL, None, "InvalidMaintenanceWindow", "Duration must be at least 1:30."),
    ({"Message": "An error has occurred."}, "service", "Http500",
     "An error has occurred. (x-ms-failure-cause: service)"),
    ({"code": "ResourceNotFound", "message": "gone"}, None, "ResourceNotFound", "gone"),
    ({"odata.error": {"code": "X", "message": {"lang": "en", "value": "odata words"}}}, None, "X", "odata words"),
    (None, "gateway", "Http500", "ARM answered 500 with no error body (x-ms-failure-cause: gateway)"),
    ("<html>oops</html>", None, "Http500", "ARM answered 500 with no error body"),
    ({"unrelated": 1}, None, "Http500", "ARM answered 500 with no error body"),
], ids=["arm", "pascal", "bare", "toplevel", "odata", "empty", "html", "other"])
def test_every_error_shape_is_read_and_azures_words_are_kept(body: Any, cause: str | None, code: str,
                                                             message: str) -> None:
    error = answer_error(body, 500, cause)
    assert (error["code"], error["message"]) == (code, message)
    headers = {"x_ms_failure_cause": cause} if cause else {}
    resp = answer(500, body, **headers)
    assert resp.error() == (code, message)
    retry = classify_start(resp, default_retry_after=60)  # a 5xx is retried, whatever it looks like
    assert isinstance(retry, Retry) and retry.kind == "transient" and retry.code == code


def test_pascal_case_details_are_kept_in_arms_shape() -> None:
    failed = classify_start(answer(400, PASCAL), default_retry_after=60)
    assert isinstance(failed, Failed) and failed.code == "InvalidMaintenanceWindow"
    assert failed.detail == {"code": "InvalidMaintenanceWindow", "message": "Duration must be at least 1:30.",
                             "details": [{"code": "Inner", "message": "why"}]}


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_poll_is_never_success(status: int) -> None:
    for mode in ("location", "async"):
        out = classify_poll(answer(status, {"Message": "An error has occurred."}), mode=mode, default_retry_after=60)
        assert isinstance(out, Retry) and out.kind == "transient"


# -- 2. Retry-After beats the counters; a wait weighed against the window -------------------------------------------

@pytest.mark.parametrize("retry_after", [6, 120, 1200])
def test_retry_after_wins_over_remaining_counters(retry_after: int) -> None:
    bucket = Bucket(READS, 125, 12.5, 0.5, 5)
    now = 1000.0
    tat = penalize(bucket, now, now, retry_after)  # the 429
    assert observe(bucket, tat, now, remaining=11_999) is None  # the counters say plenty: they move nothing back
    assert tat - bucket.tolerance + bucket.interval == pytest.approx(now + retry_after)


WINDOW_END = datetime(2026, 12, 4, 22, 0, tzinfo=UTC)


def window_ctx(seconds: int, *, configuration: str = "nightly") -> WaitContext:
    spec = RunSpec("installPatches", {}, configuration=configuration, window_end="2026-12-04T22:00:00.000000Z")
    return WaitContext("run-1", VM, spec, seconds, "TooManyRequests: try again later")


@pytest.mark.parametrize(("left_minutes", "seconds", "expected"), [
    (120, 1200, Fits()),  # a 20-minute Retry-After inside a 2-hour window: wait
    (25, 1200, Skip),  # 20 minutes of waiting leaves 5 minutes: not enough to start inside it
    (120, 60, Fits()),
    (int(MIN_REMAINING.total_seconds() // 60) + 2, 60, Fits()),
    (int(MIN_REMAINING.total_seconds() // 60) + 1, 120, Skip),
])
def test_a_wait_is_weighed_against_the_window(left_minutes: int, seconds: int, expected: Any) -> None:
    guard = WithinWindow(leases=None, targets=None,  # type: ignore[arg-type]
                         now=lambda: WINDOW_END - timedelta(minutes=left_minutes))
    verdict = guard.wait(window_ctx(seconds))
    if expected is Skip:
        assert isinstance(verdict, Skip) and verdict.code == "WindowClosed" and str(seconds) in verdict.message
    else:
        assert verdict == expected
    assert guard.wait(window_ctx(seconds, configuration="")) is None  # not a window's run: no opinion


def step_with_window(script: dict[str, list[Any]], verdict: Skip | Fits | None, **columns: Any) -> Any:
    seen: list[WaitContext] = []

    def hook(ctx: WaitContext) -> Skip | Fits | None:
        seen.append(ctx)
        return verdict
    h = harness(script, osType="Windows", **columns)
    h.ports = type(h.ports)(**{**h.ports.__dict__, "hooks": type(h.ports.hooks)(
        before_wait=(hook,), progressed=h.ports.hooks.progressed)})
    return h, seen


def test_a_long_retry_after_that_cannot_fit_the_window_skips_the_machine_now() -> None:
    throttled = answer(429, {"error": {"code": "TooManyRequests", "message": "try again after '1200' seconds"}},
                       Retry_After="1200", x_ms_ratelimit_remaining_subscription_reads="11999")
    h, seen = step_with_window({INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [throttled]},
                               Skip("WindowClosed", "cannot fit"))
    assert h.step() is StepResult.SKIPPED
    assert h.row["errorCode"] == "WindowClosed" and "TooManyRequests" in h.row["lastRetryReason"]
    assert seen[0].seconds == 1200  # Azure's Retry-After, not the counters, set the wait


# -- 5. collisions are waits, bounded by the window ------------------------------------------------------------------

HOST_UPDATE = {"error": {"code": "OperationNotAllowed", "message": "The operation 'installPatches' is not allowed "
                         "since the VM is waiting for an ongoing update to complete the resource."}}


@pytest.mark.parametrize(("message", "kind"), [
    (HOST_UPDATE["error"]["message"], "conflict"),
    ("Cannot perform 'assessPatches' operation because another patch operation is in progress.", "conflict"),
    ("The operation was stopped because another operation is in progress on the VM.", "conflict"),
    ("Operation 'installPatches' is not allowed on VM 'x' since the VM is either deallocated or marked to be "
     "deallocated.", VM_NOT_RUNNING),
    ("The operation requires the VM to be running (or set to run).", VM_NOT_RUNNING),
])
def test_which_409s_are_waits(message: str, kind: str) -> None:
    out = classify_start(answer(409, {"error": {"code": "OperationNotAllowed", "message": message}}),
                         default_retry_after=60)
    assert (out.kind if isinstance(out, Retry) else out.code) == kind  # type: ignore[union-attr]


def test_a_409_with_retry_after_0_or_unreadable_waits_the_conflict_backoff_not_zero() -> None:
    for hint in ("0", "soon"):
        out = classify_start(answer(409, HOST_UPDATE, Retry_After=hint), default_retry_after=60)
        assert isinstance(out, Retry) and out.retry_after is None  # CONFLICT_RETRY_SECONDS, not a tight loop
    h, _ = step_with_window({INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [
        answer(409, HOST_UPDATE, Retry_After="0")]}, Fits())
    assert h.step() is StepResult.RETRY_CONFLICT and h.queue.delays[-1] >= 1


def test_a_start_that_may_have_reached_azure_is_never_skipped_by_the_window() -> None:
    # a 504 on the POST: Azure may have accepted it, so "not started" would be a lie; it is retried (and the
    # instance view settles what Azure did), whatever the window says
    h, seen = step_with_window({INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [
        answer(504, {"Message": "An error has occurred."})]}, Skip("WindowClosed", "cannot fit"))
    assert h.step() is StepResult.RETRY_TRANSIENT and seen == [] and h.row["state"] == "Queued"


def test_a_409_that_names_no_busy_reason_keeps_its_retry_count_inside_a_window() -> None:
    odd = answer(409, {"error": {"code": "Conflict", "message": "The VM's provisioning state is Failed."}})
    h, _ = step_with_window({INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [odd]}, Fits(),
                            conflicts=50)
    assert h.step() is StepResult.FAILED and h.row["errorCode"] == "Conflict"  # counted, not waited out


def test_a_429_holds_the_shared_read_budget_until_retry_after_whatever_the_counters_say() -> None:
    from shared.arm.calls import POLLS
    from shared.runs.pacing import Pacer, record_call
    from tests.unit.test_budget import RowStore

    clock = [1000.0]
    buckets = {READS: Bucket(READS, 125, 12.5, 0.5, 5), POLLS: Bucket(POLLS, 125, 12.5, 0.5, 5)}
    pacer = Pacer(RowStore(), buckets, clock=lambda: clock[0], lease_tokens=1)  # type: ignore[arg-type]
    refused = answer(429, {"error": {"code": "SubscriptionRequestsThrottled",
                                     "message": "try again after '1200' seconds"}},
                     Retry_After="1200", x_ms_ratelimit_remaining_subscription_reads="11999")
    record_call(pacer, "sub", POLL_OPERATION, refused, default_retry_after=60)
    for name in (READS, POLLS):  # a poll's 429 is ARM's read limit: every read waits it out
        assert pacer.reserve("sub", (name,)) == pytest.approx(1200, abs=1)


def test_inside_a_window_409s_are_retried_past_the_count_limit_until_the_window_says_stop() -> None:
    conflict = answer(409, HOST_UPDATE)
    h, _ = step_with_window({INSTANCE_VIEW.name: [NO_INSTALLATION] * 2, INSTALL_PATCHES.name: [conflict] * 2},
                            Fits(), conflicts=50)  # far past MAX_CONFLICT_RETRIES
    assert h.step() is StepResult.RETRY_CONFLICT and h.row["state"] == "Queued"
    h2, _ = step_with_window({INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [conflict]}, None,
                             conflicts=50)  # not a window's run: the count limit applies
    assert h2.step() is StepResult.FAILED and h2.row["errorCode"] == "OperationNotAllowed"


# -- 3. the window ran out: not a broken machine ---------------------------------------------------------------------

def test_failed_only_because_the_window_ran_out_is_window_exceeded() -> None:
    ran_out = {"status": "Failed", "maintenanceWindowExceeded": True, "pendingPatchCount": 4, "failedPatchCount": 0,
               "installedPatchCount": 2, "error": {"code": "1", "message": "window exceeded", "details": []},
               "patches": []}
    location = f"{ENDPOINT}/subscriptions/{VM.subscription_id}/providers/Microsoft.Compute/locations/w/operations/1"
    h = harness({INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [answer(202, None, Location=location)],
                 POLL_OPERATION.name: [answer(200, ran_out)]}, osType="Windows")
    h.step()
    assert h.step() is StepResult.COMPLETED
    row = dict(h.row)
    assert row["errorCode"] == "MaintenanceWindowExceeded" and "4 patch(es) still pending" in row["errorMessage"]
    assert json.loads(row["errorDetail"])["details"][0]["message"] == "window exceeded"  # Azure's error, kept
    assert failure_kinds(row) == ("MaintenanceWindowExceeded",) and machine_outcome(row) == "windowExceeded"
    assert summarize([row])["status"] == "CompletedWithWarnings"
    for broken in ({**ran_out, "failedPatchCount": 1}, {**ran_out, "pendingPatchCount": 0}):  # a real failure
        h = harness({INSTANCE_VIEW.name: [NO_INSTALLATION],
                     INSTALL_PATCHES.name: [answer(202, None, Location=location)],
                     POLL_OPERATION.name: [answer(200, broken)]}, osType="Windows")
        h.step()
        h.step()
        assert h.row["errorCode"] != "MaintenanceWindowExceeded" and failure_kinds(dict(h.row))[0] == "Failed"


def test_a_result_location_off_the_arm_endpoint_is_refused_before_the_token_goes_there() -> None:
    h = harness({INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [
        answer(202, None, Azure_AsyncOperation=ARC_STATUS, Location="https://attacker.example.com/results/1")]},
        osType="Windows")
    assert h.step() is StepResult.FAILED and h.row["errorCode"] == "UntrustedPollingUrl"


# -- 4. Arc operations -------------------------------------------------------------------------------------------

ARC_STATUS = f"{ENDPOINT}/subscriptions/s/providers/Microsoft.HybridCompute/locations/w/operationstatus/op1"
ARC_RESULT = f"{ENDPOINT}/subscriptions/s/providers/Microsoft.HybridCompute/locations/w/operationresults/op1"


def test_arc_tracks_the_status_monitor_and_reads_the_result_from_location() -> None:
    started = classify_start(answer(202, None, Azure_AsyncOperation=ARC_STATUS, Location=ARC_RESULT),
                             default_retry_after=60)
    assert started == Started(ARC_STATUS, "async", 60, ARC_STATUS, ARC_RESULT)  # no Retry-After: ARM's 60 s
    running = {"name": "op1", "status": "InProgress", "startTime": "2026-12-04T10:00:00Z"}
    assert classify_poll(answer(200, running), mode="async", default_retry_after=60) == Pending(60)
    assert classify_poll(answer(200, {**running, "status": "Succeeded"}), mode="async",
                         default_retry_after=60) == Pending(0, fetch_result=True)
    failed = classify_poll(answer(200, {**running, "status": "Failed", "error": {"code": "E", "message": "m"}}),
                           mode="async", default_retry_after=60)
    assert isinstance(failed, Failed) and failed.code == "E"  # final, as azure-core's pollers take a Failed status
    canceled = classify_poll(answer(200, {**running, "status": "Canceled"}), mode="async", default_retry_after=60)
    assert isinstance(canceled, Failed) and canceled.code == "OperationCanceled"
    assert classify_poll(answer(202, None), mode="location", default_retry_after=60) == Pending(60, None)
    result = {"status": "Succeeded", "installedPatchCount": 3}
    assert classify_poll(answer(200, result), mode="location", default_retry_after=60) == Done(result)
    gone = classify_poll(answer(204, None), mode="location", default_retry_after=60)
    assert isinstance(gone, OutcomeUnknown) and gone.code == NO_RESULT
    # a status body from a Location is not the result yet (no hard-coded wait: ARM's default)
    assert classify_poll(answer(200, running), mode="location", default_retry_after=45) == Pending(45)


def test_the_step_follows_status_then_result() -> None:
    running = answer(200, {"name": "op1", "status": "InProgress", "startTime": "2026-12-04T10:00:00Z"})
    succeeded = answer(200, {"name": "op1", "status": "Succeeded", "startTime": "2026-12-04T10:00:00Z"})
    result = answer(200, {"status": "Succeeded", "installedPatchCount": 3, "failedPatchCount": 0, "patches": []})
    h = harness({INSTANCE_VIEW.name: [NO_INSTALLATION],
                 INSTALL_PATCHES.name: [answer(202, None, Azure_AsyncOperation=ARC_STATUS, Location=ARC_RESULT)],
                 POLL_OPERATION.name: [running, succeeded, result]}, osType="Windows")
    assert h.step() is StepResult.STARTED and h.row["pollMode"] == "async" and h.queue.delays[-1] == 60
    assert h.step() is StepResult.PENDING
    assert h.step() is StepResult.PENDING and h.row["pollUrl"] == ARC_RESULT and h.row["pollMode"] == "location"
    assert h.step() is StepResult.COMPLETED and h.row["installedPatchCount"] == 3
