"""The OpenAPI 2.0 document: valid Swagger 2.0 (openapi-spec-validator), every route the app registers,
kept in the repository as generated, served anonymously without secrets, and request schemas that
accept the examples in the README and docs/ and refuse what the validators refuse."""

from __future__ import annotations

import copy
import json
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from jsonschema import Draft4Validator
from openapi_spec_validator import OpenAPIV2SpecValidator

from shared.composition import ProcessComponents
from shared.core.errors import ValidationError
from shared.core.settings import RunLimits
from shared.functions.openapi import ANONYMOUS, OPERATIONS, build_document, render
from shared.maintenance.configuration import parse_assignment, parse_configuration
from shared.runs.accept import MAX_IDEMPOTENCY_KEY, check_idempotency_key
from shared.validation.assessment_request import parse_assessment_request
from shared.validation.run_request import parse_run_request
from tests.app import function_app, triggers

ROOT = Path(__file__).resolve().parents[2]
DOC = build_document()
SUB = "00000000-0000-0000-0000-000000000001"
VM = f"/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-1"
VM2 = f"/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-2"


def schema_of(name: str) -> Draft4Validator:
    """A definition with the document's definitions beside it, so `#/definitions/...` resolves."""
    return Draft4Validator({**DOC["definitions"][name], "definitions": DOC["definitions"]})


def api_accepts_run(body: dict[str, Any]) -> bool:
    try:
        parse_run_request(json.dumps(body).encode(), max_bytes=1 << 20, max_machines=1000)
    except ValidationError:
        return False
    return True


def test_the_document_is_valid_swagger_2() -> None:
    OpenAPIV2SpecValidator(DOC).validate()
    assert DOC["swagger"] == "2.0"
    assert len(render(DOC).encode()) < 1_000_000  # custom connectors take at most 1 MB


def test_the_kept_document_is_the_generated_one() -> None:
    kept = (ROOT / "openapi.json").read_text(encoding="utf-8")
    assert kept == render(DOC), "openapi.json is stale: .venv/bin/python -m shared.functions.openapi > openapi.json"


def test_the_kept_document_has_the_machine_limit_of_an_app_with_no_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """openapi.json (what a Logic Apps connector imports) once said 1,000 machines where the app took 10,000."""
    monkeypatch.delenv("MAX_MACHINES_PER_RUN", raising=False)
    enforced = RunLimits.from_env().max_machines_per_run
    kept = json.loads((ROOT / "openapi.json").read_text(encoding="utf-8"))["definitions"]
    for schema in ("RunRequest", "PlanRequest", "AssessmentRequest"):
        assert kept[schema]["properties"]["machines"]["maxItems"] == enforced, schema


def test_the_kept_document_has_the_idempotency_key_length_the_app_enforces() -> None:
    """It said 128 characters where check_idempotency_key takes 255 (docs/api.md: 1-255)."""
    kept = json.loads((ROOT / "openapi.json").read_text(encoding="utf-8"))
    headers = [p for path in kept["paths"].values() for op in path.values() if isinstance(op, dict)
               for p in op.get("parameters", []) if p.get("name") == "Idempotency-Key"]
    assert headers
    for header in headers:
        assert (header["minLength"], header["maxLength"]) == (1, MAX_IDEMPOTENCY_KEY)
    check_idempotency_key("k" * MAX_IDEMPOTENCY_KEY)
    with pytest.raises(ValidationError):
        check_idempotency_key("k" * (MAX_IDEMPOTENCY_KEY + 1))


def test_every_http_function_is_documented_with_its_route_and_methods() -> None:
    functions = function_app.build_app(ProcessComponents()).get_functions()  # once: a second call re-checks names
    registered: set[tuple[str, str]] = set()
    for fn in functions:
        binding = json.loads(fn.get_function_json())["bindings"][0]  # what the host reads
        if binding["type"] == "httpTrigger":
            for method in binding["methods"]:
                registered.add((method.lower(), "/" + binding["route"]))
            anonymous = binding["authLevel"].lower() == "anonymous"
            assert anonymous == (fn.get_function_name() in ANONYMOUS), fn.get_function_name()
    documented = {(method, path) for method, path, *_ in OPERATIONS}
    assert registered == documented
    assert {name for _, _, name, *_ in OPERATIONS} <= {f.get_function_name() for f in functions}


def test_operation_ids_are_unique_and_described() -> None:
    operations = [op for item in DOC["paths"].values() for op in item.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids))
    assert all(op["summary"] and op["description"] for op in operations)


