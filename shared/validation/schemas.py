"""JSON Schemas (the Swagger 2.0 subset: no oneOf/anyOf, one `type` per schema) of the request bodies,
built from the validators' own field sets, enums, limits and patterns, so the OpenAPI document
(shared/functions/openapi.py) cannot drift from what the API checks.

A schema is at most as permissive as its validator for everything it can say: unknown fields
(`additionalProperties: false`, as `reject_unknown`), required fields, types, enums, bounds, patterns.
What Swagger 2.0 cannot say is left to the validator and told in `description`: the spellings
accepted besides the API's own (`NeverReboot`, `Update Rollups`, any case: the enums list what is
sent to ARM), `null` as "left out" (`x-nullable`), numeric ranges of durations, "selects nothing",
cross-field rules. Each builder checks it covers exactly its validator's fields, so a field added to
a validator and not here fails the first test that builds the document.

Schemas carry `x-ms-summary` (a designer's label) and `x-ms-visibility` (`important` for what most
callers set, `advanced` for the rest), the extensions Logic Apps custom connectors read
(learn.microsoft.com/connectors/custom-connectors/openapi-extensions).
"""

from __future__ import annotations

import re
from typing import Any

from shared.validation import health_check as hc
from shared.validation import install_parameters as ip
from shared.validation import rollout as ro
from shared.validation.assessment_request import FIELDS as ASSESSMENT_FIELDS
from shared.validation.durations import _DURATION
from shared.validation.dynamic_scope import FILTER_FIELDS, KNOWN_TYPES
from shared.validation.resource_ids import _GUID, _HYBRID_ID, _VM_ID
from shared.validation.run_request import RUN_FIELDS
from shared.validation.tags import MAX_NAME, MAX_TAGS, MAX_VALUE

Schema = dict[str, Any]


def ecma_pattern(compiled: re.Pattern[str]) -> str:
    """A Python pattern the validator fullmatches, as an anchored pattern both Python's `re` (what
    jsonschema uses) and ECMA 262 (what Swagger names) read alike: named groups lose their names."""
    text = re.sub(r"\(\?P<\w+>", "(", compiled.pattern).replace(r"\Z", "$")
    return f"^(?:{text})$"


DURATION_PATTERN = ecma_pattern(_DURATION)
VM_ID_PATTERN = ecma_pattern(_VM_ID)
MACHINE_ID_PATTERN = f"{VM_ID_PATTERN}|{ecma_pattern(_HYBRID_ID)}"  # each alternative anchored
GUID_PATTERN = f"^{_GUID}$"
# A count is a JSON number (`minimum`/`maximum` bind it); a string must be a percentage (rollout.count_or_percent).
PERCENT = r"(?:100|[1-9][0-9]?)%"
COUNT_OR_PERCENT = f"^{PERCENT}$"


def _ui(schema: Schema, summary: str, *, important: bool = False) -> Schema:
    return {**schema, "x-ms-summary": summary, "x-ms-visibility": "important" if important else "advanced"}


def _covers(properties: Schema, fields: set[str], what: str) -> Schema:
    if set(properties) != set(fields):
        raise AssertionError(f"the {what} schema covers {sorted(properties)}, its validator {sorted(fields)}")
    return properties


def _strings(summary: str, *, item: Schema | None = None, max_items: int = ip.MAX_LIST_ITEMS) -> Schema:
    return _ui({"type": "array", "maxItems": max_items, "x-nullable": True,
                "items": item or {"type": "string", "minLength": 1, "maxLength": ip.MAX_TEXT}}, summary)


def _enum_list(table: dict[str, str], summary: str) -> Schema:
    values = sorted(set(table.values()))
    return _strings(summary, item={"type": "string", "enum": values})


def machine_id_schema() -> Schema:
    """An Azure VM's or an Arc-enabled server's resource id (resource_ids.parse_machine_id). The pattern is the
    ids' canonical casing; the API also takes them in any case, as ARM does."""
    return {"type": "string", "pattern": MACHINE_ID_PATTERN, "x-ms-summary": "Machine resource id",
            "description": "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}"
                           "/providers/Microsoft.Compute/virtualMachines/{vmName}, or an Arc-enabled server's "
                           "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}"
                           "/providers/Microsoft.HybridCompute/machines/{machineName}"}


