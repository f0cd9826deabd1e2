"""Machine health after patching: Azure Resource Health, Azure Monitor alerts, the Application Health
extension's `vmHealth`, the VM agent's readiness and a workload probe, for health-gated rollouts.

Each machine (VM or Arc machine) has a health model, `HealthState`: `availabilityState` (what Resource Health
answers), `vmHealth` (None: no Application Health extension, the default; else healthy | unhealthy | unknown),
`agentReady` (the VM agent's status in the instance view) and `probeStatus` (what `GET /_probe/{name}` answers;
0 = unreachable: the connection closes without an answer). Set it with `Simulator.set_health(id, **fields)` or
`POST /_sim/health {"machine": id, ...}` (fields omitted keep their value), read it with
`GET /_sim/health?machine=<id>`.

`afterPatch` says what the machine becomes when its NEXT installPatches operation completes, whatever that
operation reports (Azure says Succeeded, but the machine comes back like this). It is applied exactly when the
engine settles the operation as finished (operations.py `_apply`), at the operation's end time; an assessPatches
never triggers it. Fields it omits keep their value. Extras:
- `recoverAfterSeconds` (REAL seconds after the completion; null = never): the machine returns to healthy
  (Available, vmHealth healthy if it has the extension, agent Ready, probe 200) and alerts the afterPatch fired
  resolve (a metric alert resolves once its condition clears).
- `lagSeconds`: for that many real seconds after the completion, Resource Health keeps answering the PRE-patch
  state with its old `reportedTime` ("Resource Health can lag minutes behind a reboot"); a client should treat a
  `reportedTime` older than the operation's end as "not yet known".
- `fireAlert` ({"severity": "Sev1", "name": "..."}): an alert fires at the completion.
FaultSettings.unhealthy_after_patch_rate: that share of install operations (decided with the seeded fault dice
when the operation is accepted) brings the machine back down for good: Unavailable, vmHealth unhealthy if it has
the extension, agent Not Ready, probe unreachable.

Timestamps are real wall-clock UTC, never the simulated clock: a client compares them with its own clock.

Resource Health (AvailabilityStatuses_GetByResource, azure-rest-api-specs `specification/resourcehealth/
resource-manager/Microsoft.ResourceHealth/stable/2022-10-01/ResourceHealth.json`; Microsoft's
`azure-mgmt-resourcehealth` 1.0.0 sends api-version 2025-05-01, same shape): `occuredTime` (Azure's spelling) is
when availabilityState last changed, `reportedTime` when Resource Health last took in the machine's state (a
set_health, an install completion, a recovery, a power change). Every install completion is taken in, so a
machine without an afterPatch reports `reportedTime` = the operation's end. A deallocated or stopped VM reports
Unavailable with reasonType "Customer Initiated" (https://learn.microsoft.com/azure/service-health/
resource-health-overview); an Arc machine whose agent is not Connected reports Unavailable (reasonType
"Unplanned": the simulator's choice). Texts (title, summary) are modelled on the portal's; not a contract.

Alerts (Alerts_GetAll, `specification/alertsmanagement/resource-manager/Microsoft.AlertsManagement/preview/
2019-05-05-preview/AlertsManagement.json`, read by `azure-mgmt-alertsmanagement` 1.0.x): filters targetResource
(case-insensitive full ARM id), targetResourceType, targetResourceGroup, monitorCondition (Fired | Resolved),
severity (Sev0..Sev4, one value), alertState, timeRange (1h | 1d | 7d | 30d, default 1d: alerts that started in
that window), pageCount (1..250, default 25); sorted by lastModifiedDateTime, newest first; paged by `nextLink`.
An unknown filter value answers 400 InvalidParameter (the code is the simulator's guess).
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from tools.azure_simulator.errors import ArmError, invalid_parameter
from tools.azure_simulator.fleet import VirtualMachine

AVAILABILITY_STATES = ("Available", "Unavailable", "Degraded", "Unknown")
VM_HEALTH_STATES = ("healthy", "unhealthy", "unknown")
SEVERITIES = ("Sev0", "Sev1", "Sev2", "Sev3", "Sev4")
MONITOR_CONDITIONS = ("Fired", "Resolved")
TIME_RANGES = {"1h": 3600, "1d": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
MAX_PAGE_COUNT = 250
DEFAULT_PAGE_COUNT = 25
STATUS_NAME = "Microsoft.ResourceHealth/availabilityStatuses/current"

# HTTP (camelCase) and Python (snake_case) names of the health fields.
FIELDS = {
    "availabilityState": "availability_state",
    "vmHealth": "vm_health",
    "agentReady": "agent_ready",
    "probeStatus": "probe_status",
}
AFTER_PATCH_EXTRAS = {
    "recoverAfterSeconds": "recover_after_seconds",
    "lagSeconds": "lag_seconds",
    "fireAlert": "fire_alert",
}


def iso_utc(when: datetime) -> str:
    """Resource Health's and Alerts Management's timestamps: UTC, microseconds, Z."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: Any) -> datetime:
    try:
        when = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 date-time: {text!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@dataclass
class HealthState:
    """What a machine looks like now (see the module docstring)."""

    availability_state: str = "Available"
    vm_health: str | None = None  # None: no Application Health extension
    agent_ready: bool = True
    probe_status: int = 200

    def as_dict(self) -> dict[str, Any]:
        return {camel: getattr(self, snake) for camel, snake in FIELDS.items()}

    def healthy(self) -> HealthState:
        """Recovered: Available, vmHealth healthy if it has the extension, agent Ready, probe 200."""
        return HealthState("Available", None if self.vm_health is None else "healthy", True, 200)


def _name(key: str, extras: dict[str, str]) -> str:
    """A field's snake_case name from either spelling, or ValueError (the admin API's 400)."""
    names = {**FIELDS, **extras}
    if key in names:
        return names[key]
    if key in names.values():
        return key
    raise ValueError(f"unknown health field {key!r}; known: {', '.join(names)}")


def _value(name: str, value: Any) -> Any:
    if name == "availability_state":
        for state in AVAILABILITY_STATES:
            if isinstance(value, str) and value.lower() == state.lower():
                return state
        raise ValueError(f"availabilityState must be one of {', '.join(AVAILABILITY_STATES)}, got {value!r}")
    if name == "vm_health":
        if value is None:
            return None
        if isinstance(value, str) and value.lower() in VM_HEALTH_STATES:
            return value.lower()
        raise ValueError(f"vmHealth must be null or one of {', '.join(VM_HEALTH_STATES)}, got {value!r}")
    if name == "agent_ready":
        if not isinstance(value, bool):
            raise ValueError(f"agentReady must be a boolean, got {value!r}")
        return value
    if name == "probe_status":
        if isinstance(value, bool) or not isinstance(value, int) or not (value == 0 or 100 <= value <= 599):
            raise ValueError(f"probeStatus must be 0 (unreachable) or an HTTP status, got {value!r}")
        return value
    if name in ("recover_after_seconds", "lag_seconds"):
        if value is None and name == "recover_after_seconds":
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        return float(value)
    if name == "fire_alert":
        if value is None:
            return None
        if not isinstance(value, dict) or set(value) - {"severity", "name", "description"}:
            raise ValueError(f"fireAlert must be null or {{'severity', 'name'}}, got {value!r}")
        return {"severity": _severity(value.get("severity", "Sev1")), "name": str(value.get("name") or "Alert"),
                **({"description": str(value["description"])} if "description" in value else {})}
    raise ValueError(f"unknown health field {name!r}")


def _severity(value: Any) -> str:
    for sev in SEVERITIES:
        if isinstance(value, str) and value.lower() == sev.lower():
            return sev
    raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {value!r}")


@dataclass
class AfterPatch:
    """What the machine becomes when its next installPatches completes."""

    changes: dict[str, Any]  # HealthState field (snake_case) -> value: only those given
    recover_after_seconds: float | None = None
    lag_seconds: float = 0.0
    fire_alert: dict[str, Any] | None = None

    @classmethod
    def parse(cls, values: dict[str, Any]) -> AfterPatch:
        if not isinstance(values, dict):
            raise ValueError(f"afterPatch must be an object or null, got {values!r}")  # noqa: TRY004
        out = cls({})
        for key, value in values.items():
            name = _name(key, AFTER_PATCH_EXTRAS)
            if name in FIELDS.values():
                out.changes[name] = _value(name, value)
            else:
                setattr(out, name, _value(name, value))
        return out

    @classmethod
    def down(cls) -> AfterPatch:
        """unhealthy_after_patch_rate's outcome (vmHealth is made unhealthy only where the extension is)."""
        return cls({"availability_state": "Unavailable", "agent_ready": False, "probe_status": 0})

    def as_dict(self) -> dict[str, Any]:
        camel = {snake: name for name, snake in FIELDS.items()}
        return {
            **{camel[k]: v for k, v in self.changes.items()},
            "recoverAfterSeconds": self.recover_after_seconds,
            "lagSeconds": self.lag_seconds,
            "fireAlert": self.fire_alert,
        }


@dataclass
class MachineHealth:
    """One machine's health model and what Resource Health has taken in of it."""

    vm: VirtualMachine
    state: HealthState
    occurred: datetime  # availabilityState last changed
    reported: datetime  # Resource Health last took the state in
    vm_health_time: datetime
    power_changed: datetime | None = None
    after_patch: AfterPatch | None = None
    recover_at: datetime | None = None
    recover_alerts: list[str] = field(default_factory=list)
    # During a Resource Health lag: the pre-patch (state, occurred, reported) answered until `stale_until`.
    stale: tuple[HealthState, datetime, datetime] | None = None
    stale_until: datetime | None = None
    probes: int = 0


@dataclass
class Alert:
    """One Azure Monitor alert instance on a machine."""

    alert_id: str
    name: str
    severity: str
    target: str
    target_name: str
    target_group: str
    target_type: str
    subscription: str
    monitor_condition: str
    started: datetime
    modified: datetime
    resolved: datetime | None = None
    description: str | None = None
    seq: int = 0

    def model(self) -> dict[str, Any]:
        """The Alert resource (Alerts_GetAll's `value` items)."""
        rg_path = f"/subscriptions/{self.subscription}/resourceGroups/{self.target_group}"
        essentials: dict[str, Any] = {
            "severity": self.severity,
            "signalType": "Metric",
            "alertState": "New",
            "monitorCondition": self.monitor_condition,
            "targetResource": self.target,
            "targetResourceName": self.target_name,
            "targetResourceGroup": self.target_group,
            "targetResourceType": self.target_type,
            "monitorService": "Platform",
            "alertRule": f"{rg_path}/providers/Microsoft.Insights/metricAlerts/{self.name}",
            "sourceCreatedId": str(uuid.uuid5(uuid.NAMESPACE_URL, self.alert_id)),
            "startDateTime": iso_utc(self.started),
            "lastModifiedDateTime": iso_utc(self.modified),
            "actionStatus": {"isSuppressed": False},
        }
        if self.resolved is not None:
            essentials["monitorConditionResolvedDateTime"] = iso_utc(self.resolved)
        if self.description is not None:
            essentials["description"] = self.description
        return {
            "id": f"/subscriptions/{self.subscription}/providers/Microsoft.AlertsManagement/alerts/{self.alert_id}",
            "type": "Microsoft.AlertsManagement/alerts",
            "name": self.name,
            "properties": {"essentials": essentials},
        }


def _texts(state: str, noun: str) -> tuple[str, str, str | None, str]:
    """(title, summary, reasonType, reasonChronicity) for a health-model state."""
    return {
        "Available": ("Available", f"There aren't any known Azure platform problems affecting this {noun}.", None,
                      "Persistent"),
        "Unavailable": ("Unavailable", f"We're sorry, your {noun} isn't available because it did not come back "
                        "healthy after it was restarted.", "Unplanned", "Persistent"),
        "Degraded": ("Degraded", f"Your {noun} is running but its performance is degraded.", "Unplanned",
                     "Transient"),
        "Unknown": ("Unknown", f"We are currently unable to determine the health of this {noun}.", None,
                    "Transient"),
    }[state]


class HealthBook:
    """Every machine's health model and every alert. Shares the engine's lock and settles the engine before any
    read, so an install that has finished has always been taken in first."""

    def __init__(
        self,
        lock: threading.RLock,
        settle: Callable[[], None],
        seed: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._lock = lock
        self._settle = settle
        self._clock = clock
        self._created = clock()
        self._machines: dict[str, MachineHealth] = {}
        self._alerts: dict[str, Alert] = {}
        self._ids = random.Random(f"alerts:{seed}")

    # ------------------------------------------------------------------------------ model
    def _record(self, vm: VirtualMachine) -> MachineHealth:
        rec = self._machines.get(vm.key)
        if rec is None:
            rec = self._machines[vm.key] = MachineHealth(vm, HealthState(), self._created, self._created,
                                                         self._created)
        return rec

    def _become(self, vm: VirtualMachine, rec: MachineHealth, state: HealthState, when: datetime) -> None:
        """The machine's state changes at `when` (Resource Health takes it in then)."""
        if state.availability_state != rec.state.availability_state:
            rec.occurred = when
        if state.vm_health != rec.state.vm_health:
            rec.vm_health_time = when
        if vm.arc and state.agent_ready != rec.state.agent_ready:
            vm.agent_status = "Connected" if state.agent_ready else "Disconnected"
            vm.last_status_change = when
        rec.state = state
        rec.reported = when

    def _advance(self, vm: VirtualMachine, rec: MachineHealth) -> datetime:
        """Apply what time has brought (a recovery, the end of a lag); returns now."""
        now = self._clock()
        if rec.recover_at is not None and now >= rec.recover_at:
            when, rec.recover_at = rec.recover_at, None
            self._become(vm, rec, rec.state.healthy(), when)
            for alert_id in rec.recover_alerts:
                self._resolve(self._alerts[alert_id], when)
            rec.recover_alerts = []
        if rec.stale_until is not None and now >= rec.stale_until:
            rec.stale = rec.stale_until = None
        return now

    def set(self, vm: VirtualMachine, values: dict[str, Any]) -> dict[str, Any]:
        """Partial update: health fields, and `afterPatch` (an object replaces the pending one, null clears it)."""
        changes: dict[str, Any] = {}
        after: AfterPatch | None = None
        after_given = False
        for key, value in values.items():
            if key in ("afterPatch", "after_patch"):
                after_given = True
                after = None if value is None else AfterPatch.parse(value)
                continue
            name = _name(key, {})
            changes[name] = _value(name, value)
        with self._lock:
            self._settle()
            rec = self._record(vm)
            self._advance(vm, rec)
            if changes:
                # An explicit state replaces whatever time would have done to the old one.
                rec.recover_at, rec.recover_alerts, rec.stale, rec.stale_until = None, [], None, None
                self._become(vm, rec, replace(rec.state, **changes), self._clock())
            if after_given:
                rec.after_patch = after
            return self._model(vm, rec)

    def install_completed(self, vm: VirtualMachine, ended: datetime, *, goes_down: bool = False) -> None:
        """An installPatches operation on `vm` has just been settled as finished at `ended` (engine lock held)."""
        rec = self._record(vm)
        self._advance(vm, rec)
        after, rec.after_patch = rec.after_patch, None
        if after is None and goes_down:
            after = AfterPatch.down()
            if rec.state.vm_health is not None:
                after.changes["vm_health"] = "unhealthy"
        if after is None:
            rec.reported = max(rec.reported, ended)  # Resource Health sees the machine back as it was
            return
        before = (rec.state, rec.occurred, rec.reported)
        self._become(vm, rec, replace(rec.state, **after.changes), ended)
        if after.lag_seconds > 0:
            rec.reported = ended + timedelta(seconds=after.lag_seconds)
            rec.stale, rec.stale_until = before, rec.reported
        rec.recover_alerts = []
        if after.fire_alert is not None:
            alert = self._fire(vm, after.fire_alert["severity"], after.fire_alert["name"], "Fired", ended,
                               after.fire_alert.get("description"))
            rec.recover_alerts.append(alert.alert_id)
        rec.recover_at = (None if after.recover_after_seconds is None
                          else ended + timedelta(seconds=after.recover_after_seconds))
        self._advance(vm, rec)  # an operation settled late may be past its recovery already

    def power_changed(self, vm: VirtualMachine) -> None:
        with self._lock:
            rec = self._record(vm)
            rec.power_changed = rec.reported = rec.occurred = self._clock()

    def current(self, vm: VirtualMachine) -> HealthState:
        with self._lock:
            self._settle()
            rec = self._record(vm)
            self._advance(vm, rec)
            return rec.state

    def model(self, vm: VirtualMachine) -> dict[str, Any]:
        """GET /_sim/health?machine=<id>."""
        with self._lock:
            self._settle()
            rec = self._record(vm)
            self._advance(vm, rec)
            return self._model(vm, rec)

    def _model(self, vm: VirtualMachine, rec: MachineHealth) -> dict[str, Any]:
        return {
            "machine": vm.id,
            **rec.state.as_dict(),
            "afterPatch": None if rec.after_patch is None else rec.after_patch.as_dict(),
            "recoverAt": None if rec.recover_at is None else iso_utc(rec.recover_at),
            "resourceHealthLagUntil": None if rec.stale_until is None else iso_utc(rec.stale_until),
            "occuredTime": iso_utc(rec.occurred),
            "reportedTime": iso_utc(rec.reported),
            "probeCount": rec.probes,
            "resourceHealth": self._status(vm, rec)["properties"],
        }

    # ------------------------------------------------------------------------------ ARM views
    def availability_status(self, vm: VirtualMachine) -> dict[str, Any]:
        """AvailabilityStatus, as GET {id}/providers/Microsoft.ResourceHealth/availabilityStatuses/current answers."""
        with self._lock:
            self._settle()
            rec = self._record(vm)
            self._advance(vm, rec)
            return self._status(vm, rec)

    def _status(self, vm: VirtualMachine, rec: MachineHealth) -> dict[str, Any]:
        state, occurred, reported = rec.stale if rec.stale is not None else (rec.state, rec.occurred, rec.reported)
        noun = "machine" if vm.arc else "virtual machine"
        title, summary, reason, chronicity = _texts(state.availability_state, noun)
        availability = state.availability_state
        if not vm.arc and vm.power_state != "running":
            availability, reason, chronicity = "Unavailable", "Customer Initiated", "Persistent"
            title = "Stopped and deallocated" if vm.power_state == "deallocated" else "Stopped"
            summary = (f"This virtual machine is {title.lower()} as requested by an authorized user or process.")
            occurred = rec.power_changed or occurred
        elif vm.arc and vm.agent_status != "Connected" and availability == "Available":
            availability, title, reason, chronicity = "Unavailable", "Disconnected", "Unplanned", "Persistent"
            summary = (f"The Azure Connected Machine agent on this machine is {vm.agent_status}: Azure cannot "
                       "determine its health.")
        return {
            "id": f"{vm.id}/providers/{STATUS_NAME}",
            "name": "current",
            "type": "Microsoft.ResourceHealth/AvailabilityStatuses",
            "location": vm.location,
            "properties": {
                "availabilityState": availability,
                "title": title,
                "summary": summary,
                "reasonType": reason,
                "reasonChronicity": chronicity,
                "category": "Unplanned" if reason == "Unplanned" else "Planned" if reason else "Not Applicable",
                "context": "Customer Initiated" if reason == "Customer Initiated" else "Platform Initiated",
                "occuredTime": iso_utc(occurred),
                "reportedTime": iso_utc(reported),
            },
        }

    def agent_ready(self, vm: VirtualMachine) -> bool:
        return self.current(vm).agent_ready

    def vm_health(self, vm: VirtualMachine) -> dict[str, Any] | None:
        """VirtualMachineInstanceView.vmHealth (VirtualMachineHealthStatus), or None without the extension."""
        with self._lock:
            self._settle()
            rec = self._record(vm)
            self._advance(vm, rec)
            if rec.state.vm_health is None:
                return None
            display = {"healthy": "The VM is healthy", "unhealthy": "The VM is unhealthy",
                       "unknown": "The VM health is unknown"}[rec.state.vm_health]
            return {"status": {
                "code": f"HealthState/{rec.state.vm_health}",
                "level": "Info" if rec.state.vm_health == "healthy" else "Warning",
                "displayStatus": display,
                "time": iso_utc(rec.vm_health_time),
            }}

    def probe(self, vm: VirtualMachine) -> int:
        """The workload probe's status (0: unreachable); a VM that is not running never answers."""
        with self._lock:
            self._settle()
            rec = self._record(vm)
            self._advance(vm, rec)
            rec.probes += 1
            return rec.state.probe_status if vm.power_state == "running" else 0

    # ------------------------------------------------------------------------------ alerts
    def _fire(  # noqa: PLR0917 - an alert's essentials, in the order the model lists them
        self, vm: VirtualMachine, severity: str, name: str, condition: str, started: datetime,
        description: str | None = None,
    ) -> Alert:
        alert_id = str(uuid.UUID(int=self._ids.getrandbits(128), version=4))
        alert = Alert(
            alert_id, name, severity, vm.id, vm.name, vm.resource_group,
            ("machines" if vm.arc else "virtualmachines"), vm.subscription_id, condition, started, started,
            started if condition == "Resolved" else None, description, len(self._alerts),
        )
        self._alerts[alert_id] = alert
        return alert

    def _resolve(self, alert: Alert, when: datetime) -> None:
        if alert.monitor_condition != "Resolved":
            alert.monitor_condition, alert.resolved, alert.modified = "Resolved", when, when

    def fire_alert(self, vm: VirtualMachine, values: dict[str, Any]) -> dict[str, Any]:
        """POST /_sim/alerts: {"severity", "name", "monitorCondition", "description", "startDateTime"}."""
        unknown = set(values) - {"machine", "severity", "name", "monitorCondition", "description", "startDateTime"}
        if unknown:
            raise ValueError(f"unknown alert field(s): {', '.join(sorted(unknown))}")
        condition = _one_of(values.get("monitorCondition", "Fired"), MONITOR_CONDITIONS, "monitorCondition")
        severity = _severity(values.get("severity", "Sev3"))
        with self._lock:
            started = parse_time(values["startDateTime"]) if values.get("startDateTime") else self._clock()
            alert = self._fire(vm, severity, str(values.get("name") or "Alert"), condition, started,
                               values.get("description"))
            return alert.model()

    def resolve_alert(self, alert_id: str) -> dict[str, Any]:
        with self._lock:
            alert = self._alerts.get(alert_id.lower())
            if alert is None:
                raise ArmError(404, "NotFound", f"No alert '{alert_id}'.")
            self._resolve(alert, self._clock())
            return alert.model()

    def alerts(self) -> list[dict[str, Any]]:
        with self._lock:
            self._settle()
            for rec in self._machines.values():
                if rec.recover_at is not None:
                    self._advance(rec.vm, rec)
            return [a.model() for a in self._alerts.values()]

    def query(self, subscription: str, query: dict[str, str]) -> list[dict[str, Any]]:
        """Alerts_GetAll's filtering and order (paging is the caller's); raises 400 on an unknown value."""
        want_condition = want_severity = None
        if query.get("monitorCondition"):
            want_condition = _one_of(query["monitorCondition"], MONITOR_CONDITIONS, "monitorCondition", arm=True)
        if query.get("severity"):
            want_severity = _one_of(query["severity"], SEVERITIES, "severity", arm=True)
        window = TIME_RANGES.get(query.get("timeRange") or "1d")
        if window is None:
            raise invalid_parameter("timeRange", f"The value '{query['timeRange']}' of parameter 'timeRange' is "
                                    f"invalid. Allowed values are: {', '.join(TIME_RANGES)}.")
        target = (query.get("targetResource") or "").rstrip("/").lower()
        group = (query.get("targetResourceGroup") or "").lower()
        kind = (query.get("targetResourceType") or "").lower()
        state = (query.get("alertState") or "").lower()
        self.alerts()  # recoveries due resolve their alerts first
        with self._lock:
            since = self._clock() - timedelta(seconds=window)
            hits = [
                a for a in self._alerts.values()
                if a.subscription.lower() == subscription.lower()
                and a.started >= since
                and (not target or a.target.lower() == target)
                and (not group or a.target_group.lower() == group)
                and (not kind or kind in (a.target_type, _full_type(a)))
                and (not state or state == "new")
                and (want_condition is None or a.monitor_condition == want_condition)
                and (want_severity is None or a.severity == want_severity)
            ]
            hits.sort(key=lambda a: (a.modified, a.seq), reverse=True)
            return [a.model() for a in hits]


def _full_type(alert: Alert) -> str:
    if alert.target_type == "machines":
        return "microsoft.hybridcompute/machines"
    return "microsoft.compute/virtualmachines"


def _one_of(value: Any, allowed: tuple[str, ...], name: str, *, arm: bool = False) -> str:
    for option in allowed:
        if isinstance(value, str) and value.lower() == option.lower():
            return option
    if arm:
        raise invalid_parameter(name, f"The value '{value}' of parameter '{name}' is invalid. Allowed values are: "
                                f"{', '.join(allowed)}.")
    raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def page_count(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_PAGE_COUNT
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_PAGE_COUNT:
        raise invalid_parameter("pageCount", f"The value '{value}' of parameter 'pageCount' is invalid: it must be "
                                f"between 1 and {MAX_PAGE_COUNT}.")
    return count

