"""Quotes and OData operators in every value that reaches a Table query: refused by the API where the
value has a grammar, and matched literally (never as filter syntax) by storage, which passes every value
as a query parameter (`query_entities(..., parameters=...)`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
import pytest

from shared.composition import Components
from shared.core.clock import iso
from shared.core.ids import MachineRef
from tests.app import assessments_api, maintenance_api, runs_api

HOSTILE = ["x' or PartitionKey ne 'x", "' or true or '", "x') or (RowKey ne '", "x' eq 'x", "''", "%27",
           "x' and osType ne 'y", "run' or active eq false or 'a"]
SUB = "5b4b650e-28b9-4790-b3ab-ddbd88d727c4"


def call(fn: Any, path: str, *, params: dict[str, str] | None = None,
         route: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    resp = fn(func.HttpRequest("GET", f"http://127.0.0.1:7071{path}", body=b"", params=params or {},
                               route_params=route or {}))
    return resp.status_code, json.loads(resp.get_body() or b"{}")


@pytest.fixture
def seeded(services: Components) -> Components:
    vm = MachineRef(SUB, "rg1", "vm1")
    services.fleet.upsert_machines([(vm, {"resourceId": vm.resource_id,
                                          "osType": "Windows", "lastSeenAt": iso(datetime.now(UTC))})])
    services.fleet.note_subscriptions([SUB])
    return services


@pytest.mark.parametrize("value", HOSTILE)
def test_every_api_query_parameter_refuses_or_matches_literally(seeded: Components, value: str) -> None:
    # compliance: subscriptionId, resourceGroup and osType have a grammar; a hostile value is a 400 naming it.
    for params, target in (({"subscriptionId": value}, "subscriptionId"),
                           ({"subscriptionId": SUB, "resourceGroup": value}, "resourceGroup"),
                           ({"osType": value}, "osType")):
        status, body = call(assessments_api.get_compliance, "/api/compliance", params=params)
        assert status == 400 and body["error"]["target"] == target, (params, body)
    status, body = call(runs_api.list_runs, "/api/runs", params={"continuationToken": value})
    assert status == 400, body
    status, body = call(runs_api.get_run, f"/api/runs/{value}", route={"runId": value})
    assert status == 404, body
    status, body = call(maintenance_api.list_occurrences, "/api/maintenance-configurations/x/occurrences",
                        route={"name": value})
    assert status in (400, 404), body
    status, body = call(maintenance_api.list_assignments, "/api/maintenance-configurations/x/assignments",
                        route={"name": value})
    assert status in (400, 404), body


@pytest.mark.parametrize("value", HOSTILE)
def test_storage_matches_hostile_values_literally(seeded: Components, value: str) -> None:
    fleet, store = seeded.fleet, seeded.store
    assert fleet.query_machines(SUB) != []  # the row is there, so an injected "or true" would show it
    assert fleet.query_machines(value) == []
    assert fleet.query_machines(SUB, value) == []
    assert fleet.query_machines(SUB, os_type=value) == []
    assert store.list_targets(value) == []
    assert store.list_targets("r", state=value) == []
    assert store.list_scopes(value) == []
    assert store.has_unfinished_targets(value) is False
    assert seeded.maintenance.list_assignments(value) == []
    assert seeded.maintenance.list_occurrences(value, datetime(2026, 1, 1, tzinfo=UTC)) == []
