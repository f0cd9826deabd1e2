"""Maintenance windows: the recurEvery grammar, occurrences checked against dates worked out by hand
from the calendar (and against a brute-force oracle), DST in both directions in three zones, time
zone names, and configuration validation."""

from __future__ import annotations

import copy
import json
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from tzlocal.windows_tz import win_tz

from shared.core.errors import ValidationError
from shared.maintenance.configuration import parse_assignment, parse_configuration
from shared.maintenance.recurrence import (
    Recurrence,
    RecurrenceError,
    Schedule,
    nth_weekday,
    parse_recur_every,
)
from shared.maintenance.timezones import UnknownTimeZoneError, resolve_time_zone
from shared.validation.dynamic_scope import filter_matches, parse_filter

# Verbatim Azure examples vendored in the repository (tests/fixtures/azure-api/README.md names the source).
EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "azure-api" / "maintenance" / "examples"


@pytest.mark.parametrize(("text", "expected"), [
    ("Day", Recurrence("day", 1)),
    ("3Days", Recurrence("day", 3)),
    ("day", Recurrence("day", 1)),
    ("6Hours", Recurrence("hour", 6)),
    ("Week", Recurrence("week", 1)),
    ("3Weeks", Recurrence("week", 3)),
    ("Week Saturday,Sunday", Recurrence("week", 1, weekdays=(5, 6))),
    ("WEEK sunday,SATURDAY", Recurrence("week", 1, weekdays=(5, 6))),
    ("Month", Recurrence("month", 1)),
    ("2Months", Recurrence("month", 2)),
    ("Month day23,day24", Recurrence("month", 1, month_days=(23, 24))),
    ("Month Last Sunday", Recurrence("month", 1, week_of_month=-1, weekday=6)),
    ("Month Fourth Monday", Recurrence("month", 1, week_of_month=4, weekday=0)),
    ("Month Last Sunday Offset-3", Recurrence("month", 1, week_of_month=-1, weekday=6, offset=-3)),
    ("Month Third Sunday Offset6", Recurrence("month", 1, week_of_month=3, weekday=6, offset=6)),
    ("month second tuesday offset2", Recurrence("month", 1, week_of_month=2, weekday=1, offset=2)),
    ("  Month   Second Tuesday  Offset2 ", Recurrence("month", 1, week_of_month=2, weekday=1, offset=2)),
])
def test_grammar_accepts_every_form_azure_documents(text: str, expected: Recurrence) -> None:
    assert parse_recur_every(text) == expected


@pytest.mark.parametrize(("text", "says"), [
    ("", "must be a string"),
    ("Fortnight", "must start with"),
    ("0Days", "from 1 to 366"),
    ("400Days", "from 1 to 366"),
    ("99999999999999Hours", "must start with"),
    ("5Hours", "6 hours or more"),
    ("Day Monday", "takes nothing after"),
    ("Week Funday", "not a weekday"),
    ("Week Saturday Sunday", "separated by commas"),
    ("Month day32", "day1 … day31"),
    ("Month day0", "day1 … day31"),
    ("Month Fifth Monday", "First|Second|Third|Fourth|Last"),
    ("Month Second", "needs a weekday"),
    ("Month Last Sunday Offset7", "between -6 and 6"),
    ("Month Last Sunday In2Days", "not an offset"),
    ("Month Last Sunday Offset2 Extra", "unexpected"),
])
def test_grammar_rejects_with_a_message_that_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(RecurrenceError) as err:
        parse_recur_every(text)
    assert says in str(err.value)


def windows(rec: str, start: str, n: int = 3, *, zone: str = "UTC", expiration: str | None = None,
            hours: float = 2) -> list[str]:
    tz = resolve_time_zone(zone)
    schedule = Schedule(parse_recur_every(rec), datetime.fromisoformat(start),
                        datetime.fromisoformat(expiration) if expiration else None, timedelta(hours=hours), tz)
    first = datetime.fromisoformat(start).replace(tzinfo=tz).astimezone(UTC) - timedelta(days=2)
    return [b.astimezone(tz).strftime("%Y-%m-%d %H:%M") for b, _ in schedule.next_windows(first, n)]


