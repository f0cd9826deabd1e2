"""`POST /api/plans`: exactly what `POST /api/runs` takes, plus where it would run.

    {"machines": [...] | "scopes": [...], "filter": {...}, "installPatches": {...}, "rollout": {...},
     "maintenanceWindow": {"startDateTime": "2026-12-05T22:00:00Z", "duration": "PT3H"}}
or
    {"maintenanceConfiguration": "<name or ARM id of a PatchPilot maintenance configuration>"}

The run fields are parsed by shared/validation/run_request.py (same rules, same 400s naming the field). A
`maintenanceWindow` is the window the run would have: `startDateTime` ISO 8601 (an offset or UTC), `duration`
ISO 8601 from PT1H30M to PT6H, as Azure's InGuestPatch maintenance windows (Maintenance API
MaintenanceWindow.duration, "01:30" to "06:00"); a window that ends in the past is refused. A
`maintenanceConfiguration` plans the configuration's next window, its assigned machines and its own
installPatches and rollout, so no other field may be given with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.core.errors import ValidationError
from shared.egress.policy import Networks
from shared.validation.durations import format_duration, parse_duration
from shared.validation.install_parameters import json_object, parse_datetime, reject_unknown
from shared.validation.request_body import parse_json_body
from shared.validation.run_request import RUN_FIELDS, RunRequest, parse_run_request

WINDOW_FIELDS = {"startDateTime", "duration"}
MIN_WINDOW = timedelta(minutes=90)
MAX_WINDOW = timedelta(hours=6)


@dataclass(frozen=True)
class PlanRequest:
    """Either `run` (+ optional `window`) or `configuration` (a maintenance configuration's name or id)."""

    run: RunRequest | None
    window: tuple[datetime, datetime] | None = None
    configuration: str = ""


def parse_window(raw: object, now: datetime) -> tuple[datetime, datetime]:
    target = "maintenanceWindow"
    obj = json_object(raw, target)
    reject_unknown(obj, WINDOW_FIELDS, target)
    if obj.get("startDateTime") is None:
        raise ValidationError(f"{target}.startDateTime is required", target=f"{target}.startDateTime")
    start = parse_datetime(obj["startDateTime"], f"{target}.startDateTime")
    if not isinstance(obj.get("duration"), str):
        raise ValidationError(f"{target}.duration is required: an ISO 8601 duration such as PT3H",
                              target=f"{target}.duration")
    try:
        duration = parse_duration(obj["duration"])
    except ValueError as exc:
        raise ValidationError(f"{target}.duration: {exc}", target=f"{target}.duration") from None
    if not MIN_WINDOW <= duration <= MAX_WINDOW:
        raise ValidationError(f"{target}.duration is {format_duration(duration)}; a maintenance window lasts from "
                              f"{format_duration(MIN_WINDOW)} to {format_duration(MAX_WINDOW)}",
                              target=f"{target}.duration")
    if start + duration <= now:
        raise ValidationError(f"{target} ended at {(start + duration).isoformat()}: plan a window to come",
                              target=f"{target}.startDateTime")
    return start, start + duration


def parse_plan_request(body: bytes, *, now: datetime, max_bytes: int, max_machines: int,
                       allow_local_hooks: bool = False, probe_networks: Networks = ()) -> PlanRequest:
    data = parse_json_body(body, max_bytes=max_bytes)
    if not isinstance(data, dict):
        raise ValidationError("the request body must be a JSON object", target=None, code="InvalidRequestContent")
    if data.get("maintenanceConfiguration") is not None:
        extra = sorted(k for k in data if k != "maintenanceConfiguration")
        if extra:
            raise ValidationError(f"{extra[0]} cannot be given with maintenanceConfiguration: the configuration's "
                                  "own machines, installPatches and rollout are planned", target=extra[0])
        name = data["maintenanceConfiguration"]
        if not isinstance(name, str) or not name.strip():
            raise ValidationError("maintenanceConfiguration must be a configuration's name or resource id",
                                  target="maintenanceConfiguration")
        return PlanRequest(run=None, configuration=name.strip().rstrip("/").rsplit("/", 1)[-1])
    reject_unknown(data, RUN_FIELDS | {"maintenanceWindow", "maintenanceConfiguration"}, "")
    window = parse_window(data["maintenanceWindow"], now) if data.get("maintenanceWindow") is not None else None
    run_body = json.dumps({k: v for k, v in data.items()
                           if k not in ("maintenanceWindow", "maintenanceConfiguration")}).encode()
    run = parse_run_request(run_body, max_bytes=max(max_bytes, len(run_body)), max_machines=max_machines,
                            allow_local_hooks=allow_local_hooks, probe_networks=probe_networks)
    return PlanRequest(run=run, window=window)
