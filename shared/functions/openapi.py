"""The API's OpenAPI 2.0 (Swagger) document, served anonymously at `GET /api/openapi.json` and kept in
the repository as `openapi.json` (regenerate: `.venv/bin/python -m shared.functions.openapi > openapi.json`;
a test fails when the two differ).

Request body schemas come from the validators' modules (shared/validation/schemas.py,
shared/maintenance/schema.py); `OPERATIONS` names each route's function, and a test checks it lists
every HTTP function the app registers. Importable as a Logic Apps / Power Automate custom connector:
Swagger 2.0, `host` + `basePath` + `schemes`, one apiKey security definition, unique operationIds,
`x-ms-summary` / `x-ms-visibility` for the designer, under 1 MB
(learn.microsoft.com/connectors/custom-connectors/define-openapi-definition). The document holds no
key or setting: the served copy differs from the kept one only in `host` (WEBSITE_HOSTNAME).

Long-running operations answer 202 with `Location` (absolute URL to poll) and `Retry-After`
(seconds), then 200 at that Location once finished: Logic Apps' asynchronous pattern follows this by
itself (`x-ms-long-running-operation`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import azure.functions as func
from opentelemetry.trace import SpanKind

from shared.composition import Components
from shared.core.settings import DEFAULT_MAX_MACHINES_PER_RUN, SettingsError
from shared.core.states import MachineState
from shared.core.telemetry import traced
from shared.http.responses import JSON, public_origin
from shared.maintenance.schema import assignment_schema, configuration_schema
from shared.runs.accept import MAX_IDEMPOTENCY_KEY
from shared.validation.schemas import (
    Schema,
    assessment_request_schema,
    health_check_schema,
    install_parameters_schema,
    plan_request_schema,
    rollout_schema,
    run_request_schema,
    wave_schema,
)

KEPT_HOST = "your-function-app.azurewebsites.net"
VM_PATH = ("subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}"
           "/providers/Microsoft.Compute/virtualMachines/{vmName}")


def _param(name: str, where: str, summary: str, description: str, *, required: bool = False,
           kind: str = "string", **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "type": kind,
            "x-ms-summary": summary, "description": description,
            "x-ms-visibility": "important" if required or where == "path" else "advanced", **extra}


RUN_ID = _param("runId", "path", "Run id", "The id a create call returned", pattern="^[0-9a-f]{11}-[0-9a-f]{8}$")
VM_PARAMS = [
    _param("subscriptionId", "path", "Subscription id", "The VM's subscription (GUID)"),
    _param("resourceGroupName", "path", "Resource group", "The VM's resource group"),
    _param("vmName", "path", "VM name", "The VM's name"),
]
ARC_PATH = ("subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}"
            "/providers/Microsoft.HybridCompute/machines/{machineName}")
ARC_PARAMS = [
    _param("subscriptionId", "path", "Subscription id", "The Arc machine's subscription (GUID)"),
    _param("resourceGroupName", "path", "Resource group", "The Arc machine's resource group"),
    _param("machineName", "path", "Machine name", "The Arc-enabled server's name"),
]
PLAN_ID = _param("planId", "path", "Plan id", "The id POST /plans returned", pattern="^[0-9a-f]{11}-[0-9a-f]{8}$")
IDEMPOTENCY = _param("Idempotency-Key", "header", "Idempotency key",
                     "The same key with an equivalent body returns the first run; a different body is a 409",
                     minLength=1, maxLength=MAX_IDEMPOTENCY_KEY)
CONFIG_NAME = _param("name", "path", "Configuration name", "Maintenance configuration name",
                     pattern="^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
ASSIGNMENT_NAME = _param("assignmentName", "path", "Assignment name", "Assignment name",
                         pattern="^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
LRO_HEADERS = {"Location": {"type": "string", "description": "Absolute URL to GET for the status"},
               "Retry-After": {"type": "integer", "description": "Seconds to wait before polling"}}


def _body(ref: str, summary: str) -> dict[str, Any]:
    return {"name": "body", "in": "body", "required": True, "x-ms-summary": summary,
            "schema": {"$ref": f"#/definitions/{ref}"}}


def _ok(ref: str | None, description: str, status: str = "200") -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if ref:
        answer["schema"] = {"$ref": f"#/definitions/{ref}"}
    return {status: answer}


def _lro(ref: str, what: str) -> dict[str, Any]:
    return {"202": {"description": f"{what} accepted or still running: poll Location after Retry-After seconds",
                    "headers": LRO_HEADERS, "schema": {"$ref": f"#/definitions/{ref}"}},
            "200": {"description": f"{what} finished", "schema": {"$ref": f"#/definitions/{ref}"}}}


# (method, path under /api, function name, operationId, summary, description, parameters, responses, lro)
OPERATIONS: list[tuple[str, str, str, str, str, str, list[dict[str, Any]], dict[str, Any], bool]] = [
    ("post", "/runs", "create_run", "Runs_Create", "Start a patch run",
     "Installs patches on the given VMs (Azure's installPatches), optionally in waves. Answers 202 with Location "
     "and Retry-After; the run's URL answers 202 until every machine has finished, then 200.",
     [_body("RunRequest", "Run"), IDEMPOTENCY], _lro("Run", "The run"), True),
    ("get", "/runs", "list_runs", "Runs_List", "List runs", "Recent runs, newest first; follow nextLink.",
     [_param("top", "query", "Page size", "1 to 100", kind="integer", minimum=1, maximum=100, default=20),
      _param("continuationToken", "query", "Continuation token", "From the previous page's nextLink")],
     _ok("RunList", "A page of runs"), False),
    ("get", "/runs/{runId}", "get_run", "Runs_Get", "Get a run",
     "The run with every machine: 202 (with Location and Retry-After) while unfinished, 200 when finished.",
     [RUN_ID], _lro("Run", "The run"), True),
    ("get", "/runs/{runId}/machines/" + VM_PATH, "get_run_machine", "Runs_GetMachine", "Get a run's machine",
     "One machine of a run with every PatchInstallationDetail and the x-ms-request-id of each ARM call.",
     [RUN_ID, *VM_PARAMS], _ok("Machine", "The machine"), False),
    ("get", "/runs/{runId}/machines/" + ARC_PATH, "get_run_arc_machine", "Runs_GetArcMachine",
     "Get a run's Arc machine", "One Azure Arc-enabled server of a run, by its own resource id.",
     [RUN_ID, *ARC_PARAMS], _ok("Machine", "The machine"), False),
    ("post", "/runs/{runId}/cancel", "cancel_run", "Runs_Cancel", "Cancel a rollout",
     "Nothing new starts; started machines are followed to their end; the run ends Canceled.",
     [RUN_ID], _lro("Run", "The run"), True),
    ("post", "/runs/{runId}/resume", "resume_run", "Runs_Resume", "Resume a halted rollout",
     "The machines a halted run did not start are queued again; the error budget counts afresh.",
     [RUN_ID], _lro("Run", "The run"), True),
    ("post", "/assessments", "create_assessment", "Assessments_Create", "Assess patches now",
     "Runs Azure's assessPatches on the given VMs, or on every VM of the given scopes. 202 + Location + Retry-After.",
     [_body("AssessmentRequest", "Assessment"), IDEMPOTENCY], _lro("Run", "The assessment"), True),
    ("get", "/assessments/{runId}", "get_assessment", "Assessments_Get", "Get an assessment",
     "202 while unfinished, 200 when done; per scope how many VMs were listed.",
     [RUN_ID], _lro("Run", "The assessment"), True),
    ("get", "/compliance", "get_compliance", "Compliance_Get", "Get the compliance view",
     "Counts of assessed, stale and failed machines, missing critical/security patches by subscription, and the "
     "most widespread missing patches, from Table storage only: one read of each subscription's rollup (a "
     "resourceGroup filter reads that group's machines). Stale: assessed before the minute in which "
     "now - freshnessHours falls.",
     [_param("subscriptionId", "query", "Subscription id", "Only this subscription (GUID)"),
      _param("resourceGroup", "query", "Resource group", "Only this resource group (needs subscriptionId)"),
      _param("osType", "query", "OS type", "Windows or Linux", enum=["Windows", "Linux"]),
      _param("machineKind", "query", "Machine kind", "Azure VMs or Azure Arc-enabled servers",
             enum=["virtualMachines", "hybridMachines"]),
      _param("top", "query", "Top patches", "How many patches to list", kind="integer", minimum=1, maximum=100,
             default=10)],
     _ok("Compliance", "The compliance view"), False),
    ("get", "/machines/" + VM_PATH + "/assessment", "get_machine_assessment", "Machines_GetAssessment",
     "Get a machine's assessment", "Its snapshot, the latest assessment with every available patch, its history.",
     [*VM_PARAMS, _param("history", "query", "History", "How many past assessments", kind="integer", minimum=1,
                         maximum=100, default=20)],
     _ok("MachineAssessment", "The machine's assessment"), False),
    ("get", "/machines/" + ARC_PATH + "/assessment", "get_arc_machine_assessment", "Machines_GetArcAssessment",
     "Get an Arc machine's assessment", "Its snapshot, the latest assessment (counts per classification: "
     "HybridCompute lists no patches), its history.",
     [*ARC_PARAMS, _param("history", "query", "History", "How many past assessments", kind="integer", minimum=1,
                          maximum=100, default=20)],
     _ok("MachineAssessment", "The machine's assessment"), False),
    ("put", "/maintenance-configurations/{name}", "put_configuration", "MaintenanceConfigurations_CreateOrUpdate",
     "Create or replace a maintenance configuration",
     "Azure's InGuestPatch shape; a configuration exported from Azure is accepted as it is.",
     [CONFIG_NAME, _body("MaintenanceConfiguration", "Configuration")],
     {**_ok("MaintenanceConfiguration", "Replaced"), **_ok("MaintenanceConfiguration", "Created", "201")}, False),
    ("get", "/maintenance-configurations/{name}", "get_configuration", "MaintenanceConfigurations_Get",
     "Get a maintenance configuration", "The configuration as normalised.", [CONFIG_NAME],
     _ok("MaintenanceConfiguration", "The configuration"), False),
    ("get", "/maintenance-configurations", "list_configurations", "MaintenanceConfigurations_List",
     "List maintenance configurations", "Every configuration.", [],
     _ok("MaintenanceConfigurationList", "The configurations"), False),
    ("delete", "/maintenance-configurations/{name}", "delete_configuration", "MaintenanceConfigurations_Delete",
     "Delete a maintenance configuration", "Its assignments go too.", [CONFIG_NAME],
     {**_ok(None, "Deleted"), **_ok(None, "Already gone", "204")}, False),
    ("get", "/maintenance-configurations/{name}/occurrences", "list_occurrences",
     "MaintenanceConfigurations_ListOccurrences",
     "List a configuration's windows",
     "The next windows (UTC and local) and, for windows already handled, their fate (Started with runId, Skipped).",
     [CONFIG_NAME, _param("from", "query", "From", "ISO 8601 date-time (default now)", format="date-time"),
      _param("count", "query", "Count", "1 to 100", kind="integer", minimum=1, maximum=100, default=10)],
     _ok("OccurrenceList", "The windows"), False),
    ("put", "/maintenance-configurations/{name}/assignments/{assignmentName}", "put_assignment",
     "ConfigurationAssignments_CreateOrUpdate", "Assign VMs to a configuration",
     "One VM, or a subscription / resource group with a dynamic scope filter resolved when each window opens.",
     [CONFIG_NAME, ASSIGNMENT_NAME, _body("ConfigurationAssignment", "Assignment")],
     {**_ok("ConfigurationAssignment", "Replaced"), **_ok("ConfigurationAssignment", "Created", "201")}, False),
    ("get", "/maintenance-configurations/{name}/assignments/{assignmentName}", "get_assignment",
     "ConfigurationAssignments_Get", "Get an assignment", "The assignment.", [CONFIG_NAME, ASSIGNMENT_NAME],
     _ok("ConfigurationAssignment", "The assignment"), False),
    ("get", "/maintenance-configurations/{name}/assignments", "list_assignments", "ConfigurationAssignments_List",
     "List a configuration's assignments", "Every assignment of the configuration.", [CONFIG_NAME],
     _ok("ConfigurationAssignmentList", "The assignments"), False),
    ("delete", "/maintenance-configurations/{name}/assignments/{assignmentName}", "delete_assignment",
     "ConfigurationAssignments_Delete", "Delete an assignment", "Removes the assignment.",
     [CONFIG_NAME, ASSIGNMENT_NAME], {**_ok(None, "Deleted"), **_ok(None, "Already gone", "204")}, False),
    ("get", "/runs/{runId}/machines", "list_run_machines", "Runs_ListMachines", "List a run's machines",
     "A page of the run's machines, optionally in one state; follow nextLink.",
     [RUN_ID, _param("state", "query", "State", "Only machines in this state",
                     enum=[s.value for s in MachineState]),
      _param("top", "query", "Page size", "1 to 100", kind="integer", minimum=1, maximum=100, default=50),
      _param("continuationToken", "query", "Continuation token", "From the previous page's nextLink")],
     _ok("MachineList", "A page of machines"), False),
    ("get", "/runs/{runId}/summary", "get_run_summary", "Runs_GetSummary", "Get a run's summary",
     "The run without its machines: counts per state and per wave, and a timeline of machines started and "
     "finished.", [RUN_ID], _ok("RunSummary", "The summary"), False),
    ("post", "/plans", "create_plan", "Plans_Create", "Plan a patch run (what-if)",
     "Takes what Runs_Create takes (or a maintenance configuration, to plan its next window) and answers 202 + "
     "Location + Retry-After; the plan's URL answers 202 while planning, then 200 with each machine's patches from "
     "its latest assessment, predicted durations and start times inside the ARM budgets, and the window fit.",
     [_body("PlanRequest", "Plan")], _lro("Plan", "The plan"), True),
    ("get", "/plans/{planId}", "get_plan", "Plans_Get", "Get a plan",
     "202 while planning, 200 with the plan: summary, totals by classification and patch, waves, window fit.",
     [PLAN_ID], _lro("Plan", "The plan"), True),
    ("get", "/plans/{planId}/machines", "list_plan_machines", "Plans_ListMachines", "List a plan's machines",
     "A page of planned machines with their patches, prediction and predicted start and finish; follow nextLink.",
     [PLAN_ID, _param("top", "query", "Page size", "1 to 100", kind="integer", minimum=1, maximum=100, default=50),
      _param("continuationToken", "query", "Continuation token", "From the previous page's nextLink")],
     _ok("PlanMachineList", "A page of planned machines"), False),
    ("get", "/plans/{planId}/csv", "plan_csv", "Plans_GetCsv", "Get a plan as CSV",
     "One line per machine and patch (text/csv), for a change ticket.", [PLAN_ID], _ok(None, "The CSV"), False),
    ("post", "/plans/{planId}/apply", "apply_plan_run", "Plans_Apply", "Apply a plan",
     "Starts the run that installs this plan and nothing newer (a repeated apply answers the same run); 409 "
     "PlanExpired, PlanOutdated, WindowPassed or PlanNotReady with the reason.",
     [PLAN_ID], _lro("Run", "The run"), True),
    ("get", "/dashboard", "get_dashboard", "Dashboard_Get", "The dashboard page",
     "HTML (anonymous; it calls this API with the caller's function key).", [], _ok(None, "The page"), False),
    ("get", "/dashboard/{asset}", "get_dashboard_asset", "Dashboard_GetAsset", "A dashboard asset",
     "The page's script and style sheet (anonymous).",
     [_param("asset", "path", "Asset", "app.js or app.css", enum=["app.js", "app.css", "index.html"])],
     _ok(None, "The asset"), False),
    ("get", "/openapi.json", "get_openapi", "OpenApi_Get", "Get this document",
     "This OpenAPI 2.0 document (anonymous).", [], _ok(None, "The document"), False),
]
ANONYMOUS = {"get_openapi", "get_dashboard", "get_dashboard_asset"}


def _response_definitions() -> dict[str, Schema]:
    """What the API answers: the fields a caller (or a designer) reads; views may add fields."""
    error = {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}, "target": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object"}}}}}}
    machine = {"type": "object", "properties": {
        "id": {"type": "string", "x-ms-summary": "Machine resource id"},
        "state": {"type": "string", "x-ms-summary": "State"},
        "status": {"type": "string", "x-ms-summary": "Operation status"},
        "wave": {"type": "integer"}, "installedPatchCount": {"type": "integer"},
        "failedPatchCount": {"type": "integer"}, "pendingPatchCount": {"type": "integer"},
        "rebootStatus": {"type": "string"}, "startDateTime": {"type": "string"},
        "notSelectedByClassification": {"type": "object", "x-nullable": True,
                                        "description": "Patches the run's classifications left out, by "
                                                       "classification (Ubuntu ships many security fixes as Other)",
                                        "additionalProperties": {"type": "integer"}},
        "health": {"type": "object", "x-nullable": True, "x-ms-summary": "Health checks",
                   "description": "With a rollout healthCheck: status, lastRound (the last round's verdict), "
                                  "failedSignals, and the readings after the installation (after) and before it "
                                  "(before): signal, verdict (healthy, unhealthy, waiting, unreadable), observed, at, "
                                  "code",
                   "properties": {"status": {"type": "string", "enum": ["Verifying", "Healthy", "Unhealthy",
                                                                         "HealthUnknown", "UnhealthyBeforePatching"]},
                                  "lastRound": {"type": "string", "enum": ["Healthy", "Unhealthy", "HealthUnknown"]},
                                  "failedSignals": {"type": "array", "items": {"type": "string"}},
                                  "after": {"type": "array", "items": {"$ref": "#/definitions/HealthReading"}},
                                  "before": {"type": "array", "items": {"$ref": "#/definitions/HealthReading"}},
                                  "since": {"type": "string", "format": "date-time"},
                                  "deadline": {"type": "string", "format": "date-time"},
                                  "reads": {"type": "integer"}}},
        "error": {"type": "object", "x-nullable": True, "description": "ARM's error shape"},
        "armCalls": {"type": "array", "description": "operation, HTTP status and x-ms-request-id of each ARM call",
                     "items": {"type": "object"}},
        "patches": {"type": "array", "items": {"type": "object"}}}}
    run: Schema = {"type": "object", "properties": {
        "id": {"type": "string", "x-ms-summary": "Run id"},
        "operation": {"type": "string", "enum": ["installPatches", "assessPatches"]},
        "status": {"type": "string", "x-ms-summary": "Status",
                   "description": "Accepted, InProgress, Succeeded, CompletedWithErrors, Failed, Halted, Canceled"},
        "createdAt": {"type": "string", "format": "date-time"},
        "completedAt": {"type": "string", "format": "date-time"},
        "machineCount": {"type": "integer"}, "states": {"type": "object"}, "outcomes": {"type": "object"},
        "installPatches": {"type": "object"},
        "planId": {"type": "string", "x-ms-summary": "Plan it applies"},
        "origin": {"type": "string", "enum": ["api", "plan", "maintenance", "schedule"], "x-ms-summary": "Started by",
                   "description": "api: a caller's POST; plan: POST /api/plans/{planId}/apply; maintenance: a "
                   "maintenance window; schedule: the periodic assessment"},
        "idempotencyKey": {"type": "string", "x-ms-summary": "Idempotency key",
                           "description": "The Idempotency-Key header the run was created with, if any"},
        "rollout": {"type": "object", "description": "The rollout as accepted, with currentWave, waveCount, and when "
                    "halted `halted`", "properties": {"halted": {"type": "object", "properties": {
                        "reason": {"type": "string"}, "at": {"type": "string", "format": "date-time"},
                        "machines": {"type": "array", "items": {"type": "string"}},
                        "details": {"type": "array", "items": {"type": "object", "properties": {
                            "machine": {"type": "string"}, "kind": {"type": "string"}, "state": {"type": "string"},
                            "errorCode": {"type": "string"},
                            "signals": {"type": "array", "items": {"type": "string"}}}}}}}}},
        "machines": {"type": "array", "items": {"$ref": "#/definitions/Machine"}}}}

    plan: Schema = {"type": "object", "properties": {
        "id": {"type": "string", "x-ms-summary": "Plan id"},
        "status": {"type": "string", "enum": ["Planning", "Succeeded", "Failed"], "x-ms-summary": "Status"},
        "createdAt": {"type": "string", "format": "date-time"}, "plannedAt": {"type": "string", "format": "date-time"},
        "machineCount": {"type": "integer"}, "installPatches": {"type": "object"}, "rollout": {"type": "object"},
        "maintenanceWindow": {"type": "object", "x-nullable": True, "properties": {
            "start": {"type": "string", "format": "date-time"}, "end": {"type": "string", "format": "date-time"}}},
        "maintenanceConfiguration": {"type": "string", "x-nullable": True},
        "summary": {"type": "object", "x-ms-summary": "Summary", "description": "machineCount, actions, assessments, "
                    "installing, patchInstalls, rebootsExpected, order, predictedStart, predictedFinish, "
                    "predictedMakespan (ISO 8601) and its basis, waves, subscriptions, window {start, end, fits, "
                    "wouldNotStart, wouldNotFinish}, outsideWindow [{machine, code, message}], totals "
                    "{byClassification, byPatch}",
                    "properties": {"installing": {"type": "integer"}, "patchInstalls": {"type": "integer"},
                                   "predictedMakespan": {"type": "string"},
                                   "window": {"type": "object", "x-nullable": True},
                                   "outsideWindow": {"type": "array", "items": {"type": "object"}},
                                   "totals": {"type": "object"}}},
        "machinesLink": {"type": "string"}, "csvLink": {"type": "string"}, "applyLink": {"type": "string"},
        "appliedRunId": {"type": "string", "x-ms-summary": "Run that applied it"},
        "runLink": {"type": "string"}, "error": {"type": "object", "x-nullable": True}}}
    plan_machine: Schema = {"type": "object", "properties": {
        "resourceId": {"type": "string"}, "osType": {"type": "string"}, "wave": {"type": "integer"},
        "action": {"type": "string", "enum": ["Install", "NothingToInstall", "NotAssessed", "NoParametersForOsType",
                                             "NoPatchList"]},
        "assessment": {"type": "object", "properties": {
            "status": {"type": "string", "enum": ["Current", "Stale", "Missing"]},
            "assessedAt": {"type": "string", "format": "date-time"}, "ageHours": {"type": "number"}}},
        "patchCount": {"type": "integer"}, "rebootExpected": {"type": "boolean"},
        "prediction": {"type": "object", "properties": {
            "seconds": {"type": "integer"}, "basis": {"type": "string", "enum": ["machine", "peers", "default"]},
            "samples": {"type": "integer"}, "error": {"type": "number", "x-nullable": True}}},
        "predictedStart": {"type": "string", "format": "date-time"},
        "predictedFinish": {"type": "string", "format": "date-time"},
        "outside": {"type": "object", "x-nullable": True, "properties": {
            "code": {"type": "string", "enum": ["WindowClosed", "WouldNotFinish"]}, "message": {"type": "string"}}},
        "patches": {"type": "array", "items": {"type": "object"}}}}

    def listing(ref: str, paged: bool = False) -> Schema:
        props: Schema = {"value": {"type": "array", "items": {"$ref": f"#/definitions/{ref}"}}}
        if paged:
            props["nextLink"] = {"type": "string", "description": "The next page's absolute URL"}
        return {"type": "object", "properties": props}

    run_fields: Schema = dict(run["properties"])
    run_fields.pop("machines")
    summary = {"type": "object", "properties": {
        **run_fields, "waves": {"type": "object", "description": "Per wave, machines per state"},
        "timeline": {"type": "array", "items": {"type": "object", "properties": {
            "at": {"type": "string", "format": "date-time"}, "started": {"type": "integer"},
            "finished": {"type": "integer"}}}}}}
    reading = {"type": "object", "properties": {
        "signal": {"type": "string", "enum": ["vmHealth", "resourceHealth", "alerts", "probe"]},
        "verdict": {"type": "string", "enum": ["healthy", "unhealthy", "waiting", "unreadable"]},
        "observed": {"type": "string"}, "at": {"type": "string", "format": "date-time"}, "code": {"type": "string"}}}
    return {"Error": error, "Machine": machine, "Run": run, "HealthReading": reading,
            "RunList": listing("Run", paged=True),
            "RunSummary": summary, "MachineList": listing("Machine", paged=True),
            "Compliance": {"type": "object", "properties": {
                "generatedAt": {"type": "string", "format": "date-time"}, "freshnessHours": {"type": "integer"},
                **{name: {"type": "integer"} for name in (
                    "machines", "assessed", "stale", "neverAssessed", "failed", "notRunning", "notConnected",
                    "missingCriticalOrSecurity", "rebootPending", "upToDate")},
                "byOsType": {"type": "object"}, "byMachineKind": {"type": "object"},
                "byClassification": {"type": "object"}, "bySubscription": {"type": "object"},
                "mostWidespreadMissingPatches": {"type": "array", "items": {"type": "object", "properties": {
                    "patch": {"type": "string"}, "classification": {"type": "string"},
                    "machines": {"type": "integer"}}}},
                "mostWidespreadMissingPatchesApproximate": {
                    "type": "boolean", "description": "True when a subscription's rollup had more distinct missing "
                    "patches than it can keep: those least widespread were dropped, so counts may be low."},
                "filter": {"type": "object"},
                "linuxOtherUpdates": {"type": "object", "description": "Linux machines with updates classified "
                                      "Other, and how many: a Security-only run does not install them",
                                      "properties": {"machines": {"type": "integer"}, "updates": {"type": "integer"},
                                                     "note": {"type": "string"}}}}},
            "MachineAssessment": {"type": "object"},
            "MaintenanceConfigurationList": listing("MaintenanceConfiguration"),
            "ConfigurationAssignmentList": listing("ConfigurationAssignment"),
            "Occurrence": {"type": "object", "properties": {
                "startDateTime": {"type": "string", "format": "date-time"},
                "endDateTime": {"type": "string", "format": "date-time"},
                "startLocal": {"type": "string"}, "endLocal": {"type": "string"}, "timeZone": {"type": "string"},
                "maximumDuration": {"type": "string"}, "state": {"type": "string"}, "runId": {"type": "string"},
                "error": {"type": "object"}}},
            "OccurrenceList": listing("Occurrence"),
            "Plan": plan, "PlanMachine": plan_machine, "PlanMachineList": listing("PlanMachine", paged=True)}


def build_document(host: str = KEPT_HOST, scheme: str = "https",
                   max_machines: int = DEFAULT_MAX_MACHINES_PER_RUN) -> dict[str, Any]:
    """The whole Swagger 2.0 document, as a dict (deterministic: same arguments, same document)."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, _name, operation_id, summary, description, params, responses, lro in OPERATIONS:
        operation: dict[str, Any] = {
            "operationId": operation_id, "summary": summary, "description": description,
            "tags": [operation_id.split("_")[0]], "parameters": params,
            "responses": {**responses, "default": {"description": "ARM's error shape", "schema":
                                                   {"$ref": "#/definitions/Error"}}},
        }
        if any(p["in"] == "body" for p in params):
            operation["consumes"] = ["application/json"]
        if lro:
            operation["x-ms-long-running-operation"] = True
        if _name in ANONYMOUS:
            operation["security"] = []
        paths.setdefault(path, {})[method] = operation
    definitions = {
        "RunRequest": run_request_schema(max_machines),
        "PlanRequest": plan_request_schema(max_machines),
        "InstallPatchesParameters": install_parameters_schema(),
        "Rollout": rollout_schema(),
        "HealthCheck": health_check_schema(),
        "Wave": wave_schema(),
        "AssessmentRequest": assessment_request_schema(max_machines),
        "MaintenanceConfiguration": configuration_schema(),
        "ConfigurationAssignment": assignment_schema(),
        **_response_definitions(),
    }
    return {
        "swagger": "2.0",
        "info": {"title": "PatchPilot", "version": "1.0",
                 "description": "Patch fleets of Azure VMs: runs, rollouts, assessments, compliance and maintenance "
                                "schedules. Authenticate with a function key (x-functions-key header)."},
        "host": host, "basePath": "/api", "schemes": [scheme],
        "consumes": ["application/json"], "produces": ["application/json"],
        # Custom connectors take one API-key definition; Functions also takes the key as `?code=`.
        "securityDefinitions": {"functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key",
                                                "description": "A function key (or ?code=<key> in the URL)"}},
        "security": [{"functionKey": []}],
        "paths": paths,
        "definitions": definitions,
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=False) + "\n"


def blueprint(components: Callable[[], Components]) -> func.Blueprint:
    """`GET /api/openapi.json`, anonymous: the document with this app's own host (WEBSITE_HOSTNAME)."""
    bp = func.Blueprint()

    @bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    @traced(SpanKind.SERVER)
    def get_openapi(req: func.HttpRequest) -> func.HttpResponse:
        try:
            scheme, host = public_origin(req).split("://", 1)
        except SettingsError:
            scheme, host = "https", KEPT_HOST
        try:
            max_machines = components().settings.limits.max_machines_per_run
        except SettingsError:  # the document needs no storage; a misconfigured app still describes itself
            max_machines = DEFAULT_MAX_MACHINES_PER_RUN
        return func.HttpResponse(render(build_document(host, scheme, max_machines)), status_code=200,
                                 headers={"Content-Type": JSON, "Cache-Control": "no-cache"})

    return bp


if __name__ == "__main__":
    sys.stdout.write(render(build_document()))