# Worked out by hand from the 2026-2028 calendars (1 Jan 2026 is a Thursday; 2028 is a leap year).
CASES = [
    ("Day", "2026-01-01 22:00", ["2026-01-01 22:00", "2026-01-02 22:00", "2026-01-03 22:00"]),
    ("3Days", "2026-01-01 03:00", ["2026-01-01 03:00", "2026-01-04 03:00", "2026-01-07 03:00"]),
    ("6Hours", "2026-01-01 00:00", ["2026-01-01 00:00", "2026-01-01 06:00", "2026-01-01 12:00"]),
    ("Week", "2026-01-01 03:00", ["2026-01-01 03:00", "2026-01-08 03:00", "2026-01-15 03:00"]),
    ("3Weeks", "2026-01-01 03:00", ["2026-01-01 03:00", "2026-01-22 03:00", "2026-02-12 03:00"]),
    ("Week Saturday,Sunday", "2026-01-01 03:00", ["2026-01-03 03:00", "2026-01-04 03:00", "2026-01-10 03:00"]),
    # Weeks count from the start's Monday (29 Dec 2025); that week's Monday is before the start.
    ("2Weeks Monday,Friday", "2026-01-01 03:00", ["2026-01-02 03:00", "2026-01-12 03:00", "2026-01-16 03:00"]),
    ("Month", "2026-01-15 03:00", ["2026-01-15 03:00", "2026-02-15 03:00", "2026-03-15 03:00"]),
    ("2Months", "2026-01-15 03:00", ["2026-01-15 03:00", "2026-03-15 03:00", "2026-05-15 03:00"]),
    ("Month day23,day24", "2026-01-01 03:00", ["2026-01-23 03:00", "2026-01-24 03:00", "2026-02-23 03:00"]),
    # No 31st in February or April: no window in those months.
    ("Month day31", "2026-01-01 03:00", ["2026-01-31 03:00", "2026-03-31 03:00", "2026-05-31 03:00"]),
    ("Month", "2026-01-31 03:00", ["2026-01-31 03:00", "2026-03-31 03:00", "2026-05-31 03:00"]),
    # 29 February only in a leap year.
    ("Month day29", "2027-01-01 03:00", ["2027-01-29 03:00", "2027-03-29 03:00", "2027-04-29 03:00"]),
    ("Month day29", "2028-01-01 03:00", ["2028-01-29 03:00", "2028-02-29 03:00", "2028-03-29 03:00"]),
    # Patch Tuesday + 2: 13 Jan, 10 Feb, 10 Mar 2026 are the second Tuesdays.
    ("Month Second Tuesday Offset2", "2026-01-01 22:00",
     ["2026-01-15 22:00", "2026-02-12 22:00", "2026-03-12 22:00"]),
    # Last Sundays 25 Jan, 22 Feb, 29 Mar 2026; +6 days crosses into April.
    ("Month Last Sunday Offset6", "2026-01-01 22:00", ["2026-01-31 22:00", "2026-02-28 22:00", "2026-04-04 22:00"]),
    # First Mondays 5 Jan, 2 Feb, 2 Mar 2026; -3 days crosses back into the month before.
    ("Month First Monday Offset-3", "2026-01-01 22:00", ["2026-01-02 22:00", "2026-01-30 22:00", "2026-02-27 22:00"]),
    # January 2026 has five Fridays (the last is the 30th), February four (the 27th).
    ("Month Last Friday", "2026-01-01 03:00", ["2026-01-30 03:00", "2026-02-27 03:00", "2026-03-27 03:00"]),
    ("Month Fourth Thursday", "2026-11-01 03:00", ["2026-11-26 03:00", "2026-12-24 03:00", "2027-01-28 03:00"]),
]