def test_long_running_operations_document_202_location_and_retry_after() -> None:
    for path, method in [("/runs", "post"), ("/runs/{runId}", "get"), ("/assessments", "post"),
                         ("/assessments/{runId}", "get"), ("/runs/{runId}/cancel", "post")]:
        operation = DOC["paths"][path][method]
        assert operation["x-ms-long-running-operation"] is True
        assert set(operation["responses"]["202"]["headers"]) == {"Location", "Retry-After"}


def test_function_key_security_and_anonymous_document() -> None:
    assert DOC["securityDefinitions"]["functionKey"] == {
        "type": "apiKey", "in": "header", "name": "x-functions-key",
        "description": "A function key (or ?code=<key> in the URL)"}
    assert DOC["security"] == [{"functionKey": []}]
    assert DOC["paths"]["/openapi.json"]["get"]["security"] == []


def test_served_document_names_this_app_and_holds_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSITE_HOSTNAME", "patchpilot-prod.azurewebsites.net")
    req = func.HttpRequest("GET", "https://patchpilot-prod.azurewebsites.net/api/openapi.json?code=secret-key-1",
                           body=b"", headers={"x-functions-key": "secret-key-2"})
    answer = triggers.get_openapi(req)
    assert answer.status_code == 200
    served = json.loads(answer.get_body())
    assert served["host"] == "patchpilot-prod.azurewebsites.net"
    assert served["schemes"] == ["https"]
    text = answer.get_body().decode()
    assert "secret-key" not in text
    for name in ("AzureWebJobsStorage", "ARM_ENDPOINT"):
        value = os.environ.get(name)
        if value and len(value) > 8:
            assert value not in text
    assert {k: v for k, v in served.items() if k not in ("host", "schemes", "definitions")} == \
        {k: v for k, v in DOC.items() if k not in ("host", "schemes", "definitions")}


# -- the examples in the README and docs/ ------------------------------------------------------------------------------

