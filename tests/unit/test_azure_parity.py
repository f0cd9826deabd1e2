"""Azure's input shapes, field by field: each value Azure accepts is accepted (and shown normalised),
each value it refuses is a 400 naming the field. Rules and sources: the docstrings of
shared/maintenance/configuration.py, shared/validation/dynamic_scope.py,
shared/validation/install_parameters.py and shared/arm/errors.py; docs/azure-input-rules.md.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from requests.structures import CaseInsensitiveDict

from shared.arm.client import ArmResponse
from shared.arm.errors import (
    MAX_ERROR_CHARS,
    TRUNCATED_CODE,
    error_columns,
    is_error,
    operation_error,
    own_error_columns,
    stored_error,
)
from shared.arm.operations import Done, Failed, Retry, classify_poll, classify_start
from shared.core.errors import ValidationError
from shared.maintenance.configuration import configuration_from_stored, parse_configuration
from shared.validation.dynamic_scope import parse_filter
from shared.validation.install_parameters import parse_install_parameters

REFUSED = object()  # expected: a 400 naming the field


def configuration(**window: object) -> dict[str, Any]:
    base: dict[str, Any] = {"startDateTime": "2026-01-01 22:00", "duration": "03:00",
                            "timeZone": "W. Europe Standard Time", "recurEvery": "Week Saturday,Sunday"}
    for key, value in window.items():
        base[key] = value
    return {"location": "westeurope", "properties": {
        "maintenanceScope": "InGuestPatch", "maintenanceWindow": base,
        "installPatches": {"rebootSetting": "IfRequired",
                           "windowsParameters": {"classificationsToInclude": ["Critical", "Security"]}}}}


def set_path(body: dict[str, Any], path: str, value: object) -> None:
    node: Any = body
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value


def get_path(body: dict[str, Any], path: str) -> object:
    node: Any = body
    for key in path.split("."):
        if key not in node:
            return "<absent>"
        node = node[key]
    return node


W = "properties.maintenanceWindow"
P = "properties.installPatches"

# (field path in the body, value given, field path in what is shown, expected shown value or REFUSED)
CONFIGURATION_CASES: list[tuple[str, object, str, object]] = [
    # recurEvery: spaces after commas as Microsoft's PowerShell docs write them (issue #11, fault 1)
    (f"{W}.recurEvery", "Week Saturday, Sunday", f"{W}.recurEvery", "Week Saturday,Sunday"),
    (f"{W}.recurEvery", "Week  Saturday ,  Sunday ", f"{W}.recurEvery", "Week Saturday,Sunday"),
    (f"{W}.recurEvery", "Month day1, day15", f"{W}.recurEvery", "Month day1,day15"),
    (f"{W}.recurEvery", "1Week Monday", f"{W}.recurEvery", "1Week Monday"),
    (f"{W}.recurEvery", "1Month Second Tuesday Offset4", f"{W}.recurEvery", "1Month Second Tuesday Offset4"),
    (f"{W}.recurEvery", "month last sunday offset-3", f"{W}.recurEvery", "month last sunday offset-3"),
    (f"{W}.recurEvery", "Week Saturday Sunday", f"{W}.recurEvery", REFUSED),
    # Azure's service refuses a monthly window without its days (terraform-provider-azurerm#29348)
    (f"{W}.recurEvery", "Month", f"{W}.recurEvery", REFUSED),
    (f"{W}.recurEvery", "2Months", f"{W}.recurEvery", REFUSED),
    (f"{W}.recurEvery", None, f"{W}.recurEvery", REFUSED),
    # startDateTime: Azure's local format, seconds and fractions optional
    (f"{W}.startDateTime", "2026-01-01 22:00:00", f"{W}.startDateTime", "2026-01-01 22:00"),
    (f"{W}.startDateTime", "2026-01-01 22:00:00.0000000", f"{W}.startDateTime", "2026-01-01 22:00"),
    (f"{W}.startDateTime", "2026-01-01 22:00:30", f"{W}.startDateTime", "2026-01-01 22:00:30"),
    (f"{W}.startDateTime", " 2026-01-01 22:00 ", f"{W}.startDateTime", "2026-01-01 22:00"),
    (f"{W}.startDateTime", "2026-01-01T22:00", f"{W}.startDateTime", REFUSED),
    (f"{W}.startDateTime", "2026-01-01 22:00Z", f"{W}.startDateTime", REFUSED),
    (f"{W}.startDateTime", "2026-01-01 22:00:60", f"{W}.startDateTime", REFUSED),
    (f"{W}.startDateTime", "2026-01-01", f"{W}.startDateTime", REFUSED),
    (f"{W}.startDateTime", None, f"{W}.startDateTime", REFUSED),
    (f"{W}.startDateTime", "", f"{W}.startDateTime", REFUSED),
    # expirationDateTime: null is absent; Azure's own default has seconds
    (f"{W}.expirationDateTime", None, f"{W}.expirationDateTime", "9999-12-31 23:59"),
    (f"{W}.expirationDateTime", "9999-12-31 23:59:59", f"{W}.expirationDateTime", "9999-12-31 23:59:59"),
    (f"{W}.expirationDateTime", "2027-06-30 18:00:00", f"{W}.expirationDateTime", "2027-06-30 18:00"),
    (f"{W}.duration", None, f"{W}.duration", "03:55"),
    (f"{W}.timeZone", " aus eastern standard time ", f"{W}.timeZone", "aus eastern standard time"),
    (f"{W}.timeZone", None, f"{W}.timeZone", REFUSED),
    (f"{W}.timeZone", 7, f"{W}.timeZone", REFUSED),
    # enums: any case, shown in Azure's spelling
    ("properties.maintenanceScope", "inguestpatch", "properties.maintenanceScope", "InGuestPatch"),
    ("properties.maintenanceScope", None, "properties.maintenanceScope", REFUSED),
    ("properties.visibility", "custom", "properties.visibility", "Custom"),
    ("properties.visibility", "PUBLIC", "properties.visibility", "Public"),
    ("properties.visibility", None, "properties.visibility", "Custom"),
    ("properties.namespace", None, "properties.namespace", "Microsoft.Maintenance"),
    ("properties.extensionProperties", None, "properties.extensionProperties", {"InGuestPatchMode": "User"}),
    ("properties.extensionProperties", {"InGuestPatchMode": "user"}, "properties.extensionProperties",
     {"InGuestPatchMode": "user"}),
    (f"{P}.rebootSetting", None, f"{P}.rebootSetting", "IfRequired"),
    (f"{P}.rebootSetting", "AlwaysReboot", f"{P}.rebootSetting", "Always"),  # what Azure echoes back
    (f"{P}.rebootSetting", "neverreboot", f"{P}.rebootSetting", "Never"),
    (f"{P}.tasks", None, f"{P}.tasks", "<absent>"),
    # nulls for optional arrays and objects, as ARM templates emit them (issue #11, fault 2)
    (f"{P}.windowsParameters.kbNumbersToInclude", None, f"{P}.windowsParameters.kbNumbersToInclude", "<absent>"),
    (f"{P}.windowsParameters.kbNumbersToExclude", None, f"{P}.windowsParameters.kbNumbersToExclude", "<absent>"),
    (f"{P}.windowsParameters.excludeKbsRequiringReboot", None,
     f"{P}.windowsParameters.excludeKbsRequiringReboot", "<absent>"),
    (f"{P}.windowsParameters.kbNumbersToExclude", [], f"{P}.windowsParameters.kbNumbersToExclude", []),
    (f"{P}.windowsParameters.kbNumbersToExclude", [" KB5034441 "], f"{P}.windowsParameters.kbNumbersToExclude",
     ["5034441"]),
    (f"{P}.windowsParameters.kbNumbersToExclude", [None], f"{P}.windowsParameters.kbNumbersToExclude[0]", REFUSED),
    (f"{P}.windowsParameters.classificationsToInclude", ["UpdateRollup", "critical"],
     f"{P}.windowsParameters.classificationsToInclude", ["UpdateRollUp", "Critical"]),
    (f"{P}.windowsParameters.classificationsToInclude", None, f"{P}.windowsParameters.classificationsToInclude",
     REFUSED),  # then nothing is selected
    (f"{P}.linuxParameters", None, f"{P}.linuxParameters", "<absent>"),
    ("tags", None, "tags", {}),
]


@pytest.mark.parametrize(("given", "value", "shown", "expected"), CONFIGURATION_CASES)
def test_configuration_fields_as_azure_takes_them(given: str, value: object, shown: str, expected: object) -> None:
    body = configuration()
    set_path(body, given, value)
    if expected is REFUSED:
        with pytest.raises(ValidationError) as err:
            parse_configuration("weekly", body)
        assert err.value.target == shown, err.value.message
        return
    resource = parse_configuration("weekly", body).resource()
    assert get_path(resource, shown) == expected


@pytest.mark.parametrize(("start", "zone", "accepted"), [
    ("2025-10-05 02:00", "AUS Eastern Standard Time", False),  # issue #11, fault 3: clocks 02:00 → 03:00
    ("2025-10-05 02:59:59", "AUS Eastern Standard Time", False),
    ("2025-10-05 03:00", "AUS Eastern Standard Time", True),
    ("2025-10-05 01:59", "AUS Eastern Standard Time", True),
    ("2025-04-06 02:30", "AUS Eastern Standard Time", True),  # happens twice: exists, the first one counts
    ("2026-03-29 02:30", "W. Europe Standard Time", False),
    ("2026-03-08 02:15", "Pacific Standard Time", False),
    ("2026-03-08 02:15", "UTC", True),
])
def test_a_start_that_does_not_exist_in_its_time_zone_is_refused(start: str, zone: str, accepted: bool) -> None:
    body = configuration(startDateTime=start, timeZone=zone, recurEvery="Day")
    if accepted:
        assert parse_configuration("nightly", body).schedule.start.strftime("%Y-%m-%d %H:%M") == start[:16]
        return
    with pytest.raises(ValidationError) as err:
        parse_configuration("nightly", body)
    assert err.value.target == f"{W}.startDateTime"
    assert zone in err.value.message and "does not exist" in err.value.message


def test_later_occurrences_in_a_gap_keep_the_written_rule() -> None:
    from datetime import UTC, datetime

    config = parse_configuration("nightly", configuration(startDateTime="2025-10-04 02:30",
                                                          timeZone="AUS Eastern Standard Time", recurEvery="Day"))
    starts = [b for b, _ in config.schedule.next_windows(datetime(2025, 10, 1, tzinfo=UTC), 2)]
    # 4 Oct 02:30 AEST = 3 Oct 16:30Z; 5 Oct 02:30 does not exist: it starts at 03:30 AEDT = 4 Oct 16:30Z
    assert [s.strftime("%dT%H:%M") for s in starts] == ["03T16:30", "04T16:30"]


def test_configurations_stored_before_the_stricter_rules_still_load() -> None:
    for window in ({"recurEvery": "Month"},
                   {"startDateTime": "2025-10-05 02:00", "timeZone": "AUS Eastern Standard Time"}):
        body = configuration(**window)
        with pytest.raises(ValidationError):
            parse_configuration("old", body)
        config = configuration_from_stored("old", {"body": json.dumps(body)})
        assert config.name == "old"


def test_an_arm_template_with_every_optional_field_null_is_accepted() -> None:
    body = configuration(expirationDateTime=None, duration=None)
    props = body["properties"]
    props.update(namespace=None, visibility=None, extensionProperties=None)
    props["installPatches"] = {"rebootSetting": None, "tasks": None, "linuxParameters": None, "windowsParameters": {
        "classificationsToInclude": ["Critical"], "kbNumbersToInclude": None, "kbNumbersToExclude": None,
        "excludeKbsRequiringReboot": None}}
    body["tags"] = None
    config = parse_configuration("from-template", body)
    assert config.install_patches == {"rebootSetting": "IfRequired",
                                      "windowsParameters": {"classificationsToInclude": ["Critical"]}}
    assert config.schedule.expiration is None


INSTALL = {"maximumDuration": "PT2H", "rebootSetting": "IfRequired",
           "windowsParameters": {"classificationsToInclude": ["Critical"]}}
IP = "installPatches"


@pytest.mark.parametrize(("given", "value", "shown", "expected"), [
    ("maximumDuration", None, "maximumDuration", REFUSED),
    ("maximumDuration", "pt2h", "maximumDuration", "PT2H"),
    ("rebootSetting", None, "rebootSetting", REFUSED),
    ("rebootSetting", " if required ", "rebootSetting", "IfRequired"),
    ("linuxParameters", None, "linuxParameters", "<absent>"),
    ("windowsParameters.maxPatchPublishDate", None, "windowsParameters.maxPatchPublishDate", "<absent>"),
    ("windowsParameters.maxPatchPublishDate", "2020-11-19T02:36:43.0539904+00:00",
     "windowsParameters.maxPatchPublishDate", "2020-11-19T02:36:43.053990Z"),
    ("windowsParameters.maxPatchPublishDate", "2020-11-19T02:36Z", "windowsParameters.maxPatchPublishDate",
     "2020-11-19T02:36:00Z"),
    ("windowsParameters.maxPatchPublishDate", "2020-11-19T04:36:00+02:00", "windowsParameters.maxPatchPublishDate",
     "2020-11-19T02:36:00Z"),
    ("windowsParameters.maxPatchPublishDate", "2020-11-19", "windowsParameters.maxPatchPublishDate",
     "2020-11-19T00:00:00Z"),
    ("windowsParameters.maxPatchPublishDate", "last Tuesday", "windowsParameters.maxPatchPublishDate", REFUSED),
    ("windowsParameters.kbNumbersToInclude", None, "windowsParameters.kbNumbersToInclude", "<absent>"),
    ("windowsParameters.kbNumbersToInclude", ["kb5034441", 5034442], "windowsParameters.kbNumbersToInclude",
     ["5034441", "5034442"]),
    ("windowsParameters.patchNameMasksToExclude", None, "windowsParameters.patchNameMasksToExclude", "<absent>"),
    ("windowsParameters.patchNameMasksToExclude", ["  "], "windowsParameters.patchNameMasksToExclude[0]", REFUSED),
    ("windowsParameters.excludeKbsRequiringReboot", None, "windowsParameters.excludeKbsRequiringReboot",
     "<absent>"),
    ("windowsParameters.excludeKbsRequiringReboot", "yes", "windowsParameters.excludeKbsRequiringReboot", REFUSED),
    ("windowsParameters.classificationsToInclude", ["Update Rollups", "definition updates"],
     "windowsParameters.classificationsToInclude", ["UpdateRollUp", "Definition"]),
])
def test_install_patches_parameters_as_azure_takes_them(given: str, value: object, shown: str,
                                                        expected: object) -> None:
    body = copy.deepcopy(INSTALL)
    set_path(body, given, value)
    if expected is REFUSED:
        with pytest.raises(ValidationError) as err:
            parse_install_parameters(body)
        assert err.value.target == f"{IP}.{shown}", err.value.message
        return
    assert get_path(parse_install_parameters(body), shown) == expected


@pytest.mark.parametrize(("linux", "expected"), [
    ({"classificationsToInclude": ["security"], "packageNameMasksToInclude": None, "maintenanceRunId": None},
     {"classificationsToInclude": ["Security"]}),
    ({"classificationsToInclude": None, "packageNameMasksToInclude": [" openssl* "]},
     {"packageNameMasksToInclude": ["openssl*"]}),
    ({"classificationsToInclude": None, "packageNameMasksToInclude": None}, REFUSED),
])
def test_linux_parameters_nulls_are_absent(linux: dict[str, Any], expected: object) -> None:
    body = {"maximumDuration": "PT2H", "rebootSetting": "Never", "linuxParameters": linux}
    if expected is REFUSED:
        with pytest.raises(ValidationError) as err:
            parse_install_parameters(body)
        assert err.value.target == f"{IP}.linuxParameters.classificationsToInclude"
        return
    assert parse_install_parameters(body)["linuxParameters"] == expected


F = "properties.filter"


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("resourceGroups", None, "<absent>"),
    ("resourceGroups", [], "<absent>"),  # no criterion, not "match nothing"
    ("resourceGroups", [" RG1 "], ["RG1"]),
    ("osTypes", ["windows", "LINUX"], ["Windows", "Linux"]),
    ("osTypes", ["Solaris"], REFUSED),
    ("osTypes", [None], REFUSED),
    ("resourceTypes", ["microsoft.compute/virtualmachines"], ["Microsoft.Compute/virtualMachines"]),
    ("resourceTypes", [], "<absent>"),
    ("resourceTypes", ["microsoft.hybridcompute/MACHINES"], ["Microsoft.HybridCompute/machines"]),
    ("resourceTypes", ["Microsoft.HybridCompute/machines", "Microsoft.Compute/virtualMachines"],
     ["Microsoft.HybridCompute/machines", "Microsoft.Compute/virtualMachines"]),
    ("resourceTypes", ["Microsoft.Storage/storageAccounts"], REFUSED),
    ("locations", None, "<absent>"),
    ("locations", ["Japan East"], ["Japan East"]),
    ("tagSettings", None, "<absent>"),
    ("tagSettings", {"tags": None, "filterOperator": None}, {"tags": {}, "filterOperator": "Any"}),
    ("tagSettings", {"tags": {"env": ["prod"]}, "filterOperator": "all"},
     {"tags": {"env": ["prod"]}, "filterOperator": "All"}),
    ("tagSettings", {"tags": {"env": ["prod"]}, "filterOperator": "Some"}, REFUSED),
])
def test_dynamic_scope_filter_fields_as_azure_takes_them(field: str, value: object, expected: object) -> None:
    if expected is REFUSED:
        with pytest.raises(ValidationError) as err:
            parse_filter({field: value})
        assert err.value.target is not None and err.value.target.startswith(f"{F}.{field}"), err.value.target
        return
    assert parse_filter({field: value}).get(field, "<absent>") == expected


# -- operation errors ----------------------------------------------------------------------------
ESM = {"code": "1", "message": "1 error/s reported.",
       "details": [{"code": "UA_ESM_REQUIRED", "message": "Ubuntu Pro (ESM) is required for: libssl3"}],
       "innererror": {"exceptiontype": "", "errordetail": "Extension reported error"}}


@pytest.mark.parametrize(("error", "reports"), [
    (None, False),
    ({}, False),
    ({"code": "0", "details": []}, False),  # a succeeded result (issue #11, fault 4)
    ({"code": "0", "message": "0 error/s reported.", "details": [], "innererror": None}, False),
    ({"code": "", "message": "", "details": None}, False),
    ("text", False),
    (ESM, True),
    ({"code": "0", "details": [{"code": "PACKAGE_RETRIED", "message": "apt retried"}]}, True),
    ({"message": "the extension timed out"}, True),
    ({"code": "OperationFailed"}, True),
])
def test_what_counts_as_an_error(error: object, reports: bool) -> None:
    assert is_error(error) is reports
    assert (operation_error(error) is not None) is reports
    columns = error_columns(operation_error(error))
    assert (stored_error(columns) is not None) is reports


def test_details_and_innererror_are_kept_in_arms_shape() -> None:
    columns = error_columns(operation_error(ESM))
    assert columns["errorCode"] == "1" and columns["errorMessage"] == "1 error/s reported."
    assert stored_error(columns) == ESM


def test_a_huge_error_is_bounded_and_says_what_it_left_out() -> None:
    details = [{"code": f"PKG_{i}", "message": "x" * 200, "target": f"package-{i}"} for i in range(1000)]
    error = {"code": "1", "message": "1000 error/s reported.", "details": details,
             "innererror": {"errordetail": "y" * 100_000}}
    kept = operation_error(error)
    assert kept is not None
    text = json.dumps(kept, separators=(",", ":"))
    assert len(text) <= MAX_ERROR_CHARS
    assert len(error_columns(kept)["errorDetail"].encode("utf-16-le")) < 64 * 1024  # one Table property
    assert kept["details"][:3] == details[:3]  # the first ones whole, in order
    marker = kept["details"][-1]
    left_out = 1000 - (len(kept["details"]) - 1)
    assert marker["code"] == TRUNCATED_CODE and f"{left_out} of 1000" in marker["message"]
    assert kept["innererror"]["truncated"] is True
    assert json.loads(error_columns(kept)["errorDetail"]) == kept  # still valid JSON


def test_a_stored_code_that_moved_on_falls_back_to_code_and_message() -> None:
    columns = {**error_columns(operation_error(ESM)), "errorCode": "RunHalted", "errorMessage": "halted"}
    assert stored_error(columns) == {"code": "RunHalted", "message": "halted"}


def resp(status: int, body: Any = None, **headers: str) -> ArmResponse:
    return ArmResponse(status, CaseInsensitiveDict(headers), body, "u")


def test_arm_error_answers_keep_their_details() -> None:
    arm = {"code": "BadRequest", "message": "bad", "details": [{"code": "InvalidParameter", "target": "x",
                                                                 "message": "x is wrong"}]}
    failed = classify_start(resp(400, {"error": arm}), default_retry_after=60)
    assert isinstance(failed, Failed) and failed.detail == arm
    throttled = classify_start(resp(429, {"error": {**arm, "code": "Throttled"}}), default_retry_after=60)
    assert isinstance(throttled, Retry) and throttled.detail is not None and throttled.detail["details"]
    done = classify_poll(resp(200, {"status": "Failed", "error": ESM}), mode="location", default_retry_after=60)
    assert isinstance(done, Done) and done.result["error"] == ESM
    failed_async = classify_poll(resp(200, {"status": "Failed", "error": ESM}), mode="async", default_retry_after=60)
    assert isinstance(failed_async, Failed) and failed_async.detail == ESM and failed_async.code == "1"


OPERATION_NOT_ALLOWED = {"code": "OperationNotAllowed", "message": "the VM is deallocated",
                         "details": [{"code": "VMDeallocated", "message": "deallocated"}]}


@pytest.mark.parametrize(("code", "message", "cause", "shown"), [
    ("OperationTimedOut", "no final result", None, {"code": "OperationTimedOut", "message": "no final result"}),
    ("VMNotRunning", "the VM is deallocated", OPERATION_NOT_ALLOWED,  # ours, ARM's 409 as its detail
     {"code": "VMNotRunning", "message": "the VM is deallocated", "details": [OPERATION_NOT_ALLOWED]}),
    ("OperationNotAllowed", "gave up after 3 retries (conflict): busy", OPERATION_NOT_ALLOWED,  # ARM's, our words
     {**OPERATION_NOT_ALLOWED, "message": "gave up after 3 retries (conflict): busy"}),
])
def test_patchpilots_own_errors_keep_the_arm_error_behind_them(code: str, message: str,
                                                               cause: dict[str, Any] | None,
                                                               shown: dict[str, Any]) -> None:
    columns = own_error_columns(code, message, cause)
    assert columns["errorCode"] == code and stored_error(columns) == shown
    assert (columns["errorDetail"] == "") is (cause is None)
