"""Plans' pure parts: Azure's selection rules, the pinned body, the timeline and window fit, the request's 400s."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.arm.calls import GUEST_PATCH, READS, WRITES
from shared.core.errors import ValidationError
from shared.plans.request import parse_plan_request
from shared.plans.schedule import WINDOW_CLOSED, WOULD_NOT_FINISH, Item, Limits, Window, schedule
from shared.plans.selection import PlannedPatch, pinned_body, planned_patches, reboot_expected, selected
from shared.runs.budget import Bucket

WIN = {"patchId": "w1", "name": "2025-10 Cumulative Update (KB5066586)", "kbId": "5066586",
       "classifications": ["Security Updates"], "rebootBehavior": "AlwaysRequiresReboot",
       "publishedDate": "2025-10-14T17:00:00Z"}
DEFENDER = {"patchId": "w2", "name": "Defender definitions (KB2267602)", "kbId": "2267602",
            "classifications": ["Definition Updates"], "rebootBehavior": "NeverReboots",
            "publishedDate": "2025-10-19T08:00:00Z"}
OPENSSL = {"patchId": "l1", "name": "openssl", "version": "3.0.13-0ubuntu3.6", "classifications": ["Security"]}
CURL = {"patchId": "l2", "name": "curl", "version": "8.5.0-2ubuntu10.7", "classifications": ["Other"]}


@pytest.mark.parametrize(("patch", "params", "os_type", "expected"), [
    (WIN, {"classificationsToInclude": ["Security"]}, "Windows", True),  # display name "Security Updates"
    (WIN, {"classificationsToInclude": ["Critical"]}, "Windows", False),
    (WIN, {"kbNumbersToInclude": ["KB5066586"]}, "Windows", True),
    (WIN, {"classificationsToInclude": ["Security"], "kbNumbersToExclude": ["5066586"]}, "Windows", False),
    (WIN, {"classificationsToInclude": ["Security"], "excludeKbsRequiringReboot": True}, "Windows", False),
    (DEFENDER, {"classificationsToInclude": ["Definition"], "excludeKbsRequiringReboot": True}, "Windows", True),
    (WIN, {"classificationsToInclude": ["Security"], "maxPatchPublishDate": "2025-10-01T00:00:00Z"}, "Windows", False),
    (WIN, {"classificationsToInclude": ["Security"], "maxPatchPublishDate": "2025-10-14T17:00:00Z"}, "Windows", True),
    (WIN, {"patchNameMasksToInclude": ["*cumulative*"]}, "Windows", True),  # Windows masks ignore case
    (WIN, {"classificationsToInclude": ["Security"], "patchNameMasksToExclude": ["2025-10*"]}, "Windows", False),
    (OPENSSL, {"classificationsToInclude": ["Security"]}, "Linux", True),
    (CURL, {"classificationsToInclude": ["Security"]}, "Linux", False),
    (CURL, {"classificationsToInclude": ["Security"], "packageNameMasksToInclude": ["curl"]}, "Linux", True),
    (CURL, {"packageNameMasksToInclude": ["curl_8.5.0-2ubuntu10.7"]}, "Linux", True),
    (CURL, {"packageNameMasksToInclude": ["curl_8.5.0-2ubuntu10.8"]}, "Linux", False),
    (CURL, {"packageNameMasksToInclude": ["CURL"]}, "Linux", False),  # Linux masks are case-sensitive
    (OPENSSL, {"classificationsToInclude": ["Security"], "packageNameMasksToExclude": ["openssl*"]}, "Linux", False),
])
def test_selection_follows_azures_rules(patch: dict[str, Any], params: dict[str, Any], os_type: str,
                                        expected: bool) -> None:
    assert selected(patch, params, os_type) is expected


def test_a_pinned_body_installs_the_plan_and_nothing_newer() -> None:
    install = {"maximumDuration": "PT2H", "rebootSetting": "IfRequired",
               "windowsParameters": {"classificationsToInclude": ["Security", "Definition"],
                                     "kbNumbersToExclude": ["1"]},
               "linuxParameters": {"classificationsToInclude": ["Security"]}}
    windows = planned_patches([WIN, DEFENDER], install, "Windows")
    assert windows is not None and [p.kb_id for p in windows] == ["2267602", "5066586"]
    body = pinned_body({"maximumDuration": "PT2H", "rebootSetting": "IfRequired",
                        "windowsParameters": install["windowsParameters"]}, windows, "Windows")
    assert body is not None
    assert body["windowsParameters"] == {
        "kbNumbersToExclude": ["1"], "kbNumbersToInclude": ["2267602", "5066586"],
        "maxPatchPublishDate": "2025-10-19T08:00:01Z"}
    newer = {**WIN, "patchId": "w3", "kbId": "5070000", "publishedDate": "2025-11-11T17:00:00Z"}
    assert not selected(newer, body["windowsParameters"], "Windows")
    assert all(selected(p, body["windowsParameters"], "Windows") for p in (WIN, DEFENDER))

    linux = planned_patches([OPENSSL, CURL], install, "Linux")
    assert linux is not None and [p.name for p in linux] == ["openssl"]
    body = pinned_body({"maximumDuration": "PT2H", "rebootSetting": "IfRequired",
                        "linuxParameters": install["linuxParameters"]}, linux, "Linux")
    assert body == {"maximumDuration": "PT2H", "rebootSetting": "IfRequired",
                    "linuxParameters": {"packageNameMasksToInclude": ["openssl_3.0.13-0ubuntu3.6"]}}
    assert not selected({**OPENSSL, "version": "3.0.13-0ubuntu3.7"}, body["linuxParameters"], "Linux")
    assert pinned_body(body, [], "Linux") is None
    assert planned_patches([OPENSSL], {"windowsParameters": {}}, "Linux") is None


def test_reboot_expected() -> None:
    security = [PlannedPatch.from_json({"patchId": "1", "name": "x", "classification": "Security",
                                        "rebootBehavior": "AlwaysRequiresReboot"})]
    quiet = [PlannedPatch.from_json({"patchId": "2", "name": "y", "classification": "Security",
                                     "rebootBehavior": "NeverReboots"})]
    assert reboot_expected(security, {"rebootSetting": "IfRequired"}, reboot_pending=False)
    assert not reboot_expected(security, {"rebootSetting": "Never"}, reboot_pending=True)
    assert not reboot_expected(quiet, {"rebootSetting": "IfRequired"}, reboot_pending=False)
    assert reboot_expected(quiet, {"rebootSetting": "IfRequired"}, reboot_pending=True)
    assert reboot_expected(quiet, {"rebootSetting": "Always"}, reboot_pending=False)


BEGIN = datetime(2026, 12, 5, 22, 0, tzinfo=UTC)
# Compute's 600 burst / 200 per min, ARM's writes and reads: what the run's dispatch paces by
BUCKETS = {GUEST_PATCH: Bucket(GUEST_PATCH, 600, 200 / 60), WRITES: Bucket(WRITES, 200, 10),
           READS: Bucket(READS, 250, 25)}


def test_longest_first_shortens_the_predicted_makespan_and_the_window_names_who_does_not_fit() -> None:
    # 1,000 machines: the first 600 start at once, the rest at 200 a minute; one in ten takes 2 h
    items = [Item(f"s|rg|vm{i}", "s", 0, 7200.0 if i % 10 == 9 else 600.0) for i in range(1000)]
    request_order = schedule(items, begin=BEGIN, buckets=BUCKETS, reserved={}, limits=Limits(), longest_first=False)
    longest = schedule(items, begin=BEGIN, buckets=BUCKETS, reserved={}, limits=Limits(), longest_first=True)
    assert request_order.finish is not None and longest.finish is not None
    assert (longest.finish - BEGIN) < (request_order.finish - BEGIN)
    assert longest.finish - BEGIN == timedelta(hours=2)  # every long one starts in the burst

    window = Window(BEGIN, BEGIN + timedelta(hours=1, minutes=30))
    fit = schedule(items, begin=BEGIN, buckets=BUCKETS, reserved={}, limits=Limits(), longest_first=True,
                   window=window)
    outside = {k: s.outside for k, s in fit.slots.items() if s.outside}
    assert set(outside.values()) == {WOULD_NOT_FINISH}
    assert set(outside) == {i.key for i in items if i.seconds == 7200.0}
    # other runs hold the guest-patch budget for 80 minutes: nothing of this run starts in time
    held = {"s": {GUEST_PATCH: BEGIN.timestamp() + 80 * 60 + 180}}
    late = schedule(items[:5], begin=BEGIN, buckets=BUCKETS, reserved=held, limits=Limits(), longest_first=True,
                    window=window)
    assert {s.outside for s in late.slots.values()} == {WINDOW_CLOSED}
    assert all("other runs already hold" in s.reason for s in late.slots.values())


def test_waves_run_one_after_another_with_soak_and_concurrency() -> None:
    items = [Item("s|rg|a", "s", 0, 600.0), *(Item(f"s|rg|b{i}", "s", 1, 300.0) for i in range(4))]
    timeline = schedule(items, begin=BEGIN, buckets=BUCKETS, reserved={}, longest_first=True,
                        limits=Limits(max_concurrency=2, soak_seconds=1800, verify_seconds=300))
    wave0, wave1 = timeline.waves
    assert wave0 == (BEGIN, BEGIN + timedelta(seconds=900))  # 10 min + 5 min verification
    assert wave1[0] == wave0[1] + timedelta(minutes=30)
    starts = sorted(timeline.slots[f"s|rg|b{i}"].start for i in range(4))
    assert starts[2] - starts[0] == timedelta(seconds=600)  # the third waits for a slot (install + verify)


NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
VM = ("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/"
      "virtualMachines/vm1")
INSTALL = {"maximumDuration": "PT2H", "rebootSetting": "IfRequired",
           "windowsParameters": {"classificationsToInclude": ["Security"]}}


@pytest.mark.parametrize(("body", "target"), [
    ({"machines": [VM], "installPatches": INSTALL, "maintenanceWindow": {"duration": "PT2H"}},
     "maintenanceWindow.startDateTime"),
    ({"machines": [VM], "installPatches": INSTALL,
      "maintenanceWindow": {"startDateTime": "2026-12-05T22:00:00Z", "duration": "PT7H"}},
     "maintenanceWindow.duration"),
    ({"machines": [VM], "installPatches": INSTALL,
      "maintenanceWindow": {"startDateTime": "2026-12-05T22:00:00Z", "duration": "2 hours"}},
     "maintenanceWindow.duration"),
    ({"machines": [VM], "installPatches": INSTALL,
      "maintenanceWindow": {"startDateTime": "2026-12-05T22:00:00Z", "duration": "PT2H", "timeZone": "UTC"}},
     "maintenanceWindow.timeZone"),
    ({"maintenanceConfiguration": "", }, "maintenanceConfiguration"),
    ({"maintenanceConfiguration": "mc", "rollout": {}}, "rollout"),
    ({"machines": [VM]}, "installPatches"),
])
def test_plan_requests_are_refused_naming_the_field(body: dict[str, Any], target: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_plan_request(json.dumps(body).encode(), now=NOW, max_bytes=1 << 20, max_machines=100)
    assert caught.value.target == target


def test_a_plan_request_with_a_window_or_a_configuration() -> None:
    request = parse_plan_request(json.dumps({"machines": [VM], "installPatches": INSTALL, "maintenanceWindow": {
        "startDateTime": "2026-12-05T23:00:00+01:00", "duration": "PT3H"}}).encode(),
        now=NOW, max_bytes=1 << 20, max_machines=100)
    assert request.window == (datetime(2026, 12, 5, 22, 0, tzinfo=UTC), datetime(2026, 12, 6, 1, 0, tzinfo=UTC))
    assert request.run is not None and request.run.machines[0].name == "vm1"
    by_id = parse_plan_request(json.dumps({"maintenanceConfiguration": "/maintenance-configurations/nightly"}).encode(),
                               now=NOW, max_bytes=1 << 20, max_machines=100)
    assert by_id.configuration == "nightly" and by_id.run is None


def test_a_pin_keeps_the_newest_planned_patch_published_within_a_second() -> None:
    fresh = {**WIN, "publishedDate": "2025-10-14T17:00:00.6Z"}  # Azure shows seconds; the exact time is later
    planned = planned_patches([fresh], {"windowsParameters": {"classificationsToInclude": ["Security"]}}, "Windows")
    assert planned is not None
    body = pinned_body({"maximumDuration": "PT2H", "rebootSetting": "IfRequired",
                        "windowsParameters": {"classificationsToInclude": ["Security"]}}, planned, "Windows")
    assert body is not None and selected(fresh, body["windowsParameters"], "Windows")


def test_the_window_keeps_its_reboot_reserve_and_maximum_duration_bounds_a_machine() -> None:
    window = Window(BEGIN, BEGIN + timedelta(hours=2))
    tight = schedule([Item("s|rg|a", "s", 0, 6700.0)], begin=BEGIN, buckets=BUCKETS, reserved={}, limits=Limits(),
                     longest_first=True, window=window)  # 112 min: inside 2 h, not inside 2 h less 10 min
    assert tight.slots["s|rg|a"].outside == WOULD_NOT_FINISH
    capped = schedule([Item("s|rg|a", "s", 0, 4000.0)], begin=BEGIN, buckets=BUCKETS, reserved={},
                      limits=Limits(maximum_seconds=3600.0), longest_first=True, window=window)
    assert capped.slots["s|rg|a"].outside == WOULD_NOT_FINISH
    no_window = schedule([Item("s|rg|a", "s", 0, 4000.0)], begin=BEGIN, buckets=BUCKETS, reserved={},
                         limits=Limits(maximum_seconds=3600.0), longest_first=True)
    assert no_window.slots["s|rg|a"].outside == "ExceedsMaximumDuration"


def test_a_summary_of_thousands_of_machines_outside_the_window_stays_storable() -> None:
    from shared.plans.build import plan_summary
    from shared.storage.plan_store import MAX_PARTS, PART_CHARS

    rg = "rg-" + "x" * 50
    items = [Item(f"s|{rg}|vm{i:05d}", "s", 0, 3600.0 * 5) for i in range(3000)]
    window = Window(BEGIN, BEGIN + timedelta(hours=3))
    timeline = schedule(items, begin=BEGIN, buckets=BUCKETS, reserved={}, limits=Limits(max_concurrency=50),
                        longest_first=True, window=window)
    entries: dict[str, dict[str, Any]] = {}
    patches: dict[str, list[PlannedPatch]] = {}
    for i, item in enumerate(items):
        slot = timeline.slots[item.key]
        entries[item.key] = {"resourceId": f"/subscriptions/s/resourceGroups/{rg}/providers/Microsoft.Compute/"
                                           f"virtualMachines/vm{i:05d}", "action": "Install", "wave": 0,
                             "assessment": {"status": "Current"}, "rebootExpected": True,
                             "prediction": {"seconds": item.seconds, "basis": "default", "error": None},
                             "outside": {"code": slot.outside, "message": slot.reason}}
        patches[item.key] = [PlannedPatch(f"p{j}", f"package-{j}-{'y' * 40}", "Security", version=f"1.{i}.{j}")
                             for j in range(600)][i % 500:i % 500 + 3]
    summary = plan_summary(entries, patches, timeline, window=window, rollout=None, longest_first=True, begin=BEGIN)
    assert summary["window"]["wouldNotStart"] + summary["window"]["wouldNotFinish"] == 3000
    assert len(summary["outsideWindow"]) == 100 and summary["outsideWindowTruncated"]
    assert len(json.dumps(summary)) < MAX_PARTS * PART_CHARS / 2
