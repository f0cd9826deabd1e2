"""Opening maintenance windows: each exactly once, or recorded as skipped with the reason.

Every tick of the `maintenance_windows` timer looks at each configuration's windows from its
watermark (what earlier ticks handled) to now:
- a window open now is opened: its install run is accepted under the Idempotency-Key
  "maintenance:<configuration>:<window start>", a claim in Table storage made before anything
  starts, so two hosts, a retried tick or a late one all find the same run (the key starts with a
  control character, so no caller's Idempotency-Key can take it);
- a window found with less than 25 minutes left, or with nothing assigned, is recorded `Skipped`
  with why; a window that ended while no timer ran is recorded `Skipped` as missed. None is lost
  silently: `GET .../occurrences` shows each one's fate.
The run's `maximumDuration` is what is left of the window minus the 10 minutes Azure keeps for a
reboot. A VM that two configurations' windows catch at once is patched by the run that reaches it
first; the other records it `Skipped` (PatchedByOtherWindow, see machine_worker.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from datetime import datetime, timedelta
from typing import Any, Protocol

from shared.core.clock import iso, parse_iso
from shared.core.records import NewRun
from shared.maintenance.configuration import (
    Assignment,
    MaintenanceConfiguration,
    configuration_from_stored,
    parse_assignment,
)
from shared.maintenance.limits import MIN_REMAINING, REBOOT_RESERVE
from shared.runs.accept import AcceptDeps, accept, internal_key
from shared.storage.maintenance_store import MaintenanceStore
from shared.validation.durations import format_duration
from shared.validation.rollout import pin_windows_publish_date

log = logging.getLogger(__name__)
WATERMARK_STEP = timedelta(minutes=10)  # how stale the watermark may get: windows since are looked at again
LOOKBACK = timedelta(days=2)  # windows missed longer ago than this (timer down for days) are not reported


class WindowDeps(AcceptDeps, Protocol):
    """What opening maintenance windows uses."""

    @property
    def maintenance(self) -> MaintenanceStore: ...


def open_due_windows(deps: WindowDeps, now: datetime) -> Counter[str]:
    """One pass over every configuration; returns what happened, for the log."""
    counts: Counter[str] = Counter()
    for stored in deps.maintenance.list_configs():
        try:  # one configuration's trouble must not keep every other window shut
            counts.update(_handle_configuration(deps, stored, now))
        except Exception:
            log.exception("maintenance configuration %s could not be handled this tick", stored.get("name"))
            counts["failed"] += 1
    return counts


def _handle_configuration(deps: WindowDeps, stored: dict[str, Any], now: datetime) -> Counter[str]:
    counts: Counter[str] = Counter()
    config = configuration_from_stored(stored["name"], stored)
    checked = parse_iso(stored["checkedThrough"])
    since = max(checked - config.schedule.duration, now - LOOKBACK)
    for begin, end in config.schedule.windows(since):
        if begin > now:
            break
        if end <= now:
            if deps.maintenance.get_occurrence(config.name, begin) is not None:
                counts["handled"] += 1  # opened, or recorded, by an earlier tick
                continue
            counts[_record(deps, config, begin, end, code="Missed",
                           reason="no timer ran while the window was open")] += 1
        else:
            counts[open_window(deps, config, begin, end, now)] += 1
    if now - checked >= WATERMARK_STEP:  # not a write per configuration per tick
        deps.maintenance.advance_watermark(stored, now)
    return counts


def window_key(config: MaintenanceConfiguration, begin: datetime) -> str:
    return occurrence_key(config.name, begin)


def window_fingerprint(configuration: str, begin: datetime) -> str:
    """What a window's run is, for its idempotency claim: the configuration and the window's start (a plan applied
    to the window claims it with the same, shared/plans/apply.py)."""
    return hashlib.sha256(f"{configuration.lower()}|{iso(begin)}".encode()).hexdigest()


def occurrence_key(configuration: str, begin: datetime) -> str:
    """The idempotency key of a window's run: the timer's, and a plan applied to that window's (shared/plans/)."""
    return internal_key(f"maintenance:{configuration.lower()}:{iso(begin)}")