@pytest.mark.parametrize(("rec", "start", "expected"), CASES)
def test_occurrences_match_the_calendar(rec: str, start: str, expected: list[str]) -> None:
    assert windows(rec, start) == expected


def test_no_window_starts_before_the_start_or_at_or_after_the_expiration() -> None:
    assert windows("Day", "2026-01-01 10:00", n=5, expiration="2026-01-03 10:00") == [
        "2026-01-01 10:00", "2026-01-02 10:00"]
    assert windows("Month day1,day15", "2026-01-10 03:00", n=1) == ["2026-01-15 03:00"]


# (zone, recurEvery start, expected starts in UTC). Clocks change in 2026 on: 8 Mar / 1 Nov (US),
# 29 Mar / 25 Oct (EU), 5 Apr / 4 Oct (Adelaide, +09:30 / +10:30).
DST = [
    # Spring forward: 02:30 does not exist on 8 Mar; the window starts at 03:30 PDT (10:30Z).
    ("Pacific Standard Time", "2026-03-07 02:30", ["2026-03-07T10:30", "2026-03-08T10:30", "2026-03-09T09:30"]),
    # Fall back: 01:30 happens twice on 1 Nov; the first (PDT, 08:30Z) is used.
    ("Pacific Standard Time", "2026-10-31 01:30", ["2026-10-31T08:30", "2026-11-01T08:30", "2026-11-02T09:30"]),
    ("W. Europe Standard Time", "2026-03-28 02:30", ["2026-03-28T01:30", "2026-03-29T01:30", "2026-03-30T00:30"]),
    ("W. Europe Standard Time", "2026-10-24 02:30", ["2026-10-24T00:30", "2026-10-25T00:30", "2026-10-26T01:30"]),
    ("Cen. Australia Standard Time", "2026-04-04 02:30",
     ["2026-04-03T16:00", "2026-04-04T16:00", "2026-04-05T17:00"]),
    ("Cen. Australia Standard Time", "2026-10-03 02:30",
     ["2026-10-02T17:00", "2026-10-03T17:00", "2026-10-04T16:00"]),
    ("Europe/Berlin", "2026-03-28 02:30", ["2026-03-28T01:30", "2026-03-29T01:30", "2026-03-30T00:30"]),
]


@pytest.mark.parametrize(("zone", "start", "expected"), DST)
def test_daylight_saving_changes_follow_the_written_rule(zone: str, start: str, expected: list[str]) -> None:
    tz = resolve_time_zone(zone)
    schedule = Schedule(parse_recur_every("Day"), datetime.fromisoformat(start), None, timedelta(hours=2), tz)
    found = schedule.next_windows(datetime(2026, 1, 1, tzinfo=UTC), 3)
    assert [b.strftime("%Y-%m-%dT%H:%M") for b, _ in found] == expected
    assert all(e - b == timedelta(hours=2) for b, e in found)  # full length in real time, across the change


def test_window_at_finds_the_open_window_only() -> None:
    tz = resolve_time_zone("UTC")
    schedule = Schedule(parse_recur_every("Day"), datetime(2026, 1, 1, 22), None, timedelta(hours=3), tz)
    assert schedule.window_at(datetime(2026, 1, 5, 23, 30, tzinfo=UTC)) == (
        datetime(2026, 1, 5, 22, tzinfo=UTC), datetime(2026, 1, 6, 1, tzinfo=UTC))
    assert schedule.window_at(datetime(2026, 1, 6, 0, 59, tzinfo=UTC)) is not None  # past midnight, still open
    assert schedule.window_at(datetime(2026, 1, 6, 1, 0, tzinfo=UTC)) is None
    assert schedule.window_at(datetime(2025, 12, 31, 23, tzinfo=UTC)) is None  # before the start


