"""Maintenance configurations (Azure's `InGuestPatch` shape) and their assignments: parse, validate,
normalise. A configuration exported from Azure (with id, name, type, location, systemData) is
accepted as it is; anything PatchPilot cannot honour is a 400 naming the field.

Input rules, matched to what Azure's service does (swagger: Maintenance 2023-04-01, MaintenanceWindow;
where the service and its docs differ, a public report of the service decides):
- `null` is the field left out, for every optional field (ARM templates and Bicep emit `null` for
  unset parameters, e.g. `"expirationDateTime": null` in Azure/bicep#8959): it takes its default.
  A required field (`startDateTime`, `timeZone`, `recurEvery`, `maintenanceScope`) that is null is
  missing.
- `startDateTime` / `expirationDateTime`: local time `YYYY-MM-DD hh:mm`, optionally with seconds
  and a fraction (`9999-12-31 23:59:59` is the expiration Azure itself fills in, and the one
  Microsoft's Azure/ResourceModules templates deploy). No `T`, no offset: the zone is `timeZone`.
  Shown back as `YYYY-MM-DD hh:mm`, with `:ss` only when the seconds are not zero.
- A `startDateTime` that does not exist in `timeZone` (inside the hour skipped when clocks go
  forward) is refused naming the field, as Azure refuses it. Later occurrences that land in such a
  gap follow the rule in recurrence.py.
- `recurEvery`: the grammar in recurrence.py, spaces around commas ignored (`Week Saturday, Sunday`).
  A monthly schedule must name its days (`Month day15`, `Month Second Tuesday`): Azure's service
  answers bare `Month` with InvalidMaintenanceWindow "Monthly maintenance window is missing day of
  month or week of month" (hashicorp/terraform-provider-azurerm#29348, #29738), though its docs list
  `Month` as an example.
- Enums compare case-insensitively and are shown in Azure's spelling: `maintenanceScope`,
  `visibility`, `extensionProperties.InGuestPatchMode`, `rebootSetting` (also the `AlwaysReboot` /
  `NeverReboot` Azure echoes back, Azure/azure-rest-api-specs#27222), classifications.
- `timeZone`: a Windows name in any case, or an IANA name; surrounding spaces ignored.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from shared.core.errors import ValidationError, quoted
from shared.core.ids import MachineRef, ScopeRef
from shared.egress.policy import Networks
from shared.maintenance.recurrence import (
    Recurrence,
    RecurrenceError,
    Schedule,
    normalise_recur_every,
    parse_recur_every,
)
from shared.maintenance.timezones import UnknownTimeZoneError, resolve_time_zone
from shared.validation.dynamic_scope import parse_filter
from shared.validation.install_parameters import json_object, parse_install_parameters, reject_unknown
from shared.validation.resource_ids import parse_machine_id
from shared.validation.rollout import parse_rollout
from shared.validation.scopes import parse_scope
from shared.validation.tags import parse_tags

# Patterns are matched whole (fullmatch: `$` would also take a trailing "\n") and in ASCII digits.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
LOCAL_TIME = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,7}))?)?")
HH_MM = re.compile(r"([0-9]{2}):([0-9]{2})")
MIN_DURATION = timedelta(hours=1, minutes=30)  # Azure's bounds for InGuestPatch windows
MAX_DURATION = timedelta(hours=3, minutes=55)
DEFAULT_DURATION = "03:55"
EARLIEST_START, LATEST_START = 1970, 9998  # PatchPilot's bounds (Azure documents none); windows are found from
# a day before the start, which must stay inside datetime's years 1-9999 in every time zone
NO_EXPIRATION = "9999-12-31 23:59"
RESOURCE_FIELDS = {"id", "name", "type", "location", "tags", "systemData", "properties", "etag"}
PROPERTY_FIELDS = {"namespace", "extensionProperties", "maintenanceScope", "visibility", "maintenanceWindow",
                   "installPatches", "rollout"}  # rollout: PatchPilot's own, not Azure's
WINDOW_FIELDS = {"startDateTime", "expirationDateTime", "duration", "timeZone", "recurEvery"}
PATCH_FIELDS = {"rebootSetting", "windowsParameters", "linuxParameters", "tasks"}
VISIBILITY = {"custom": "Custom", "public": "Public"}


def check_name(value: str, target: str) -> str:
    if not NAME.fullmatch(value or ""):
        raise ValidationError(f"{target} {quoted(value)} must be 1-128 letters, digits, '-', '_' or '.', starting with "
                              "a letter or digit", target=target, code="InvalidResourceName")
    return value



def _local_time(value: object, target: str) -> datetime:
    """'YYYY-MM-DD hh:mm[:ss[.fffffff]]' → naive local datetime (fractions beyond microseconds dropped)."""
    match = LOCAL_TIME.fullmatch(value.strip()) if isinstance(value, str) else None
    if not match:
        raise ValidationError(f"{target} must be a local time 'YYYY-MM-DD hh:mm' (seconds optional), "
                              f"got {quoted(value)}", target=target)
    try:
        parsed = datetime.strptime(match[1], "%Y-%m-%d %H:%M")
        return parsed.replace(second=int(match[2] or 0), microsecond=int((match[3] or "0").ljust(7, "0")[:6]))
    except ValueError:
        raise ValidationError(f"{target} {quoted(value)} is not a real date and time", target=target) from None


def _show_local(value: datetime) -> str:
    """Azure's `YYYY-MM-DD hh:mm`; seconds (and a fraction) only when there are any."""
    if value.microsecond:
        return value.strftime("%Y-%m-%d %H:%M:%S.%f").rstrip("0")
    return value.strftime("%Y-%m-%d %H:%M:%S" if value.second else "%Y-%m-%d %H:%M")


