"""What assessments store, show and count from results in any of Azure's shapes (shared/arm/patch_results.py):
display-name classifications stored and counted by the API's names (also rows stored before that rule), Linux
patches with null kbId / rebootBehavior, the older `patches` key, and `Other` updates on Linux machines shown in the
machine view and the compliance view. Crafted results, an in-memory fleet: no Azurite, no simulator."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest

from shared.assessments.compliance import compliance_report, render_report
from shared.assessments.machine_view import machine_assessment
from shared.assessments.results import patch_facts, record_outcome
from shared.core.clock import iso
from shared.core.ids import MachineRef
from shared.core.states import MachineState
from shared.storage.fleet_rollup import Tally, shard_entity, shard_tally
from shared.storage.fleet_store import FleetStore
from shared.validation.resource_ids import parse_machine_id

NOW = datetime(2026, 11, 30, 12, 0, 30, tzinfo=UTC)
SUB = "00000000-0000-0000-0000-0000000000aa"


def vm_id(name: str, *, arc: bool = False) -> str:
    provider = "Microsoft.HybridCompute/machines" if arc else "Microsoft.Compute/virtualMachines"
    return f"/subscriptions/{SUB}/resourceGroups/rg/providers/{provider}/{name}"


class MemoryFleet:
    """The FleetStore methods record_outcome and machine_assessment use, in memory."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.summaries: dict[str, list[dict[str, Any]]] = {}
        self.patches: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def record_attempt(self, vm: MachineRef, changes: dict[str, Any], *, assessed_at: str | None) -> bool:
        self.rows[vm.key] = {**self.rows.get(vm.key, {}), **changes}
        return True

    def forget_machine(self, vm: MachineRef) -> None:
        self.rows.pop(vm.key, None)

    def save_history(self, vm: MachineRef, when: datetime, activity_id: str, summary: dict[str, Any],
                     patches: list[dict[str, Any]]) -> str:
        key = f"{iso(when)}-{activity_id[:8]}"
        # as FleetStore stores them: JSON text, read back as JSON
        self.summaries.setdefault(vm.key, []).insert(0, json.loads(json.dumps(
            {"historyKey": key, "at": iso(when), "patchCount": len(patches), **summary})))
        self.patches[(vm.key, key)] = [json.loads(json.dumps(p)) for p in patches]
        return key

    def prune_history(self, vm: MachineRef, older_than: datetime) -> int:
        return 0

    def get_machine(self, vm: MachineRef) -> dict[str, Any] | None:
        return self.rows.get(vm.key)

    def list_history(self, vm: MachineRef, top: int) -> list[dict[str, Any]]:
        return self.summaries.get(vm.key, [])[:top]

    def history_patches(self, vm: MachineRef, history_key: str) -> list[dict[str, Any]]:
        return self.patches.get((vm.key, history_key), [])


def record(fleet: MemoryFleet, resource_id: str, os_type: str, result: dict[str, Any]) -> None:
    deps = SimpleNamespace(fleet=fleet, settings=SimpleNamespace(assessments=SimpleNamespace(retention_days=90)))
    record_outcome(cast(Any, deps), {"resourceId": resource_id, "osType": os_type}, MachineState.COMPLETED,
                   {"status": "Succeeded", "assessmentActivityId": "68f8b292-dfc2", "startDateTime": iso(NOW),
                    **result}, "run1")


def view(fleet: MemoryFleet, resource_id: str) -> dict[str, Any]:
    shown = machine_assessment(cast(FleetStore, fleet), parse_machine_id(resource_id, target="id"), history=5)
    assert shown is not None
    return shown


UBUNTU = [  # as a Linux assessment lists them: kbId and rebootBehavior null
    {"patchId": "openssl_3.0.2-0ubuntu1.20", "name": "openssl", "version": "3.0.2-0ubuntu1.20", "kbId": None,
     "classifications": ["Security"], "rebootBehavior": None, "assessmentState": "Available"},
    {"patchId": "libxml2_2.9.13+dfsg-1ubuntu0.6", "name": "libxml2", "version": "2.9.13+dfsg-1ubuntu0.6",
     "kbId": None, "classifications": ["Other"], "rebootBehavior": None, "assessmentState": "Available"},
    {"patchId": "tzdata_2025b-0ubuntu0.22.04", "name": "tzdata", "version": "2025b-0ubuntu0.22.04", "kbId": None,
     "classifications": ["Other"], "rebootBehavior": None, "assessmentState": "Available"},
]
WINDOWS = [  # display names, as the spec's examples and field reports show
    {"patchId": "a", "name": "2025-06 Cumulative Update (KB5060842)", "kbId": "5060842",
     "classifications": ["Security Updates"], "rebootBehavior": "CanRequestReboot"},
    {"patchId": "b", "name": "Windows Malicious Software Removal Tool (KB890830)", "kbId": "890830",
     "classifications": ["Update Rollups"], "rebootBehavior": "CanRequestReboot"},
    {"patchId": "c", "name": "Definition Update (KB2267602)", "kbId": "2267602",
     "classifications": ["Definition Updates"], "rebootBehavior": "NeverReboots"},
    {"patchId": "d", "name": "Critical fix (KB5000001)", "kbId": "5000001", "classifications": ["critical updates"],
     "rebootBehavior": "AlwaysRequiresReboot"},
]


