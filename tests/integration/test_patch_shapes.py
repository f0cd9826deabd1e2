"""Assessment results in Azure's other shapes, kept in Azurite's tables and read back through the views: display-name
classifications and the older `patches` key (Windows), null kbId / rebootBehavior (Linux), a row stored before
PatchPilot canonicalised names; the compliance view from rollups (no machine row read) never splits a class and
counts Linux machines with `Other` updates. Crafted results: the simulator does not report these shapes."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from shared.assessments.compliance import compliance_report, compliance_view, load_snapshot
from shared.assessments.machine_view import machine_assessment
from shared.assessments.results import record_outcome
from shared.composition import Components
from shared.core.clock import iso, utcnow
from shared.core.states import MachineState
from shared.validation.resource_ids import parse_machine_id
from tools import metrics

SUB = "00000000-0000-0000-0000-0000000000d4"


def vm_id(name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/rg-shapes/providers/Microsoft.Compute/virtualMachines/{name}"


def assess(services: Components, name: str, os_type: str, result: dict[str, Any]) -> None:
    when = iso(utcnow() - timedelta(minutes=5))
    record_outcome(services, {"resourceId": vm_id(name), "osType": os_type}, MachineState.COMPLETED,
                   {"status": "Succeeded", "assessmentActivityId": f"{name}-activity", "startDateTime": when,
                    "rebootPending": False, **result}, "run-shapes")


def linux(name: str, classification: str) -> dict[str, Any]:
    return {"patchId": f"{name}_1", "name": name, "version": "1", "kbId": None, "rebootBehavior": None,
            "classifications": [classification], "assessmentState": "Available"}


def test_shapes_are_stored_canonical_and_counted_as_one_class(services: Components) -> None:
    fleet = services.fleet
    fleet.note_subscriptions([SUB])
    # A row stored before canonical names: what an older PatchPilot wrote from a display-name result.
    old = parse_machine_id(vm_id("old-win"), target="id")
    fleet.record_attempt(old, {"resourceId": old.resource_id, "osType": "Windows", "assessedAt": iso(utcnow()),
                               "lastAttemptState": "Completed", "criticalAndSecurityPatchCount": 1,
                               "otherPatchCount": 0, "classificationCounts": json.dumps({"Security Updates": 1}),
                               "missingPatches": json.dumps([["KB5060842", "Security Updates"]])}, assessed_at=None)
    first = compliance_view(fleet, subscription_id=SUB, resource_group=None, os_type=None, machine_kind=None,
                            now=utcnow(), freshness_hours=36)  # no rollup yet: built from the rows
    assert first["byClassification"] == {"Security": {"missingPatches": 1, "machines": 1}}

    assess(services, "win", "Windows", {"criticalAndSecurityPatchCount": 1, "otherPatchCount": 1, "patches": [
        {"patchId": "a", "name": "Cumulative (KB5060842)", "kbId": "5060842", "classifications": ["Security Updates"],
         "rebootBehavior": "CanRequestReboot"},
        {"patchId": "b", "name": "MSRT (KB890830)", "kbId": "890830", "classifications": ["Update Rollups"],
         "rebootBehavior": "CanRequestReboot"}]})
    assess(services, "ubuntu", "Linux", {"criticalAndSecurityPatchCount": 1, "otherPatchCount": 2, "availablePatches": [
        linux("openssl", "Security"), linux("libxml2", "Other"), linux("tzdata", "Other")]})

    before = metrics.table_operations("fleet")["queryMachines"]
    report = compliance_view(fleet, subscription_id=SUB, resource_group=None, os_type=None, machine_kind=None,
                             now=utcnow(), freshness_hours=36, top=100)
    assert metrics.table_operations("fleet")["queryMachines"] == before  # the rollups answered
    rows = load_snapshot(fleet, subscription_id=SUB, resource_group=None, os_type=None)
    assert {k: v for k, v in report.items() if k != "generatedAt"} == {
        k: v for k, v in compliance_report(rows, now=utcnow(), freshness_hours=36, top=100).items()
        if k != "generatedAt"}
    assert report["byClassification"] == {
        "Other": {"missingPatches": 2, "machines": 1}, "Security": {"missingPatches": 3, "machines": 3},
        "UpdateRollUp": {"missingPatches": 1, "machines": 1}}
    top = {(p["patch"], p["classification"]): p["machines"] for p in report["mostWidespreadMissingPatches"]}
    assert top[("KB5060842", "Security")] == 2 and top[("openssl", "Security")] == 1
    assert report["linuxOtherUpdates"]["machines"] == 1 and report["linuxOtherUpdates"]["updates"] == 2

    ubuntu = machine_assessment(fleet, parse_machine_id(vm_id("ubuntu"), target="id"), history=5)
    assert ubuntu is not None
    latest = ubuntu["latest"]
    assert latest["classificationCounts"] == {"Other": 2, "Security": 1}
    assert latest["otherUpdates"] == 2 and "Other" in latest["note"]
    assert [p["kbId"] for p in latest["availablePatches"]] == [None, None, None]
    assert "None" not in json.dumps(ubuntu)
    win = machine_assessment(fleet, parse_machine_id(vm_id("win"), target="id"), history=5)
    assert win is not None and win["latest"]["patchCount"] == 2  # the older `patches` key was read
    assert [p["classifications"] for p in win["latest"]["availablePatches"]] == [["Security"], ["UpdateRollUp"]]
    assert "otherUpdates" not in win["latest"]
