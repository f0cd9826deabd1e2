"""installPatches rules without HTTP: validation, selection, maintenance window, reboot, counts."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from tools.azure_simulator.errors import ArmError
from tools.azure_simulator.fleet import Patch
from tools.azure_simulator.patching import (
    InstallParameters,
    parse_duration,
    selection_state,
    simulate_install,
    validate_install,
)

START = datetime(2025, 10, 21, 8, 0, tzinfo=UTC)


def win(
    kb: str,
    classification: str,
    reboot: str = "NeverReboots",
    *,
    minutes: float = 5,
    published: datetime = datetime(2025, 10, 14, tzinfo=UTC),
    name: str | None = None,
    requests_reboot: bool = False,
) -> Patch:
    return Patch(
        f"id-{kb}",
        name or f"Update {classification} (KB{kb})",
        "",
        kb,
        classification,
        reboot,
        published,
        minutes * 60,
        requests_reboot,
    )


def lnx(name: str, version: str, classification: str = "Security", reboot: str = "NeverReboots") -> Patch:
    return Patch(
        f"{name}_{version}",
        name,
        version,
        None,
        classification,
        reboot,
        datetime(2025, 10, 1, tzinfo=UTC),
        30,
        False,
    )


WINDOWS = [
    win(
        "5066782",
        "Security",
        "AlwaysRequiresReboot",
        minutes=30,
        name="2025-10 Cumulative Update for Windows Server 2022 for x64-based Systems (KB5066782)",
    ),
    win("5000001", "Critical", minutes=3),
    win("2267602", "Definition Updates", minutes=1),
    win("890830", "Update Rollups", "CanRequestReboot", minutes=3),
    win(
        "5000002",
        "Updates",
        "CanRequestReboot",
        minutes=5,
        requests_reboot=True,
        published=datetime(2025, 10, 30, tzinfo=UTC),
    ),
    win("5000003", "FeaturePack", "AlwaysRequiresReboot", minutes=15),
]
LINUX = [
    lnx("openssl", "3.0.13-0ubuntu3.6"),
    lnx("libssl3", "3.0.13-0ubuntu3.6"),
    lnx("linux-image-azure", "6.8.0.1041.46", "Critical", "AlwaysRequiresReboot"),
    lnx("tzdata", "2025b", "Other"),
]


def params(os_type: str = "Windows", **section: Any) -> InstallParameters:
    key = "windowsParameters" if os_type == "Windows" else "linuxParameters"
    return validate_install({"rebootSetting": "IfRequired", "maximumDuration": "PT4H", key: section}, os_type)


def states(patches: list[Patch], p: InstallParameters) -> dict[str, str]:
    return {x.kb_id or x.name: selection_state(x, p) for x in patches}


def install(patches: list[Patch], p: InstallParameters, **kw: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "reboot_pending_before": False,
        "overhead": 60,
        "reboot_seconds": 120,
        "failure_rate": 0.0,
        "rng": random.Random(1),
        "activity_id": "act",
        "started": START,
    }
    options.update(kw)
    return simulate_install(patches, p, **options).result


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("PT4H", 14400), ("PT90M", 5400), ("P1DT2H", 93600), ("PT1H30M15S", 5415), ("pt10m", 600)],
)
def test_iso_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["4 hours", "PT", "P", "T4H", "", "PT4X"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("body", "target"),
    [
        ({}, "installPatchesInput.rebootSetting"),
        ({"rebootSetting": "Sometimes", "windowsParameters": {}}, "installPatchesInput.rebootSetting"),
        (
            {"rebootSetting": "Never", "maximumDuration": "4h", "windowsParameters": {}},
            "installPatchesInput.maximumDuration",
        ),
        ({"rebootSetting": "Never", "linuxParameters": {}}, "installPatchesInput.windowsParameters"),
        (
            {"rebootSetting": "Never", "windowsParameters": {"classificationsToInclude": ["Other"]}},
            "installPatchesInput.windowsParameters.classificationsToInclude",
        ),
        (
            {"rebootSetting": "Never", "windowsParameters": {"kbNumbersToInclude": "5066782"}},
            "installPatchesInput.windowsParameters.kbNumbersToInclude",
        ),
        (
            {"rebootSetting": "Never", "windowsParameters": {"patchNameMasksToExclude": [" "]}},
            "installPatchesInput.windowsParameters.patchNameMasksToExclude",
        ),
        (
            {"rebootSetting": "Never", "windowsParameters": {"maxPatchPublishDate": "yesterday"}},
            "installPatchesInput.windowsParameters.maxPatchPublishDate",
        ),
    ],
)
def test_validation_names_the_parameter(body: dict[str, Any], target: str) -> None:
    with pytest.raises(ArmError) as caught:
        validate_install(body, "Windows")
    assert caught.value.status == 400 and caught.value.code == "InvalidParameter"
    assert caught.value.target == target


def test_linux_vm_needs_linux_parameters_and_enums_are_case_insensitive() -> None:
    with pytest.raises(ArmError) as caught:
        validate_install({"rebootSetting": "never", "windowsParameters": {}}, "Linux")
    assert caught.value.target == "installPatchesInput.linuxParameters"
    p = validate_install(
        {"rebootSetting": "never", "linuxParameters": {"classificationsToInclude": ["security"]}}, "Linux"
    )
    assert p.reboot_setting == "Never" and p.classifications == {"Security"}


def test_windows_enum_names_map_to_reported_classifications() -> None:
    p = params(classificationsToInclude=["UpdateRollUp", "Definition"])
    assert p.classifications == {"Update Rollups", "Definition Updates"}
    assert states(WINDOWS, p) == {
        "5066782": "NotSelected",
        "5000001": "NotSelected",
        "2267602": "Selected",
        "890830": "Selected",
        "5000002": "NotSelected",
        "5000003": "NotSelected",
    }


def test_kb_include_adds_exclusions_win_and_reboot_exclusion() -> None:
    p = params(
        classificationsToInclude=["Critical", "Security"],
        kbNumbersToInclude=["KB5000003"],
        kbNumbersToExclude=["5000001"],
    )
    got = states(WINDOWS, p)
    assert got["5000003"] == "Selected" and got["5000001"] == "Excluded" and got["5066782"] == "Selected"
    p = params(
        classificationsToInclude=["Critical", "Security", "UpdateRollUp"], excludeKbsRequiringReboot=True
    )
    got = states(WINDOWS, p)
    assert got["5066782"] == "Excluded" and got["890830"] == "Excluded" and got["5000001"] == "Selected"


def test_publish_date_and_name_masks() -> None:
    p = params(classificationsToInclude=["Updates"], maxPatchPublishDate="2025-10-20T00:00:00.0000000Z")
    assert states(WINDOWS, p)["5000002"] == "NotSelected"
    p = params(
        patchNameMasksToInclude=["*Cumulative Update for Windows Server 2022*"],
        patchNameMasksToExclude=["Update Critical (KB500000?)"],
    )
    got = states(WINDOWS, p)
    assert got["5066782"] == "Selected" and got["5000001"] == "Excluded" and got["2267602"] == "NotSelected"


def test_linux_package_masks_match_name_or_name_version() -> None:
    p = params(
        "Linux",
        classificationsToInclude=["Security"],
        packageNameMasksToExclude=["libssl*"],
        packageNameMasksToInclude=["tzdata_2025*"],
    )
    assert states(LINUX, p) == {
        "openssl": "Selected",
        "libssl3": "Excluded",
        "linux-image-azure": "NotSelected",
        "tzdata": "Selected",
    }
    p = params("Linux", packageNameMasksToInclude=["openssl_3.0.13-0ubuntu3.?"])
    assert states(LINUX, p)["openssl"] == "Selected"


def test_counts_match_patch_list_and_reboot_if_required() -> None:
    result = install(
        WINDOWS, params(classificationsToInclude=["Critical", "Security"], kbNumbersToExclude=["890830"])
    )
    listed = [p["installationState"] for p in result["patches"]]
    assert len(listed) == len(WINDOWS)
    for state, field in (
        ("Installed", "installedPatchCount"),
        ("Failed", "failedPatchCount"),
        ("Pending", "pendingPatchCount"),
        ("Excluded", "excludedPatchCount"),
        ("NotSelected", "notSelectedPatchCount"),
    ):
        assert listed.count(state) == result[field], field
    assert result["installedPatchCount"] == 2 and result["excludedPatchCount"] == 1
    assert result["status"] == "Succeeded" and result["rebootStatus"] == "Completed"
    assert result["maintenanceWindowExceeded"] is False and result["error"] is None
    assert result["patches"][0]["kbId"] == "5000001"  # Critical installs first


@pytest.mark.parametrize(
    ("setting", "classes", "reboot_status", "pending_after"),
    [
        ("Never", ["Security"], "Required", True),
        ("Never", ["Definition"], "NotNeeded", False),
        ("IfRequired", ["Definition"], "NotNeeded", False),
        ("Always", ["Definition"], "Completed", False),
    ],
)
def test_reboot_settings(setting: str, classes: list[str], reboot_status: str, pending_after: bool) -> None:
    p = params(classificationsToInclude=classes)
    p.reboot_setting = setting
    outcome = simulate_install(
        WINDOWS,
        p,
        reboot_pending_before=False,
        overhead=0,
        reboot_seconds=0,
        failure_rate=0,
        rng=random.Random(1),
        activity_id="a",
        started=START,
    )
    assert outcome.result["rebootStatus"] == reboot_status and outcome.reboot_pending_after is pending_after


def test_maximum_duration_leaves_the_rest_pending_and_fails() -> None:
    p = params(classificationsToInclude=["Critical", "Security", "FeaturePack"])
    p.maximum_duration = 20 * 60  # overhead 1 min + Critical 3 min fit; the 30-min CU does not
    result = install(WINDOWS, p)
    assert result["maintenanceWindowExceeded"] is True
    assert result["installedPatchCount"] == 1 and result["pendingPatchCount"] == 2
    assert result["status"] == "Failed" and "maintenance window exceeded" in result["error"]["message"]


def test_injected_failures_are_reported_per_patch() -> None:
    result = install(WINDOWS, params(classificationsToInclude=["Critical", "Security"]), failure_rate=1.0)
    assert result["failedPatchCount"] == 2 and result["installedPatchCount"] == 0
    assert result["status"] == "Failed" and len(result["error"]["details"]) == 2
    assert result["rebootStatus"] == "NotNeeded"