@pytest.mark.parametrize(("key", "os_type", "patches", "counts", "missing"), [
    ("availablePatches", "Windows", WINDOWS, {"Critical": 1, "Definition": 1, "Security": 1, "UpdateRollUp": 1},
     [["KB2267602", "Definition"], ["KB5000001", "Critical"], ["KB5060842", "Security"], ["KB890830", "UpdateRollUp"]]),
    ("patches", "Windows", WINDOWS,  # an api-version before 2020-12-01
     {"Critical": 1, "Definition": 1, "Security": 1, "UpdateRollUp": 1},
     [["KB2267602", "Definition"], ["KB5000001", "Critical"], ["KB5060842", "Security"], ["KB890830", "UpdateRollUp"]]),
    ("availablePatches", "Linux", UBUNTU, {"Other": 2, "Security": 1},
     [["libxml2", "Other"], ["openssl", "Security"], ["tzdata", "Other"]]),
    ("patches", "Linux", UBUNTU, {"Other": 2, "Security": 1},
     [["libxml2", "Other"], ["openssl", "Security"], ["tzdata", "Other"]]),
])
def test_a_result_is_stored_with_canonical_names_and_no_none(key: str, os_type: str, patches: list[dict[str, Any]],
                                                             counts: dict[str, int], missing: list[list[str]]) -> None:
    fleet = MemoryFleet()
    record(fleet, vm_id("m1"), os_type, {key: patches})
    row = next(iter(fleet.rows.values()))
    assert json.loads(row["classificationCounts"]) == counts
    assert json.loads(row["missingPatches"]) == missing
    summary = next(iter(fleet.summaries.values()))[0]
    assert json.loads(summary["classificationCounts"]) == counts and summary["patchCount"] == len(patches)
    stored = next(iter(fleet.patches.values()))
    assert len(stored) == len(patches)
    assert all(set(p["classifications"]) <= set(counts) for p in stored)
    text = json.dumps([fleet.rows, fleet.summaries, list(fleet.patches.values())])
    assert "None" not in text and "Updates\"" not in text and "Rollups" not in text


def test_an_arc_result_counts_by_canonical_names() -> None:
    fleet = MemoryFleet()
    record(fleet, vm_id("arc1", arc=True), "Windows", {"availablePatchCountByClassification": {
        "security": 2, "critical": 0, "definition": 3, "updateRollup": 1, "featurePack": 0, "servicePack": 0,
        "tools": 0, "updates": 4}})
    row = next(iter(fleet.rows.values()))
    assert json.loads(row["classificationCounts"]) == {"Definition": 3, "Security": 2, "UpdateRollUp": 1,
                                                       "Updates": 4}


@pytest.mark.parametrize(("os_type", "patches", "other", "note"), [
    ("Linux", UBUNTU, 2, True),
    ("Linux", UBUNTU[:1], 0, False),
    ("Linux", [], 0, False),
    ("Windows", WINDOWS, None, False),  # Other is a Linux class: nothing to say on Windows
    ("", UBUNTU, 2, True),  # OS type not known: Other updates say it is Linux
])
def test_the_machine_view_tells_of_other_updates_on_linux(os_type: str, patches: list[dict[str, Any]],
                                                          other: int | None, note: bool) -> None:
    fleet = MemoryFleet()
    record(fleet, vm_id("m1"), os_type, {"availablePatches": patches})
    latest = view(fleet, vm_id("m1"))["latest"]
    assert latest.get("otherUpdates") == other
    assert ("note" in latest) is note
    if note:
        assert str(other) in latest["note"] and "Security" in latest["note"] and "\n" not in latest["note"]
        assert "classificationsToInclude" in latest["note"]