def oracle(rec: Recurrence, start: date, day: date) -> bool:
    """Independent of the generator: does `day` carry a window? Checked day by day from the rules."""
    if day < start:
        return False
    if rec.unit == "day":
        return (day - start).days % rec.interval == 0
    if rec.unit == "week":
        weeks = ((day - timedelta(days=day.weekday())) - (start - timedelta(days=start.weekday()))).days // 7
        return weeks % rec.interval == 0 and day.weekday() in (rec.weekdays or (start.weekday(),))
    base = day - timedelta(days=rec.offset)  # the day before the offset was added
    months = (base.year - start.year) * 12 + base.month - start.month
    if months < 0 or months % rec.interval:
        return False
    if rec.week_of_month is not None and rec.weekday is not None:
        return base == nth_weekday(base.year, base.month, rec.week_of_month, rec.weekday)
    return base.day in (rec.month_days or (start.day,))


def test_generator_agrees_with_a_day_by_day_oracle() -> None:
    rng = random.Random(7)
    forms = ["{n}Days", "{n}Weeks", "{n}Weeks {days}", "{n}Months", "{n}Months {mdays}",
             "{n}Months {ordinal} {weekday}", "{n}Months {ordinal} {weekday} Offset{offset}"]
    names = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    for _ in range(150):
        text = rng.choice(forms).format(
            n=rng.randint(1, 3), days=",".join(rng.sample(names, rng.randint(1, 3))),
            mdays=",".join(f"day{d}" for d in rng.sample(range(1, 32), rng.randint(1, 3))),
            ordinal=rng.choice(["First", "Second", "Third", "Fourth", "Last"]), weekday=rng.choice(names),
            offset=rng.randint(-6, 6))
        rec = parse_recur_every(text)
        start = date(2026, 1, 1) + timedelta(days=rng.randint(0, 400))
        schedule = Schedule(rec, datetime.combine(start, datetime.min.time()).replace(hour=4), None,
                            timedelta(hours=2), resolve_time_zone("UTC"))
        span = [start + timedelta(days=i) for i in range(0, 800)]
        expected = [d for d in span if oracle(rec, start, d)]
        got = [b.date() for b, _ in schedule.next_windows(datetime(2025, 12, 1, tzinfo=UTC), len(expected) + 5)
               if b.date() <= span[-1]]
        assert got == expected, text


def test_time_zones_by_windows_and_iana_name() -> None:
    for name in ("Pacific Standard Time", "W. Europe Standard Time", "India Standard Time", "UTC",
                 "Korea Standard Time", "Cen. Australia Standard Time", "pacific standard time"):
        assert resolve_time_zone(name) is not None
    assert all(resolve_time_zone(name) for name in win_tz)  # every Windows zone CLDR maps
    assert str(resolve_time_zone("India Standard Time").key) in ("Asia/Calcutta", "Asia/Kolkata")
    assert resolve_time_zone("Europe/Berlin").key == "Europe/Berlin"
    for bad in ("Mars Standard Time", "../etc/passwd", "", "Not/AZone"):
        with pytest.raises(UnknownTimeZoneError):
            resolve_time_zone(bad)


def exported(name: str) -> dict[str, object]:
    return json.loads((EXAMPLES / name).read_text())["responses"]["200"]["body"]


@pytest.mark.parametrize("example", ["MaintenanceConfigurations_GetForResource_GuestOSPatchLinux.json",
                                     "MaintenanceConfigurations_GetForResource_GuestOSPatchWindows.json"])