def _check_exists(local: datetime, zone: ZoneInfo, zone_name: str, target: str) -> None:
    """Refuse a local time the zone skips (clocks go forward over it): Azure answers 400 for such a start."""
    there_and_back = local.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    if there_and_back != local:
        raise ValidationError(
            f"{target} {_show_local(local)} does not exist in time zone '{zone_name}': clocks go forward "
            f"over it that day (daylight saving time); choose a time outside the skipped hour", target=target)


def _duration(value: object, target: str) -> timedelta:
    match = HH_MM.fullmatch(value.strip()) if isinstance(value, str) else None
    if not match or int(match[2]) > 59:
        raise ValidationError(f"{target} must be 'HH:mm', e.g. '03:00', got {quoted(value)}", target=target)
    duration = timedelta(hours=int(match[1]), minutes=int(match[2]))
    if not MIN_DURATION <= duration <= MAX_DURATION:
        raise ValidationError(f"{target} is {value}; an InGuestPatch window lasts from 01:30 to 03:55",
                              target=target)
    return duration


@dataclass(frozen=True)
class MaintenanceConfiguration:
    name: str
    location: str
    tags: dict[str, str]
    properties: dict[str, Any]  # normalised, as stored and shown
    schedule: Schedule
    install_patches: dict[str, Any]  # rebootSetting + per-OS parameters, without maximumDuration
    rollout: dict[str, Any] | None = None  # waves, limits and hooks for every window's run

    def resource(self) -> dict[str, Any]:
        """The ARM-shaped resource the API returns."""
        return {"id": f"/maintenance-configurations/{self.name}", "name": self.name,
                "type": "Microsoft.Maintenance/maintenanceConfigurations", "location": self.location,
                "tags": self.tags, "properties": self.properties}

    def to_stored(self) -> dict[str, Any]:
        """The normalised configuration as stored: read back by `from_stored` without parsing it again
        (the maintenance timer reads every configuration every minute)."""
        s = self.schedule
        return {"version": STORED_VERSION, "location": self.location, "tags": self.tags,
                "properties": self.properties,  # holds installPatches (shown) and rollout: not stored twice
                "schedule": {"recurrence": dataclasses.asdict(s.recurrence), "start": s.start.isoformat(),
                             "expiration": s.expiration.isoformat() if s.expiration else None,
                             "durationSeconds": int(s.duration.total_seconds()), "zone": s.zone.key}}


