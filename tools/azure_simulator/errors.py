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