def test_the_machine_view_shows_rows_stored_before_canonical_names_canonical() -> None:
    fleet = MemoryFleet()
    vm = parse_machine_id(vm_id("old"), target="id")
    fleet.rows[vm.key] = {"resourceId": vm.resource_id, "osType": "Windows"}
    key = fleet.save_history(vm, NOW, "a", {"status": "Succeeded", "classificationCounts": json.dumps(
        {"Security Updates": 2, "Security": 1, "Update Rollups": 1})}, [
        {"kbId": "1", "classifications": ["Security Updates"], "rebootBehavior": "None"},
        {"name": "x", "kbId": "None", "classifications": ["Update Rollups"]}])
    latest = view(fleet, vm.resource_id)["latest"]
    assert latest["classificationCounts"] == {"Security": 3, "UpdateRollUp": 1}
    assert latest["availablePatches"] == [{"kbId": "1", "classifications": ["Security"], "rebootBehavior": None},
                                          {"name": "x", "kbId": None, "classifications": ["UpdateRollUp"]}]
    assert key and "None" not in json.dumps(latest)


def row(i: int, os_type: str, counts: dict[str, int], missing: list[list[str]]) -> dict[str, Any]:
    critical = sum(n for c, n in counts.items() if c.startswith(("Security", "Critical")))
    return {"resourceId": vm_id(f"vm{i}"), "osType": os_type, "powerState": "running",
            "assessedAt": iso(NOW - timedelta(minutes=i)), "criticalAndSecurityPatchCount": critical,
            "otherPatchCount": sum(counts.values()) - critical, "classificationCounts": json.dumps(counts),
            "missingPatches": json.dumps(missing)}


# Rows written before canonical names (display names) beside rows written after: one class each.
ROWS = [
    row(0, "Windows", {"Security Updates": 1, "Update Rollups": 1},
        [["KB1", "Security Updates"], ["KB2", "Update Rollups"]]),
    row(1, "Windows", {"Security": 1}, [["KB1", "Security"]]),
    row(2, "Windows", {"Security Updates": 1, "Definition Updates": 2}, [["KB1", "Security Updates"]]),
    row(3, "Linux", {"Other": 3, "Security": 1}, [["libxml2", "Other"], ["tzdata", "Other"], ["openssl", "Security"]]),
    row(4, "Linux", {"Other": 1}, [["libxml2", "Other"]]),
    row(5, "Linux", {"Security": 2}, [["openssl", "Security"]]),
]


def test_compliance_never_splits_a_class_and_counts_linux_other_updates() -> None:
    report = compliance_report(ROWS, now=NOW, freshness_hours=36)
    assert report["byClassification"] == {
        "Definition": {"missingPatches": 2, "machines": 1}, "Other": {"missingPatches": 4, "machines": 2},
        "Security": {"missingPatches": 6, "machines": 5}, "UpdateRollUp": {"missingPatches": 1, "machines": 1}}
    top = {(p["patch"], p["classification"]): p["machines"] for p in report["mostWidespreadMissingPatches"]}
    assert top[("KB1", "Security")] == 3 and ("KB1", "Security Updates") not in top
    assert top[("libxml2", "Other")] == 2
    assert report["linuxOtherUpdates"]["machines"] == 2 and report["linuxOtherUpdates"]["updates"] == 4
    assert "classificationsToInclude" in report["linuxOtherUpdates"]["note"]


@pytest.mark.parametrize(("os_type", "machines", "updates"), [(None, 2, 4), ("Linux", 2, 4), ("Windows", 0, 0)])
def test_the_rollups_answer_the_same_as_the_rows(os_type: str | None, machines: int, updates: int) -> None:
    """The same numbers from a rollup shard (what GET /api/compliance reads) as from the rows: no extra read."""
    entity = shard_entity(SUB, 0, Tally.of_rows(ROWS), built_at=iso(NOW))
    from_rollup = render_report(shard_tally(entity), now=NOW, freshness_hours=36, os_type=os_type)
    rows = [r for r in ROWS if os_type is None or r["osType"] == os_type]
    assert from_rollup == compliance_report(rows, now=NOW, freshness_hours=36)
    assert from_rollup["linuxOtherUpdates"]["machines"] == machines
    assert from_rollup["linuxOtherUpdates"]["updates"] == updates
    assert ("note" in from_rollup["linuxOtherUpdates"]) is (machines > 0)


def test_facts_of_display_names_equal_facts_of_api_names() -> None:
    shown = [{"kbId": "1", "classifications": ["Security Updates"]},
             {"kbId": "2", "classifications": ["Service Packs"]},
             {"name": "bash", "kbId": None, "classifications": ["other"]}]
    api = [{"kbId": "1", "classifications": ["Security"]}, {"kbId": "2", "classifications": ["ServicePack"]},
           {"name": "bash", "classifications": ["Other"]}]
    assert patch_facts(shown) == patch_facts(api)
    assert json.loads(patch_facts(shown)["missingPatches"]) == [["KB1", "Security"], ["KB2", "ServicePack"],
                                                                ["bash", "Other"]]