STORED_VERSION = 2  # 1 (no "version"): the request body as sent, parsed again on every read


def configuration_from_stored(name: str, stored: dict[str, Any]) -> MaintenanceConfiguration:
    """Rebuild a stored configuration: its normalised form as it is, or (written before version 2)
    its original body parsed again under the rules of the day it was accepted."""
    data = json.loads(stored["body"])
    if not isinstance(data, dict) or data.get("version") != STORED_VERSION:
        return parse_configuration(name, data, stored=True)
    s = data["schedule"]
    r = s["recurrence"]
    recurrence = Recurrence(r["unit"], r["interval"], tuple(r["weekdays"]), tuple(r["month_days"]),
                            r["week_of_month"], r["weekday"], r["offset"])
    schedule = Schedule(recurrence, datetime.fromisoformat(s["start"]),
                        datetime.fromisoformat(s["expiration"]) if s["expiration"] else None,
                        timedelta(seconds=s["durationSeconds"]), ZoneInfo(s["zone"]))
    properties = data["properties"]
    install = {k: v for k, v in properties["installPatches"].items() if k != "tasks"}
    return MaintenanceConfiguration(name, data["location"], data["tags"], properties, schedule, install,
                                    properties.get("rollout"))


def parse_configuration(name: str, body: object, *, stored: bool = False,
                        allow_local_hooks: bool = False, probe_networks: Networks = ()) -> MaintenanceConfiguration:
    """Validate a PUT body. `stored`: a body PatchPilot accepted before, read back; the rules added
    since (a bare monthly `recurEvery`, a start inside a daylight-saving gap) do not apply to it, so
    a configuration that ran yesterday keeps running and listing."""
    check_name(name, "name")
    data = json_object(body, "body")
    reject_unknown(data, RESOURCE_FIELDS, "")
    if "name" in data and str(data["name"]).lower() != name.lower():
        raise ValidationError(f"name {quoted(data['name'])} in the body differs from {name!r} in the URL",
                              target="name")
    props = json_object(data.get("properties"), "properties")
    reject_unknown(props, PROPERTY_FIELDS, "properties")
    scope = props.get("maintenanceScope")
    if not isinstance(scope, str) or scope.lower() != "inguestpatch":
        raise ValidationError(f"properties.maintenanceScope is {quoted(scope)}; PatchPilot runs InGuestPatch "
                              "configurations (guest OS patching)", target="properties.maintenanceScope")
    schedule, window = parse_window(props.get("maintenanceWindow"), stored=stored)
    install, patches = parse_patch_configuration(props.get("installPatches"))
    _check_extras(props)
    tags = parse_tags(data.get("tags"))
    normalised = {
        "namespace": props.get("namespace") or "Microsoft.Maintenance",
        "extensionProperties": props.get("extensionProperties") or {"InGuestPatchMode": "User"},
        "maintenanceScope": "InGuestPatch",
        "visibility": VISIBILITY[str(props.get("visibility") or "Custom").strip().lower()],
        "maintenanceWindow": window,
        "installPatches": patches,
    }
    try:
        rollout = parse_rollout(props["rollout"], allow_local_hooks=allow_local_hooks or stored,
                                probe_networks=probe_networks) if props.get("rollout") is not None else None
    except ValidationError as exc:  # the rollout's rules name `rollout.…`; here it lies under properties
        raise ValidationError(re.sub(r"(?<![\w.])rollout\.", "properties.rollout.", exc.message),
                              target=f"properties.{exc.target}" if exc.target else None,
                              code=exc.code) from None
    if rollout is not None:
        normalised["rollout"] = rollout
    return MaintenanceConfiguration(name, str(data.get("location") or ""), dict(tags), normalised, schedule, install,
                                    rollout)


