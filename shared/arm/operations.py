"""Following Azure's long-running operations (installPatches, assessPatches, anything later).

Pure functions: an ARM response in, an `Outcome` out. The worker turns an outcome into a Table
update plus, maybe, a delayed queue message.

Which URL, Azure's rule (learn.microsoft.com/azure/azure-resource-manager/management/async-operations): when
the 202 has `Azure-AsyncOperation`, "always use it (instead of Location) to track the status"; `Location` only
when it is absent. The status answers 200 with `status` (InProgress until Succeeded, Failed or Canceled).
Both patch operations are `final-state-via: location`: Compute's status carries the result in
`properties.output`; HybridCompute's (`{"name", "status", "startTime"}`, Microsoft.HybridCompute/locations/
operationstatus) carries none, so on Succeeded the result is read from the `Location`
(.../operationresults/{id}), as Microsoft's SDK pollers do (azure-mgmt-core ARMPolling); a status Failed or
Canceled is final, with its error (the pollers stop there too). A `Location` answers 202 while running, then 200
with the result (a 200 that is no result, or a 204, is OutcomeUnknown `NoResult`). Without `Retry-After`, ARM's
contract is a 60 s wait (DEFAULT_RETRY_AFTER_SECONDS), never a hard-coded one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from shared.arm.client import ArmResponse
from shared.core.errors import ArmAuthenticationError, ArmConnectionError

RetryKind = Literal["throttled", "transient", "conflict"]
VM_NOT_RUNNING = "VMNotRunning"
# ARM answers a patch operation on a stopped VM with the same 409 OperationNotAllowed it uses while
# another operation runs, or while a platform host update holds the VM ("... since the VM is waiting for an
# ongoing update to complete the resource"); only the message tells them apart ("... since the VM is either
# deallocated or marked to be deallocated", "... the VM is not running"). Retrying cannot help the first; the
# others are waits. The phrases are specific: a bare "stopped" also matches "the operation was stopped because
# another operation is in progress", a wait.
_NOT_RUNNING_HINTS = ("deallocated", "not running", "vm is stopped", "vm stopped", "is in stopped state",
                      "requires the vm to be running")
# A 409 that says what holds the machine, and so will clear: another operation, or a platform host update. Only
# these (and 429s) are waited out for as long as a maintenance window lasts; any other 409 keeps its retry count.
_BUSY_HINTS = ("in progress", "another operation", "ongoing update", "operationinprogress", "is being updated")
TERMINAL_ASYNC = {"succeeded", "failed", "canceled"}
# An Arc machine whose agent is not Connected: HybridCompute's refusal is not documented; the simulator's guess
# (tools/azure_simulator/arc.py) is 409 with a detail of this code. Retrying cannot help until the agent reconnects.
MACHINE_NOT_CONNECTED = "MachineNotConnected"


def _not_connected(resp: ArmResponse) -> bool:
    details = (resp.error_detail() or {}).get("details")
    return isinstance(details, list) and any(
        isinstance(d, dict) and d.get("code") == MACHINE_NOT_CONNECTED for d in details)


@dataclass(frozen=True)
class Started:
    """202: the operation runs; poll `poll_url` after `retry_after` seconds. `result_url`: the Location to read
    the result from when the status (mode "async") says Succeeded without one."""

    poll_url: str
    mode: Literal["location", "async"]
    retry_after: int
    async_url: str | None = None
    result_url: str | None = None


@dataclass(frozen=True)
class Pending:
    retry_after: int
    poll_url: str | None = None  # a poll may hand out a new Location
    fetch_result: bool = False  # the status says Succeeded without the result: read it from the stored Location


@dataclass(frozen=True)
class Done:
    """The operation finished; `result` is its body. Finished is not succeeded: see result["status"]."""

    result: dict[str, Any]


@dataclass(frozen=True)
class Retry:
    kind: RetryKind
    retry_after: int | None
    code: str
    message: str
    # ARM's whole error (shared.arm.errors), kept if retries run out; not part of an outcome's identity
    detail: dict[str, Any] | None = field(default=None, compare=False)
    # a definite refusal that will clear (a 429, or a 409 naming what holds the machine): a window may bound it
    clears: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class Failed:
    code: str
    message: str
    # ARM's whole error, with details and innererror (shared.arm.errors); not part of the outcome's identity
    detail: dict[str, Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class OutcomeUnknown:
    """ARM accepted the operation but will not show its status (a poll answered 403): Azure goes on with
    the operation, so how it ends is unknown here. Not a failure of the operation; `detail` is ARM's error."""

    code: str
    message: str
    detail: dict[str, Any] | None = field(default=None, compare=False)