def install_parameters_schema() -> Schema:
    """Azure's VirtualMachineInstallPatchesParameters (Compute 2025-04-01), as install_parameters.py takes it."""
    kb = {"type": "string", "pattern": r"^(?:[Kk][Bb])?[0-9]{1,10}$"}
    windows = _covers({
        "classificationsToInclude": _enum_list(ip.WINDOWS_CLASSIFICATIONS, "Classifications to include"),
        "kbNumbersToInclude": _strings("KB numbers to include", item=kb),
        "kbNumbersToExclude": _strings("KB numbers to exclude", item=kb),
        "excludeKbsRequiringReboot": _ui({"type": "boolean", "x-nullable": True}, "Exclude KBs requiring reboot"),
        "maxPatchPublishDate": _ui({"type": "string", "format": "date-time", "x-nullable": True},
                                   "Newest publish date to install"),
        "patchNameMasksToInclude": _strings("Patch name masks to include"),
        "patchNameMasksToExclude": _strings("Patch name masks to exclude"),
    }, ip._WINDOWS_FIELDS, "windowsParameters")
    linux = _covers({
        "classificationsToInclude": _enum_list(ip.LINUX_CLASSIFICATIONS, "Classifications to include"),
        "packageNameMasksToInclude": _strings("Package name masks to include"),
        "packageNameMasksToExclude": _strings("Package name masks to exclude"),
        "maintenanceRunId": _ui({"type": "string", "minLength": 1, "maxLength": ip.MAX_TEXT, "x-nullable": True},
                                "Maintenance run id"),
    }, ip._LINUX_FIELDS, "linuxParameters")
    top = _covers({
        "maximumDuration": _ui({"type": "string", "pattern": DURATION_PATTERN,
                                "description": "ISO 8601 duration from PT30M to PT4H, e.g. PT2H"},
                               "Maximum duration", important=True),
        "rebootSetting": _ui({"type": "string", "enum": sorted(set(ip.REBOOT_SETTINGS.values())),
                              "description": "Also accepted: NeverReboot, AlwaysReboot, any case"},
                             "Reboot setting", important=True),
        "windowsParameters": _ui({"type": "object", "additionalProperties": False, "properties": windows,
                                  "x-nullable": True,
                                  "description": "Select by classificationsToInclude, kbNumbersToInclude or "
                                                 "patchNameMasksToInclude (at least one). Spellings from the "
                                                 "portal and CLI (Update Rollups, Definition Updates) are "
                                                 "accepted too."},
                                 "Windows parameters", important=True),
        "linuxParameters": _ui({"type": "object", "additionalProperties": False, "properties": linux,
                                "x-nullable": True,
                                "description": "Select by classificationsToInclude or packageNameMasksToInclude."},
                               "Linux parameters", important=True),
    }, ip._TOP_FIELDS, "installPatches")
    return {"type": "object", "additionalProperties": False, "required": ["maximumDuration", "rebootSetting"],
            "properties": top,
            "description": "Azure's VirtualMachineInstallPatchesParameters; give windowsParameters and/or "
                           "linuxParameters: each VM gets its own OS's part."}


def _count(summary: str, description: str, *, minimum: int = 0) -> Schema:
    # No `type`: a whole number or a string "N%"; `minimum`/`maximum` bind numbers, `pattern` strings.
    return _ui({"minimum": minimum, "maximum": ro.MAX_COUNT, "pattern": COUNT_OR_PERCENT,
                "description": description}, summary)


def _hook(timeout: bool) -> Schema:
    props: Schema = {"url": {"type": "string", "format": "uri", "x-ms-summary": "URL",
                             "description": "https URL PatchPilot POSTs to (signed)"}}
    if timeout:
        props["timeoutSeconds"] = {"type": "integer", "minimum": 1, "maximum": ro.MAX_HOOK_SECONDS, "default": 60,
                                   "x-ms-summary": "Timeout (seconds)"}
    return {"type": "object", "additionalProperties": False, "required": ["url"], "properties": props,
            "x-nullable": True}


