"""Azure resource ids as values: a VM (`VmRef`) and a subscription or resource group (`ScopeRef`).
Parsing and validation of the strings callers send live in shared/validation."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VmRef:
    """A VM, keeping the caller's casing for display; ARM compares names case-insensitively."""

    subscription_id: str
    resource_group: str
    name: str

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Compute/virtualMachines/{self.name}"
        )

    @property
    def key(self) -> str:
        """The machine's storage key: case-folded, and free of the characters Table keys forbid (/ \\ # ?)."""
        return f"{self.subscription_id}|{self.resource_group}|{self.name}".lower()


@dataclass(frozen=True)
class ScopeRef:
    subscription_id: str
    resource_group: str | None = None

    @property
    def resource_id(self) -> str:
        base = f"/subscriptions/{self.subscription_id}"
        return f"{base}/resourceGroups/{self.resource_group}" if self.resource_group else base

