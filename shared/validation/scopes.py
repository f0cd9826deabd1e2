"""Discovery scopes: a subscription or one resource group, as ARM resource ids."""

from __future__ import annotations

import re

from shared.core.errors import ValidationError
from shared.core.ids import ScopeRef
from shared.validation.resource_ids import _GUID, _RG

_SCOPE = re.compile(rf"^/subscriptions/(?P<sub>{_GUID})(?:/resourceGroups/(?P<rg>{_RG}))?/?$", re.IGNORECASE)


def parse_scope(value: object, *, target: str) -> ScopeRef:
    if not isinstance(value, str) or not (match := _SCOPE.match(value.strip())):
        raise ValidationError(
            f"{target} is not a scope: expected /subscriptions/{{subscriptionId}} or "
            f"/subscriptions/{{subscriptionId}}/resourceGroups/{{resourceGroupName}}, got {str(value)[:300]!r}",
            target=target, code="InvalidScope",
        )
    return ScopeRef(match["sub"].lower(), match["rg"])


def parse_scopes(values: object, *, target: str, max_scopes: int = 100) -> tuple[ScopeRef, ...]:
    """A non-empty list of distinct scopes; a resource group inside a listed subscription is redundant."""
    if not isinstance(values, list | tuple) or not values:
        raise ValidationError(f"{target} must be a non-empty array of scope ids", target=target)
    if len(values) > max_scopes:
        raise ValidationError(f"{target} has {len(values)} entries; at most {max_scopes}", target=target)
    scopes = [parse_scope(v, target=f"{target}[{i}]") for i, v in enumerate(values)]
    seen: set[tuple[str, str | None]] = set()
    for i, scope in enumerate(scopes):
        key = (scope.subscription_id, (scope.resource_group or "").lower() or None)
        if key in seen or (scope.resource_group and (scope.subscription_id, None) in seen):
            raise ValidationError(f"{target}[{i}] repeats or is inside another scope", target=f"{target}[{i}]")
        seen.add(key)
    subs = {s.subscription_id for s in scopes if s.resource_group is None}
    for i, scope in enumerate(scopes):
        if scope.resource_group and scope.subscription_id in subs:
            raise ValidationError(f"{target}[{i}] is inside a subscription also listed", target=f"{target}[{i}]")
    return tuple(scopes)


def covering_scopes(scopes: list[ScopeRef]) -> tuple[ScopeRef, ...]:
    """Drop repeats and resource groups inside a listed subscription (settings are forgiving; bodies are not)."""
    subs = {s.subscription_id for s in scopes if s.resource_group is None}
    kept: dict[tuple[str, str | None], ScopeRef] = {}
    for scope in scopes:
        if scope.resource_group and scope.subscription_id in subs:
            continue
        kept.setdefault((scope.subscription_id, (scope.resource_group or "").lower() or None), scope)
    return tuple(kept.values())
