"""The patch lists of assessPatches and installPatches results, in one shape. Pure functions.

Contract: azure-rest-api-specs `specification/compute/resource-manager/Microsoft.Compute/ComputeRP/stable/
2025-04-01/virtualMachine.json` (excerpt: /work/shared/azure-api/compute/patch-operations.json):
- VirtualMachineAssessPatchesResult.availablePatches: VirtualMachineSoftwarePatchProperties (patchId, name,
  version, kbId, classifications, rebootBehavior, activityId, publishedDate, lastModifiedDateTime,
  assessmentState). Before api-version 2020-12-01 the same list was named `patches` (azure-rest-api-specs PR
  #11768, "VMGuestPatch Updates": `"patches"` renamed `"availablePatches"` in compute.json; the author: "the
  property is renamed in the API since the last release and is in Prod"). `assessment_patches` reads either.
- VirtualMachineInstallPatchesResult.patches: PatchInstallationDetail (patchId, name, version, kbId,
  classifications, installationState: Unknown, Installed, Failed, Excluded, NotSelected, Pending). That list was
  never renamed, and it has no rebootBehavior.
- `kbId` "only applies to Windows patches" and `version` "only applies to Linux": a Linux patch's kbId (and
  rebootBehavior, which Linux assessments do not fill) comes back null. It stays null (JSON null, Python None),
  never the string "None", and a patch is then known by its package name (fleet_store.patch_key).
- `classifications` is "the classification(s) of the patch as provided by the patch publisher": an open string
  list. Field reports and the spec's own examples (VirtualMachine_AssessPatches.json, VirtualMachine_InstallPatches
  .json: "Definition Updates", "Update Rollups") show Windows Update's display names ("Security Updates",
  "Critical Updates", "Feature Packs", ...) where the request enums (WindowsParameters.classificationsToInclude:
  Critical, Security, UpdateRollUp, FeaturePack, ServicePack, Definition, Tools, Updates; LinuxParameters:
  Critical, Security, Other) name the same classes. `canonical_classification` maps both spellings to the
  enum's, so what PatchPilot stores and counts never splits one class in two. HybridCompute's
  AvailablePatchCountByClassification property names (security, critical, definition, updateRollup,
  featurePack, servicePack, tools, updates, other: HybridCompute.json 2024-07-10) fold to the same names.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

API_CLASSIFICATIONS = ("Critical", "Security", "UpdateRollUp", "FeaturePack", "ServicePack", "Definition", "Tools",
                       "Updates", "Other")
OTHER = "Other"  # the Linux class Ubuntu's updates-pocket security fixes often land in (docs/assessments.md)
UNCLASSIFIED = "Unclassified"  # a patch with no classification
NOT_SELECTED = "NotSelected"  # PatchInstallationState: available, but outside the operation's criteria


def _fold(text: str) -> str:
    """Case, whitespace, '-' and '_' ignored (as shared/validation/install_parameters.py folds request enums)."""
    return re.sub(r"[\s_-]", "", text).lower()


_CANONICAL: dict[str, str] = {
    **{_fold(name): name for name in API_CLASSIFICATIONS},
    # Windows Update's display names, as results (and the portal) show them.
    "securityupdates": "Security",
    "criticalupdates": "Critical",
    "definitionupdates": "Definition",
    "updaterollups": "UpdateRollUp",
    "featurepacks": "FeaturePack",
    "servicepacks": "ServicePack",
}
_ABSENT = {"", "none", "null"}  # what a null kbId / rebootBehavior may have become on its way (str(None))
_NULLABLE = ("kbId", "rebootBehavior")


def canonical_classification(name: str) -> str:
    """The API's name for a classification ("Security Updates" -> "Security", "update rollups" ->
    "UpdateRollUp", "updateRollup" -> "UpdateRollUp"); a name PatchPilot does not know is returned as given."""
    return _CANONICAL.get(_fold(name), name)


def canonical_counts(counts: Mapping[str, Any]) -> dict[str, int]:
    """{classification: count} with canonical names, counts of names that meet summed (sorted by name)."""
    merged: Counter[str] = Counter()
    for name, count in counts.items():
        merged[canonical_classification(str(name))] += int(count)
    return dict(sorted(merged.items()))


def _classifications(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else list(value) if isinstance(value, list | tuple) else []
    out: list[str] = []
    for item in items:
        if item is None or str(item).strip() == "":
            continue
        name = canonical_classification(str(item))
        if name not in out:  # ["Security", "Security Updates"] is one class
            out.append(name)
    return out


def normalise_patch(patch: dict[str, Any]) -> dict[str, Any]:
    """A copy of one patch record with `classifications` canonical (deduplicated, order kept) and `kbId` /
    `rebootBehavior` None when Azure gave null (or an empty or "None" string): never the string "None".
    Keys Azure left out stay out; every other field is kept as given."""
    out = dict(patch)
    if "classifications" in out and out["classifications"] is not None:
        out["classifications"] = _classifications(out["classifications"])
    for name in _NULLABLE:
        if name in out:
            value = out[name]
            out[name] = None if value is None or str(value).strip().lower() in _ABSENT else value
    return out


def _patch_list(value: Any) -> list[dict[str, Any]]:
    return [normalise_patch(p) for p in value if isinstance(p, dict)] if isinstance(value, list) else []


def assessment_patches(result: dict[str, Any]) -> list[dict[str, Any]]:
    """An assessPatches result's patches, normalised: `availablePatches` (api-version 2020-12-01 and later) or,
    when that is absent or null, `patches` (earlier versions; azure-rest-api-specs PR #11768)."""
    if isinstance(result.get("availablePatches"), list):
        return _patch_list(result["availablePatches"])
    return _patch_list(result.get("patches"))


def install_patches(result: dict[str, Any]) -> list[dict[str, Any]]:
    """An installPatches result's `patches` (PatchInstallationDetail), normalised; [] when there is none (an Arc
    machine's MachineInstallPatchesResult has no patch list)."""
    return _patch_list(result.get("patches"))


def primary_classification(patch: Mapping[str, Any]) -> str:
    """The class a patch counts in: its first classification, canonical; "Unclassified" when it has none."""
    classes = _classifications(patch.get("classifications"))
    return classes[0] if classes else UNCLASSIFIED


def not_selected_by_classification(patches: list[dict[str, Any]]) -> dict[str, int]:
    """{canonical classification: number of patches} of an install result's patches whose installationState is
    NotSelected (available, but outside the run's classificationsToInclude and include lists), each counted once,
    in its first classification. What a Security-only run on Ubuntu leaves behind shows as {"Other": n}."""
    counts = Counter(primary_classification(p) for p in patches
                     if str(p.get("installationState") or "").strip().lower() == NOT_SELECTED.lower())
    return dict(sorted(counts.items()))
