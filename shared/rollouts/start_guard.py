"""The machine-step hook of rollouts: a machine admitted before a cancel or halt does not start, and a
Linux machine after the canary wave installs the canary's package versions (one patch set)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from shared.core.records import RunRecord
from shared.runs.hooks import Decision, Proceed, Skip, StartContext


class RolloutRuns(Protocol):
    def get_run(self, run_id: str) -> RunRecord | None: ...

    def pins(self, run_id: str) -> list[str]: ...


@dataclass(frozen=True)
class StoppedOrPinned:
    """The before_start hook of rollouts (registered in shared/composition.py)."""

    runs: RolloutRuns

    def __call__(self, ctx: StartContext) -> Decision:
        if not ctx.spec.rollout:
            return Proceed(ctx.body)
        run = self.runs.get_run(ctx.run_id)  # read fresh: a cancel or halt may have come since admission
        columns: dict[str, Any] = dict(run or {})
        if columns.get("canceledAt") or columns.get("haltedReason"):
            return Skip("RunCanceled" if columns.get("canceledAt") else "RunHalted",
                        "the run stopped before this machine started")
        if columns.get("pinnedLinuxCount") and ctx.os_type.lower() == "linux":
            return Proceed(pinned_body(ctx.body, self.runs.pins(ctx.run_id), ctx.os_type))
        return Proceed(ctx.body)


def pinned_body(body: dict[str, Any] | None, pins: list[str], os_type: str) -> dict[str, Any] | None:
    """One patch set: a Linux VM after the canary wave installs exactly the package versions the
    canary installed, and nothing else (classifications would let newer packages in)."""
    if body is None or not pins or os_type.lower() != "linux" or "linuxParameters" not in body:
        return body
    linux = {k: v for k, v in body["linuxParameters"].items() if k != "classificationsToInclude"}
    return {**body, "linuxParameters": {**linux, "packageNameMasksToInclude": pins}}


