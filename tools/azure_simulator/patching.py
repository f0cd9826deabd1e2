"""installPatches/assessPatches semantics: request validation, patch selection, and the simulated run.

Pure functions over fleet.Patch lists, so the rules are unit-testable without HTTP. Selection follows the
Compute/Update Manager documentation: classifications and include lists select (include lists add to the
classifications), exclusions always win, maxPatchPublishDate drops newer patches. Installation walks the
selected patches in order and stops when the next one no longer fits in maximumDuration; the rest stay
Pending and maintenanceWindowExceeded is set. Like Azure's Linux patch extension (PatchInstaller.py), an
operation with a failed patch or an exceeded window ends with status Failed.
"""

from __future__ import annotations

import fnmatch
import random
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tools.azure_simulator.errors import ArmError, invalid_parameter
from tools.azure_simulator.fleet import Patch, iso_z

REBOOT_SETTINGS = ("IfRequired", "Never", "Always")
# Request enum name -> classification string reported on patches.
WINDOWS_CLASSIFICATIONS = {
    "Critical": "Critical",
    "Security": "Security",
    "UpdateRollUp": "Update Rollups",
    "FeaturePack": "FeaturePack",
    "ServicePack": "ServicePack",
    "Definition": "Definition Updates",
    "Tools": "Tools",
    "Updates": "Updates",
}
LINUX_CLASSIFICATIONS = {"Critical": "Critical", "Security": "Security", "Other": "Other"}
INSTALL_ORDER = (
    "Critical",
    "Security",
    "Definition Updates",
    "Update Rollups",
    "Updates",
    "Other",
    "FeaturePack",
    "ServicePack",
    "Tools",
)
DEFAULT_MAXIMUM_DURATION = 4 * 3600.0

