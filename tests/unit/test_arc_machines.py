"""Azure Arc-enabled servers (Microsoft.HybridCompute/machines) beside Azure VMs: ids and keys, URLs and
api-versions, HybridCompute's result shapes and refusals, dynamic-scope resource types, compliance by kind."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from requests.structures import CaseInsensitiveDict

from shared.arm import hybrid
from shared.arm.calls import GET_VM, INSTALL_PATCHES
from shared.arm.client import ArmClient, ArmResponse
from shared.arm.credentials import StaticTokenCredential
from shared.arm.operations import MACHINE_NOT_CONNECTED, Failed, Retry, classify_start
from shared.assessments.compliance import compliance_report
from shared.core.errors import ValidationError
from shared.core.ids import HYBRID_MACHINES, VIRTUAL_MACHINES, MachineRef, ScopeRef, machine_kind_of
from shared.core.messages import BadMessageError, parse_step
from shared.validation.dynamic_scope import filter_matches, parse_filter
from shared.validation.resource_ids import parse_machine_id

SUB = "5b4b650e-28b9-4790-b3ab-ddbd88d727c4"
VM = f"/subscriptions/{SUB}/resourceGroups/RG-Web/providers/Microsoft.Compute/virtualMachines/web-01"
ARC = f"/subscriptions/{SUB}/resourceGroups/RG-Web/providers/Microsoft.HybridCompute/machines/web-01"


def test_an_arc_machine_and_a_vm_of_one_name_are_two_machines_and_vm_keys_stay_as_they_were() -> None:
    vm = parse_machine_id(VM, target="m")
    arc = parse_machine_id(ARC.lower().replace("/subscriptions/", "/SUBSCRIPTIONS/"), target="m")
    assert vm.kind == VIRTUAL_MACHINES and vm.key == f"{SUB}|rg-web|web-01"  # unchanged since before Arc
    assert arc.kind == HYBRID_MACHINES and arc.key == f"{SUB}|rg-web|web-01|hybridmachines"
    assert arc.resource_id == f"/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.HybridCompute/" \
                              "machines/web-01"
    assert MachineRef.from_key(arc.key) == arc.__class__(SUB, "rg-web", "web-01", HYBRID_MACHINES)
    assert MachineRef.from_key(vm.key).kind == VIRTUAL_MACHINES
    assert machine_kind_of(ARC) == HYBRID_MACHINES and machine_kind_of(VM) == VIRTUAL_MACHINES


@pytest.mark.parametrize("name", ["a" * 54, "srv_01.corp-dc", "_x", "x.", "1"])
def test_arc_machine_names_as_hybridcompute_takes_them(name: str) -> None:
    assert parse_machine_id(ARC.replace("web-01", name), target="m").name == name


@pytest.mark.parametrize("value", [
    ARC.replace("web-01", "a" * 55),  # machineName: ^[a-zA-Z0-9-_\.]{1,54}$
    ARC.replace("web-01", "web 01"),
    ARC.replace("web-01", "web~01"),
    ARC.replace("machines", "virtualMachines"),
    ARC.replace("HybridCompute", "ConnectedVMwarevSphere"),
    ARC + "/extensions/x",
])
def test_what_hybridcompute_refuses_is_refused_naming_the_field(value: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_machine_id(value, target="machines[3]")
    assert err.value.target == "machines[3]" and err.value.code == "InvalidResourceId"


def test_each_provider_gets_its_own_api_version() -> None:
    client = ArmClient("https://management.azure.com", StaticTokenCredential("t"), api_version="2025-04-01",
                       hybridcompute_api_version="2024-07-10")
    arc = parse_machine_id(ARC, target="m")
    assert client.url_for(INSTALL_PATCHES, arc) == f"https://management.azure.com{ARC}/installPatches" \
                                                   "?api-version=2024-07-10"
    assert client.url_for(GET_VM, parse_machine_id(VM, target="m")).endswith("web-01?api-version=2025-04-01")
    scope = ScopeRef(SUB, "RG-Web")
    assert client.list_url(scope, HYBRID_MACHINES) == (
        f"https://management.azure.com/subscriptions/{SUB}/resourceGroups/RG-Web/providers/"
        "Microsoft.HybridCompute/machines?api-version=2024-07-10")
    assert "Microsoft.Compute/virtualMachines?api-version=2025-04-01" in client.list_url(scope)


def resp(status: int, body: Any = None) -> ArmResponse:
    return ArmResponse(status, CaseInsensitiveDict(), body, "u")


def test_a_disconnected_agent_refusal_is_not_retried_as_a_conflict() -> None:
    refused = {"error": {"code": "OperationNotAllowed", "message": "agent status is 'Disconnected'",
                         "details": [{"code": "MachineNotConnected", "target": "properties.status", "message": "x"}]}}
    out = classify_start(resp(409, refused), default_retry_after=60)
    assert isinstance(out, Failed) and out.code == MACHINE_NOT_CONNECTED
    busy = {"error": {"code": "OperationNotAllowed", "message": "another operation is in progress"}}
    assert isinstance(classify_start(resp(409, busy), default_retry_after=60), Retry)


def test_model_fields_of_an_arc_machine() -> None:
    model = {"properties": {"osType": "windows", "status": "Expired"}}
    assert hybrid.os_type(model) == "Windows" and hybrid.agent_status(model) == "Expired"
    assert hybrid.os_type({"properties": {"osType": "LINUX"}}) == "Linux"
    assert hybrid.os_type({}) == "" and hybrid.agent_status({"properties": None}) == ""


def test_arc_assessment_counts_become_compute_counts() -> None:
    result = {"status": "Succeeded", "errorDetails": {"code": "0", "message": ""},
              "availablePatchCountByClassification": {"security": 2, "critical": 1, "definition": 0,
                                                      "updateRollup": 3, "tools": 1, "other": 0}}
    shaped = hybrid.compute_shaped("assessPatches", result)
    assert shaped["criticalAndSecurityPatchCount"] == 3 and shaped["otherPatchCount"] == 4
    assert shaped["error"] == {"code": "0", "message": ""} and shaped["availablePatchCountByClassification"]
    assert hybrid.classification_counts(result) == {"Security": 2, "Critical": 1, "Update Rollups": 3, "Tools": 1}
    given = hybrid.compute_shaped("assessPatches", {**result, "otherPatchCount": 9})
    assert given["otherPatchCount"] == 9  # what Azure gave is never overwritten
    install = hybrid.compute_shaped("installPatches", {"status": "Failed", "installedPatchCount": 2,
                                                       "errorDetails": {"code": "Err", "message": "m"}})
    assert install["error"]["code"] == "Err" and "criticalAndSecurityPatchCount" not in install


def test_dynamic_scope_resource_types_select_the_kind() -> None:
    vm = {"id": VM, "type": "Microsoft.Compute/virtualMachines", "location": "westus"}
    arc = {"id": ARC, "type": "Microsoft.HybridCompute/machines", "location": "westus"}
    arc_only = parse_filter({"resourceTypes": ["microsoft.hybridcompute/machines"]})
    assert filter_matches(arc_only, arc, "Linux") and not filter_matches(arc_only, vm, "Linux")
    both = parse_filter({"resourceTypes": ["Microsoft.Compute/virtualMachines", "Microsoft.HybridCompute/machines"],
                         "osTypes": ["Linux"]})
    assert filter_matches(both, arc, "Linux") and filter_matches(both, vm, "Linux")
    assert not filter_matches(both, arc, "Windows")


def test_step_messages_carry_either_kind_of_key() -> None:
    run = "0123456789a-0123abcd"
    key = f"{SUB}|rg|web-01|hybridmachines"
    assert parse_step(json.dumps({"runId": run, "machine": key, "seq": 0})).machine == key
    for bad in (f"{SUB}|rg|web-01|x", f"{SUB}|rg", f"{SUB}|a|b|c|hybridmachines"):
        with pytest.raises(BadMessageError):
            parse_step(json.dumps({"runId": run, "machine": bad, "seq": 0}))


def test_compliance_counts_kinds_and_disconnected_agents() -> None:
    now = datetime(2026, 11, 30, tzinfo=UTC)
    rows = [
        {"resourceId": VM, "osType": "Linux", "assessedAt": "2026-11-29T23:00:00Z", "criticalAndSecurityPatchCount": 1},
        {"resourceId": ARC, "osType": "Windows", "assessedAt": "2026-11-29T23:00:00Z", "agentStatus": "Connected",
         "classificationCounts": json.dumps({"Security": 2})},
        {"resourceId": ARC.replace("web-01", "web-02"), "osType": "Linux", "agentStatus": "Disconnected",
         "lastAttemptState": "Skipped"},
    ]
    report = compliance_report(rows, now=now, freshness_hours=36)
    assert report["byMachineKind"] == {"hybridMachines": 2, "virtualMachines": 1}
    assert report["notConnected"] == 1 and report["notRunning"] == 0 and report["failed"] == 0
    assert report["assessed"] == 2 and report["neverAssessed"] == 1
    assert report["byClassification"] == {"Security": {"missingPatches": 2, "machines": 1}}


@pytest.mark.parametrize("resource_group", ["rg-web", "(Prod)_rg.1", "a" * 89 + "\u0130", "\u0130" * 90, "日本語"])
@pytest.mark.parametrize("kind", ["virtualMachines", "hybridMachines"])
def test_every_machine_key_the_app_issues_is_a_continuation_token_it_takes_back(resource_group: str,
                                                                                kind: str) -> None:
    """A page of machines links to the next by its last machine's key (runs_api, plans_api): an Arc-enabled
    server's has a fourth part, and lower-casing can lengthen a resource group (U+0130 İ: two code points)."""
    from shared.core.ids import MachineRef
    from shared.functions.runs_api import MACHINE_KEY
    from shared.validation.resource_ids import is_resource_group_name

    assert is_resource_group_name(resource_group)
    key = MachineRef("00000000-0000-0000-0000-00000000000a", resource_group, "Web-1", kind).key
    assert MACHINE_KEY.fullmatch(key), key
    assert not MACHINE_KEY.fullmatch(key + "|x") and not MACHINE_KEY.fullmatch(key.replace("|", "/", 1))