def wave_schema() -> Schema:
    props = _covers({
        "name": {"type": "string", "maxLength": ro.MAX_WAVE_NAME, "x-ms-summary": "Wave name"},
        "size": {"minimum": 1, "maximum": ro.MAX_COUNT, "pattern": f"^(?:{PERCENT}|rest)$",
                 "x-ms-summary": "Size", "description": "A number of machines, a percentage such as \"10%\", "
                                                        "or \"rest\" (last wave only)"},
        "machines": {"type": "array", "minItems": 1, "items": machine_id_schema(), "x-ms-summary": "Machines"},
        "selector": {"type": "object", "additionalProperties": False, "minProperties": 1, "x-ms-summary": "Selector",
                     "properties": {"subscriptions": {"type": "array",
                                                      "items": {"type": "string", "pattern": GUID_PATTERN}},
                                    "resourceGroups": {"type": "array",
                                                       "items": {"type": "string", "minLength": 1,
                                                                 "maxLength": 90}}}},
    }, ro.WAVE_FIELDS, "wave")
    return {"type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 2,
            "properties": props, "description": "Exactly one of size, machines or selector, and an optional name"}


def rollout_schema() -> Schema:
    props = _covers({
        "waves": _ui({"type": "array", "minItems": 1, "maxItems": ro.MAX_WAVES, "items": {"$ref": "#/definitions/Wave"},
                      "x-nullable": True}, "Waves", important=True),
        "soakTime": _ui({"type": "string", "pattern": DURATION_PATTERN, "x-nullable": True,
                         "description": "ISO 8601 duration up to P30D between a finished wave and the next"},
                        "Soak time"),
        "maxConcurrency": _count("Max concurrency", "Operations in flight in the run: a number >= 1 or \"N%\"",
                                 minimum=1),
        "maxConcurrencyPerSubscription": _count("Max concurrency per subscription",
                                                "Operations in flight in one subscription: a number >= 1 or \"N%\"",
                                                minimum=1),
        "maxFailures": _count("Max failures", "Failures after which nothing new starts: a number or \"N%\""),
        "failureOn": _ui({"type": "array", "minItems": 1, "x-nullable": True,
                          "items": {"type": "string", "enum": list(ro.FAILURES.values())}}, "Failure on"),
        "approveAfterDays": _ui({"type": "integer", "minimum": 0, "maximum": 365, "x-nullable": True},
                                "Approve after days"),
        "preHook": _ui(_hook(True), "Pre hook"),
        "postHook": _ui(_hook(False), "Post hook"),
        "healthCheck": _ui({"$ref": "#/definitions/HealthCheck"}, "Health check"),
    }, ro.FIELDS, "rollout")
    return {"type": "object", "additionalProperties": False, "properties": props,
            "description": "Waves, concurrency, an error budget and hooks (docs/rollouts.md)"}


def health_check_schema() -> Schema:
    """rollout.healthCheck (shared/validation/health_check.py)."""
    props = _covers({
        "after": _ui({"type": "string", "pattern": DURATION_PATTERN, "x-nullable": True,
                      "description": "ISO 8601 duration, whole seconds, up to PT6H (default PT5M): the wait after "
                                     "the installation's final result before the first read"}, "After"),
        "within": _ui({"type": "string", "pattern": DURATION_PATTERN, "x-nullable": True,
                       "description": "ISO 8601 duration, whole seconds, up to PT24H (default PT20M): how long to "
                                      "read again until every signal passes; then the machine is Unhealthy"},
                      "Within"),
        "signals": _ui({"type": "array", "minItems": 1, "uniqueItems": True, "x-nullable": True,
                        "items": {"type": "string", "enum": list(hc.SIGNAL_ORDER)},
                        "description": "Default: vmHealth, resourceHealth (any case accepted)"}, "Signals",
                       important=True),
        "alerts": _ui({"type": "object", "additionalProperties": False, "x-nullable": True, "properties": {
            "severities": {"type": "array", "minItems": 1,
                           "items": {"type": "string", "enum": sorted(hc.SEVERITIES.values())},
                           "description": "Default: Sev0, Sev1"},
            "scope": {"type": "string", "enum": sorted(hc.ALERT_SCOPES.values()),
                      "description": "machine (default) or resourceGroup"}},
            "description": "With the alerts signal: which fired Azure Monitor alerts count"}, "Alerts"),
        "probe": _ui({"type": "object", "additionalProperties": False, "required": ["url"], "x-nullable": True,
                      "properties": {
                          "url": {"type": "string", "minLength": 1, "maxLength": hc.MAX_URL,
                                  "description": "https URL; {machineName}, {resourceGroup}, {subscriptionId} "
                                                 "are filled in per machine"},
                          "expectStatus": {"type": "array", "minItems": 1,
                                           "items": {"type": "integer", "minimum": 100, "maximum": 599},
                                           "description": "Passing HTTP statuses (default [200])"}},
                      "description": "With the probe signal: the workload's health URL"}, "Probe"),
    }, hc.FIELDS, "healthCheck")
    return {"type": "object", "additionalProperties": False, "properties": props,
            "description": "What a machine must read as after its installation before its wave passes "
                           "(docs/rollouts.md#health-checks)"}


