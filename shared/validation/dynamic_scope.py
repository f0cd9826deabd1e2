"""Azure's dynamic scope filter (ConfigurationAssignmentFilterProperties): parse it, and test a listed VM.

Every given criterion must hold; within one, any listed value does. Tag names compare
case-insensitively (ARM treats them so), tag values exactly; `filterOperator` All needs every
listed tag, Any (the default) one of them.

Input rules: a criterion that is `null` or an empty list is no criterion (Terraform's azurerm
provider leaves empty lists out and ARM templates write `null`; an empty list matching nothing
would make the assignment patch nothing, which no one asks for). `tagSettings: null`, `tags: null`
and `filterOperator: null` likewise (Any). Values are trimmed; `osTypes`, `resourceTypes` and
`filterOperator` compare case-insensitively and are shown in Azure's spelling; locations compare
without spaces or case ('Japan East' is 'japaneast'), resource groups without case.
"""

from __future__ import annotations

from typing import Any

from shared.core.errors import ValidationError
from shared.validation.install_parameters import given, json_object, reject_unknown

FILTER_FIELDS = {"resourceTypes", "resourceGroups", "osTypes", "locations", "tagSettings"}
VM_TYPE = "microsoft.compute/virtualmachines"
HYBRID_TYPE = "microsoft.hybridcompute/machines"
KNOWN_TYPES = {VM_TYPE: "Microsoft.Compute/virtualMachines", HYBRID_TYPE: "Microsoft.HybridCompute/machines"}


def _names(value: object, target: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValidationError(f"{target} must be an array of non-empty strings", target=target)
    return [v.strip() for v in value]


def normalise_location(value: str) -> str:
    """ARM accepts 'Japan East' and 'japaneast' alike; VMs report the latter."""
    return value.replace(" ", "").lower()


def parse_filter(value: object, target: str = "properties.filter") -> dict[str, Any]:
    """`target`: where the filter sits in the request (a maintenance assignment's properties.filter, or a
    run's filter), for the 400's `target`."""
    raw = json_object(value, target)
    reject_unknown(raw, FILTER_FIELDS, target)
    out: dict[str, Any] = {}
    if _criterion(raw, "resourceTypes"):
        types = _names(raw["resourceTypes"], f"{target}.resourceTypes")
        if not {t.lower() for t in types} & KNOWN_TYPES.keys():
            raise ValidationError(f"{target}.resourceTypes must include Microsoft.Compute/virtualMachines or "
                                  "Microsoft.HybridCompute/machines: PatchPilot patches Azure VMs and Azure "
                                  "Arc-enabled servers", target=f"{target}.resourceTypes")
        out["resourceTypes"] = [KNOWN_TYPES.get(t.lower(), t) for t in types]
    if _criterion(raw, "resourceGroups"):
        out["resourceGroups"] = _names(raw["resourceGroups"], f"{target}.resourceGroups")
    if _criterion(raw, "osTypes"):
        os_types = _names(raw["osTypes"], f"{target}.osTypes")
        canonical = {"windows": "Windows", "linux": "Linux"}
        for i, os_type in enumerate(os_types):
            if os_type.lower() not in canonical:
                raise ValidationError(f"{target}.osTypes[{i}] must be Windows or Linux",
                                      target=f"{target}.osTypes[{i}]")
        out["osTypes"] = [canonical[o.lower()] for o in os_types]
    if _criterion(raw, "locations"):
        out["locations"] = _names(raw["locations"], f"{target}.locations")
    if given(raw, "tagSettings"):
        settings = json_object(raw["tagSettings"], f"{target}.tagSettings")
        reject_unknown(settings, {"tags", "filterOperator"}, f"{target}.tagSettings")
        raw_tags = settings.get("tags")
        tags = json_object({} if raw_tags is None else raw_tags, f"{target}.tagSettings.tags")
        tags = {key.strip(): _names(values, f"{target}.tagSettings.tags.{key}") for key, values in tags.items()}
        operator = settings.get("filterOperator")
        operator = "Any" if operator is None else operator
        if not isinstance(operator, str) or operator.strip().lower() not in ("any", "all"):
            raise ValidationError(f"{target}.tagSettings.filterOperator must be Any or All",
                                  target=f"{target}.tagSettings.filterOperator")
        out["tagSettings"] = {"tags": tags, "filterOperator": operator.strip().title()}
    return out


def _criterion(raw: dict[str, Any], name: str) -> bool:
    """Given and not empty: null and [] restrict nothing (see the module docstring)."""
    return given(raw, name) and raw[name] != []


def lists_type(flt: dict[str, Any], resource_type: str) -> bool:
    """Can a machine of this resource type (e.g. Microsoft.HybridCompute/machines) pass the filter at all?"""
    return "resourceTypes" not in flt or resource_type.lower() in {t.lower() for t in flt["resourceTypes"]}


def filter_matches(flt: dict[str, Any], vm: dict[str, Any], os_type: str) -> bool:
    """Does a machine (a VM or an Arc machine), as ARM lists it, pass the filter?"""
    if not flt:
        return True
    if not lists_type(flt, str(vm.get("type") or "Microsoft.Compute/virtualMachines")):
        return False
    group = vm.get("id", "").split("/")[4].lower() if vm.get("id", "").count("/") >= 4 else ""
    if "resourceGroups" in flt and group not in {g.lower() for g in flt["resourceGroups"]}:
        return False
    if "osTypes" in flt and os_type not in flt["osTypes"]:
        return False
    if "locations" in flt and normalise_location(str(vm.get("location") or "")) not in {
            normalise_location(loc) for loc in flt["locations"]}:
        return False
    settings = flt.get("tagSettings")
    if settings and settings.get("tags"):
        vm_tags = {str(k).lower(): str(v) for k, v in (vm.get("tags") or {}).items()}
        hits = [vm_tags.get(k.lower()) in set(values) for k, values in settings["tags"].items()]
        return all(hits) if settings["filterOperator"] == "All" else any(hits)
    return True