POLL_FORBIDDEN = "PollForbidden"
# What reading an operation status needs, and where: at the subscription, since the status URL is
# /subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/operations/{id}, outside any resource
# group (https://learn.microsoft.com/azure/update-manager/roles-permissions, scope "Machine subscription").
POLL_ACTION = "Microsoft.Compute/locations/operations/read"


def _failed(resp: ArmResponse) -> Failed:
    return Failed(*resp.error(), resp.error_detail())


Outcome = Started | Pending | Done | Retry | Failed | OutcomeUnknown


def _retryable(resp: ArmResponse, default_retry_after: int) -> Retry | None:
    code, message = resp.error()
    if resp.status == 429:
        return Retry("throttled", resp.retry_after(default_retry_after), code, message, resp.error_detail(),
                     clears=True)
    if resp.status == 408 or resp.status >= 500:
        header = resp.headers.get("Retry-After")
        return Retry("transient", resp.retry_after(0) if header else None, code, message, resp.error_detail())
    return None


def classify_read(resp: ArmResponse, *, default_retry_after: int) -> Retry | Failed | None:
    """A plain GET (a list page): None when it answered 200, else what to do about it."""
    if resp.status == 200:
        return None
    return _retryable(resp, default_retry_after) or _failed(resp)


def classify_start(resp: ArmResponse, *, default_retry_after: int) -> Outcome:
    """The answer to `POST .../installPatches` (or assessPatches)."""
    if resp.status == 202:
        location = resp.headers.get("Location")
        async_url = resp.headers.get("Azure-AsyncOperation")
        retry_after = resp.retry_after(default_retry_after)
        if async_url:  # Azure's rule: the status monitor when there is one (module docstring)
            return Started(async_url, "async", retry_after, async_url, location)
        if location:
            return Started(location, "location", retry_after)
        return Failed("MissingPollingUrl", "ARM accepted the operation but gave neither Location nor "
                      "Azure-AsyncOperation, so it cannot be followed")
    if resp.status == 200:
        return _done_or_failed(resp, default_retry_after)
    if resp.status == 409:
        code, message = resp.error()
        if _not_connected(resp):
            return Failed(MACHINE_NOT_CONNECTED, message, resp.error_detail())
        if any(hint in message.lower() for hint in _NOT_RUNNING_HINTS):
            return Failed(VM_NOT_RUNNING, message, resp.error_detail())
        hinted = resp.retry_after(0) if "Retry-After" in resp.headers else None
        # Retry-After 0 (or unreadable) on a 409 is no hint: a re-POST at once would loop until the window closes
        detail = resp.error_detail()
        busy = any(hint in f"{message} {detail}".lower() for hint in _BUSY_HINTS)
        return Retry("conflict", hinted or None, code, message, detail, clears=busy)
    retry = _retryable(resp, default_retry_after)
    if retry:
        return retry
    return _failed(resp)


