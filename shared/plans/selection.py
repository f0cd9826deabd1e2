"""Which of a machine's assessed patches an installPatches request would install, and the body that installs
exactly those. Pure functions.

The selection rules are Azure's (Compute's `WindowsParameters` / `LinuxParameters`, 2025-04-01, excerpt in
tests/fixtures/azure-api; Update Manager's "Manage update configuration settings" and "Update Manager
exclusions and inclusions" docs):
- Windows: a patch is *excluded* when its KB is in `kbNumbersToExclude`, its name matches a
  `patchNameMasksToExclude` mask (case-insensitive wildcards), or `excludeKbsRequiringReboot` is set and its
  `rebootBehavior` is not `NeverReboots`; otherwise it is *included* when its classification is in
  `classificationsToInclude`, its KB in `kbNumbersToInclude` or its name matches `patchNameMasksToInclude`; an
  included patch published after `maxPatchPublishDate` is not selected. Exclusion wins over inclusion.
- Linux: *excluded* when `packageNameMasksToExclude` matches the package name or `name_version`
  (case-sensitive: package names are); *included* by classification or a `packageNameMasksToInclude` match.
- Classifications compare by the API's names (shared/arm/patch_results.py canonicalises what assessments report).
- A reboot is expected when a selected patch `AlwaysRequiresReboot` or `CanRequestReboot`, or the machine already
  has one pending (`rebootPending`), unless rebootSetting is `Never`; `Always` reboots anyway.

`pinned_body` is the body that installs a plan and nothing newer (issue #21): on Windows the planned KBs by
`kbNumbersToInclude` (patches without a KB by their exact name) and `maxPatchPublishDate` the second after the
newest planned patch, on Linux the planned `name_version`s by `packageNameMasksToInclude`, the classification
filters removed so nothing else qualifies; the request's exclusions stay.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.arm.patch_results import normalise_patch, primary_classification
from shared.core.errors import ValidationError
from shared.validation.install_parameters import parse_datetime

REBOOTING = frozenset({"AlwaysRequiresReboot", "CanRequestReboot"})
_MASK_SPECIALS = str.maketrans({"*": "[*]", "?": "[?]", "[": "[[]"})


@dataclass(frozen=True)
class PlannedPatch:
    """One patch a plan installs: Azure's VirtualMachineSoftwarePatchProperties, the fields a change ticket needs."""

    patch_id: str
    name: str
    classification: str
    kb_id: str = ""  # Windows
    version: str = ""  # Linux
    reboot_behavior: str = ""
    published: str = ""  # ISO, as Azure reported it

    @property
    def key(self) -> str:
        """How the plan's totals count it: the KB for Windows, the package name for Linux (fleet_store.patch_key)."""
        if self.kb_id:
            return self.kb_id.upper() if self.kb_id.upper().startswith("KB") else f"KB{self.kb_id}"
        return self.name

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"patchId": self.patch_id, "name": self.name, "classification": self.classification}
        for field, value in (("kbId", self.kb_id), ("version", self.version), ("rebootBehavior", self.reboot_behavior),
                             ("publishedDate", self.published)):
            if value:
                out[field] = value
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PlannedPatch:
        return cls(patch_id=str(raw.get("patchId") or ""), name=str(raw.get("name") or ""),
                   classification=str(raw.get("classification") or ""), kb_id=str(raw.get("kbId") or ""),
                   version=str(raw.get("version") or ""), reboot_behavior=str(raw.get("rebootBehavior") or ""),
                   published=str(raw.get("publishedDate") or ""))


def _digits(kb: object) -> str:
    text = str(kb or "").strip().upper()
    return text[2:] if text.startswith("KB") else text


def _masked(masks: Iterable[str], candidates: Sequence[str], *, case_sensitive: bool) -> bool:
    for mask in masks:
        for candidate in candidates:
            if case_sensitive and fnmatch.fnmatchcase(candidate, mask):
                return True
            if not case_sensitive and fnmatch.fnmatchcase(candidate.lower(), mask.lower()):
                return True
    return False


def _published(patch: Mapping[str, Any]) -> datetime | None:
    try:
        return parse_datetime(patch.get("publishedDate"), "publishedDate") if patch.get("publishedDate") else None
    except ValidationError:
        return None


