"""App bugs the reliability fuzzer found, each with its smallest known reproducing input, pinned as strict
xfails: the test states the behaviour the rules ask for (a 4xx in ARM's shape naming the field, and nothing
written), so it starts passing, and fails as XPASS, when the app is fixed. Then delete the xfail mark here
and, for a 5xx, its signature in harness.KNOWN_BUGS, so the fuzzer treats that 5xx as new from then on.

Proposed fixes (shared/ is not this suite's to change):
- parse_json_body: catch RecursionError with ValueError (or bound the nesting depth before json.loads).
- parse_duration: catch OverflowError (or bound each number, e.g. to 9 digits) and raise ValueError.
- parse_datetime: catch OverflowError around astimezone and raise the same ValidationError.
- Schedule.first_window: compute `after` inside the try (or refuse start years below 2 and above 9998).
- put_config / put_assignment / create_run: refuse a body whose stored JSON passes 64 KiB (Table storage's
  property limit, 32K UTF-16 characters) with a 400 before writing anything (run chunks come first today).
- _KB: match [0-9] (or re.ASCII) so only ASCII digits are taken.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.reliability.conftest import CONFIG_NAME, SEEDED_CONFIG, SEEDED_RUN, SEEDED_VM, FuzzApp
from tests.reliability.harness import KNOWN_BUGS, Outcome, Request, Tally, check


def run_with(change: dict[str, Any], where: str = "installPatches") -> bytes:
    body = copy.deepcopy(SEEDED_RUN)
    body[where].update(change)
    return json.dumps(body).encode()


def window_with(**change: str) -> bytes:
    body = copy.deepcopy(SEEDED_CONFIG)
    body["properties"]["maintenanceWindow"].update(change)
    return json.dumps(body).encode()


def refused_cleanly(app: FuzzApp, request: Request, target: str | None) -> Outcome:
    tally = Tally()
    outcome = check(request, app.probe, tally, valid=False)
    assert outcome.status == 400, (outcome.status, outcome.signature, outcome.body)
    assert not tally.problems(), tally.problems()
    assert outcome.body["error"].get("target") == target
    return outcome


def test_every_known_bug_signature_has_a_test_here() -> None:
    assert len(KNOWN_BUGS) == 7


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="RecursionError from json.loads on deep nesting is not caught: 500 "
                   "(shared/validation/run_request.py parse_json_body catches ValueError only)")
@pytest.mark.parametrize("endpoint", ["create_run", "create_assessment", "put_configuration"])
def test_deeply_nested_json_is_a_400(fuzz_app: FuzzApp, endpoint: str) -> None:
    route = {"name": "deep"} if endpoint == "put_configuration" else {}
    refused_cleanly(fuzz_app, Request(endpoint, route, body=b"[" * 100_000 + b"]" * 100_000), None)


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="parse_duration overflows timedelta on a huge number (OverflowError, "
                   "not ValueError): 500")
@pytest.mark.parametrize(("body", "target"), [
    (run_with({"maximumDuration": "P99999999999W"}), "installPatches.maximumDuration"),
    (run_with({"maximumDuration": "PT" + "9" * 400 + "H"}), "installPatches.maximumDuration"),
    (run_with({"soakTime": "P99999999999W"}, where="rollout"), "rollout.soakTime"),
], ids=["weeks", "hours", "soakTime"])
def test_a_huge_duration_is_a_400(fuzz_app: FuzzApp, body: bytes, target: str) -> None:
    refused_cleanly(fuzz_app, Request("create_run", body=body), target)


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="a window starting at the edge of datetime's range overflows in "
                   "Schedule.first_window (to_utc(start) - 1 day): 500")
def test_a_start_in_the_year_1_is_a_400(fuzz_app: FuzzApp) -> None:
    refused_cleanly(fuzz_app, Request("put_configuration", {"name": "year1"},
                                      body=window_with(startDateTime="0001-01-01 00:00")),
                    "properties.maintenanceWindow.startDateTime")


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="parse_datetime's astimezone(UTC) overflows for an offset date-time at "
                   "the edge of datetime's range (OverflowError, not ValueError): 500")
@pytest.mark.parametrize(("request_", "target"), [
    (Request("list_occurrences", {"name": CONFIG_NAME}, {"from": "9999-12-31T23:59:59-14:00"}), "from"),
    (Request("list_occurrences", {"name": CONFIG_NAME}, {"from": "0001-01-01T00:00:00+14:00"}), "from"),
    (Request("create_run", body=run_with({"windowsParameters": {
        "classificationsToInclude": ["Critical"], "maxPatchPublishDate": "9999-12-31T23:59:59-14:00"}})),
     "installPatches.windowsParameters.maxPatchPublishDate"),
], ids=["from-west", "from-east", "maxPatchPublishDate"])
def test_a_date_time_past_the_year_9999_in_utc_is_a_400(fuzz_app: FuzzApp, request_: Request, target: str) -> None:
    refused_cleanly(fuzz_app, request_, target)


BIG = "x" * 70_000  # over Table storage's 64 KiB property limit


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="a configuration or assignment body is stored whole in one Table property; "
                   "over 64 KiB (tags, systemData, tasks, location) Table storage refuses the entity: 500")
@pytest.mark.parametrize("request_", [
    Request("put_configuration", {"name": "big-tags"}, body=json.dumps({**SEEDED_CONFIG, "tags": {"t": BIG}}).encode()),
    Request("put_configuration", {"name": "big-system-data"},
            body=json.dumps({**SEEDED_CONFIG, "systemData": {"createdBy": BIG}}).encode()),
    Request("put_configuration", {"name": "big-location"},
            body=json.dumps({**SEEDED_CONFIG, "location": BIG}).encode()),
    Request("put_assignment", {"name": CONFIG_NAME, "assignmentName": "big"},
            body=json.dumps({"properties": {"resourceId": SEEDED_VM}, "systemData": {"createdBy": BIG}}).encode()),
], ids=["tags", "systemData", "location", "assignment-systemData"])
def test_a_configuration_too_big_to_store_is_a_400(fuzz_app: FuzzApp, request_: Request) -> None:
    tally = Tally()
    outcome = check(request_, fuzz_app.probe, tally, valid=False)
    assert outcome.status == 400, (outcome.status, outcome.signature)
    assert not tally.problems(), tally.problems()


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="a run whose installPatches or rollout JSON passes 64 KiB is refused by "
                   "Table storage after the machine chunks were written: 500, and rows left behind")
@pytest.mark.parametrize("body", [
    run_with({"windowsParameters": {"patchNameMasksToInclude": ["A" * 256] * 200,
                                    "patchNameMasksToExclude": ["B" * 256] * 200},
              "linuxParameters": {"packageNameMasksToInclude": ["A" * 256] * 200}}),
    run_with({"preHook": {"url": "http://127.0.0.1/" + "a" * 70_000}}, where="rollout"),
], ids=["name-masks", "hook-url"])
def test_a_run_too_big_to_store_is_a_400_that_writes_nothing(fuzz_app: FuzzApp, body: bytes) -> None:
    tally = Tally()
    before = fuzz_app.probe.snapshot()
    outcome = check(Request("create_run", body=body), fuzz_app.probe, tally, valid=False)
    assert fuzz_app.probe.changes(before, fuzz_app.probe.snapshot()) == []
    assert outcome.status == 400, (outcome.status, outcome.signature)


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="the KB pattern's \\d takes any Unicode digit, so 'KB' + Arabic-Indic digits "
                   "is accepted and stored (and sent to ARM) in those digits, not as the ASCII KB number")
def test_a_kb_number_in_other_digits_is_refused_or_sent_in_ascii(fuzz_app: FuzzApp) -> None:
    arabic_indic = "".join(chr(0x660 + int(d)) for d in "5034441")
    body = run_with({"windowsParameters": {"kbNumbersToInclude": ["KB" + arabic_indic]}})
    outcome = check(Request("create_run", body=body), fuzz_app.probe, Tally(), valid=False)
    assert outcome.status in (202, 400), outcome.status
    if outcome.status == 202:
        assert outcome.body["installPatches"]["windowsParameters"]["kbNumbersToInclude"] == ["5034441"]