def _check_extras(props: dict[str, Any]) -> None:
    """Fields Azure has that PatchPilot keeps but cannot act on differently: only values it honours."""
    extension = props.get("extensionProperties")
    if extension is not None:
        if not isinstance(extension, dict) or not all(isinstance(v, str) for v in extension.values()):
            raise ValidationError("properties.extensionProperties must be an object of strings",
                                  target="properties.extensionProperties")
        mode = extension.get("InGuestPatchMode")
        if mode is not None and mode.lower() != "user":
            raise ValidationError(f"properties.extensionProperties.InGuestPatchMode is {quoted(mode)}; PatchPilot runs "
                                  "user-managed schedules ('User'); 'Platform' leaves patching to Azure",
                                  target="properties.extensionProperties.InGuestPatchMode")
    namespace = props.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise ValidationError("properties.namespace must be a string", target="properties.namespace")
    visibility = props.get("visibility")
    if visibility is not None and (not isinstance(visibility, str) or visibility.strip().lower() not in VISIBILITY):
        raise ValidationError("properties.visibility must be Custom or Public", target="properties.visibility")


def parse_window(value: object, *, stored: bool = False) -> tuple[Schedule, dict[str, Any]]:
    target = "properties.maintenanceWindow"
    window = json_object(value, target)
    reject_unknown(window, WINDOW_FIELDS, target)
    for field in ("startDateTime", "timeZone", "recurEvery"):
        value = window.get(field)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValidationError(f"{target}.{field} is required", target=f"{target}.{field}")
    start = _local_time(window["startDateTime"], f"{target}.startDateTime")
    if not EARLIEST_START <= start.year <= LATEST_START:
        raise ValidationError(f"{target}.startDateTime {quoted(window['startDateTime'])} must be in the years "
                              f"{EARLIEST_START} to {LATEST_START}", target=f"{target}.startDateTime")
    expiration_given = window.get("expirationDateTime") not in (None, "")
    expiration = _local_time(window["expirationDateTime"] if expiration_given else NO_EXPIRATION,
                             f"{target}.expirationDateTime")
    if expiration <= start:
        raise ValidationError(f"{target}.expirationDateTime must be after startDateTime",
                              target=f"{target}.expirationDateTime")
    duration_text = window.get("duration") or DEFAULT_DURATION
    duration = _duration(duration_text, f"{target}.duration")
    if not isinstance(window["timeZone"], str):
        raise ValidationError(f"{target}.timeZone must be a time zone name", target=f"{target}.timeZone")
    zone_name = window["timeZone"].strip()
    try:
        zone = resolve_time_zone(zone_name)
    except UnknownTimeZoneError as exc:
        raise ValidationError(f"{target}.timeZone: {exc}", target=f"{target}.timeZone") from None
    if not stored:
        _check_exists(start, zone, zone_name, f"{target}.startDateTime")
    try:
        recurrence = parse_recur_every(window["recurEvery"])
    except RecurrenceError as exc:
        raise ValidationError(str(exc), target=f"{target}.recurEvery") from None
    if not stored and recurrence.unit == "month" and not recurrence.month_days and recurrence.week_of_month is None:
        raise ValidationError(f"{target}.recurEvery '{window['recurEvery']}': a monthly maintenance window "
                              "needs its day of the month or week of the month, e.g. 'Month day15' or "
                              "'Month Second Tuesday' (Azure refuses a bare 'Month')", target=f"{target}.recurEvery")
    if recurrence.unit == "hour" and timedelta(hours=recurrence.interval) < duration:
        raise ValidationError(f"{target}.recurEvery every {recurrence.interval} hours is shorter than the "
                              f"{duration_text} window: windows would overlap", target=f"{target}.recurEvery")
    no_expiration = expiration >= _local_time(NO_EXPIRATION, "expirationDateTime")
    schedule = Schedule(recurrence, start, None if no_expiration else expiration, duration, zone)
    if schedule.first_window() is None:
        raise ValidationError(f"{target}: recurEvery {quoted(window['recurEvery'])} starting "
                              f"{start:%Y-%m-%d %H:%M} never produces a maintenance window (no month it recurs in "
                              "has that day, or the configuration expires before its first window)",
                              target=f"{target}.recurEvery")
    shown = {"startDateTime": _show_local(start),
             "expirationDateTime": _show_local(expiration),
             "duration": duration_text.strip(), "timeZone": zone_name,
             "recurEvery": normalise_recur_every(window["recurEvery"])}
    return schedule, shown