def test_a_configuration_exported_from_azure_is_accepted_as_it_is(example: str) -> None:
    body = exported(example)  # id, name, location, namespace, visibility, tasks and all
    # Azure's own example files use a 05:00 window, which InGuestPatch does not allow (01:30-03:55).
    with pytest.raises(ValidationError) as err:
        parse_configuration("configuration1", body)
    assert err.value.target == "properties.maintenanceWindow.duration"
    within_limits = copy.deepcopy(body)
    within_limits["properties"]["maintenanceWindow"]["duration"] = "03:55"  # type: ignore[index]
    within_limits["systemData"] = {"createdBy": "someone@example.com", "createdByType": "User"}
    config = parse_configuration("configuration1", within_limits)
    assert config.properties["maintenanceScope"] == "InGuestPatch"
    assert config.install_patches["rebootSetting"] == "Always"
    assert config.schedule.recurrence.unit == "day" and config.schedule.recurrence.interval == 5
    assert config.properties["installPatches"]["tasks"] == body["properties"]["installPatches"]["tasks"]  # type: ignore[index]
    if "Windows" in example:
        assert config.install_patches["windowsParameters"]["kbNumbersToInclude"] == ["123456"]


def valid() -> dict[str, object]:
    return {"location": "westus2", "properties": {
        "maintenanceScope": "InGuestPatch",
        "maintenanceWindow": {"startDateTime": "2026-01-01 22:00", "duration": "03:00",
                              "timeZone": "W. Europe Standard Time", "recurEvery": "Month Second Tuesday Offset2"},
        "installPatches": {"rebootSetting": "IfRequired",
                           "windowsParameters": {"classificationsToInclude": ["Critical", "Security"]}}}}


@pytest.mark.parametrize(("path", "value", "target"), [
    (("maintenanceWindow", "duration"), "01:29", "properties.maintenanceWindow.duration"),
    (("maintenanceWindow", "duration"), "03:56", "properties.maintenanceWindow.duration"),
    (("maintenanceWindow", "duration"), "3h", "properties.maintenanceWindow.duration"),
    (("maintenanceWindow", "expirationDateTime"), "2025-12-31 00:00",
     "properties.maintenanceWindow.expirationDateTime"),
    (("maintenanceWindow", "startDateTime"), "2026-01-01T22:00", "properties.maintenanceWindow.startDateTime"),
    (("maintenanceWindow", "startDateTime"), "2026-02-30 22:00", "properties.maintenanceWindow.startDateTime"),
    (("maintenanceWindow", "timeZone"), "Moon Standard Time", "properties.maintenanceWindow.timeZone"),
    (("maintenanceWindow", "recurEvery"), "Month Fifth Monday", "properties.maintenanceWindow.recurEvery"),
    (("maintenanceWindow", "recurEvery"), None, "properties.maintenanceWindow.recurEvery"),
    (("maintenanceWindow", "startsAt"), "x", "properties.maintenanceWindow.startsAt"),
    (("maintenanceScope",), "Host", "properties.maintenanceScope"),
    (("installPatches", "rebootSetting"), "Sometimes", "properties.installPatches.rebootSetting"),
    (("installPatches", "windowsParameters", "classificationsToInclude"), ["Urgent"],
     "properties.installPatches.windowsParameters.classificationsToInclude[0]"),
])
def test_bad_configurations_name_the_field(path: tuple[str, ...], value: object, target: str) -> None:
    body = valid()
    node = body["properties"]
    for key in path[:-1]:
        node = node[key]  # type: ignore[index]
    node[path[-1]] = value  # type: ignore[index]
    with pytest.raises(ValidationError) as err:
        parse_configuration("weekly", body)
    assert err.value.target == target, err.value.message


def test_an_hourly_schedule_shorter_than_its_window_is_refused() -> None:
    body = valid()
    body["properties"]["maintenanceWindow"].update(recurEvery="6Hours")  # type: ignore[index]
    assert parse_configuration("ok", body).schedule.recurrence.unit == "hour"
    with pytest.raises(ValidationError):
        parse_configuration("bad name!", body)


