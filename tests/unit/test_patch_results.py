"""shared/arm/patch_results.py: the rules for the patch lists of assessPatches and installPatches results.

1. classifications by display name ("Security Updates") count as the API's name ("Security"), any case or spacing;
   names PatchPilot does not know are kept as given;
2. a Linux patch's null kbId / rebootBehavior stays null, never the string "None", and its key is its package name;
3. an assessment's list is `availablePatches` (api-version 2020-12-01 and later) or `patches` (earlier);
4. an install's NotSelected patches are counted by canonical classification.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.arm.patch_results import (
    assessment_patches,
    canonical_classification,
    canonical_counts,
    install_patches,
    normalise_patch,
    not_selected_by_classification,
    primary_classification,
)
from shared.storage.fleet_store import patch_key


@pytest.mark.parametrize(("given", "canonical"), [
    # Windows Update's display names (the spec's own examples use two of them)
    ("Security Updates", "Security"), ("Critical Updates", "Critical"), ("Definition Updates", "Definition"),
    ("Update Rollups", "UpdateRollUp"), ("Feature Packs", "FeaturePack"), ("Service Packs", "ServicePack"),
    ("Tools", "Tools"), ("Updates", "Updates"),
    # the API's own names stay
    ("Security", "Security"), ("Critical", "Critical"), ("Definition", "Definition"), ("UpdateRollUp", "UpdateRollUp"),
    ("FeaturePack", "FeaturePack"), ("ServicePack", "ServicePack"), ("Other", "Other"),
    # case and spaces do not matter
    ("security updates", "Security"), ("SECURITY  UPDATES", "Security"), (" Security ", "Security"),
    ("update rollups", "UpdateRollUp"), ("UpdateRollup", "UpdateRollUp"), ("other", "Other"), ("TOOLS", "Tools"),
    ("featurepacks", "FeaturePack"),
    # HybridCompute's AvailablePatchCountByClassification property names
    ("updateRollup", "UpdateRollUp"), ("featurePack", "FeaturePack"), ("servicePack", "ServicePack"),
    ("definition", "Definition"), ("security", "Security"),
    # unknown: kept exactly as given
    ("Drivers", "Drivers"), ("Upgrades", "Upgrades"), ("Security Fixes", "Security Fixes"), ("", ""),
])
def test_classifications_are_named_as_the_api_names_them(given: str, canonical: str) -> None:
    assert canonical_classification(given) == canonical


@pytest.mark.parametrize(("patch", "expected"), [
    ({"kbId": "1", "classifications": ["Security Updates"]}, {"kbId": "1", "classifications": ["Security"]}),
    ({"classifications": ["Security", "Security Updates", "Critical Updates"]},
     {"classifications": ["Security", "Critical"]}),  # one class named twice is one class; order kept
    ({"classifications": "Update Rollups"}, {"classifications": ["UpdateRollUp"]}),  # a lone string
    ({"classifications": [None, "", "Drivers"]}, {"classifications": ["Drivers"]}),
    ({"classifications": []}, {"classifications": []}),
    ({"classifications": None}, {"classifications": None}),
    ({"name": "openssl"}, {"name": "openssl"}),  # absent stays absent
    # Linux: null kbId / rebootBehavior stay null; a stringified null becomes null again
    ({"name": "openssl", "kbId": None, "rebootBehavior": None}, {"name": "openssl", "kbId": None,
                                                                 "rebootBehavior": None}),
    ({"name": "openssl", "kbId": "None", "rebootBehavior": "None"}, {"name": "openssl", "kbId": None,
                                                                     "rebootBehavior": None}),
    ({"name": "bash", "kbId": "", "rebootBehavior": " null "}, {"name": "bash", "kbId": None, "rebootBehavior": None}),
    ({"kbId": "5034441", "rebootBehavior": "CanRequestReboot"}, {"kbId": "5034441",
                                                                 "rebootBehavior": "CanRequestReboot"}),
])
def test_a_patch_is_normalised(patch: dict[str, Any], expected: dict[str, Any]) -> None:
    before = json.dumps(patch)
    assert normalise_patch(patch) == expected
    assert json.dumps(patch) == before  # a copy: the result Azure gave is not changed


@pytest.mark.parametrize("patch", [
    {"name": "openssl", "version": "3.0.2-0ubuntu1.20", "kbId": None, "rebootBehavior": None,
     "classifications": ["Security"]},
    {"name": "openssl", "kbId": "None", "rebootBehavior": "None", "classifications": ["Other"]},
    {"name": "openssl", "classifications": ["Other"]},
])
def test_no_none_string_is_kept_and_a_linux_patch_is_known_by_its_package(patch: dict[str, Any]) -> None:
    shaped = normalise_patch(patch)
    assert "None" not in json.dumps(shaped)
    assert patch_key(shaped) == "openssl"


def test_every_other_field_is_kept() -> None:
    patch = {"patchId": "p", "name": "n", "version": "", "kbId": "2267602", "classifications": ["Definition Updates"],
             "rebootBehavior": "NeverReboots", "activityId": "a", "publishedDate": "2018-11-07T00:00:00Z",
             "lastModifiedDateTime": "2020-04-24T21:18:45.2830263Z", "assessmentState": "Available", "extra": 1}
    assert normalise_patch(patch) == {**patch, "classifications": ["Definition"]}


WIN = {"kbId": "890830", "classifications": ["Update Rollups"]}
LINUX = {"name": "bash", "kbId": None, "classifications": ["Other"]}


@pytest.mark.parametrize(("result", "expected"), [
    ({"availablePatches": [WIN, LINUX]}, [{"kbId": "890830", "classifications": ["UpdateRollUp"]}, LINUX]),
    ({"patches": [WIN]}, [{"kbId": "890830", "classifications": ["UpdateRollUp"]}]),  # before 2020-12-01
    ({"availablePatches": [LINUX], "patches": [WIN]}, [LINUX]),  # availablePatches first
    ({"availablePatches": [], "patches": [WIN]}, []),  # an empty availablePatches is the answer
    ({"availablePatches": None, "patches": [WIN]}, [{"kbId": "890830", "classifications": ["UpdateRollUp"]}]),
    ({"availablePatchCountByClassification": {"security": 2}}, []),  # Arc: counts, no list
    ({"availablePatches": [WIN, "junk", None]}, [{"kbId": "890830", "classifications": ["UpdateRollUp"]}]),
    ({}, []),
])
def test_an_assessment_lists_either_key(result: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    assert assessment_patches(result) == expected


@pytest.mark.parametrize(("result", "expected"), [
    ({"patches": [{**WIN, "installationState": "Installed"}]},
     [{"kbId": "890830", "classifications": ["UpdateRollUp"], "installationState": "Installed"}]),
    ({"patches": [{"name": "bash", "kbId": "None", "classifications": ["other"], "installationState": "NotSelected"}]},
     [{"name": "bash", "kbId": None, "classifications": ["Other"], "installationState": "NotSelected"}]),
    ({"availablePatches": [WIN]}, []),  # an install result's list is `patches`, never renamed
    ({"patches": None}, []), ({}, []),  # an Arc install result lists no patches
])
def test_an_install_lists_its_patches(result: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    assert install_patches(result) == expected


def state(classes: Any, installation: str) -> dict[str, Any]:
    return {"name": "x", "classifications": classes, "installationState": installation}


@pytest.mark.parametrize(("patches", "expected"), [
    ([], {}),
    ([state(["Other"], "NotSelected"), state(["Other"], "NotSelected"), state(["Security"], "Installed")],
     {"Other": 2}),
    ([state(["Security Updates"], "NotSelected"), state(["Security"], "NotSelected")], {"Security": 2}),
    ([state(["Update Rollups"], "notselected"), state(["Tools"], "Excluded"), state(["Tools"], "Pending")],
     {"UpdateRollUp": 1}),
    ([state([], "NotSelected"), state(None, "NotSelected")], {"Unclassified": 2}),
    ([state(["Critical", "Security"], "NotSelected")], {"Critical": 1}),  # once, in its first classification
    ([state(["Other"], "Failed"), state(["Other"], "Installed"), {"classifications": ["Other"]}], {}),
])
def test_not_selected_patches_are_counted_by_classification(patches: list[dict[str, Any]],
                                                           expected: dict[str, int]) -> None:
    assert not_selected_by_classification(patches) == expected


@pytest.mark.parametrize(("counts", "expected"), [
    ({"Security Updates": 2, "Security": 1, "Update Rollups": 3}, {"Security": 3, "UpdateRollUp": 3}),
    ({"updateRollup": 1, "Drivers": 4}, {"Drivers": 4, "UpdateRollUp": 1}),
    ({}, {}),
])
def test_counts_merge_under_canonical_names(counts: dict[str, int], expected: dict[str, int]) -> None:
    assert canonical_counts(counts) == expected


@pytest.mark.parametrize(("patch", "expected"), [
    ({"classifications": ["Critical Updates", "Security"]}, "Critical"), ({"classifications": []}, "Unclassified"),
    ({}, "Unclassified"), ({"classifications": ["Drivers"]}, "Drivers"),
])
def test_a_patch_counts_in_its_first_classification(patch: dict[str, Any], expected: str) -> None:
    assert primary_classification(patch) == expected