def parse_patch_configuration(value: object) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what installPatches gets minus maximumDuration, what is shown). `tasks` (Azure Automation pre/post
    runbooks) are kept as given but not run: PatchPilot's own pre/post hooks replace them."""
    target = "properties.installPatches"
    patches = json_object(value, target)
    reject_unknown(patches, PATCH_FIELDS, target)
    raw = {k: v for k, v in patches.items() if k != "tasks"}
    if raw.get("rebootSetting") is None:
        raw["rebootSetting"] = "IfRequired"  # the swagger's default, for a missing or null value
    parsed = parse_install_parameters({**raw, "maximumDuration": "PT1H"}, target)
    parsed.pop("maximumDuration")
    shown = dict(parsed)
    if patches.get("tasks") is not None:
        shown["tasks"] = patches["tasks"]
    return parsed, shown


# -- assignments ---------------------------------------------------------------------------------
ASSIGNMENT_FIELDS = {"id", "name", "type", "location", "systemData", "properties"}
ASSIGNMENT_PROPERTIES = {"resourceId", "filter", "maintenanceConfigurationId"}


@dataclass(frozen=True)
class Assignment:
    """One VM (static), or every VM in a subscription / resource group that passes `filter` (dynamic)."""

    name: str
    vm: MachineRef | None
    scope: ScopeRef | None
    filter: dict[str, Any]  # normalised; empty for static assignments and unfiltered scopes

    def resource(self, configuration: str) -> dict[str, Any]:
        props: dict[str, Any] = {
            "maintenanceConfigurationId": f"/maintenance-configurations/{configuration}",
            "resourceId": self.vm.resource_id if self.vm else self.scope.resource_id if self.scope else "",
        }
        if self.filter:
            props["filter"] = self.filter
        return {"id": f"/maintenance-configurations/{configuration}/assignments/{self.name}", "name": self.name,
                "type": "Microsoft.Maintenance/configurationAssignments", "properties": props}



def parse_assignment(name: str, body: object, *, configuration: str | None = None) -> Assignment:
    check_name(name, "assignmentName")
    data = json_object(body, "body")
    reject_unknown(data, ASSIGNMENT_FIELDS, "")
    props = json_object(data.get("properties"), "properties")
    reject_unknown(props, ASSIGNMENT_PROPERTIES, "properties")
    named = props.get("maintenanceConfigurationId")
    if configuration and named is not None and (
            not isinstance(named, str) or named.rstrip("/").split("/")[-1].lower() != configuration.lower()):
        raise ValidationError(f"properties.maintenanceConfigurationId names another configuration than "
                              f"{configuration!r}, whose assignment this is",
                              target="properties.maintenanceConfigurationId")
    resource_id = props.get("resourceId")
    if not isinstance(resource_id, str) or not resource_id.strip():
        raise ValidationError("properties.resourceId is required: a VM, or a subscription or resource group "
                              "for a dynamic scope", target="properties.resourceId")
    if "/providers/" in resource_id.lower():
        if props.get("filter") is not None:
            raise ValidationError("properties.filter applies to a subscription or resource group, not to one VM",
                                  target="properties.filter")
        return Assignment(name, parse_machine_id(resource_id, target="properties.resourceId"), None, {})
    scope = parse_scope(resource_id, target="properties.resourceId")
    return Assignment(name, None, scope, parse_filter(props["filter"]) if props.get("filter") is not None else {})
