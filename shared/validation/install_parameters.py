"""Azure's `VirtualMachineInstallPatchesParameters`, validated and normalised.

The shapes and enums come from ../shared/azure-api/compute/patch-operations.json (Compute 2025-04-01).
Callers may use the spellings Azure's docs, portal and CLI show (`NeverReboot`, `Update Rollups`,
`critical`); what we send to ARM is always the API's own value, so ARM never sees a variant.

Input rules (what Azure accepts, matched):
- `null` is the field left out for every optional field (`windowsParameters`, `linuxParameters`,
  each list, `excludeKbsRequiringReboot`, `maxPatchPublishDate`, `maintenanceRunId`): ARM templates
  emit `null` for optional arrays. A null item *inside* a list is refused (the swagger: "Null, empty
  and only whitespaces strings as inputs values are not supported").
- Enum values compare case-insensitively, ignoring spaces, '-' and '_' (`ifRequired`, `Update Rollups`,
  `UpdateRollup` as the maintenance swagger spells it); the swagger's spelling is what is sent.
- Strings in lists are trimmed; KB numbers are digits with or without `KB` (any case), as string or
  number, and are sent as digits.
- `maxPatchPublishDate`: ISO 8601 with or without seconds, fraction (up to .NET's 7 digits) or
  offset; a value without an offset is UTC. Sent as UTC with `Z`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.core.errors import ValidationError, quoted
from shared.validation.durations import format_duration, parse_duration

# Shortest window we accept: Azure stops starting updates 15-20 minutes before the end and keeps
# 10 minutes for a reboot, so less than 30 minutes installs nothing. The longest is what the
# API's own example uses (PT4H), the longest window Update Manager offers.
MIN_MAXIMUM_DURATION = timedelta(minutes=30)
MAX_MAXIMUM_DURATION = timedelta(hours=4)
MAX_LIST_ITEMS = 200
MAX_TEXT = 256


def _fold(text: str) -> str:
    return re.sub(r"[\s_-]", "", text).lower()


REBOOT_SETTINGS = {
    **{_fold(v): v for v in ("IfRequired", "Never", "Always")},
    "rebootifrequired": "IfRequired",
    "neverreboot": "Never",
    "alwaysreboot": "Always",
}

WINDOWS_CLASSIFICATIONS = {
    **{
        _fold(v): v
        for v in ("Critical", "Security", "UpdateRollUp", "FeaturePack", "ServicePack", "Definition", "Tools",
                  "Updates")
    },
    # Spellings from the portal, `az vm install-patches` help and Windows Update itself.
    "criticalupdates": "Critical",
    "securityupdates": "Security",
    "updaterollups": "UpdateRollUp",
    "featurepacks": "FeaturePack",
    "servicepacks": "ServicePack",
    "definitions": "Definition",
    "definitionupdates": "Definition",
    "update": "Updates",
}

LINUX_CLASSIFICATIONS = {_fold(v): v for v in ("Critical", "Security", "Other")}

_WINDOWS_FIELDS = {
    "classificationsToInclude", "kbNumbersToInclude", "kbNumbersToExclude", "excludeKbsRequiringReboot",
    "maxPatchPublishDate", "patchNameMasksToInclude", "patchNameMasksToExclude",
}
_LINUX_FIELDS = {"classificationsToInclude", "packageNameMasksToInclude", "packageNameMasksToExclude",
                 "maintenanceRunId"}
_TOP_FIELDS = {"maximumDuration", "rebootSetting", "windowsParameters", "linuxParameters"}
_KB = re.compile(r"(?:KB)?([0-9]{1,10})", re.IGNORECASE | re.ASCII)  # fullmatch; ASCII digits only


def given(obj: dict[str, Any], name: str) -> bool:
    """Present and not null: Azure treats `"field": null` as the field left out."""
    return obj.get(name) is not None


def json_object(value: object, target: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(f"{target} must be a JSON object", target=target, code="InvalidRequestContent")
    return value


def reject_unknown(obj: dict[str, Any], allowed: set[str], target: str) -> None:
    """Unknown fields are errors: a typo must not silently install more than the caller meant."""
    for key in obj:
        if key not in allowed:
            where = f"{target}.{key}" if target else key
            raise ValidationError(
                f"unknown field {quoted(where)}; allowed: {', '.join(sorted(allowed))}",
                target=where,
                code="InvalidRequestContent",
            )


def _enum(value: object, table: dict[str, str], target: str) -> str:
    if isinstance(value, str) and _fold(value) in table:
        return table[_fold(value)]
    allowed = sorted(set(table.values()))
    raise ValidationError(f"{target} has the value {quoted(value)}; allowed: {', '.join(allowed)}", target=target)


def _list(value: object, target: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValidationError(f"{target} must be a JSON array", target=target, code="InvalidRequestContent")
    if len(value) > MAX_LIST_ITEMS:
        raise ValidationError(f"{target} has {len(value)} items; at most {MAX_LIST_ITEMS}", target=target)
    return value


def _texts(value: object, target: str) -> list[str]:
    out: list[str] = []
    for i, item in enumerate(_list(value, target)):
        where = f"{target}[{i}]"
        if not isinstance(item, str) or not item.strip():
            raise ValidationError(f"{where} must be a non-empty string", target=where)
        if len(item) > MAX_TEXT:
            raise ValidationError(f"{where} is longer than {MAX_TEXT} characters", target=where)
        out.append(item.strip())
    return out


def _enums(value: object, table: dict[str, str], target: str) -> list[str]:
    seen: list[str] = []
    for i, item in enumerate(_list(value, target)):
        normal = _enum(item, table, f"{target}[{i}]")
        if normal not in seen:
            seen.append(normal)
    return seen


def _kbs(value: object, target: str) -> list[str]:
    out: list[str] = []
    for i, item in enumerate(_list(value, target)):
        where = f"{target}[{i}]"
        is_text = isinstance(item, (str, int)) and not isinstance(item, bool)
        match = _KB.fullmatch(str(item).strip()) if is_text else None
        if not match:
            raise ValidationError(f"{where} must be a KB number such as 5034441 or KB5034441", target=where)
        out.append(match[1])
    return out


def parse_datetime(value: object, target: str) -> datetime:
    """ISO 8601 date-time; a value without an offset is taken as UTC, as ARM does."""
    if not isinstance(value, str):
        raise ValidationError(f"{target} must be an ISO 8601 date-time string", target=target)
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    # Python < 3.11 parsers choke on 7 fractional digits; .NET emits them (see the API example).
    text = re.sub(r"(\.[0-9]{6})[0-9]+", r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"{target} is not an ISO 8601 date-time: {quoted(value)}", target=target) from None
    try:
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ValidationError(f"{target} is out of range: {quoted(value)}", target=target) from None


def _windows(raw: object, target: str) -> dict[str, Any]:
    obj = json_object(raw, target)
    reject_unknown(obj, _WINDOWS_FIELDS, target)
    out: dict[str, Any] = {}
    if given(obj, "classificationsToInclude"):
        out["classificationsToInclude"] = _enums(
            obj["classificationsToInclude"], WINDOWS_CLASSIFICATIONS, f"{target}.classificationsToInclude")
    for name in ("kbNumbersToInclude", "kbNumbersToExclude"):
        if given(obj, name):
            out[name] = _kbs(obj[name], f"{target}.{name}")
    if given(obj, "excludeKbsRequiringReboot"):
        if not isinstance(obj["excludeKbsRequiringReboot"], bool):
            raise ValidationError(f"{target}.excludeKbsRequiringReboot must be true or false",
                                  target=f"{target}.excludeKbsRequiringReboot")
        out["excludeKbsRequiringReboot"] = obj["excludeKbsRequiringReboot"]
    if given(obj, "maxPatchPublishDate"):
        when = parse_datetime(obj["maxPatchPublishDate"], f"{target}.maxPatchPublishDate")
        out["maxPatchPublishDate"] = when.isoformat().replace("+00:00", "Z")
    for name in ("patchNameMasksToInclude", "patchNameMasksToExclude"):
        if given(obj, name):
            out[name] = _texts(obj[name], f"{target}.{name}")
    if not out.get("classificationsToInclude") and not out.get("kbNumbersToInclude") \
            and not out.get("patchNameMasksToInclude"):
        raise ValidationError(
            f"{target} selects nothing: give classificationsToInclude, kbNumbersToInclude "
            "or patchNameMasksToInclude",
            target=f"{target}.classificationsToInclude",
        )
    return out


def _linux(raw: object, target: str) -> dict[str, Any]:
    obj = json_object(raw, target)
    reject_unknown(obj, _LINUX_FIELDS, target)
    out: dict[str, Any] = {}
    if given(obj, "classificationsToInclude"):
        out["classificationsToInclude"] = _enums(
            obj["classificationsToInclude"], LINUX_CLASSIFICATIONS, f"{target}.classificationsToInclude")
    for name in ("packageNameMasksToInclude", "packageNameMasksToExclude"):
        if given(obj, name):
            out[name] = _texts(obj[name], f"{target}.{name}")
    if given(obj, "maintenanceRunId"):
        value = obj["maintenanceRunId"]
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
            raise ValidationError(f"{target}.maintenanceRunId must be a non-empty string",
                                  target=f"{target}.maintenanceRunId")
        out["maintenanceRunId"] = value.strip()
    if not out.get("classificationsToInclude") and not out.get("packageNameMasksToInclude"):
        raise ValidationError(
            f"{target} selects nothing: give classificationsToInclude or packageNameMasksToInclude",
            target=f"{target}.classificationsToInclude",
        )
    return out


def parse_install_parameters(raw: object, target: str = "installPatches") -> dict[str, Any]:
    """Validate and normalise; the result is exactly what goes to ARM (minus the other OS's part)."""
    obj = json_object(raw, target)
    reject_unknown(obj, _TOP_FIELDS, target)
    out: dict[str, Any] = {}

    if not given(obj, "maximumDuration"):
        raise ValidationError(f"{target}.maximumDuration is required, e.g. PT2H",
                              target=f"{target}.maximumDuration")
    where = f"{target}.maximumDuration"
    raw_duration = obj["maximumDuration"]
    if not isinstance(raw_duration, str):
        raise ValidationError(f"{where} must be an ISO 8601 duration string such as PT2H", target=where)
    try:
        duration = parse_duration(raw_duration)
    except ValueError as exc:
        raise ValidationError(f"{where}: {exc}", target=where) from None
    if not MIN_MAXIMUM_DURATION <= duration <= MAX_MAXIMUM_DURATION:
        raise ValidationError(
            f"{target}.maximumDuration is {format_duration(duration)}; it must be between "
            f"{format_duration(MIN_MAXIMUM_DURATION)} and {format_duration(MAX_MAXIMUM_DURATION)}",
            target=f"{target}.maximumDuration",
        )
    out["maximumDuration"] = format_duration(duration)

    if not given(obj, "rebootSetting"):
        raise ValidationError(f"{target}.rebootSetting is required (IfRequired, Never or Always)",
                              target=f"{target}.rebootSetting")
    out["rebootSetting"] = _enum(obj["rebootSetting"], REBOOT_SETTINGS, f"{target}.rebootSetting")

    if given(obj, "windowsParameters"):
        out["windowsParameters"] = _windows(obj["windowsParameters"], f"{target}.windowsParameters")
    if given(obj, "linuxParameters"):
        out["linuxParameters"] = _linux(obj["linuxParameters"], f"{target}.linuxParameters")
    if "windowsParameters" not in out and "linuxParameters" not in out:
        raise ValidationError(
            f"{target} needs windowsParameters and/or linuxParameters: each VM gets its own OS's part",
            target=f"{target}.windowsParameters",
        )
    return out


def maximum_duration(params: dict[str, Any]) -> timedelta:
    return parse_duration(params["maximumDuration"])


def parameters_for_os(params: dict[str, Any], os_type: str) -> dict[str, Any] | None:
    """The body to POST for one VM: only its own OS's part, or None when the request has none."""
    key = {"windows": "windowsParameters", "linux": "linuxParameters"}.get(os_type.lower())
    if key is None or key not in params:
        return None
    body = {"maximumDuration": params["maximumDuration"], "rebootSetting": params["rebootSetting"]}
    body[key] = params[key]
    return body
