"""Hostile input through the HTTP trigger functions, against Azurite: every case is a 400 in ARM's error
shape naming its field, with a bounded body, and nothing is written (no run, no machine rows, no
Idempotency-Key claim, no configuration). The helpers' own rules: tests/unit/test_hostile_input.py."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import azure.functions as func
import pytest

from shared.composition import Components
from tests.app import assessments_api, maintenance_api, runs_api

SUB = "00000000-0000-0000-0000-0000000000aa"
VM = f"/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-01"
INSTALL: dict[str, Any] = {"maximumDuration": "PT2H", "rebootSetting": "IfRequired",
                           "linuxParameters": {"classificationsToInclude": ["Critical"]}}
MAX_ANSWER = 2000  # bytes: an error answer never grows with the request


def vms(n: int) -> list[str]:
    return [f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-{i:04d}"
            for i in range(n)]


def run_body(**fields: Any) -> bytes:
    return json.dumps({"machines": [VM], "installPatches": INSTALL, **fields}).encode()


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def stored(services: Components) -> list[dict[str, Any]]:
    """Every row the run and maintenance tables hold."""
    return [*map(dict, services.store.runs.list_entities()), *map(dict, services.maintenance.table.list_entities())]


def error_of(resp: func.HttpResponse, status: int = 400) -> dict[str, Any]:
    raw = resp.get_body()
    assert resp.status_code == status, raw[:500]
    assert len(raw) < MAX_ANSWER
    return json.loads(raw)["error"]


def post(fn: Callable[[func.HttpRequest], func.HttpResponse], body: bytes, key: str | None = None,
         url: str = "http://127.0.0.1:7071/api/runs", headers: dict[str, str] | None = None) -> func.HttpResponse:
    return fn(func.HttpRequest("POST", url, body=body,
                               headers={**({"Idempotency-Key": key} if key else {}), **(headers or {})}))


# -- POST /api/runs and /api/assessments ---------------------------------------------------------------
RUN_CASES: list[tuple[str, bytes, str | None, str]] = [
    ("nested 981 deep", nested(981), None, "InvalidRequestContent"),
    ("nested in a field", run_body(rollout=json.loads(nested(40))), "rollout.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a"
     ".a.a.a.a.a.a.a.a.a.a.a.a.a.a", "InvalidRequestContent"),
    ("duplicate key", b'{"machines": ["' + VM.encode() + b'"], "installPatches": {"maximumDuration": "PT2H", '
     b'"rebootSetting": "Never", "rebootSetting": "Always", "linuxParameters": {"classificationsToInclude": '
     b'["Critical"]}}}', "installPatches.rebootSetting", "InvalidRequestContent"),
    ("NaN", b'{"machines": [], "installPatches": NaN}', None, "InvalidRequestContent"),
    ("maximumDuration overflow", run_body(installPatches={**INSTALL, "maximumDuration": "PT99999999999H"}),
     "installPatches.maximumDuration", "InvalidParameter"),
    ("maximumDuration in Arabic-Indic digits", run_body(installPatches={**INSTALL, "maximumDuration": "PT\u0662H"}),
     "installPatches.maximumDuration", "InvalidParameter"),
    ("soakTime overflow", run_body(rollout={"soakTime": "PT99999999999H"}), "rollout.soakTime", "InvalidParameter"),
    ("130 package masks of 256 characters", run_body(installPatches={
        **INSTALL, "linuxParameters": {"packageNameMasksToInclude": [f"{i:03d}" + "p" * 253 for i in range(130)]}}),
     "installPatches.linuxParameters.packageNameMasksToInclude", "PropertyValueTooLarge"),
    ("a wave listing 1,000 machines", json.dumps({"machines": vms(1000), "installPatches": INSTALL,
                                                  "rollout": {"waves": [{"machines": vms(1000)}]}}).encode(),
     "rollout.waves[0].machines", "PropertyValueTooLarge"),
    ("a 500,000-character field name", json.dumps({"k" * 500_000: 1}).encode(), "k" * 199 + "\u2026",
     "InvalidRequestContent"),
    ("a VM id ending in a newline and more", run_body(machines=[VM + "\nx"]), "machines[0]", "InvalidResourceId"),
]


@pytest.mark.parametrize(("body", "target", "code"), [c[1:] for c in RUN_CASES], ids=[c[0] for c in RUN_CASES])
def test_a_bad_run_request_is_a_400_that_writes_nothing(services: Components, body: bytes, target: str | None,
                                                        code: str) -> None:
    error = error_of(post(runs_api.create_run, body, key="key-1"))
    assert (error.get("target"), error["code"]) == (target, code)
    assert stored(services) == []


def test_a_bad_assessment_request_is_a_400_that_writes_nothing(services: Components) -> None:
    for body, target in [(nested(981), None), (b'{"scopes": ["/subscriptions/' + SUB.encode() + b'"], "scopes": []}',
                                              "scopes"),
                         (json.dumps({"scopes": [f"/subscriptions/{SUB}\n/resourceGroups/x"]}).encode(), "scopes[0]")]:
        assert error_of(post(assessments_api.create_assessment, body, key="a")).get("target") == target
    assert stored(services) == []


def test_a_refused_request_leaves_its_idempotency_key_free(services: Components) -> None:
    big = run_body(installPatches={**INSTALL, "linuxParameters": {"packageNameMasksToInclude": ["p" * 256] * 130}})
    assert error_of(post(runs_api.create_run, big, key="retry-me"))["code"] == "PropertyValueTooLarge"
    assert post(runs_api.create_run, run_body(), key="retry-me").status_code == 202


def test_a_500_after_a_partial_write_leaves_no_claim_and_no_rows(services: Components,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(run_id: str) -> None:
        raise ConnectionError("storage went away after the machine list was written")

    monkeypatch.setattr(services.fleet, "note_subscriptions", lambda subs: broken(""))
    body = json.dumps({"machines": [VM]}).encode()
    assert post(assessments_api.create_assessment, body, key="k-500").status_code == 500
    assert services.store.find_idempotency_claim("k-500") is None
    assert stored(services) == []  # the machine chunk written before the failure is gone too
    monkeypatch.undo()
    corrected = json.dumps({"machines": [VM, VM.replace("web-01", "web-02")]}).encode()
    assert post(assessments_api.create_assessment, corrected, key="k-500").status_code == 202


def test_a_run_created_whose_answer_was_lost_is_kept_whole(services: Components,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    real_create = services.store.create_run

    def created_then_lost(run_id: str, columns: dict[str, Any]) -> bool:
        real_create(run_id, columns)
        raise ConnectionError("the answer to the insert was lost")

    monkeypatch.setattr(services.store, "create_run", created_then_lost)
    assert post(runs_api.create_run, run_body(), key="lost").status_code == 500
    monkeypatch.undo()
    claim = services.store.find_idempotency_claim("lost")
    assert claim is not None and services.store.machine_chunks(claim["runId"]) == [[VM]]
    replay = post(runs_api.create_run, run_body(), key="lost")  # the retry finds the run and dispatches it
    assert replay.status_code == 202 and json.loads(replay.get_body())["id"] == claim["runId"]


# -- Location ------------------------------------------------------------------------------------------
def test_location_never_follows_the_host_header(services: Components) -> None:
    resp = post(runs_api.create_run, run_body(), url="http://attacker.example/api/runs?code=K",
                headers={"Host": "attacker.example"})
    assert resp.status_code == 202
    run_id = json.loads(resp.get_body())["id"]
    assert resp.headers["Location"] == f"http://127.0.0.1:7071/api/runs/{run_id}?code=K"


def test_a_key_sent_in_the_header_stays_out_of_the_location(services: Components) -> None:
    resp = post(runs_api.create_run, run_body(), headers={"x-functions-key": "secret-key"})
    assert resp.status_code == 202 and "secret-key" not in resp.headers["Location"]
    assert "code=" not in resp.headers["Location"]


# -- GET parameters ------------------------------------------------------------------------------------
def get(fn: Callable[[func.HttpRequest], func.HttpResponse], params: dict[str, str] | None = None,
        route: dict[str, str] | None = None) -> func.HttpResponse:
    return fn(func.HttpRequest("GET", "http://127.0.0.1:7071/api/x", body=b"", params=params or {},
                               route_params=route or {}))


FORGED_TOKENS = [
    base64.urlsafe_b64encode(b"[" * 981 + b"]" * 981).decode(),
    base64.urlsafe_b64encode(json.dumps({"PartitionKey": "run", "RowKey": "x"}).encode()).decode(),
    "not-a-token", "fffffffffff-00000000\n", "\u0661" * 11 + "-" + "0" * 8, "x" * 100_000,
]


@pytest.mark.parametrize("token", FORGED_TOKENS, ids=range(len(FORGED_TOKENS)))
def test_forged_continuation_tokens_are_refused(services: Components, token: str) -> None:
    assert error_of(get(runs_api.list_runs, {"continuationToken": token}))["target"] == "continuationToken"


@pytest.mark.parametrize(("params", "target"), [({"top": "\u0661\u0660"}, "top"), ({"top": "9" * 5000}, "top"),
                                                ({"top": "\uff15"}, "top")])
def test_page_sizes_are_ascii_numbers(services: Components, params: dict[str, str], target: str) -> None:
    assert error_of(get(runs_api.list_runs, params))["target"] == target


def test_a_run_id_with_a_newline_is_not_found(services: Components) -> None:
    assert error_of(get(runs_api.get_run, route={"runId": "fffffffffff-00000000\n"}), 404)["target"] == "runId"


@pytest.mark.parametrize(("params", "target"), [
    ({"subscriptionId": f"{SUB}/resourceGroups/rg"}, "subscriptionId"),
    ({"subscriptionId": SUB, "resourceGroup": "rg/providers/Microsoft.Compute"}, "resourceGroup"),
    ({"subscriptionId": SUB, "top": "\u0661"}, "top"),
    ({"osType": "w" * 100_000}, "osType"),
])
def test_compliance_filters_are_checked_part_by_part(services: Components, params: dict[str, str],
                                                      target: str) -> None:
    assert error_of(get(assessments_api.get_compliance, params))["target"] == target


def test_a_vm_route_segment_holding_a_path_is_refused(services: Components) -> None:
    route = {"runId": "fffffffffff-00000000", "subscriptionId": f"{SUB}/resourceGroups/x",
             "resourceGroupName": "rg", "vmName": "vm"}
    assert error_of(get(runs_api.get_run_machine, route=route))["target"] == "machine"


# -- maintenance configurations and assignments --------------------------------------------------------
def configuration(**window: Any) -> dict[str, Any]:
    return {"location": "westus", "properties": {
        "maintenanceScope": "InGuestPatch",
        "maintenanceWindow": {"startDateTime": "2030-01-01 03:00", "duration": "03:00", "timeZone": "UTC",
                              "recurEvery": "Day", **window},
        "installPatches": {"rebootSetting": "IfRequired",
                           "linuxParameters": {"classificationsToInclude": ["Critical"]}}}}


def put(fn: Callable[[func.HttpRequest], func.HttpResponse], route: dict[str, str], body: bytes) -> func.HttpResponse:
    return fn(func.HttpRequest("PUT", "http://127.0.0.1:7071/api/x", body=body, route_params=route))


WINDOW = "properties.maintenanceWindow"
CONFIG_CASES: list[tuple[str, str, bytes, str | None]] = [
    ("name ending in a newline", "x\n", json.dumps(configuration()).encode(), "name"),
    ("nested 981 deep", "c", nested(981), None),
    ("duplicate key", "c", json.dumps(configuration()).encode()[:-1] + b', "location": "eastus"}', "location"),
    ("posix time zone", "c", json.dumps(configuration(timeZone="posix/Europe/Berlin")).encode(), f"{WINDOW}.timeZone"),
    ("right/UTC", "c", json.dumps(configuration(timeZone="right/UTC")).encode(), f"{WINDOW}.timeZone"),
    ("localtime", "c", json.dumps(configuration(timeZone="localtime")).encode(), f"{WINDOW}.timeZone"),
    ("Factory", "c", json.dumps(configuration(timeZone="Factory")).encode(), f"{WINDOW}.timeZone"),
    ("full-width duration", "c", json.dumps(configuration(duration="\uff10\uff13:\uff10\uff10")).encode(),
     f"{WINDOW}.duration"),
    ("Arabic-Indic recurrence", "c", json.dumps(configuration(recurEvery="\u0661Days")).encode(),
     f"{WINDOW}.recurEvery"),
    ("long s in recurrence", "c", json.dumps(configuration(recurEvery="Day\u017f")).encode(), f"{WINDOW}.recurEvery"),
    ("huge offset", "c", json.dumps(configuration(recurEvery="Month Last Sunday Offset" + "9" * 5000)).encode(),
     f"{WINDOW}.recurEvery"),
    ("a long tag value", "c", json.dumps({**configuration(), "tags": {"k": "v" * 40_000}}).encode(), "tags.k"),
    ("51 tags", "c", json.dumps({**configuration(), "tags": {f"t{i}": "v" for i in range(51)}}).encode(), "tags"),
    # Stored normalised: what is kept (here the extension properties) must fit one Table property; read-only
    # fields such as systemData are not stored, so their size does not matter.
    ("over 64 KiB stored", "c", json.dumps({**configuration(), "properties": {
        **configuration()["properties"], "extensionProperties": {"InGuestPatchMode": "User", "note": "n" * 70_000}}}
    ).encode(), "properties.extensionProperties.note"),
]


@pytest.mark.parametrize(("name", "body", "target"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_a_bad_configuration_is_a_400_that_writes_nothing(services: Components, name: str, body: bytes,
                                                          target: str | None) -> None:
    assert error_of(put(maintenance_api.put_configuration, {"name": name}, body)).get("target") == target
    assert stored(services) == []


@pytest.mark.parametrize(("assignment", "properties", "target"), [
    ("a\n", {"resourceId": VM}, "assignmentName"),
    ("a", {"resourceId": f"/subscriptions/{SUB}", "filter": {"locations": ["l" * 40_000]}},
     "properties.filter.locations"),
])
def test_a_bad_assignment_is_a_400_that_writes_nothing(services: Components, assignment: str,
                                                       properties: dict[str, Any], target: str) -> None:
    assert put(maintenance_api.put_configuration, {"name": "c"}, json.dumps(configuration()).encode()).status_code \
        == 201
    before = stored(services)
    resp = put(maintenance_api.put_assignment, {"name": "c", "assignmentName": assignment},
               json.dumps({"properties": properties}).encode())
    assert error_of(resp)["target"] == target
    assert stored(services) == before