def test_assignments_static_and_dynamic() -> None:
    vm = "/subscriptions/5b4b650e-28b9-4790-b3ab-ddbd88d727c4/resourceGroups/rg/providers/" \
         "Microsoft.Compute/virtualMachines/vm1"
    static = parse_assignment("one", {"properties": {"resourceId": vm}})
    assert static.vm is not None and static.scope is None
    example = json.loads((EXAMPLES / "ConfigurationAssignmentsForSubscriptions_CreateOrUpdate.json").read_text())
    dynamic = parse_assignment("workervmConfiguration", example["responses"]["200"]["body"])
    assert dynamic.scope is not None and dynamic.scope.resource_group is None
    assert dynamic.filter["tagSettings"]["filterOperator"] == "Any"
    with pytest.raises(ValidationError) as err:
        parse_assignment("x", {"properties": {"resourceId": vm, "filter": {}}})
    assert err.value.target == "properties.filter"
    with pytest.raises(ValidationError) as err:
        parse_assignment("x", {"properties": {"resourceId": "/subscriptions/5b4b650e-28b9-4790-b3ab-ddbd88d727c4",
                                              "filter": {"resourceTypes": ["Microsoft.Sql/servers"]}}})
    assert err.value.target == "properties.filter.resourceTypes"
    # Azure Arc-enabled servers: assigned one by one, or by a dynamic scope whose resourceTypes name them
    arc = vm.replace("Microsoft.Compute/virtualMachines/vm1", "Microsoft.HybridCompute/machines/srv-01.corp")
    static_arc = parse_assignment("arc", {"properties": {"resourceId": arc}})
    assert static_arc.vm is not None and static_arc.vm.is_hybrid and static_arc.vm.resource_id == arc
    sub = "/subscriptions/5b4b650e-28b9-4790-b3ab-ddbd88d727c4"
    arc_only = parse_assignment("x", {"properties": {
        "resourceId": sub, "filter": {"resourceTypes": ["microsoft.hybridcompute/machines"]}}})
    assert arc_only.filter["resourceTypes"] == ["Microsoft.HybridCompute/machines"]


def test_dynamic_scope_filter_semantics() -> None:
    flt = parse_filter({"resourceGroups": ["RG-Prod"], "osTypes": ["windows"], "locations": ["West US"],
                        "tagSettings": {"tags": {"Env": ["prod"], "tier": ["web", "api"]}, "filterOperator": "All"}})
    vm = {"id": "/subscriptions/s/resourceGroups/rg-prod/providers/Microsoft.Compute/virtualMachines/a",
          "location": "westus", "tags": {"env": "prod", "Tier": "api"}}
    assert filter_matches(flt, vm, "Windows")
    assert not filter_matches(flt, vm, "Linux")
    assert not filter_matches(flt, {**vm, "tags": {"env": "prod"}}, "Windows")  # All: tier missing
    assert filter_matches({**flt, "tagSettings": {**flt["tagSettings"], "filterOperator": "Any"}},
                          {**vm, "tags": {"env": "prod"}}, "Windows")
    assert not filter_matches(flt, {**vm, "tags": {"env": "Prod", "tier": "api"}}, "Windows")  # values exact
    assert not filter_matches(flt, {**vm, "location": "eastus"}, "Windows")
    assert filter_matches({}, vm, "Linux")


def test_hourly_windows_step_in_real_time_through_a_repeated_hour() -> None:
    # New York falls back at 06:00Z on 3 Nov 2024: 01:30 local happens twice. Six hours is six hours.
    schedule = Schedule(parse_recur_every("6Hours"), datetime(2024, 11, 2, 20, 30), None, timedelta(hours=2),
                        resolve_time_zone("America/New_York"))
    starts = [b.strftime("%dT%H:%M") for b, _ in schedule.next_windows(datetime(2024, 11, 2, tzinfo=UTC), 4)]
    assert starts == ["03T00:30", "03T06:30", "03T12:30", "03T18:30"]
    assert schedule.window_at(datetime(2024, 11, 3, 7, 0, tzinfo=UTC)) is not None  # the 06:30Z one is open