def _record(deps: WindowDeps, config: MaintenanceConfiguration, begin: datetime, end: datetime, *, code: str,
            reason: str) -> str:
    claim = deps.store.find_idempotency_claim(window_key(config, begin))
    if claim is not None:  # the window did open; the tick that opened it stopped before recording so
        deps.maintenance.update_occurrence(config.name, begin, {"state": "Started", "runId": claim["runId"],
                                                               "errorCode": "", "reason": "", "windowEnd": iso(end)})
        return "handled"
    created = deps.maintenance.record_occurrence(config.name, begin, {
        "state": "Skipped", "errorCode": code, "reason": reason, "windowEnd": iso(end)})
    if created:
        log.warning("maintenance window %s %s skipped: %s", config.name, iso(begin), reason)
    return f"skipped-{code}" if created else "handled"


def open_window(deps: WindowDeps, config: MaintenanceConfiguration, begin: datetime, end: datetime,
                now: datetime) -> str:
    occurrence = deps.maintenance.get_occurrence(config.name, begin)
    if occurrence is not None and occurrence.get("state") in ("Started", "Skipped"):
        return "handled"
    remaining = end - now
    if remaining < MIN_REMAINING:
        minutes = int(remaining.total_seconds() // 60)
        return _record(deps, config, begin, end, code="TooLate",
                       reason=f"found with {minutes} minutes of the window left; starting needs "
                       f"{int(MIN_REMAINING.total_seconds() // 60)} (10 are kept for a reboot)")
    assignments = [parse_assignment(a["name"], json.loads(a["body"]))
                   for a in deps.maintenance.list_assignments(config.name)]
    if not assignments:
        return _record(deps, config, begin, end, code="NoAssignments",
                       reason="nothing is assigned to this configuration")
    new = window_run(config, assignments, begin, end, remaining - REBOOT_RESERVE)
    run, created = accept(new, window_key(config, begin), deps)
    deps.maintenance.update_occurrence(config.name, begin, {
        "state": "Started", "runId": run.run_id, "errorCode": "", "reason": "", "windowEnd": iso(end)})
    if created:
        log.info("maintenance window %s %s opened: run %s", config.name, iso(begin), run.run_id)
    return "opened" if created else "handled"


def window_run(config: MaintenanceConfiguration, assignments: list[Assignment], begin: datetime, end: datetime,
               maximum: timedelta) -> NewRun:
    """The install run for one window: static VMs by id, dynamic scopes with their filters."""
    minutes = int(maximum.total_seconds() // 60)
    parameters: dict[str, Any] = {"maximumDuration": format_duration(timedelta(minutes=minutes)),
                                  **config.install_patches}
    rollout: tuple[tuple[str, Any], ...] = ()
    if config.rollout is not None:  # the same safe rollout as a run asked for over HTTP
        parameters = pin_windows_publish_date(parameters, config.rollout)
        rollout = (("rollout", json.dumps(config.rollout, separators=(",", ":"))),)
    machines = {a.vm.key: a.vm for a in assignments if a.vm is not None}
    dynamic = [a for a in assignments if a.scope is not None]
    fingerprint = window_fingerprint(config.name, begin)
    return NewRun(
        "installPatches", parameters, fingerprint,
        machines=tuple(machines[k] for k in sorted(machines)),
        scopes=tuple(a.scope for a in dynamic if a.scope is not None),
        filters=tuple(a.filter for a in dynamic),
        origin="maintenance",
        extra=(("maintenanceConfiguration", config.name), ("windowStart", iso(begin)), ("windowEnd", iso(end)),
               *rollout),
    )


def occurrence_view(config: MaintenanceConfiguration, begin: datetime, end: datetime,
                    recorded: dict[str, Any] | None) -> dict[str, Any]:
    zone = config.schedule.zone
    view: dict[str, Any] = {
        "startDateTime": iso(begin), "endDateTime": iso(end),
        "startLocal": begin.astimezone(zone).isoformat(timespec="minutes"),
        "endLocal": end.astimezone(zone).isoformat(timespec="minutes"),
        "timeZone": config.properties["maintenanceWindow"]["timeZone"],
        "maximumDuration": format_duration(config.schedule.duration - REBOOT_RESERVE),
    }
    if recorded:
        view["state"] = recorded.get("state")
        if recorded.get("runId"):
            view["runId"] = recorded["runId"]
        if recorded.get("errorCode"):
            view["error"] = {"code": recorded["errorCode"], "message": recorded.get("reason", "")}
    return view
