"""ARM's error shape, raised anywhere and rendered once by the HTTP layer."""

from __future__ import annotations

from typing import Any


class ArmError(Exception):
    """An ARM error response: HTTP status plus `{"error": {code, message, target?, details?}}`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        target: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        bucket: str | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.target = target
        self.details = details
        self.headers = dict(headers or {})
        self.bucket = bucket  # for a 429: which throttling bucket refused (the simulator's 429 counts)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target is not None:
            error["target"] = self.target
        if self.details:
            error["details"] = self.details
        return {"error": error}


def invalid_parameter(target: str, message: str) -> ArmError:
    return ArmError(400, "InvalidParameter", message, target=target)


# error_shape (FaultSettings) -> what the answer's body looks like; "arm" is ArmError.body().
BARE_MESSAGE = "An error has occurred."
FAILURE_CAUSE = ("x-ms-failure-cause", "service")


def _pascal(detail: dict[str, Any]) -> dict[str, Any]:
    return {key[:1].upper() + key[1:]: value for key, value in detail.items()}


def render_error(
    err: ArmError, shape: str = "arm", *, failure_cause: bool = False
) -> tuple[dict[str, Any], dict[str, str]]:
    """The body and headers an error is answered with, in one of the shapes Azure's services answer with.

    - "arm": `{"error": {"code", "message", "target"?, "details"?}}` (ARM's and Compute's);
    - "pascal": `{"Error": {"Code", "Message", "Target", "Details"}}` (Microsoft.Maintenance's validation
      errors, hashicorp/terraform-provider-azurerm#29738), Target null and Details [] when there are none;
    - "bare": for a 5xx only, `{"Message": "An error has occurred."}` with no code and the header
      `x-ms-failure-cause: service` (as during incidents); any other status keeps ARM's shape;
    - "toplevel": `{"code", "message", "target"?, "details"?}` without the `error` wrapper.
    `failure_cause` adds `x-ms-failure-cause: service` to any 5xx, whatever the shape.
    """
    headers = dict(err.headers)
    server_side = err.status >= 500
    if server_side and (failure_cause or shape == "bare"):
        headers.setdefault(*FAILURE_CAUSE)
    if shape == "pascal":
        return {"Error": {"Code": err.code, "Message": err.message, "Target": err.target,
                          "Details": [_pascal(d) for d in err.details or []]}}, headers
    if shape == "bare" and server_side:
        return {"Message": BARE_MESSAGE}, headers
    if shape == "toplevel":
        return err.body()["error"], headers
    return err.body(), headers
