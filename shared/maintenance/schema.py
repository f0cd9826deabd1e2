"""JSON Schemas (Swagger 2.0 subset) of maintenance configuration and assignment bodies, built from
configuration.py's own field sets, patterns and limits (see shared/validation/schemas.py for the rules).

Not expressible, so left to the validator and said in `description`: a `startDateTime` inside a
daylight-saving gap, `recurEvery`'s grammar, the time zone list, case-insensitive enums.
"""

from __future__ import annotations

from shared.maintenance import configuration as mc
from shared.validation.schemas import (
    Schema,
    _covers,
    _ui,
    dynamic_scope_filter_schema,
    ecma_pattern,
    install_parameters_schema,
    tags_schema,
)

_FREE = {"type": "object", "description": "Kept as given"}


def configuration_schema() -> Schema:
    local_time = {"type": "string", "pattern": ecma_pattern(mc.LOCAL_TIME),
                  "description": "Local time YYYY-MM-DD hh:mm"}
    window = _covers({
        "startDateTime": _ui(local_time, "Start (local time)", important=True),
        "expirationDateTime": _ui({**local_time, "x-nullable": True}, "Expiration (local time)"),
        "duration": _ui({"type": "string", "pattern": ecma_pattern(mc.HH_MM), "default": mc.DEFAULT_DURATION,
                         "x-nullable": True, "description": "HH:mm from 01:30 to 03:55"}, "Duration"),
        "timeZone": _ui({"type": "string", "minLength": 1,
                         "description": "A Windows time zone name (W. Europe Standard Time) or an IANA name"},
                        "Time zone", important=True),
        "recurEvery": _ui({"type": "string", "minLength": 1,
                           "description": "Azure's grammar: Day, 3Days, Week Saturday,Sunday, Month day15, "
                                          "Month Second Tuesday Offset2, 6Hours"}, "Recur every", important=True),
    }, mc.WINDOW_FIELDS, "maintenanceWindow")
    install = install_parameters_schema()
    patches = _covers({
        "rebootSetting": {**install["properties"]["rebootSetting"], "default": "IfRequired", "x-nullable": True},
        "windowsParameters": install["properties"]["windowsParameters"],
        "linuxParameters": install["properties"]["linuxParameters"],
        "tasks": {**_FREE, "x-nullable": True,
                  "description": "Azure Automation pre/post tasks: kept as given, not run"},
    }, mc.PATCH_FIELDS, "installPatches")
    properties = _covers({
        "namespace": {"type": "string", "x-nullable": True},
        "extensionProperties": {"type": "object", "x-nullable": True,
                                "additionalProperties": {"type": "string"},
                                "description": "InGuestPatchMode must be User"},
        "maintenanceScope": _ui({"type": "string", "enum": ["InGuestPatch"]}, "Maintenance scope", important=True),
        "visibility": {"type": "string", "enum": sorted(mc.VISIBILITY.values()), "x-nullable": True},
        "maintenanceWindow": _ui({"type": "object", "additionalProperties": False,
                                  "required": ["startDateTime", "timeZone", "recurEvery"], "properties": window},
                                 "Maintenance window", important=True),
        "installPatches": _ui({"type": "object", "additionalProperties": False, "properties": patches},
                              "Install patches", important=True),
        "rollout": _ui({"$ref": "#/definitions/Rollout"}, "Rollout"),
    }, mc.PROPERTY_FIELDS, "properties")
    return {"type": "object", "additionalProperties": False, "required": ["properties"], "properties": _covers({
        "id": {"type": "string"}, "name": {"type": "string"}, "type": {"type": "string"},
        "location": {"type": "string", "x-nullable": True}, "tags": tags_schema(),
        "systemData": _FREE, "etag": {"type": "string"},
        "properties": {"type": "object", "additionalProperties": False, "required": ["maintenanceScope",
                                                                                    "maintenanceWindow",
                                                                                    "installPatches"],
                       "properties": properties},
    }, mc.RESOURCE_FIELDS, "maintenance configuration"),
        "description": "Microsoft.Maintenance/maintenanceConfigurations (InGuestPatch), as Azure exports it"}


def assignment_schema() -> Schema:
    properties = _covers({
        "resourceId": _ui({"type": "string", "minLength": 1,
                           "description": "A VM id, or a subscription / resource group id for a dynamic scope"},
                          "Resource id", important=True),
        "filter": _ui(dynamic_scope_filter_schema(), "Filter"),
        "maintenanceConfigurationId": {"type": "string", "x-nullable": True},
    }, mc.ASSIGNMENT_PROPERTIES, "assignment properties")
    return {"type": "object", "additionalProperties": False, "required": ["properties"], "properties": _covers({
        "id": {"type": "string"}, "name": {"type": "string"}, "type": {"type": "string"},
        "location": {"type": "string", "x-nullable": True}, "systemData": _FREE,
        "properties": {"type": "object", "additionalProperties": False, "required": ["resourceId"],
                       "properties": properties},
    }, mc.ASSIGNMENT_FIELDS, "assignment")}