SCOPE_ID = {"type": "string", "pattern": f"^/subscriptions/{_GUID}(?:/resourceGroups/[^/]{{1,90}})?/?$"}


def run_request_schema(max_machines: int) -> Schema:
    props = _covers({
        "machines": _ui({"type": "array", "minItems": 1, "maxItems": max_machines, "uniqueItems": True,
                         "items": machine_id_schema()}, "Machines", important=True),
        "scopes": _ui({"type": "array", "minItems": 1, "maxItems": 100, "uniqueItems": True, "items": SCOPE_ID,
                       "description": "Instead of machines: subscriptions and resource groups whose machines "
                                      "(those passing `filter`) are listed through ARM"}, "Scopes"),
        "filter": _ui({**dynamic_scope_filter_schema(),
                       "description": "With scopes: a maintenance assignment's dynamic-scope filter"}, "Filter"),
        "installPatches": _ui({"$ref": "#/definitions/InstallPatchesParameters"}, "Install patches", important=True),
        "rollout": _ui({"$ref": "#/definitions/Rollout"}, "Rollout"),
    }, RUN_FIELDS, "run request")
    return {"type": "object", "additionalProperties": False, "required": ["installPatches"],
            "properties": props, "description": "machines, or scopes (with an optional filter): one of the two"}


def plan_request_schema(max_machines: int) -> Schema:
    """POST /api/plans: a run request plus its maintenance window, or a maintenance configuration alone
    (shared/plans/request.py)."""
    run = run_request_schema(max_machines)
    props = {**run["properties"],
             "maintenanceWindow": _ui({"type": "object", "additionalProperties": False, "x-nullable": True,
                                       "required": ["startDateTime", "duration"],
                                       "description": "The window the run would have: which machines would not "
                                                      "start or finish in it",
                                       "properties": {"startDateTime": {"type": "string", "format": "date-time"},
                                                      "duration": {"type": "string",
                                                                   "description": "ISO 8601, PT1H30M to PT6H"}}},
                                      "Maintenance window"),
             "maintenanceConfiguration": _ui({"type": "string", "description": "Instead of everything else: plan "
                                              "this maintenance configuration's next window"},
                                             "Maintenance configuration")}
    return {"type": "object", "additionalProperties": False, "properties": props,
            "description": "A run request (+ maintenanceWindow), or maintenanceConfiguration alone"}


def assessment_request_schema(max_machines: int) -> Schema:
    scope = SCOPE_ID
    props = _covers({
        "machines": _ui({"type": "array", "minItems": 1, "maxItems": max_machines, "uniqueItems": True,
                         "items": machine_id_schema()}, "Machines", important=True),
        "scopes": _ui({"type": "array", "minItems": 1, "maxItems": 100, "uniqueItems": True, "items": scope},
                      "Scopes", important=True),
    }, ASSESSMENT_FIELDS, "assessment request")
    return {"type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
            "properties": props, "description": "Exactly one of machines or scopes"}


def tags_schema() -> Schema:
    return {"type": "object", "maxProperties": MAX_TAGS, "x-nullable": True,
            "additionalProperties": {"type": "string", "maxLength": MAX_VALUE},
            "description": f"ARM tags: names up to {MAX_NAME} characters without < > % & \\ ? /"}


def dynamic_scope_filter_schema() -> Schema:
    names = {"type": "array", "x-nullable": True, "items": {"type": "string", "minLength": 1}}
    props = _covers({
        "resourceTypes": {**names, "items": {"type": "string", "enum": sorted(KNOWN_TYPES.values())}},
        "resourceGroups": names,
        "osTypes": {**names, "items": {"type": "string", "enum": ["Linux", "Windows"]}},
        "locations": names,
        "tagSettings": {"type": "object", "additionalProperties": False, "x-nullable": True, "properties": {
            "tags": {"type": "object", "additionalProperties": names},
            "filterOperator": {"type": "string", "enum": ["All", "Any"]}}},
    }, FILTER_FIELDS, "filter")
    return {"type": "object", "additionalProperties": False, "properties": props, "x-nullable": True}
