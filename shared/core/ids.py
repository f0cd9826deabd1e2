"""Azure resource ids as values: a machine (`MachineRef`: an Azure VM or an Azure Arc-enabled server) and a
subscription or resource group (`ScopeRef`). Parsing and validation of the strings callers send live in
shared/validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MachineKind = Literal["virtualMachines", "hybridMachines"]
VIRTUAL_MACHINES: MachineKind = "virtualMachines"
HYBRID_MACHINES: MachineKind = "hybridMachines"
MACHINE_KINDS: tuple[MachineKind, ...] = (VIRTUAL_MACHINES, HYBRID_MACHINES)
# The ARM resource type of each kind (Microsoft.Compute for Azure VMs, Microsoft.HybridCompute for Arc).
RESOURCE_TYPES: dict[MachineKind, str] = {
    VIRTUAL_MACHINES: "Microsoft.Compute/virtualMachines",
    HYBRID_MACHINES: "Microsoft.HybridCompute/machines",
}
# Storage keys of VMs predate Arc and stay as they were ("sub|rg|name"); an Arc machine's key carries this suffix,
# so a VM and an Arc machine of one name in one resource group are two machines.
_HYBRID_KEY_SUFFIX = "|hybridmachines"


@dataclass(frozen=True)
class MachineRef:
    """A machine, keeping the caller's casing for display; ARM compares names case-insensitively.
    `kind`: virtualMachines (Microsoft.Compute/virtualMachines) or hybridMachines (Microsoft.HybridCompute/machines)."""

    subscription_id: str
    resource_group: str
    name: str
    kind: MachineKind = VIRTUAL_MACHINES

    @property
    def is_hybrid(self) -> bool:
        return self.kind == HYBRID_MACHINES

    @property
    def resource_type(self) -> str:
        return RESOURCE_TYPES[self.kind]

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/{self.resource_type}/{self.name}"
        )

    @property
    def key(self) -> str:
        """The machine's storage key: case-folded, and free of the characters Table keys forbid (/ \\ # ?).
        VMs: `sub|rg|name` (unchanged since before Arc); Arc machines: `sub|rg|name|hybridmachines`."""
        base = f"{self.subscription_id}|{self.resource_group}|{self.name}".lower()
        return base + _HYBRID_KEY_SUFFIX if self.is_hybrid else base

    @classmethod
    def from_key(cls, key: str) -> MachineRef:
        sub, rg, name, *rest = key.split("|")
        return cls(sub, rg, name, HYBRID_MACHINES if rest else VIRTUAL_MACHINES)


def machine_kind_of(resource_id: str) -> MachineKind:
    """The kind of a stored resource id (already validated): hybridMachines for a HybridCompute id."""
    return HYBRID_MACHINES if "/providers/microsoft.hybridcompute/" in resource_id.lower() else VIRTUAL_MACHINES


@dataclass(frozen=True)
class ScopeRef:
    subscription_id: str
    resource_group: str | None = None

    @property
    def resource_id(self) -> str:
        base = f"/subscriptions/{self.subscription_id}"
        return f"{base}/resourceGroups/{self.resource_group}" if self.resource_group else base

