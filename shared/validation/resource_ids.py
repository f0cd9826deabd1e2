"""Machine resource ids (Azure VMs and Azure Arc-enabled servers): parsing, validation against Azure's naming
rules, and Table keys."""

from __future__ import annotations

import re
import unicodedata

from shared.core.errors import ValidationError, quoted
from shared.core.ids import HYBRID_MACHINES, MachineRef

_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
GUID = re.compile(_GUID, re.ASCII)
# Resource group: 1-90 of letters or digits as .NET's Char.IsLetterOrDigit sees them (Unicode categories
# L* and Nd, one UTF-16 unit each, so no character outside the BMP), underscore, parentheses, hyphen,
# period; no trailing period (learn.microsoft.com/azure/azure-resource-manager/management/
# resource-name-rules#microsoftresources). The pattern only finds the segment; is_resource_group_name
# applies the rule, which Python's Unicode `\w` (it also takes `½`, `²` and letters past U+FFFF) cannot.
_RG = r"[^/]{1,90}"
_RG_PUNCTUATION = frozenset("-_().")
_LETTER_OR_DIGIT = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nd"})


def is_resource_group_name(name: str) -> bool:
    return (0 < len(name) <= 90 and not name.endswith(".")
            and all(c in _RG_PUNCTUATION or (ord(c) <= 0xFFFF and unicodedata.category(c) in _LETTER_OR_DIGIT)
                    for c in name))

# VM resource name: 1-64 of alphanumerics, underscore, period, hyphen; starts with alphanumeric or
# underscore... Azure rejects a leading underscore for Linux and trailing period/hyphen for both.
_VM = r"[A-Za-z0-9_][-A-Za-z0-9_.]{0,62}[A-Za-z0-9_]|[A-Za-z0-9]"
# ASCII: under IGNORECASE alone, U+212A (the Kelvin sign) would match `k` and U+017F (long s) `s`.
_VM_ID = re.compile(
    rf"/subscriptions/(?P<sub>{_GUID})/resourceGroups/(?P<rg>{_RG})"
    rf"/providers/Microsoft\.Compute/virtualMachines/(?P<vm>{_VM})",
    re.IGNORECASE | re.ASCII,
)
# Arc-enabled server name: the `machineName` path parameter of HybridCompute.json (stable 2024-07-10):
# pattern ^[a-zA-Z0-9-_\.]{1,54}$.
_HYBRID = r"[A-Za-z0-9_.-]{1,54}"
_HYBRID_ID = re.compile(
    rf"/subscriptions/(?P<sub>{_GUID})/resourceGroups/(?P<rg>{_RG})"
    rf"/providers/Microsoft\.HybridCompute/machines/(?P<machine>{_HYBRID})",
    re.IGNORECASE | re.ASCII,
)


_TYPES = {"microsoft.compute/virtualmachines": ("Microsoft.Compute/virtualMachines", re.compile(_VM, re.ASCII),
                                                 "a VM name: 1-64 ASCII letters, digits, '_', '.' or '-', starting "
                                                 "with a letter, digit or '_', not ending with '.' or '-' (one "
                                                 "character: a letter or digit)"),
          "microsoft.hybridcompute/machines": ("Microsoft.HybridCompute/machines", re.compile(_HYBRID, re.ASCII),
                                               "an Arc-enabled server's name: 1-54 ASCII letters, digits, '_', '.' "
                                               "or '-'")}