def selected(patch: Mapping[str, Any], parameters: Mapping[str, Any], os_type: str) -> bool:
    """Whether installPatches with these OS parameters (`windowsParameters` or `linuxParameters`, as validated by
    shared/validation/install_parameters.py) installs this assessed patch. See the module doc for the rules."""
    patch = normalise_patch(dict(patch))
    classification = primary_classification(patch)
    name = str(patch.get("name") or "")
    classes = set(parameters.get("classificationsToInclude") or ())
    if os_type.lower() == "windows":
        kb = _digits(patch.get("kbId"))
        if kb and kb in {_digits(k) for k in parameters.get("kbNumbersToExclude") or ()}:
            return False
        if _masked(parameters.get("patchNameMasksToExclude") or (), [name], case_sensitive=False):
            return False
        if parameters.get("excludeKbsRequiringReboot") and patch.get("rebootBehavior") != "NeverReboots":
            return False
        included = (classification in classes
                    or (bool(kb) and kb in {_digits(k) for k in parameters.get("kbNumbersToInclude") or ()})
                    or _masked(parameters.get("patchNameMasksToInclude") or (), [name], case_sensitive=False))
        if not included:
            return False
        cutoff = parameters.get("maxPatchPublishDate")
        published = _published(patch)
        return not (cutoff and published is not None and published > parse_datetime(cutoff, "maxPatchPublishDate"))
    both = [name, f"{name}_{patch.get('version')}"] if patch.get("version") else [name]
    if _masked(parameters.get("packageNameMasksToExclude") or (), both, case_sensitive=True):
        return False
    return classification in classes or _masked(parameters.get("packageNameMasksToInclude") or (), both,
                                                case_sensitive=True)


def planned_patches(available: Iterable[Mapping[str, Any]], install: Mapping[str, Any],
                    os_type: str) -> list[PlannedPatch] | None:
    """The assessed patches `install` (validated installPatches parameters) selects on a machine of `os_type`;
    None when the request has no parameters for that OS (the run fails such a machine NoParametersForOsType)."""
    key = {"windows": "windowsParameters", "linux": "linuxParameters"}.get(os_type.lower())
    if key is None or key not in install:
        return None
    chosen = []
    for raw in available:
        patch = normalise_patch(dict(raw))
        if not selected(patch, install[key], os_type):
            continue
        chosen.append(PlannedPatch(
            patch_id=str(patch.get("patchId") or ""), name=str(patch.get("name") or ""),
            classification=primary_classification(patch), kb_id=str(patch.get("kbId") or ""),
            version=str(patch.get("version") or "") if os_type.lower() == "linux" else "",
            reboot_behavior=str(patch.get("rebootBehavior") or ""), published=str(patch.get("publishedDate") or "")))
    return sorted(chosen, key=lambda p: (p.classification, p.name))


def reboot_expected(patches: Sequence[PlannedPatch], install: Mapping[str, Any], *, reboot_pending: bool) -> bool:
    """Whether the installation is expected to reboot the machine (module doc)."""
    setting = str(install.get("rebootSetting") or "IfRequired")
    if setting == "Never":
        return False
    if setting == "Always":
        return True
    return reboot_pending or any(p.reboot_behavior in REBOOTING for p in patches)


def pinned_body(body: Mapping[str, Any], patches: Sequence[PlannedPatch], os_type: str) -> dict[str, Any] | None:
    """The installPatches body that installs `patches` (a plan's, for this machine) and nothing newer; None when
    there is nothing to pin (no patches, or no parameters for this OS). See the module doc."""
    if not patches:
        return None
    if os_type.lower() == "windows" and "windowsParameters" in body:
        windows = {k: v for k, v in body["windowsParameters"].items()
                   if k not in ("classificationsToInclude", "patchNameMasksToInclude", "kbNumbersToInclude")}
        kbs = sorted({_digits(p.kb_id) for p in patches if p.kb_id})
        names = sorted({p.name.translate(_MASK_SPECIALS) for p in patches if not p.kb_id and p.name})
        if kbs:
            windows["kbNumbersToInclude"] = kbs
        if names:
            windows["patchNameMasksToInclude"] = names
        dates = [p.published for p in patches if p.published]
        if dates:
            # Azure reports publishedDate to the second but may compare the exact time: the newest planned patch,
            # published at 10:49:45.6, must not fall after a cut-off of 10:49:45. The next whole second; the KB
            # list, not the date, is what keeps other patches out.
            newest = max(parse_datetime(d, "publishedDate") for d in dates).replace(microsecond=0)
            windows["maxPatchPublishDate"] = (newest + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {**body, "windowsParameters": windows}
    if os_type.lower() == "linux" and "linuxParameters" in body:
        linux = {k: v for k, v in body["linuxParameters"].items()
                 if k not in ("classificationsToInclude", "packageNameMasksToInclude")}
        linux["packageNameMasksToInclude"] = sorted({f"{p.name}_{p.version}" if p.version else p.name
                                                     for p in patches})
        return {**body, "linuxParameters": linux}
    return None