_DURATION = re.compile(
    r"^P(?!$)(?:(?P<days>\d+(?:\.\d+)?)D)?(?:T(?=\d)(?:(?P<hours>\d+(?:\.\d+)?)H)?"
    r"(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str) -> float:
    """ISO 8601 duration (days and time parts, as Azure uses: PT4H, PT90M, P1DT2H) to seconds."""
    match = _DURATION.match(text.strip().upper()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    parts = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
    return parts["days"] * 86400 + parts["hours"] * 3600 + parts["minutes"] * 60 + parts["seconds"]


def _parse_datetime(text: str) -> datetime:
    value = text.strip().replace("Z", "+00:00").replace("z", "+00:00")
    # .NET writes 7 fractional digits; Python takes at most 6.
    value = re.sub(r"(\.\d{6})\d+", r"\1", value)
    when = datetime.fromisoformat(value)
    if when.tzinfo is None:
        from datetime import UTC

        when = when.replace(tzinfo=UTC)
    return when


@dataclass
class InstallParameters:
    """A validated VirtualMachineInstallPatchesParameters for one VM's OS."""

    reboot_setting: str
    maximum_duration: float
    os_type: str
    classifications: set[str] = field(default_factory=set)  # reported strings, not enum names
    kb_include: set[str] = field(default_factory=set)
    kb_exclude: set[str] = field(default_factory=set)
    exclude_requiring_reboot: bool = False
    max_publish_date: datetime | None = None
    name_include: list[str] = field(default_factory=list)
    name_exclude: list[str] = field(default_factory=list)
    package_include: list[str] = field(default_factory=list)
    package_exclude: list[str] = field(default_factory=list)


def _enum(value: Any, allowed: tuple[str, ...] | list[str], target: str) -> str:
    if isinstance(value, str):
        for name in allowed:
            if name.lower() == value.strip().lower():
                return name
    raise invalid_parameter(
        target,
        f"The value '{value}' of parameter '{target}' is invalid. Allowed values are: {', '.join(allowed)}.",
    )


def _string_list(params: dict[str, Any], name: str, target: str, *, mask: bool = False) -> list[str]:
    value = params.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid_parameter(
            f"{target}.{name}", f"Parameter '{target}.{name}' must be an array of strings."
        )
    if mask:
        for item in value:
            if not item.strip():
                raise invalid_parameter(
                    f"{target}.{name}",
                    f"Parameter '{target}.{name}' does not support null, empty or whitespace-only values.",
                )
    return [v.strip() for v in value]


def _kb_number(value: str, target: str) -> str:
    number = value.upper().removeprefix("KB")
    if not number.isdigit():
        raise invalid_parameter(target, f"'{value}' in parameter '{target}' is not a KB number.")
    return number


def validate_install(body: Any, os_type: str, *, require_maximum_duration: bool = False) -> InstallParameters:
    """Validate an installPatches body for a VM of `os_type`; raise ArmError 400 like Compute does.

    `require_maximum_duration`: HybridCompute's MachineInstallPatchesParameters lists maximumDuration as
    required (Compute's VirtualMachineInstallPatchesParameters does not)."""
    root = "installPatchesInput"
    if not isinstance(body, dict):
        raise ArmError(
            400,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized: expected a JSON object.",
        )
    if body.get("rebootSetting") is None:
        raise invalid_parameter(
            f"{root}.rebootSetting", "Required parameter 'rebootSetting' is missing (null)."
        )
    reboot = _enum(body["rebootSetting"], REBOOT_SETTINGS, f"{root}.rebootSetting")
    duration = DEFAULT_MAXIMUM_DURATION
    if require_maximum_duration and body.get("maximumDuration") is None:
        raise invalid_parameter(
            f"{root}.maximumDuration", "Required parameter 'maximumDuration' is missing (null)."
        )
    if body.get("maximumDuration") is not None:
        try:
            duration = parse_duration(body["maximumDuration"])
        except ValueError:
            duration = -1.0
        if duration <= 0:
            raise invalid_parameter(
                f"{root}.maximumDuration",
                f"The value '{body['maximumDuration']}' of parameter 'maximumDuration' is not a "
                "valid ISO 8601 duration such as PT4H.",
            )
    params = InstallParameters(reboot_setting=reboot, maximum_duration=duration, os_type=os_type)
    key = "windowsParameters" if os_type == "Windows" else "linuxParameters"
    target = f"{root}.{key}"
    section = body.get(key)
    if section is None:
        raise invalid_parameter(
            target, f"Parameter '{key}' is required to install patches on a {os_type} virtual machine."
        )
    if not isinstance(section, dict):
        raise invalid_parameter(target, f"Parameter '{key}' must be an object.")
    allowed = WINDOWS_CLASSIFICATIONS if os_type == "Windows" else LINUX_CLASSIFICATIONS
    for value in _string_list(section, "classificationsToInclude", target):
        name = _enum(value, list(allowed), f"{target}.classificationsToInclude")
        params.classifications.add(allowed[name])
    if os_type == "Windows":
        params.kb_include = {
            _kb_number(v, f"{target}.kbNumbersToInclude")
            for v in _string_list(section, "kbNumbersToInclude", target)
        }
        params.kb_exclude = {
            _kb_number(v, f"{target}.kbNumbersToExclude")
            for v in _string_list(section, "kbNumbersToExclude", target)
        }
        flag = section.get("excludeKbsRequiringReboot", False)
        if not isinstance(flag, bool):
            raise invalid_parameter(
                f"{target}.excludeKbsRequiringReboot",
                "Parameter 'excludeKbsRequiringReboot' must be a boolean.",
            )
        params.exclude_requiring_reboot = flag
        if section.get("maxPatchPublishDate") is not None:
            try:
                params.max_publish_date = _parse_datetime(section["maxPatchPublishDate"])
            except (TypeError, ValueError, AttributeError):
                raise invalid_parameter(
                    f"{target}.maxPatchPublishDate",
                    f"The value '{section['maxPatchPublishDate']}' of parameter "
                    "'maxPatchPublishDate' is not a valid date-time.",
                ) from None
        params.name_include = _string_list(section, "patchNameMasksToInclude", target, mask=True)
        params.name_exclude = _string_list(section, "patchNameMasksToExclude", target, mask=True)
    else:
        params.package_include = _string_list(section, "packageNameMasksToInclude", target, mask=True)
        params.package_exclude = _string_list(section, "packageNameMasksToExclude", target, mask=True)
    return params


def _mask_hit(masks: list[str], *candidates: str, case_sensitive: bool) -> bool:
    for mask in masks:
        for candidate in candidates:
            if case_sensitive and fnmatch.fnmatchcase(candidate, mask):
                return True
            if not case_sensitive and fnmatch.fnmatchcase(candidate.lower(), mask.lower()):
                return True
    return False


def selection_state(patch: Patch, params: InstallParameters) -> str:
    """'Excluded', 'Selected' or 'NotSelected' for one available patch."""
    if params.os_type == "Windows":
        excluded = (
            patch.kb_id in params.kb_exclude
            or _mask_hit(params.name_exclude, patch.name, case_sensitive=False)
            or (params.exclude_requiring_reboot and patch.reboot_behavior != "NeverReboots")
        )
        included = (
            patch.classification in params.classifications
            or patch.kb_id in params.kb_include
            or _mask_hit(params.name_include, patch.name, case_sensitive=False)
        )
    else:
        both = (patch.name, f"{patch.name}_{patch.version}")
        excluded = _mask_hit(params.package_exclude, *both, case_sensitive=True)
        included = patch.classification in params.classifications or _mask_hit(
            params.package_include, *both, case_sensitive=True
        )
    if excluded:
        return "Excluded"
    if not included:
        return "NotSelected"
    if params.max_publish_date is not None and patch.published > params.max_publish_date:
        return "NotSelected"
    return "Selected"


def install_order(patch: Patch) -> tuple[int, str]:
    rank = INSTALL_ORDER.index(patch.classification) if patch.classification in INSTALL_ORDER else 99
    return rank, patch.name


@dataclass
class InstallOutcome:
    """What an installation did; `result` is the VirtualMachineInstallPatchesResult JSON."""

    result: dict[str, Any]
    installed: list[Patch]
    simulated_seconds: float
    reboot_pending_after: bool


def simulate_install(
    available: list[Patch],
    params: InstallParameters,
    *,
    reboot_pending_before: bool,
    overhead: float,
    reboot_seconds: float,
    failure_rate: float,
    rng: random.Random,
    activity_id: str,
    started: datetime,
) -> InstallOutcome:
    """Run the installation on the simulated clock and build Compute's result."""
    states = {p.patch_id: selection_state(p, params) for p in available}
    selected = sorted((p for p in available if states[p.patch_id] == "Selected"), key=install_order)
    elapsed = overhead
    budget = params.maximum_duration
    installed: list[Patch] = []
    failed: list[Patch] = []
    window_exceeded = False
    for patch in selected:
        if window_exceeded or elapsed + patch.duration > budget:
            window_exceeded = True
            states[patch.patch_id] = "Pending"
            continue
        elapsed += patch.duration
        if failure_rate and rng.random() < failure_rate:
            states[patch.patch_id] = "Failed"
            failed.append(patch)
        else:
            states[patch.patch_id] = "Installed"
            installed.append(patch)

    needs_reboot = reboot_pending_before or any(p.needs_reboot for p in installed)
    reboot_pending_after = needs_reboot
    if params.reboot_setting == "Always" or (params.reboot_setting == "IfRequired" and needs_reboot):
        reboot_status = "Completed"
        reboot_pending_after = False
        elapsed += reboot_seconds
    elif needs_reboot:  # Never
        reboot_status = "Required"
    else:
        reboot_status = "NotNeeded"

    counts = {
        state: sum(1 for s in states.values() if s == state)
        for state in ("Installed", "Failed", "Pending", "Excluded", "NotSelected")
    }
    error = None
    status = "Succeeded"
    if failed or window_exceeded:
        status = "Failed"
        reasons = []
        details = []
        if failed:
            reasons.append("[X] a failure occurred during the operation")
            details += [
                {
                    "code": "PackageFailedToInstall" if params.os_type == "Linux" else "PatchFailedToInstall",
                    "target": p.patch_id,
                    "message": f"Failed to install {p.name}" + (f" {p.version}" if p.version else "") + ".",
                }
                for p in failed
            ]
        if window_exceeded:
            reasons.append("[X] maintenance window exceeded")
            details.append(
                {
                    "code": "MaintenanceWindowExceeded",
                    "target": "maximumDuration",
                    "message": f"{counts['Pending']} selected patch(es) did not fit in the maximum "
                    f"duration of {int(budget)} seconds.",
                }
            )
        error = {
            "code": "OperationFailed",
            "message": "Operation status was marked as failed because: " + " ".join(reasons),
            "details": details,
        }
    order = {p.patch_id: i for i, p in enumerate(selected)}
    listed = sorted(available, key=lambda p: (order.get(p.patch_id, len(order)), p.name))
    result = {
        "status": status,
        "installationActivityId": activity_id,
        "rebootStatus": reboot_status,
        "maintenanceWindowExceeded": window_exceeded,
        "excludedPatchCount": counts["Excluded"],
        "notSelectedPatchCount": counts["NotSelected"],
        "pendingPatchCount": counts["Pending"],
        "installedPatchCount": counts["Installed"],
        "failedPatchCount": counts["Failed"],
        "patches": [p.installation(states[p.patch_id]) for p in listed],
        "startDateTime": iso_z(started),
        "error": error,
    }
    return InstallOutcome(result, installed, elapsed, reboot_pending_after)


def assessment_result(
    available: list[Patch],
    *,
    reboot_pending: bool,
    activity_id: str,
    started: datetime,
    assessed_at: datetime,
) -> dict[str, Any]:
    """VirtualMachineAssessPatchesResult for the patches a VM is missing."""
    critical = sum(1 for p in available if p.critical_or_security)
    return {
        "status": "Succeeded",
        "assessmentActivityId": activity_id,
        "rebootPending": reboot_pending,
        "criticalAndSecurityPatchCount": critical,
        "otherPatchCount": len(available) - critical,
        "startDateTime": iso_z(started),
        "availablePatches": [p.available(activity_id, assessed_at) for p in available],
        "error": None,
    }


# classification_style "display": the reported string -> the display name some Azure answers carry.
DISPLAY_CLASSIFICATIONS = {
    "Security": "Security Updates",
    "Critical": "Critical Updates",
    "Definition Updates": "Definition Updates",
    "Update Rollups": "Update Rollups",
    "FeaturePack": "Feature Packs",
    "ServicePack": "Service Packs",
    "Tools": "Tools",
    "Updates": "Updates",
}
# Before 2020-12-01 the assessment result named its list `patches` (azure-rest-api-specs PR #11768 renamed it).
AVAILABLE_PATCHES_SINCE = "2020-12-01"


def _display(patch: dict[str, Any], os_type: str) -> dict[str, Any]:
    if os_type == "Linux":  # Linux keeps Security/Critical/Other, and says outright it has no KB
        return {**patch, "kbId": None}
    return {**patch, "classifications": [DISPLAY_CLASSIFICATIONS.get(c, c) for c in patch["classifications"]]}


def result_view(
    result: dict[str, Any], kind: str, os_type: str, api_version: str, classification_style: str = "name"
) -> dict[str, Any]:
    """Compute's result as answered for the POST's api-version and the classification_style fault setting
    (the engine keeps one canonical result; this never changes it)."""
    view = dict(result)
    key = "availablePatches" if kind == "assessPatches" else "patches"
    if classification_style == "display" and isinstance(view.get(key), list):
        view[key] = [_display(p, os_type) for p in view[key]]
    if kind == "assessPatches" and api_version[:10] < AVAILABLE_PATCHES_SINCE and key in view:
        view["patches"] = view.pop(key)
    return view