def classify_poll(resp: ArmResponse, *, mode: str, default_retry_after: int) -> Outcome:
    """The answer to a GET of the stored polling URL.

    A 403 (ARM's `AuthorizationFailed`: typically a resource-group role without `POLL_ACTION` on the
    subscription) is `OutcomeUnknown`, not `Failed`: the operation was accepted and runs on regardless."""
    retry = _retryable(resp, default_retry_after)
    if retry:
        return retry
    if resp.status == 403:
        code, _ = resp.error()
        arc = "/microsoft.hybridcompute/" in resp.url.lower()
        grant = ("Microsoft.HybridCompute/locations/operationstatus/read, .../operationresults/read and "
                 ".../updateCenterOperationResults/read" if arc else POLL_ACTION)
        history = "the machine's update history in Azure Update Manager" if arc else \
            "the VM's patch history (instanceView.patchStatus)"
        return OutcomeUnknown(
            POLL_FORBIDDEN,
            f"ARM refused to show this operation's status (403 {code}; its error is in details) although it "
            f"accepted the operation, which goes on in Azure: its outcome is unknown here. Grant {grant} "
            f"at the machine's subscription (the PatchPilot poll role in infra/) and see {history} for how it ended",
            resp.error_detail(),
        )
    if mode == "async":
        if resp.status != 200 or not isinstance(resp.body, dict):
            return _failed(resp)
        status = str(resp.body.get("status", "")).lower()
        if status not in TERMINAL_ASYNC:
            return Pending(resp.retry_after(default_retry_after))
        output = (resp.body.get("properties") or {}).get("output")
        if isinstance(output, dict):
            return Done(output)
        detail = resp.error_detail()
        err = detail or {}
        failed = Failed(str(err.get("code") or f"Operation{status.title()}"),
                        str(err.get("message") or f"the operation ended {status} without a result"), detail)
        if status == "succeeded":  # HybridCompute's status carries no result: it is at the Location
            return Pending(0, fetch_result=True)
        return failed  # Failed or Canceled is final, with the status's error (as azure-core's pollers take it)
    if resp.status == 202:
        return Pending(resp.retry_after(default_retry_after), resp.headers.get("Location"))
    if resp.status == 200:
        return _done_or_failed(resp, default_retry_after)
    if resp.status == 204:  # finished, with no result to read how: not a failure, not a success
        return OutcomeUnknown(NO_RESULT, "the operation finished but its Location answered 204 No Content, so "
                              "how it ended cannot be read; see the machine's update history")
    return _failed(resp)


NO_RESULT = "NoResult"


# What makes a body an operation's result (VirtualMachineInstallPatchesResult / AssessPatchesResult, HybridCompute's
# Machine*PatchesResult), not a status (`{"name", "status", "startTime"}`): a 200 without any is no result.
RESULT_KEYS = ("installationActivityId", "assessmentActivityId", "installedPatchCount", "failedPatchCount",
               "pendingPatchCount", "availablePatchCount", "patches", "availablePatches", "rebootStatus",
               "availablePatchCountByClassification", "lastModifiedDateTime", "maintenanceWindowExceeded",
               "excludedPatchCount", "notSelectedPatchCount", "error", "errorDetails")


def _done_or_failed(resp: ArmResponse, default_retry_after: int = 60) -> Outcome:
    if not isinstance(resp.body, dict):
        return Failed("InvalidResult", "ARM answered 200 without a JSON result body")
    if str(resp.body.get("status", "")).lower() in ("inprogress", "running", "notstarted", "accepted"):
        return Pending(resp.retry_after(default_retry_after))  # a status body from a Location: not the result yet
    if not any(key in resp.body for key in RESULT_KEYS):  # an operation's Succeeded is not the installation's
        return OutcomeUnknown(NO_RESULT, f"the operation ended {resp.body.get('status') or 'without a status'} but "
                              "ARM answered with no result to read how the installation went; see the machine's "
                              "update history")
    return Done(resp.body)


def no_answer(exc: ArmConnectionError | ArmAuthenticationError) -> Retry:
    """No HTTP answer: the connection failed, or no token could be had (nothing was sent). Both retry
    with backoff; the machine's error code says which, so a missing identity is not read as a network fault."""
    code = "AuthenticationFailed" if isinstance(exc, ArmAuthenticationError) else "ConnectionError"
    return Retry("transient", None, code, str(exc))