def readme_json_examples() -> list[Any]:
    """Every ```json block and every `curl -d '...'` body in the README and docs/, placeholders filled in."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    blocks = re.findall(r"```json\n(.*?)```", text, re.DOTALL) + re.findall(r"-d '(\{.*?\})'", text, re.DOTALL)
    filled = [b.replace('"..."', json.dumps(VM)).replace("<sub>", SUB).replace("<id>", SUB) for b in blocks]
    return [json.loads(b) for b in filled]


EXAMPLES = readme_json_examples()


def test_readme_run_example_is_accepted_by_schema_and_api() -> None:
    runs = [e for e in EXAMPLES if isinstance(e, dict) and "installPatches" in e and "machines" in e
            and "maintenanceWindow" not in e]
    assert runs, "the README shows a run body"
    for body in runs:
        assert list(schema_of("RunRequest").iter_errors(body)) == []
        assert api_accepts_run(body)


def test_docs_plan_examples_are_accepted_by_schema_and_api() -> None:
    from shared.core.clock import utcnow
    from shared.plans.request import parse_plan_request

    plans = [e for e in EXAMPLES if isinstance(e, dict) and ("maintenanceWindow" in e or
                                                             "maintenanceConfiguration" in e)]
    assert len(plans) >= 2, "docs/plans.md shows a plan body with a window and one for a configuration"
    for body in plans:
        assert list(schema_of("PlanRequest").iter_errors(body)) == []
        window = body.get("maintenanceWindow")
        tomorrow = (utcnow() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")  # the example's date may have passed
        sent = {**body, "maintenanceWindow": {**window, "startDateTime": tomorrow}} if window else body
        parse_plan_request(json.dumps(sent).encode(), now=utcnow(), max_bytes=1 << 20, max_machines=100)


def test_readme_maintenance_examples_are_accepted_by_schema_and_api() -> None:
    configs = [e for e in EXAMPLES if isinstance(e, dict) and "maintenanceScope" in e.get("properties", {})]
    assignments = [e for e in EXAMPLES if isinstance(e, dict) and "resourceId" in e.get("properties", {})]
    assert configs and assignments
    for body in configs:
        assert list(schema_of("MaintenanceConfiguration").iter_errors(body)) == []
        parse_configuration("patch-tuesday", body)
    for body in assignments:
        assert list(schema_of("ConfigurationAssignment").iter_errors(body)) == []
        parse_assignment("prod-web", body)


def test_readme_assessment_bodies_are_accepted_by_schema_and_api() -> None:
    for body in ({"machines": [VM]}, {"scopes": [f"/subscriptions/{SUB}", ]},
                 {"scopes": [f"/subscriptions/{SUB}/resourceGroups/rg-web"]}):
        assert list(schema_of("AssessmentRequest").iter_errors(body)) == []
        parse_assessment_request(json.dumps(body).encode(), max_bytes=1 << 20, max_machines=1000)


# -- what the API refuses, the schema refuses --------------------------------------------------------------

BASE_RUN: dict[str, Any] = {
    "machines": [VM, VM2],
    "installPatches": {"maximumDuration": "PT2H", "rebootSetting": "IfRequired",
                       "windowsParameters": {"classificationsToInclude": ["Critical", "Security"],
                                             "kbNumbersToExclude": ["KB5034441"]},
                       "linuxParameters": {"classificationsToInclude": ["Security"]}},
    "rollout": {"waves": [{"name": "canary", "size": 1}, {"size": "rest"}], "maxConcurrency": "20%",
                "maxFailures": 0, "failureOn": ["Failed"], "soakTime": "PT10M",
                "preHook": {"url": "https://hooks.example.com/drain", "timeoutSeconds": 30}},
}


def changed(path: str, value: Any) -> dict[str, Any]:
    """BASE_RUN with the field at `a.b.0.c` set (or removed, for the value DELETE)."""
    body = copy.deepcopy(BASE_RUN)
    *parents, last = path.split(".")
    node: Any = body
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    key: Any = int(last) if last.isdigit() else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return body


DELETE = object()
REFUSED = [
    ("unknown top field", changed("rolloutt", {})),
    ("no machines", changed("machines", [])),
    ("machines not a list", changed("machines", VM)),
    ("not a VM id", changed("machines.0", f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Web/sites/a")),
    ("repeated machine", changed("machines.1", VM)),
    ("installPatches missing", changed("installPatches", DELETE)),
    ("maximumDuration missing", changed("installPatches.maximumDuration", DELETE)),
    ("maximumDuration not ISO 8601", changed("installPatches.maximumDuration", "2 hours")),
    ("maximumDuration in years", changed("installPatches.maximumDuration", "P1Y")),
    ("maximumDuration with non-ASCII digits", changed("installPatches.maximumDuration", "PT\u0662H")),
    ("rebootSetting unknown", changed("installPatches.rebootSetting", "Sometimes")),
    ("unknown installPatches field", changed("installPatches.classifications", ["Critical"])),
    ("unknown Windows classification", changed("installPatches.windowsParameters.classificationsToInclude",
                                               ["Critical", "Drivers"])),
    ("Linux classification on Linux unknown", changed("installPatches.linuxParameters.classificationsToInclude",
                                                      ["Updates"])),
    ("KB not a number", changed("installPatches.windowsParameters.kbNumbersToExclude", ["KBABC"])),
    ("excludeKbsRequiringReboot not boolean", changed("installPatches.windowsParameters.excludeKbsRequiringReboot",
                                                      "yes")),
    ("too many masks", changed("installPatches.linuxParameters.packageNameMasksToInclude", ["a"] * 201)),
    ("empty mask", changed("installPatches.linuxParameters.packageNameMasksToInclude", [""])),
    ("unknown Linux field", changed("installPatches.linuxParameters.kbNumbersToInclude", ["1"])),
    ("unknown rollout field", changed("rollout.waveSize", 3)),
    ("no waves", changed("rollout.waves", [])),
    ("wave size zero", changed("rollout.waves.0.size", 0)),
    ("wave size 101%", changed("rollout.waves.0.size", "101%")),
    ("wave name too long", changed("rollout.waves.0.name", "w" * 65)),
    ("maxConcurrency not a count", changed("rollout.maxConcurrency", "lots")),
    ("maxConcurrency zero", changed("rollout.maxConcurrency", 0)),
    ("maxConcurrencyPerSubscription zero", changed("rollout.maxConcurrencyPerSubscription", 0)),
    ("maxConcurrency a number in a string", changed("rollout.maxConcurrency", "5")),
    ("wave size a number in a string", changed("rollout.waves.0.size", "5")),
    ("maxFailures negative", changed("rollout.maxFailures", -1)),
    ("failureOn empty", changed("rollout.failureOn", [])),
    ("failureOn unknown", changed("rollout.failureOn", ["Exploded"])),
    ("approveAfterDays too large", changed("rollout.approveAfterDays", 366)),
    ("soakTime not a duration", changed("rollout.soakTime", "30 minutes")),
    ("preHook timeout too long", changed("rollout.preHook.timeoutSeconds", 100_000)),
    ("preHook unknown field", changed("rollout.preHook.secret", "x")),
    ("preHook without url", changed("rollout.preHook", {"timeoutSeconds": 5})),
    ("postHook with timeout", changed("rollout.postHook", {"url": "https://hooks.example.com/x",
                                                           "timeoutSeconds": 5})),
    ("selector subscription not a GUID", changed("rollout.waves.0", {"selector": {"subscriptions": ["prod"]}})),
    ("selector unknown field", changed("rollout.waves.0", {"selector": {"tags": {"a": "b"}}})),
]


def test_the_base_body_is_accepted_by_both() -> None:
    assert list(schema_of("RunRequest").iter_errors(BASE_RUN)) == []
    assert api_accepts_run(BASE_RUN)


ARC = f"/subscriptions/{SUB}/resourceGroups/rg-edge/providers/Microsoft.HybridCompute/machines/store-12"
ACCEPTED = [
    ("an Arc-enabled server", changed("machines.1", ARC)),
    ("an Arc-enabled server in a wave", changed("rollout.waves.0", {"machines": [ARC]}) | {"machines": [VM, ARC]}),
    ("no failures allowed", changed("rollout.maxFailures", 0)),
    ("a count as a number", changed("rollout.maxConcurrencyPerSubscription", 5)),
]


@pytest.mark.parametrize(("case", "body"), ACCEPTED, ids=[case for case, _ in ACCEPTED])
def test_what_the_api_accepts_the_schema_accepts(case: str, body: dict[str, Any]) -> None:
    assert api_accepts_run(body), f"the API refuses {case}"
    assert list(schema_of("RunRequest").iter_errors(body)) == [], f"the schema refuses {case}"


def test_an_assessment_of_an_arc_enabled_server_is_accepted_by_both() -> None:
    body = {"machines": [VM, ARC]}
    parse_assessment_request(json.dumps(body).encode(), max_bytes=1 << 20, max_machines=1000)
    assert list(schema_of("AssessmentRequest").iter_errors(body)) == []


@pytest.mark.parametrize(("case", "body"), REFUSED, ids=[case for case, _ in REFUSED])
def test_what_the_api_refuses_the_schema_refuses(case: str, body: dict[str, Any]) -> None:
    assert not api_accepts_run(body), f"the API accepts {case}"
    assert list(schema_of("RunRequest").iter_errors(body)), f"the schema accepts {case}"


# Swagger 2.0 has no oneOf: "exactly one of size, machines or selector" is the validator's alone (the
# Wave schema's description says it). Listed so that a stricter schema, or a laxer API, shows up here.
NOT_EXPRESSIBLE = [
    ("wave with size and machines", changed("rollout.waves.0", {"size": 1, "machines": [VM]})),
    ("wave without a kind", changed("rollout.waves.0", {"name": "x"})),
    ("machine outside the run in a wave", changed("rollout.waves.0", {"machines": [VM.replace("web-1", "db-1")]})),
    ("Windows parameters that select nothing", changed("installPatches.windowsParameters",
                                                       {"kbNumbersToExclude": ["1"]})),
    ("maximumDuration over PT4H", changed("installPatches.maximumDuration", "PT5H")),
]


@pytest.mark.parametrize(("case", "body"), NOT_EXPRESSIBLE, ids=[case for case, _ in NOT_EXPRESSIBLE])
def test_rules_swagger_cannot_express_are_the_validators(case: str, body: dict[str, Any]) -> None:
    assert not api_accepts_run(body), f"the API accepts {case}"
    assert list(schema_of("RunRequest").iter_errors(body)) == []


ASSESSMENTS_REFUSED = [{}, {"machines": [VM], "scopes": [f"/subscriptions/{SUB}"]}, {"scopes": []},
                       {"scopes": ["/subscriptions/not-a-guid"]}, {"machines": ["vm-1"]}, {"vms": [VM]}]


@pytest.mark.parametrize("body", ASSESSMENTS_REFUSED)
def test_assessment_bodies_the_api_refuses_the_schema_refuses(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse_assessment_request(json.dumps(body).encode(), max_bytes=1 << 20, max_machines=1000)
    assert list(schema_of("AssessmentRequest").iter_errors(body))


def test_maintenance_bodies_the_api_refuses_the_schema_refuses() -> None:
    good = next(e for e in EXAMPLES if isinstance(e, dict) and "maintenanceScope" in e.get("properties", {}))
    bad: list[dict[str, Any]] = []
    for path, value in [("properties.maintenanceScope", "Host"), ("properties.maintenanceWindow.duration", "3h"),
                        ("properties.maintenanceWindow.startDateTime", "2026-01-01T22:00:00Z"),
                        ("properties.maintenanceWindow.recurEvery", DELETE), ("properties.installPatches", DELETE),
                        ("properties.installPatches.rebootSetting", "Sometimes"),
                        ("properties.visibility", "Private"), ("properties.color", "blue"), ("kind", "x")]:
        body = copy.deepcopy(good)
        *parents, last = path.split(".")
        node = body
        for part in parents:
            node = node[part]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
        bad.append(body)
    for body in bad:
        with pytest.raises(ValidationError):
            parse_configuration("patch-tuesday", body)
        assert list(schema_of("MaintenanceConfiguration").iter_errors(body)), body
