"""Hostile and lax input, helper by helper: each is refused with a ValidationError (a 400 naming the field),
never an unhandled exception (a 500), and what Azure accepts still passes. Through the HTTP triggers,
with storage, see tests/integration/test_hostile_input.py."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import azure.functions as func
import pytest

from shared.core.errors import MAX_MESSAGE, MAX_TARGET, ApiError, ValidationError, quoted
from shared.core.settings import SettingsError
from shared.http.request_params import whole_number
from shared.http.responses import absolute_url, public_origin
from shared.maintenance.configuration import _duration, _local_time, check_name
from shared.maintenance.recurrence import RecurrenceError, parse_recur_every
from shared.maintenance.timezones import UnknownTimeZoneError, resolve_time_zone
from shared.storage.limits import (
    MAX_PROPERTY_BYTES,
    check_entity,
    check_json_property,
    check_key,
    check_property,
    entity_bytes,
)
from shared.storage.run_store import machine_chunk_entities
from shared.validation.durations import parse_duration
from shared.validation.install_parameters import parse_install_parameters
from shared.validation.request_body import MAX_DEPTH, loads_strict, parse_json_body
from shared.validation.resource_ids import is_resource_group_name, parse_vm_id, vm_from_route
from shared.validation.rollout import parse_rollout
from shared.validation.scopes import parse_scope, scope_from_query
from shared.validation.tags import parse_tags

SUB = "00000000-0000-0000-0000-000000000001"


def refused(fn: Any, *args: Any, **kwargs: Any) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        fn(*args, **kwargs)
    assert info.value.status == 400
    return info.value


# -- JSON bodies ---------------------------------------------------------------------------------------
def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize("raw", [nested(981), b"[" * 100_000 + b"]" * 100_000, nested(MAX_DEPTH + 1),
                                 b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)])
def test_deep_nesting_is_a_400_not_a_recursion_error(raw: bytes) -> None:
    error = refused(parse_json_body, raw, max_bytes=1 << 20)
    assert error.code == "InvalidRequestContent" and "deeper than 32 levels" in error.message


def test_nesting_up_to_the_limit_parses() -> None:
    assert loads_strict(nested(MAX_DEPTH - 1)) == json.loads(nested(MAX_DEPTH - 1))


@pytest.mark.parametrize(("raw", "target"), [
    (b'{"machines": [], "machines": []}', "machines"),
    (b'{"installPatches": {"rebootSetting": "Never", "rebootSetting": "Always"}}', "installPatches.rebootSetting"),
    (b'{"rollout": {"waves": [{"size": 1}, {"size": 2, "size": 3}]}}', "rollout.waves[1].size"),
])
def test_a_key_given_twice_is_refused_naming_its_path(raw: bytes, target: str) -> None:
    error = refused(loads_strict, raw)
    assert error.target == target and error.code == "InvalidRequestContent"


@pytest.mark.parametrize("raw", [b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}', b'{"a": 1e999}',
                                 b'{"a": "\\ud800"}', b'{"\\udc00": 1}', b'{"a": "\xed\xa0\x80"}',
                                 b'{"a": ' + b"9" * 5000 + b"}", b'{"a": 1,}', b"\xff\xfe"])
def test_what_is_not_json_or_not_unicode_is_refused(raw: bytes) -> None:
    assert refused(loads_strict, raw).code == "InvalidRequestContent"


def test_a_valid_body_parses_as_the_standard_parser_reads_it() -> None:
    raw = '{"a": [1, 2.5, "é", {"b": null, "c": true}], "d": "\\u00e9"}'.encode()
    assert loads_strict(raw) == json.loads(raw)


def test_errors_inside_a_query_value_name_the_parameter() -> None:
    assert refused(loads_strict, "[" * 2000, where="continuationToken", target="tok").target == "tok"
    assert refused(loads_strict, '{"a":1,"a":1}', where="x", target="tok").target == "tok"


# -- bounded echoes ------------------------------------------------------------------------------------
def test_quoted_repeats_a_short_prefix_and_the_length() -> None:
    assert quoted("abc") == "'abc'"
    long = quoted("x" * 500_000)
    assert len(long) < 100 and "500000 characters" in long


def test_no_error_message_or_target_grows_with_the_input() -> None:
    error = ApiError(400, "X", "m" * 10_000, target="t" * 10_000)
    assert len(error.message) <= MAX_MESSAGE and len(error.target or "") <= MAX_TARGET
    body = json.dumps(error.body())
    assert len(body) < MAX_MESSAGE + MAX_TARGET + 100


def test_an_unknown_500000_character_field_comes_back_bounded() -> None:
    key = "k" * 500_000
    error = refused(parse_install_parameters, {key: 1, "maximumDuration": "PT2H"})
    assert len(json.dumps(error.body())) < 2000


# -- numbers and durations -----------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [("PT4H", timedelta(hours=4)), ("P1DT2H", timedelta(days=1, hours=2)),
                                                ("pt2h30m", timedelta(hours=2, minutes=30)),
                                                ("PT999999H", timedelta(hours=999999))])
def test_durations_azure_writes_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["PT99999999999H", "P9999999999999D", "PT1" + "0" * 400 + "S", "PT\u0662H",
                                  "PT\uff12H", "P\u0661D", "PT2H\nX", "P", "PT", "PT1.5"])
def test_durations_out_of_range_or_in_other_scripts_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError, match=r"ISO 8601 duration|out of range"):
        parse_duration(text)


@pytest.mark.parametrize("field", ["maximumDuration"])
@pytest.mark.parametrize("value", ["PT99999999999H", "PT\u0662H"])
def test_maximum_duration_overflow_is_a_400(field: str, value: str) -> None:
    params = {"maximumDuration": value, "rebootSetting": "Never", "linuxParameters": {"classificationsToInclude":
                                                                                       ["Critical"]}}
    assert refused(parse_install_parameters, params).target == f"installPatches.{field}"


@pytest.mark.parametrize(("soak", "ok"), [("PT99999999999H", False), ("P31D", False), ("PT\u0662H", False),
                                          (30, False), ("P30D", True), ("PT0S", True)])
def test_soak_time_is_bounded(soak: object, ok: bool) -> None:
    if ok:
        assert parse_rollout({"soakTime": soak})["soakTime"]
    else:
        assert refused(parse_rollout, {"soakTime": soak}).target == "rollout.soakTime"


@pytest.mark.parametrize(("field", "value"), [
    ("maxConcurrency", "\u0661\u0660%"), ("maxConcurrency", "\uff11\uff10%"), ("maxConcurrency", 10**30),
    ("maxFailures", "5%\n5"), ("maxFailures", True),
])
def test_rollout_counts_are_ascii_and_bounded(field: str, value: object) -> None:
    assert refused(parse_rollout, {field: value}).target == f"rollout.{field}"


def test_rollout_wave_fields_are_typed() -> None:
    assert refused(parse_rollout, {"waves": [{"name": {"x": 1}, "size": 1}]}).target == "rollout.waves[0].name"
    assert refused(parse_rollout, {"waves": [{"selector": {"subscriptions": ["../x"]}}]}).target \
        == "rollout.waves[0].selector.subscriptions"
    assert refused(parse_rollout, {"failureOn": [["Failed"]]}).target == "rollout.failureOn[0]"


@pytest.mark.parametrize("raw", ["\u0661\u0660", "\uff11\uff10", "9" * 5000, "10\n", " 10", "-1", "0", "101", ""])
def test_query_numbers_are_ascii_and_in_range(raw: str) -> None:
    assert refused(whole_number, raw, target="top", minimum=1, maximum=100).target == "top"


def test_kb_numbers_take_ascii_digits_only() -> None:
    params = {"maximumDuration": "PT2H", "rebootSetting": "Never",
              "windowsParameters": {"kbNumbersToInclude": ["KB\u0661\u0662\u0663"]}}
    assert refused(parse_install_parameters, params).target == "installPatches.windowsParameters.kbNumbersToInclude[0]"


# -- names and patterns matched whole ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["x\n", "x\r\n", "\nx", "x/y", "x" * 129, "", "-x", "x\u0130"])
def test_configuration_and_assignment_names_are_matched_whole(name: str) -> None:
    assert refused(check_name, name, "name").code == "InvalidResourceName"


@pytest.mark.parametrize(("fn", "value"), [(_duration, "\uff10\uff13:\uff10\uff10"), (_duration, "03:00\n00"),
                                           (_duration, "\u0660\u0663:00"),
                                           (_local_time, "\u0662\u0660\u0662\u0664-01-01 03:00")])
def test_window_times_take_ascii_digits(fn: Any, value: str) -> None:
    refused(fn, value, "properties.maintenanceWindow.duration")


@pytest.mark.parametrize("text", ["\u0661Days", "Day\u017f", "Week\u017f", "Month Last Sunday Offset" + "9" * 5000,
                                  "Month day\u0661", "\uff12Weeks"])
def test_recur_every_takes_ascii_and_bounded_numbers(text: str) -> None:
    with pytest.raises(RecurrenceError):
        parse_recur_every(text)


@pytest.mark.parametrize("value", [
    f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm\nx",
    f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm\u212a",
    f"/\u017fubscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
    f"/subscriptions/{SUB}/resourceGroups/rg\u00bd/providers/Microsoft.Compute/virtualMachines/vm",
    f"/subscriptions/{SUB}/resourceGroups/rg\U0001d400/providers/Microsoft.Compute/virtualMachines/vm",
    f"/subscriptions/{SUB}/resourceGroups/rg./providers/Microsoft.Compute/virtualMachines/vm",
    f"/subscriptions/{SUB}/resourceGroups/{'r' * 91}/providers/Microsoft.Compute/virtualMachines/vm",
])
def test_vm_ids_follow_azure_naming_exactly(value: str) -> None:
    assert refused(parse_vm_id, value, target="machines[0]").code == "InvalidResourceId"


def test_surrounding_whitespace_is_trimmed_so_no_newline_is_kept() -> None:
    vm = parse_vm_id(f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm\n",
                     target="m")
    assert vm.key == f"{SUB}|rg|vm"


def test_resource_group_names_take_any_letters_azure_does() -> None:
    assert is_resource_group_name("rg-\u65e5\u672c(prod)_1.a")  # CJK letters, as Char.IsLetterOrDigit
    vm = parse_vm_id(f"/subscriptions/{SUB}/resourceGroups/\u00e9quipe/providers/Microsoft.Compute/"
                     "virtualMachines/vm-1", target="m")
    assert vm.resource_group == "\u00e9quipe"


def test_route_segments_cannot_carry_more_path() -> None:
    params = {"subscriptionId": f"{SUB}/resourceGroups/x", "resourceGroupName": "rg", "vmName": "vm"}
    assert refused(vm_from_route, params).target == "machine"


@pytest.mark.parametrize(("sub", "rg", "target"), [
    (f"{SUB}/resourceGroups/rg", None, "subscriptionId"), (f"{SUB}\n", None, "subscriptionId"),
    (SUB, "rg/providers/x", "resourceGroup"), (None, "rg", "resourceGroup"), (SUB, "rg.", "resourceGroup"),
])
def test_query_scopes_are_checked_part_by_part(sub: str | None, rg: str | None, target: str) -> None:
    assert refused(scope_from_query, sub, rg).target == target


def test_scopes_are_matched_whole() -> None:
    assert refused(parse_scope, f"/subscriptions/{SUB}\n/x", target="scopes[0]").code == "InvalidScope"
    assert parse_scope(f"/subscriptions/{SUB.upper()}/resourceGroups/rg/", target="s").resource_group == "rg"


# -- time zones ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "key"), [
    ("W. Europe Standard Time", "Europe/Berlin"), ("europe/berlin", "Europe/Berlin"), ("UTC", "Etc/UTC"),
    ("US/Pacific", "US/Pacific"), ("Pacific Standard Time", "America/Los_Angeles"),
])
def test_windows_and_iana_zone_names_resolve(name: str, key: str) -> None:
    assert resolve_time_zone(name).key == key


@pytest.mark.parametrize("name", ["posix/Europe/Berlin", "right/UTC", "localtime", "Factory", "posixrules",
                                  "Europe", "../../etc/passwd", "/usr/share/zoneinfo/UTC", "", "zone.tab"])
def test_files_of_the_zone_database_are_not_zones(name: str) -> None:
    with pytest.raises(UnknownTimeZoneError):
        resolve_time_zone(name)


# -- Table storage limits ------------------------------------------------------------------------------
def test_a_property_holds_32k_utf16_units() -> None:
    check_property("a" * (MAX_PROPERTY_BYTES // 2), target="x")
    assert refused(check_property, "a" * (MAX_PROPERTY_BYTES // 2 + 1), target="x").code == "PropertyValueTooLarge"
    # a character outside the BMP takes two UTF-16 units
    assert refused(check_property, "\U0001f600" * (MAX_PROPERTY_BYTES // 4 + 1), target="x")


def test_an_oversized_value_names_its_largest_part() -> None:
    params = {"maximumDuration": "PT2H", "linuxParameters": {"classificationsToInclude": ["Critical"],
                                                             "packageNameMasksToInclude": ["p" * 256] * 130}}
    error = refused(check_json_property, params, target="installPatches")
    assert error.target == "installPatches.linuxParameters.packageNameMasksToInclude"
    rollout = {"waves": [{"size": 1}, {"machines": [f"{SUB}|rg|vm-{i:04d}" for i in range(1000)]}]}
    assert refused(check_json_property, rollout, target="rollout").target == "rollout.waves[1].machines"
    body = {"name": "c", "tags": {"k": "v" * 40_000}}
    assert refused(check_json_property, body, target="").target == "tags.k"


@pytest.mark.parametrize("key", ["a/b", "a\\b", "a#b", "a?b", "a\nb", "a\x7fb", "a\x85b", "k" * 513, ""])
def test_keys_table_storage_refuses(key: str) -> None:
    refused(check_key, key, target="name")


def test_entity_size_follows_azures_formula_and_is_checked() -> None:
    entity = {"PartitionKey": "run", "RowKey": "r1", "a": "xy", "n": 1}
    assert entity_bytes(entity) == 4 + 2 * 5 + (8 + 2 + 4 + 4) + (8 + 2 + 8)
    big = {"PartitionKey": "p", "RowKey": "r", **{f"p{i}": "x" * 32_000 for i in range(17)}}
    assert refused(check_entity, big).code == "RequestTooLarge"


def test_the_longest_machine_ids_fit_a_chunk() -> None:
    rg = "\u00e9" * 90  # 90 letters, none ASCII: the worst Azure allows
    ids = [f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{'v' * 60}{i:04d}"
           for i in range(1000)]
    for entity in machine_chunk_entities("run", ids):
        check_entity(entity)


@pytest.mark.parametrize(("tags", "target"), [
    ({f"t{i}": "v" for i in range(51)}, "tags"), ({"k" * 513: "v"}, "tags." + "k" * 513),
    ({"k": "v" * 257}, "tags.k"), ({"a/b": "v"}, "tags.a/b"), ({"k": 1}, "tags.k"), (["k"], "tags"),
])
def test_tags_follow_arms_limits(tags: object, target: str) -> None:
    assert refused(parse_tags, tags).target == target[:MAX_TARGET - 1] + ("…" if len(target) > MAX_TARGET else "")


def test_tags_azure_accepts_pass() -> None:
    tags = {f"t{i}": "v" * 256 for i in range(50)}
    assert parse_tags(tags) == tags and parse_tags(None) == {}


# -- Location and nextLink -----------------------------------------------------------------------------
def request(url: str, headers: dict[str, str] | None = None) -> func.HttpRequest:
    return func.HttpRequest("POST", url, body=b"", headers=headers or {})


@pytest.mark.parametrize(("hostname", "url", "expected"), [
    ("patchpilot.azurewebsites.net", "http://attacker.example/api/runs?code=K",
     "https://patchpilot.azurewebsites.net/api/runs/1?code=K"),
    ("patchpilot.azurewebsites.net", "https://patchpilot.azurewebsites.net/api/runs",
     "https://patchpilot.azurewebsites.net/api/runs/1"),
    ("localhost:7071", "http://attacker.example:80/api/runs?code=K&other=1", "http://localhost:7071/api/runs/1?code=K"),
    ("127.0.0.1:7071", "https://127.0.0.1:7071/api/runs", "https://127.0.0.1:7071/api/runs/1"),
])
def test_location_is_on_the_apps_own_host_whatever_host_the_request_names(
        monkeypatch: pytest.MonkeyPatch, hostname: str, url: str, expected: str) -> None:
    monkeypatch.setenv("WEBSITE_HOSTNAME", hostname)
    req = request(url, {"Host": "attacker.example", "x-functions-key": "H", "X-Forwarded-Host": "attacker.example"})
    assert absolute_url(req, "/api/runs/1") == expected


def test_a_header_key_never_lands_in_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSITE_HOSTNAME", "app.azurewebsites.net")
    req = request("https://app.azurewebsites.net/api/runs", {"x-functions-key": "secret"})
    assert "secret" not in absolute_url(req, "/api/runs/1", {"top": "2"})


@pytest.mark.parametrize("hostname", ["", "attacker.example/x", "user@host", "host:port", "a b"])
def test_a_missing_or_malformed_host_name_is_a_misconfiguration(monkeypatch: pytest.MonkeyPatch,
                                                                 hostname: str) -> None:
    monkeypatch.setenv("WEBSITE_HOSTNAME", hostname)
    with pytest.raises(SettingsError):
        public_origin(request("http://attacker.example/api/runs"))
