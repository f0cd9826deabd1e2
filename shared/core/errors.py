"""Errors and ARM's error shape.

Hierarchy:
    PatchPilotError
    ├── ApiError                 an HTTP answer to give a caller: status + ARM error body
    │   └── ValidationError      400 for bad input, naming the offending field in `target`
    ├── ConflictError            a conditional write lost: another writer changed the row first (ETag)
    │   └── TargetsChangedError  a batch of machines changed while the rollout controller decided
    ├── StorageContentionError   writers kept racing on one Table row: fail the step so the queue retries
    ├── ArmError                 talking to Azure Resource Manager went wrong
    │   ├── ArmConnectionError   no HTTP answer at all (refused, reset, timed out)
    │   ├── ArmAuthenticationError   no token could be had (identity missing or refused): nothing sent
    │   └── UntrustedEndpointError   a URL outside the configured ARM endpoint (never sent)
    └── (also ValueError) SettingsError (core/settings), BadMessageError (core/messages), RecurrenceError
        and UnknownTimeZoneError (maintenance), CrontabError (scheduling): input that can never be used
The egress package sits below core and keeps its own (AddressRefusedError, EgressRefusedError: urllib3's
NewConnectionError, so requests reports a refused address as a connection failure).
"""

from __future__ import annotations

from typing import Any

QUOTE_LIMIT = 60  # characters of a caller's value an error message repeats
MAX_MESSAGE = 1000  # a backstop: no message or target is ever longer (a 1 MB body must not come back twice)
MAX_TARGET = 200


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """A caller's value for an error message: its repr, cut to a short prefix with its full length.

    `quoted("x" * 500_000)` → `'xxxx…' (500000 characters)`. Every message that repeats input uses this,
    so an answer never grows with the request.
    """
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return repr(value)
    return f"{text[:limit]!r}… ({len(text)} characters)"


def short_target(target: str | None) -> str | None:
    """A `target` (a field path, which may hold a caller's key) cut to MAX_TARGET characters."""
    if target is None or len(target) <= MAX_TARGET:
        return target
    return target[:MAX_TARGET - 1] + "…"


class PatchPilotError(Exception):
    """Base class for errors raised by PatchPilot itself."""


class ApiError(PatchPilotError):
    """An error answer for our own HTTP API, in ARM's shape so callers parse one format."""

    def __init__(self, status: int, code: str, message: str, *, target: str | None = None,
                 details: list[dict[str, str]] | None = None) -> None:
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE - 1] + "…"
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.target = short_target(target)
        self.details = details or []

    def body(self) -> dict[str, Any]:
        body = arm_error_body(self.code, self.message, self.target)
        if self.details:  # ARM's ErrorDetail list: {code, target, message} each
            body["error"]["details"] = self.details[:100]
        return body


class ValidationError(ApiError):
    """Bad input: always a 400 naming the field, raised before anything is written."""

    def __init__(self, message: str, *, target: str | None, code: str = "InvalidParameter") -> None:
        super().__init__(400, code, message, target=target)


class ConflictError(PatchPilotError):
    """A conditional (ETag) write lost to another writer; storage raises it in place of the SDK's
    ResourceModifiedError. A worker reads it as "another delivery won" and stops."""


class TargetsChangedError(ConflictError):
    """A transaction of conditional merges was refused because one of its rows had changed."""


class StorageContentionError(PatchPilotError):
    """Conditional writes kept losing to other writers. Not ConflictError on purpose: workers
    read that as "another delivery won" and drop the message; this must fail so it is delivered again."""


class ArmError(PatchPilotError):
    """A call to Azure Resource Manager could not be completed."""


class ArmConnectionError(ArmError):
    """No HTTP response was received; the request may be retried after a backoff."""


class ArmAuthenticationError(ArmError):
    """No token for ARM (the managed identity is missing or not allowed): nothing was sent. A setup error,
    not a transient one: retrying does not help until someone fixes the identity."""


class UntrustedEndpointError(ArmError):
    """A URL (typically a Location header) points outside ARM_ENDPOINT: the token must not go there."""

    def __init__(self, url: str, *, endpoint: str) -> None:
        super().__init__(f"refusing to call {url!r}: it is not on the configured ARM endpoint {endpoint!r}")
        self.url = url
        self.endpoint = endpoint


def arm_error_body(code: str, message: str, target: str | None = None) -> dict[str, Any]:
    """`{"error": {"code", "message", "target"}}` as ARM returns it."""
    error: dict[str, Any] = {"code": code, "message": message}
    if target is not None:
        error["target"] = target
    return {"error": error}