def id_problem(text: str, *, arc: bool = True) -> str:
    """The first part of `text` that keeps it from being a machine resource id (an Azure VM's, or with `arc` an
    Arc-enabled server's), said so that a caller sees the typo: an error message quotes only the start of a
    value (errors.quoted), and a resource id's mistake is usually near its end. Segment names and rules as in
    parse_machine_id; literals are compared case-insensitively, as ARM does."""
    types = {k: t for k, t in _TYPES.items() if arc or k == "microsoft.compute/virtualmachines"}
    expected_type = " or ".join(t[0] for t in types.values())
    text = text.strip()
    if not text:
        return "it is empty"
    if not text.startswith("/"):
        return "it does not start with /subscriptions/"
    if text == "/":
        return "it is only '/'"
    parts = text.split("/")
    if parts[-1] == "" and len(parts) > 2:
        if len(parts) == 10:
            return "it ends with a '/'"
        parts.pop()  # ".../providers/": it ends there
    doubled = next((i for i, part in enumerate(parts[1:], start=1) if not part), None)
    if doubled is not None:
        return f"a '/' is doubled after {quoted(parts[doubled - 1])}" if doubled > 1 else "it starts with '//'"
    literals = {1: "subscriptions", 3: "resourceGroups", 5: "providers"}
    for i, part in enumerate(parts[1:9], start=1):
        if i in literals and part.lower() != literals[i].lower():
            return f"{quoted(part)} stands where {literals[i]!r} belongs (segment {i})"
        if i == 2 and not GUID.fullmatch(part):
            return f"the subscription id {quoted(part)} is not a GUID"
        if i == 4 and not is_resource_group_name(part):
            return (f"the resource group name {quoted(part)} is not 1-90 letters, digits, '-', '_', '.', '(' or "
                    "')', not ending with '.'")
        if i == 7 and f"{parts[6]}/{part}".lower() not in types:
            return f"the resource type {quoted(parts[6] + '/' + part)} is not {expected_type}"
        if i == 8:
            _, rule, said = types[f"{parts[6]}/{parts[7]}".lower()]
            if not rule.fullmatch(part):
                other = next((c for c in part if not c.isascii()), None)
                held = f" (it holds {other!r}, U+{ord(other):04X})" if other else ""
                return f"{quoted(part)} is not {said}{held}"
    if len(parts) < 9:
        return f"it ends after {quoted(parts[-1])}: the id names no machine"
    if len(parts) > 9:
        return f"{quoted('/'.join(parts[9:]))} follows the machine's name"
    return "its parts do not read as one"  # not reached for an id the patterns refused; said rather than raised


def parse_vm_id(value: object, *, target: str) -> MachineRef:
    """Parse `/subscriptions/{guid}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}`."""
    if not isinstance(value, str):
        raise ValidationError(f"{target} must be a string resource id", target=target)
    match = _VM_ID.fullmatch(value.strip())
    if not match or not is_resource_group_name(match["rg"]):
        raise ValidationError(
            f"{target} is not a virtual machine resource id ({id_problem(value, arc=False)}): expected "
            "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}"
            "/providers/Microsoft.Compute/virtualMachines/{vmName}, got " + quoted(value),
            target=target,
            code="InvalidResourceId",
        )
    return MachineRef(match["sub"].lower(), match["rg"], match["vm"])


def vm_from_route(params: dict[str, str], *, target: str = "machine") -> MachineRef:
    """A machine addressed by route segments {subscriptionId}/{resourceGroupName}/{vmName} (an Azure VM) or
    .../{machineName} (an Arc-enabled server, on the Microsoft.HybridCompute/machines routes): each segment is
    checked on its own, so a segment holding more path (`%2F` arrives decoded) is refused, not re-read."""
    hybrid = "machineName" in params
    parts = [params.get(k) or "" for k in ("subscriptionId", "resourceGroupName",
                                           "machineName" if hybrid else "vmName")]
    if any("/" in p for p in parts):
        raise ValidationError(f"{target}: a route segment holds a '/'", target=target, code="InvalidResourceId")
    sub, rg, name = parts
    if hybrid:
        return parse_machine_id(f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.HybridCompute/machines/"
                                f"{name}", target=target)
    return parse_vm_id(f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}",
                       target=target)


def parse_machine_id(value: object, *, target: str) -> MachineRef:
    """A machine PatchPilot can patch: an Azure VM
    (`/subscriptions/{guid}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}`) or an Azure
    Arc-enabled server (`.../providers/Microsoft.HybridCompute/machines/{machineName}`).
    Raises ValidationError (code InvalidResourceId) naming `target` for anything else."""
    if not isinstance(value, str):
        raise ValidationError(f"{target} must be a string resource id", target=target)
    match = _HYBRID_ID.fullmatch(value.strip())
    if match is None:
        if _VM_ID.fullmatch(value.strip()):
            return parse_vm_id(value, target=target)
    elif is_resource_group_name(match["rg"]):
        return MachineRef(match["sub"].lower(), match["rg"], match["machine"], HYBRID_MACHINES)
    raise ValidationError(
        f"{target} is not a machine resource id ({id_problem(value)}): expected "
        "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}"
        "/providers/Microsoft.Compute/virtualMachines/{vmName} or "
        "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}"
        "/providers/Microsoft.HybridCompute/machines/{machineName}, got " + quoted(value),
        target=target,
        code="InvalidResourceId",
    )
