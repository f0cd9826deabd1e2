"""Maintenance configurations (Azure's `InGuestPatch` shape) and their assignments: parse, validate,
normalise. A configuration exported from Azure (with id, name, type, location, systemData) is
accepted as it is; anything PatchPilot cannot honour is a 400 naming the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.core.errors import ValidationError, quoted
from shared.core.ids import ScopeRef, VmRef
from shared.maintenance.recurrence import RecurrenceError, Schedule, parse_recur_every
from shared.maintenance.timezones import UnknownTimeZoneError, resolve_time_zone
from shared.validation.dynamic_scope import parse_filter
from shared.validation.install_parameters import json_object, parse_install_parameters, reject_unknown
from shared.validation.resource_ids import parse_vm_id
from shared.validation.rollout import parse_rollout
from shared.validation.scopes import parse_scope
from shared.validation.tags import parse_tags

# Patterns are matched whole (fullmatch: `$` would also take a trailing "\n") and in ASCII digits.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
LOCAL_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}")
HH_MM = re.compile(r"([0-9]{2}):([0-9]{2})")
MIN_DURATION = timedelta(hours=1, minutes=30)  # Azure's bounds for InGuestPatch windows
MAX_DURATION = timedelta(hours=3, minutes=55)
DEFAULT_DURATION = "03:55"
NO_EXPIRATION = "9999-12-31 23:59"
RESOURCE_FIELDS = {"id", "name", "type", "location", "tags", "systemData", "properties", "etag"}
PROPERTY_FIELDS = {"namespace", "extensionProperties", "maintenanceScope", "visibility", "maintenanceWindow",
                   "installPatches", "rollout"}  # rollout: PatchPilot's own, not Azure's
WINDOW_FIELDS = {"startDateTime", "expirationDateTime", "duration", "timeZone", "recurEvery"}
PATCH_FIELDS = {"rebootSetting", "windowsParameters", "linuxParameters", "tasks"}


def check_name(value: str, target: str) -> str:
    if not NAME.fullmatch(value or ""):
        raise ValidationError(f"{target} {quoted(value)} must be 1-128 letters, digits, '-', '_' or '.', starting with "
                              "a letter or digit", target=target, code="InvalidResourceName")
    return value



def _local_time(value: object, target: str) -> datetime:
    if not isinstance(value, str) or not LOCAL_TIME.fullmatch(value.strip()):
        raise ValidationError(f"{target} must be a local time 'YYYY-MM-DD hh:mm', got {quoted(value)}", target=target)
    try:
        return datetime.strptime(value.strip(), "%Y-%m-%d %H:%M")
    except ValueError:
        raise ValidationError(f"{target} {quoted(value)} is not a real date and time", target=target) from None


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


def parse_configuration(name: str, body: object) -> MaintenanceConfiguration:
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
    schedule, window = parse_window(props.get("maintenanceWindow"))
    install, patches = parse_patch_configuration(props.get("installPatches"))
    _check_extras(props)
    tags = parse_tags(data.get("tags"))
    normalised = {
        "namespace": props.get("namespace") or "Microsoft.Maintenance",
        "extensionProperties": props.get("extensionProperties") or {"InGuestPatchMode": "User"},
        "maintenanceScope": "InGuestPatch",
        "visibility": props.get("visibility") or "Custom",
        "maintenanceWindow": window,
        "installPatches": patches,
    }
    rollout = parse_rollout(props["rollout"]) if props.get("rollout") is not None else None
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
    for field, allowed in (("visibility", ("Custom", "Public")), ("namespace", None)):
        value = props.get(field)
        if value is not None and (not isinstance(value, str) or (allowed and value not in allowed)):
            expected = " or ".join(allowed) if allowed else "a string"
            raise ValidationError(f"properties.{field} must be {expected}", target=f"properties.{field}")


def parse_window(value: object) -> tuple[Schedule, dict[str, Any]]:
    target = "properties.maintenanceWindow"
    window = json_object(value, target)
    reject_unknown(window, WINDOW_FIELDS, target)
    for field in ("startDateTime", "timeZone", "recurEvery"):
        if not window.get(field):
            raise ValidationError(f"{target}.{field} is required", target=f"{target}.{field}")
    start = _local_time(window["startDateTime"], f"{target}.startDateTime")
    expiration_text = window.get("expirationDateTime") or NO_EXPIRATION
    expiration = _local_time(expiration_text, f"{target}.expirationDateTime")
    if expiration <= start:
        raise ValidationError(f"{target}.expirationDateTime must be after startDateTime",
                              target=f"{target}.expirationDateTime")
    duration_text = window.get("duration") or DEFAULT_DURATION
    duration = _duration(duration_text, f"{target}.duration")
    try:
        zone = resolve_time_zone(str(window["timeZone"]))
    except UnknownTimeZoneError as exc:
        raise ValidationError(f"{target}.timeZone: {exc}", target=f"{target}.timeZone") from None
    try:
        recurrence = parse_recur_every(window["recurEvery"])
    except RecurrenceError as exc:
        raise ValidationError(str(exc), target=f"{target}.recurEvery") from None
    if recurrence.unit == "hour" and timedelta(hours=recurrence.interval) < duration:
        raise ValidationError(f"{target}.recurEvery every {recurrence.interval} hours is shorter than the "
                              f"{duration_text} window: windows would overlap", target=f"{target}.recurEvery")
    schedule = Schedule(recurrence, start, None if expiration_text == NO_EXPIRATION else expiration, duration, zone)
    if schedule.first_window() is None:
        raise ValidationError(f"{target}: recurEvery '{window['recurEvery']}' starting {start:%Y-%m-%d %H:%M} "
                              "never produces a maintenance window (no month it recurs in has that day, or the "
                              "configuration expires before its first window)", target=f"{target}.recurEvery")
    shown = {"startDateTime": start.strftime("%Y-%m-%d %H:%M"),
             "expirationDateTime": expiration.strftime("%Y-%m-%d %H:%M"),
             "duration": duration_text, "timeZone": str(window["timeZone"]).strip(),
             "recurEvery": " ".join(str(window["recurEvery"]).split())}
    return schedule, shown


def parse_patch_configuration(value: object) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what installPatches gets minus maximumDuration, what is shown). `tasks` (Azure Automation pre/post
    runbooks) are kept as given but not run: PatchPilot's own pre/post hooks replace them."""
    target = "properties.installPatches"
    patches = json_object(value, target)
    reject_unknown(patches, PATCH_FIELDS, target)
    raw = {k: v for k, v in patches.items() if k != "tasks"}
    raw.setdefault("rebootSetting", "IfRequired")  # the swagger's default
    parsed = parse_install_parameters({**raw, "maximumDuration": "PT1H"}, target)
    parsed.pop("maximumDuration")
    shown = dict(parsed)
    if patches.get("tasks") is not None:
        shown["tasks"] = patches["tasks"]
    return parsed, shown


def configuration_from_stored(name: str, stored: dict[str, Any]) -> MaintenanceConfiguration:
    """Rebuild from a stored (already validated) body."""
    return parse_configuration(name, json.loads(stored["body"]))


# -- assignments ---------------------------------------------------------------------------------
ASSIGNMENT_FIELDS = {"id", "name", "type", "location", "systemData", "properties"}
ASSIGNMENT_PROPERTIES = {"resourceId", "filter", "maintenanceConfigurationId"}


@dataclass(frozen=True)
class Assignment:
    """One VM (static), or every VM in a subscription / resource group that passes `filter` (dynamic)."""

    name: str
    vm: VmRef | None
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
        return Assignment(name, parse_vm_id(resource_id, target="properties.resourceId"), None, {})
    scope = parse_scope(resource_id, target="properties.resourceId")
    return Assignment(name, None, scope, parse_filter(props["filter"]) if props.get("filter") is not None else {})
