"""ARM's error objects as operations and ARM answers carry them: recognise, bound, store, show.

Shape (common-types ApiError, the `error` of VirtualMachineInstallPatchesResult and
VirtualMachineAssessPatchesResult, and of every ARM error answer):
    {"code": str, "message": str, "target": str?, "details": [ApiErrorBase...]?, "innererror": {...}?}
Each detail is itself {"code", "message", "target"} (newer ARM errors nest `details` there too).
`details` is where the patch extension says *why*: an install result's
`{"code": "1", "message": "1 error/s reported.", "details": [{"code": "UA_ESM_REQUIRED", ...}]}` names
the Linux package skipped for want of Ubuntu Pro, the Windows update that failed to download.

Rules:
- No error: not an object, or one whose `code` is empty or "0" and that has no `details` and no
  `innererror` (a succeeded operation's `{"code": "0", "details": []}` and its
  `"0 error/s reported."`), or one with nothing in it at all.
- Kept in ARM's shape, every key as given, messages cut to MAX_MESSAGE characters, details nested
  at most MAX_DEPTH deep.
- Bounded to MAX_ERROR_CHARS characters of JSON, so it fits one Table storage string property
  (64 KiB, i.e. 32K UTF-16 characters; JSON escapes non-ASCII, so characters are bytes/2 at most).
  When it does not fit, an oversized `innererror` is replaced by {"truncated": true, "json": first
  part}, then details are kept in order while they fit and the last detail says how many were left
  out: {"code": "DetailsTruncated", "message": "..."}.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

MAX_ERROR_CHARS = 30_000
MAX_MESSAGE = 4_000
MAX_INNER_CHARS = 8_000
MAX_DEPTH = 3
TRUNCATED_CODE = "DetailsTruncated"
NO_CODE = "OperationError"  # the errorCode column of an error that has a message but no code


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _clean(value: dict[str, Any], depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key == "details":
            if depth < MAX_DEPTH and isinstance(item, list):
                out[key] = [_clean(d, depth + 1) if isinstance(d, dict) else d for d in item]
            elif isinstance(item, list) and item:
                out[key] = [{"code": TRUNCATED_CODE, "message": f"{len(item)} nested details left out"}]
        elif isinstance(item, str) and key in ("message", "code", "target"):
            out[key] = item if len(item) <= MAX_MESSAGE else item[:MAX_MESSAGE] + "…"
        else:
            out[key] = item
    return out


def is_error(value: object) -> bool:
    """Does this `error` report a problem? (See the module's rules.)"""
    if not isinstance(value, dict):
        return False
    code = str(value.get("code") if value.get("code") is not None else "").strip()
    has_more = bool(value.get("details")) or bool(value.get("innererror"))
    if has_more:
        return True
    if code == "0":
        return False
    return bool(code) or bool(str(value.get("message") or "").strip())


_KEYS = {"code": "code", "message": "message", "target": "target", "details": "details", "innererror": "innererror",
         "additionalinfo": "additionalInfo"}


def arm_keys(value: Any, depth: int = 0) -> Any:
    """An error object with ARM's key spelling (`code`, `message`, `details`...) whatever case it came in:
    Microsoft.Maintenance answers `{"Error": {"Code", "Message"}}` (terraform-provider-azurerm#29738,
    azure-cli#28630). Other keys are kept as given."""
    if not isinstance(value, dict) or depth > MAX_DEPTH + 1:
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = _KEYS.get(str(key).lower()) or str(key)
        out[name] = [arm_keys(d, depth + 1) for d in item] if name == "details" and isinstance(item, list) \
            else item
    return out


def answer_error(body: object, status: int, failure_cause: str | None = None) -> dict[str, Any]:
    """The error of an ARM answer (4xx, 5xx), in ARM's shape whatever shape it came in, never empty:
    `{"error": {...}}` or `{"Error": {...}}` (any key case), a bare `{"code", "message"}`, a bare
    `{"Message": "An error has occurred."}` without a code (an ARM front end during an incident), or no JSON at
    all. Without a code the code is `Http<status>`. `failure_cause` is ARM's `x-ms-failure-cause` header
    (`service`, `gateway`...), kept in the message: it says who failed."""
    found: Any = None
    if isinstance(body, dict):
        wrapped = next((v for k, v in body.items() if str(k).lower() in ("error", "odata.error")), None)
        if isinstance(wrapped, str) and wrapped.strip():  # {"error": "text"}
            wrapped = {"message": wrapped}
        found = arm_keys(wrapped if isinstance(wrapped, dict) else body)
        if not isinstance(found, dict) or not (found.get("code") or found.get("message")):
            found = None
    error: dict[str, Any] = dict(found) if found else {}
    error["code"] = str(error.get("code") or f"Http{status}")
    message = error.get("message")
    if isinstance(message, dict):  # OData's {"lang", "value"}
        message = message.get("value")
    error["message"] = str(message or f"ARM answered {status} with no error body")
    if failure_cause:
        error["message"] += f" (x-ms-failure-cause: {failure_cause})"
    return error


def result_error(body: object) -> Any:
    """The `error` of a result or an operation status (a 2xx body), whatever its key case, in ARM's key spelling."""
    if not isinstance(body, dict):
        return None
    return next((arm_keys(v) for k, v in body.items() if str(k).lower() == "error"), None)


def operation_error(value: object, *, limit: int = MAX_ERROR_CHARS) -> dict[str, Any] | None:
    """The error to keep, in ARM's shape and at most `limit` characters of JSON; None for no error."""
    if not is_error(value):
        return None
    assert isinstance(value, dict)
    error = _clean(value, 0)
    if len(_compact(error)) <= limit:
        return error
    inner = error.get("innererror")
    if inner is not None and len(_compact(inner)) > MAX_INNER_CHARS:
        error["innererror"] = {"truncated": True, "json": _compact(inner)[:MAX_INNER_CHARS]}
    details = error.pop("details", None)
    if not isinstance(details, list):
        return _last_resort(error, limit)
    kept: list[Any] = []
    reserve = 300  # room for the marker detail
    size = len(_compact({**error, "details": []}))
    for detail in details:
        piece = len(_compact(detail)) + 1
        if size + piece + reserve > limit:
            break
        kept.append(detail)
        size += piece
    left_out = len(details) - len(kept)
    if left_out:
        kept.append({"code": TRUNCATED_CODE,
                     "message": f"{left_out} of {len(details)} details were left out: PatchPilot keeps at most "
                                f"{limit} characters of an error (Table storage's 64 KiB property limit)"})
    error["details"] = kept
    return error if len(_compact(error)) <= limit else _last_resort(error, limit)


def _last_resort(error: dict[str, Any], limit: int) -> dict[str, Any]:
    """Only code, message and target, cut to fit (a pathological error: huge unknown keys)."""
    slim: dict[str, Any] = {k: error[k] for k in ("code", "message", "target") if k in error}
    slim["message"] = str(slim.get("message", ""))[: max(0, limit - 500)]
    slim["details"] = [{"code": TRUNCATED_CODE, "message": "the rest of this error was too large to keep"}]
    return slim


def own_error_columns(code: str, message: str, cause: dict[str, Any] | None = None) -> dict[str, Any]:
    """Columns for PatchPilot's own error (`code`, `message`) with the ARM error behind it, if any:
    ARM's error with our message when the codes agree (retries ran out), else ours with ARM's as its
    one detail (VMNotRunning over ARM's 409 OperationNotAllowed). Without a cause, no errorDetail:
    code and message say it all."""
    if cause is None:
        return {**error_columns({"code": code, "message": message}), "errorDetail": ""}
    if str(cause.get("code")) == code:
        error = {**cause, "message": message}
    else:
        error = {"code": code, "message": message, "details": [cause]}
    return error_columns(operation_error(error) or {"code": code, "message": message})


def error_columns(error: dict[str, Any] | None) -> dict[str, Any]:
    """Table columns for a machine or assessment record: code and message (queried, shown in lists)
    and the whole bounded error as JSON (`errorDetail`). Empty strings clear an earlier error."""
    if error is None:
        return {"errorCode": "", "errorMessage": "", "errorDetail": ""}
    return {"errorCode": str(error.get("code") or NO_CODE),
            "errorMessage": str(error.get("message") or "")[:MAX_MESSAGE], "errorDetail": _compact(error)}


def stored_error(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The error as the API shows it, from a record's columns: the kept ARM error when there is one,
    else {"code", "message"} (PatchPilot's own errors), else None."""
    code = row.get("errorCode")
    detail = row.get("errorDetail")
    if detail:
        try:
            parsed = json.loads(detail)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and str(parsed.get("code") or NO_CODE) == str(code):
            return parsed
    if code:
        return {"code": code, "message": row.get("errorMessage", "")}
    return None
