"""What the API shows of runs and machines (Table entities → JSON)."""

from __future__ import annotations

import json
from typing import Any

from shared.runs.model import summarize

MACHINE_FIELDS = (
    "state", "status", "installationActivityId", "rebootStatus", "maintenanceWindowExceeded",
    "installedPatchCount", "failedPatchCount", "pendingPatchCount", "excludedPatchCount", "notSelectedPatchCount",
    "startDateTime", "osType", "operationStartedAt", "completedAt", "updatedAt", "nextActionAt",
)


def machine_view(target: dict[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = {"id": target["resourceId"]}
    for name in MACHINE_FIELDS:
        if target.get(name) not in (None, ""):
            view[name] = target[name]
    view["error"] = (
        {"code": target["errorCode"], "message": target.get("errorMessage", "")} if target.get("errorCode") else None
    )
    if target.get("lastRetryReason") and target.get("state") not in ("Completed", "Failed", "TimedOut"):
        view["lastRetryReason"] = target["lastRetryReason"]
    view["armCalls"] = json.loads(target.get("armCalls") or "[]")
    return view


def run_view(run: dict[str, Any], targets: list[dict[str, Any]] | None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": run["RowKey"],
        "operation": run.get("operation", "installPatches"),
        "createdAt": run.get("createdAt"),
        "machineCount": run.get("machineCount"),
        "installPatches": json.loads(run.get("installPatches") or "{}"),
    }
    if targets is not None:
        summary = summarize(targets)
        view.update(status=summary["status"], states=summary["states"], outcomes=summary["outcomes"])
        view["machines"] = [machine_view(t) for t in targets]
    else:
        view["status"] = run.get("status")
    if run.get("completedAt"):
        view["completedAt"] = run["completedAt"]
    if run.get("idempotencyKey"):
        view["idempotencyKey"] = run["idempotencyKey"]
    return view