def test_the_end_of_the_calendar_ends_the_windows_quietly() -> None:
    schedule = Schedule(parse_recur_every("Day"), datetime(9999, 12, 30), None, timedelta(hours=2),
                        resolve_time_zone("UTC"))
    assert len(schedule.next_windows(datetime(9999, 12, 1, tzinfo=UTC), 10)) == 2
    with pytest.raises(UnknownTimeZoneError):
        resolve_time_zone("Europe")  # a folder of the zone database, not a zone


@pytest.mark.parametrize(("field", "value", "target"), [
    ("extensionProperties", {"InGuestPatchMode": "Platform"}, "properties.extensionProperties.InGuestPatchMode"),
    ("extensionProperties", "junk", "properties.extensionProperties"),
    ("visibility", "Secret", "properties.visibility"),
    ("namespace", 7, "properties.namespace"),
])
def test_azure_fields_patchpilot_cannot_honour_are_refused(field: str, value: object, target: str) -> None:
    body = valid()
    body["properties"][field] = value  # type: ignore[index]
    with pytest.raises(ValidationError) as err:
        parse_configuration("weekly", body)
    assert err.value.target == target


def test_an_assignment_naming_another_configuration_is_refused() -> None:
    vm = "/subscriptions/5b4b650e-28b9-4790-b3ab-ddbd88d727c4/resourceGroups/rg/providers/" \
         "Microsoft.Compute/virtualMachines/vm1"
    body = {"properties": {"resourceId": vm, "maintenanceConfigurationId": "/subscriptions/x/resourcegroups/rg/"
                           "providers/Microsoft.Maintenance/maintenanceConfigurations/other"}}
    with pytest.raises(ValidationError) as err:
        parse_assignment("a", body, configuration="nightly")
    assert err.value.target == "properties.maintenanceConfigurationId"
    assert parse_assignment("a", body, configuration="Other").vm is not None


def test_internal_claim_keys_cannot_be_sent_by_a_caller() -> None:
    from shared.runs.accept import check_idempotency_key, internal_key

    with pytest.raises(ValidationError):
        check_idempotency_key(internal_key("maintenance:nightly:2026-01-01T00:00:00.000000Z"))


@pytest.mark.parametrize(("recur", "start"), [
    ("12Months day30", "2026-02-10 22:00"),   # February never has a 30th
    ("12Months day31", "2026-04-10 22:00"),   # nor April a 31st
    ("24Months day30,day31", "2026-02-01 22:00"),
])
def test_a_schedule_that_can_never_produce_a_window_is_refused(recur: str, start: str) -> None:
    body = valid()
    body["properties"]["maintenanceWindow"].update(recurEvery=recur, startDateTime=start)  # type: ignore[index]
    with pytest.raises(ValidationError) as err:
        parse_configuration("never", body)
    assert err.value.target == "properties.maintenanceWindow.recurEvery"
    assert "never produces a maintenance window" in err.value.message


def test_rare_but_real_windows_are_kept_and_found() -> None:
    # Every 4 years on 29 February: 2028, 2032 … and across 2100, which is not a leap year.
    schedule = Schedule(parse_recur_every("48Months day29"), datetime(2024, 2, 1, 22, 0), None,
                        timedelta(hours=3), resolve_time_zone("UTC"))
    assert schedule.first_window() is not None
    starts = [b.date() for b, _ in schedule.next_windows(datetime(2090, 1, 1, tzinfo=UTC), 3)]
    assert starts == [date(2092, 2, 29), date(2096, 2, 29), date(2104, 2, 29)]


def test_every_search_for_a_window_is_bounded_even_for_a_stored_schedule_that_has_none() -> None:
    # A configuration stored before such schedules were refused must not hang the timer or the API.
    schedule = Schedule(parse_recur_every("12Months day30"), datetime(2026, 2, 10, 22, 0), None,
                        timedelta(hours=3), resolve_time_zone("UTC"))
    now = datetime(2026, 3, 1, tzinfo=UTC)
    assert schedule.first_window() is None
    assert schedule.next_windows(now, 5) == []
    assert schedule.window_at(now) is None
    assert list(schedule.windows(now)) == []
