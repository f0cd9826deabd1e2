"""App bugs the reliability fuzzer found, each with its smallest known reproducing input. They were pinned as
strict xfails and are fixed now: each test states the behaviour the rules ask for (a 4xx in ARM's shape
naming the field, and nothing written) and stays as a regression test. A configuration's `systemData` is no
longer stored (configurations are stored normalised), so a large one is accepted rather than refused.

Where each was fixed: strict JSON with a depth limit (shared/validation/request_body.py); bounded
durations and date-times (shared/validation/durations.py, install_parameters.py); start years bounded and the
first-window search guarded (shared/maintenance); every stored value checked against Table storage's limits
before the first write (shared/storage/limits.py, shared/runs/accept.py); ASCII-only patterns.
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


def test_no_5xx_is_tolerated_any_more() -> None:
    assert KNOWN_BUGS == {}  # every bug the fuzzer found is fixed; each has a regression test below


@pytest.mark.parametrize("endpoint", ["create_run", "create_assessment", "put_configuration"])
def test_deeply_nested_json_is_a_400(fuzz_app: FuzzApp, endpoint: str) -> None:
    route = {"name": "deep"} if endpoint == "put_configuration" else {}
    refused_cleanly(fuzz_app, Request(endpoint, route, body=b"[" * 100_000 + b"]" * 100_000), None)


@pytest.mark.parametrize(("body", "target"), [
    (run_with({"maximumDuration": "P99999999999W"}), "installPatches.maximumDuration"),
    (run_with({"maximumDuration": "PT" + "9" * 400 + "H"}), "installPatches.maximumDuration"),
    (run_with({"soakTime": "P99999999999W"}, where="rollout"), "rollout.soakTime"),
], ids=["weeks", "hours", "soakTime"])
def test_a_huge_duration_is_a_400(fuzz_app: FuzzApp, body: bytes, target: str) -> None:
    refused_cleanly(fuzz_app, Request("create_run", body=body), target)


def test_a_start_in_the_year_1_is_a_400(fuzz_app: FuzzApp) -> None:
    refused_cleanly(fuzz_app, Request("put_configuration", {"name": "year1"},
                                      body=window_with(startDateTime="0001-01-01 00:00")),
                    "properties.maintenanceWindow.startDateTime")


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


@pytest.mark.parametrize("request_", [
    Request("put_configuration", {"name": "big-tags"}, body=json.dumps({**SEEDED_CONFIG, "tags": {"t": BIG}}).encode()),
    Request("put_configuration", {"name": "big-location"},
            body=json.dumps({**SEEDED_CONFIG, "location": BIG}).encode()),
    Request("put_assignment", {"name": CONFIG_NAME, "assignmentName": "big"},
            body=json.dumps({"properties": {"resourceId": SEEDED_VM}, "systemData": {"createdBy": BIG}}).encode()),
], ids=["tags", "location", "assignment-systemData"])
def test_a_configuration_too_big_to_store_is_a_400(fuzz_app: FuzzApp, request_: Request) -> None:
    tally = Tally()
    outcome = check(request_, fuzz_app.probe, tally, valid=False)
    assert outcome.status == 400, (outcome.status, outcome.signature)
    assert not tally.problems(), tally.problems()


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


def test_a_kb_number_in_other_digits_is_refused_or_sent_in_ascii(fuzz_app: FuzzApp) -> None:
    arabic_indic = "".join(chr(0x660 + int(d)) for d in "5034441")
    body = run_with({"windowsParameters": {"kbNumbersToInclude": ["KB" + arabic_indic]}})
    outcome = check(Request("create_run", body=body), fuzz_app.probe, Tally(), valid=False)
    assert outcome.status in (202, 400), outcome.status
    if outcome.status == 202:
        assert outcome.body["installPatches"]["windowsParameters"]["kbNumbersToInclude"] == ["5034441"]
