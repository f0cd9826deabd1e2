"""Azure VM resource ids: parsing, validation against Azure's naming rules, and Table keys."""

from __future__ import annotations

import re

from shared.core.errors import ValidationError
from shared.core.ids import VmRef

_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# Resource group: 1-90 of alphanumerics, underscore, parentheses, hyphen, period; no trailing period.
_RG = r"[-\w().]{0,89}[-\w()]"
# VM resource name: 1-64 of alphanumerics, underscore, period, hyphen; starts with alphanumeric or
# underscore... Azure rejects a leading underscore for Linux and trailing period/hyphen for both.
_VM = r"[A-Za-z0-9_][-A-Za-z0-9_.]{0,62}[A-Za-z0-9_]|[A-Za-z0-9]"
_VM_ID = re.compile(
    rf"^/subscriptions/(?P<sub>{_GUID})/resourceGroups/(?P<rg>{_RG})"
    rf"/providers/Microsoft\.Compute/virtualMachines/(?P<vm>{_VM})$",
    re.IGNORECASE,
)


def parse_vm_id(value: object, *, target: str) -> VmRef:
    """Parse `/subscriptions/{guid}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}`."""
    if not isinstance(value, str):
        raise ValidationError(f"{target} must be a string resource id", target=target)
    match = _VM_ID.match(value.strip())
    if not match:
        raise ValidationError(
            f"{target} is not a virtual machine resource id: expected "
            "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}"
            "/providers/Microsoft.Compute/virtualMachines/{vmName}, got " + repr(value[:300]),
            target=target,
            code="InvalidResourceId",
        )
    return VmRef(match["sub"].lower(), match["rg"], match["vm"])
