"""The machine-step hook of rollouts: a machine admitted before a cancel or halt does not start, and a
Linux machine after the canary wave installs the canary's package versions (one patch set)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.core.records import RunSpec
from shared.runs.machine_worker import MachineStep


def stopped_or_pinned(step: MachineStep, spec: RunSpec, body: dict[str, Any] | None,
                      os_type: str) -> tuple[dict[str, Any] | None, str]:
    if not spec.rollout:
        return body, ""
    # Read fresh: a cancel or halt may have come since admission.
    run: Mapping[str, Any] = step.svc.store.get_run(step.run_id) or {}
    if run.get("canceledAt") or run.get("haltedReason"):
        return None, step.skip("RunCanceled" if run.get("canceledAt") else "RunHalted",
                               "the run stopped before this machine started", osType=os_type)
    if run.get("pinnedLinuxCount") and os_type.lower() == "linux":
        body = pinned_body(body, step.svc.store.pins(step.run_id), os_type)
    return body, ""


def pinned_body(body: dict[str, Any] | None, pins: list[str], os_type: str) -> dict[str, Any] | None:
    """One patch set: a Linux VM after the canary wave installs exactly the package versions the
    canary installed, and nothing else (classifications would let newer packages in)."""
    if body is None or not pins or os_type.lower() != "linux" or "linuxParameters" not in body:
        return body
    linux = {k: v for k, v in body["linuxParameters"].items() if k != "classificationsToInclude"}
    return {**body, "linuxParameters": {**linux, "packageNameMasksToInclude": pins}}


