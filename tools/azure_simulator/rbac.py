"""Azure RBAC for the simulated principal: role assignments (scope + actions) and ARM's 403 AuthorizationFailed.

A role assignment grants its actions at its scope and at every scope below it (a subscription assignment covers
its resource groups, VMs and `/subscriptions/{sub}/providers/...` paths; a resource-group assignment covers only
what lies under that resource group). Actions match like a role definition's `Actions`: case-insensitive, `*`
matches any run of characters (`*`, `Microsoft.Compute/*`, `*/read`).

Operation-status URLs lie under the subscription, not under the resource group of the VM:
`/subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/operations/{id}` needs
`Microsoft.Compute/locations/operations/read` at the subscription, which a resource-group assignment never covers
(Azure Update Manager's permission table lists its scope as "Machine subscription":
https://learn.microsoft.com/azure/update-manager/roles-permissions).

The 403 is ARM's (message as ARM writes it, e.g. in Azure/ARO-RP#66 and Azure/azure-cli#29802):
`{"error": {"code": "AuthorizationFailed", "message": "The client '<client id>' with object id '<object id>' does
not have authorization to perform action '<action>' over scope '<scope>' or the scope is invalid. If access was
recently granted, please refresh your credentials."}}`
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

from tools.azure_simulator.errors import ArmError

EVERYTHING = "*"


@dataclass(frozen=True)
class RoleAssignment:
    """`actions` granted at `scope` ("/", "/subscriptions/<id>", "/subscriptions/<id>/resourceGroups/<rg>", ...)."""

    scope: str
    actions: tuple[str, ...] = (EVERYTHING,)

    @classmethod
    def parse(cls, value: RoleAssignment | dict[str, Any]) -> RoleAssignment:
        """From a RoleAssignment or `{"scope": str, "actions": [str, ...]}` (actions default to everything)."""
        if isinstance(value, RoleAssignment):
            return value
        if not isinstance(value, dict) or not isinstance(value.get("scope"), str):
            # ValueError, not TypeError: the admin API answers ValueErrors with a 400.
            raise ValueError(f"a role assignment needs a 'scope' string, got {value!r}")  # noqa: TRY004
        scope = value["scope"].strip()
        if not scope.startswith("/"):
            raise ValueError(f"role assignment scope must start with '/', got {scope!r}")
        actions = value.get("actions", [EVERYTHING])
        if isinstance(actions, str) or not all(isinstance(a, str) and a.strip() for a in actions):
            raise ValueError(f"role assignment actions must be a list of action strings, got {actions!r}")
        return cls(scope, tuple(a.strip() for a in actions))

    def covers_scope(self, scope: str) -> bool:
        mine = self.scope.rstrip("/").lower()
        theirs = scope.rstrip("/").lower()
        return mine in ("", theirs) or theirs.startswith(mine + "/")

    def grants(self, action: str) -> bool:
        return any(_action_pattern(a).fullmatch(action) for a in self.actions)

    def as_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "actions": list(self.actions)}


def _action_pattern(action: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in action.split("*")), re.IGNORECASE)


class Authorizer:
    """The principal's role assignments; None means everything is allowed (the simulator's default)."""

    def __init__(self, assignments: list[Any] | None = None) -> None:
        self._lock = threading.Lock()
        self._assignments: list[RoleAssignment] | None = None
        self.configure(assignments)

    def configure(self, assignments: list[Any] | None) -> list[dict[str, Any]] | None:
        parsed = None if assignments is None else [RoleAssignment.parse(a) for a in assignments]
        with self._lock:
            self._assignments = parsed
        return self.as_list()

    def as_list(self) -> list[dict[str, Any]] | None:
        with self._lock:
            return None if self._assignments is None else [a.as_dict() for a in self._assignments]

    @property
    def enforcing(self) -> bool:
        return self._assignments is not None

    def allowed(self, action: str, scope: str) -> bool:
        with self._lock:
            assignments = self._assignments
        if assignments is None:
            return True
        return any(a.covers_scope(scope) and a.grants(action) for a in assignments)

    def check(self, action: str, scope: str, client_id: str, object_id: str) -> None:
        """Raise ARM's 403 AuthorizationFailed unless some assignment grants `action` at or above `scope`."""
        if self.allowed(action, scope):
            return
        raise ArmError(
            403,
            "AuthorizationFailed",
            f"The client '{client_id}' with object id '{object_id}' does not have authorization to perform action "
            f"'{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please "
            "refresh your credentials.",
        )
