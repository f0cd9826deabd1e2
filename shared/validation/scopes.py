"""Discovery scopes: a subscription or one resource group, as ARM resource ids."""

from __future__ import annotations

import re

from shared.core.errors import ValidationError, quoted
from shared.core.ids import ScopeRef
from shared.validation.resource_ids import _GUID, _RG, GUID, is_resource_group_name

_SCOPE = re.compile(rf"/subscriptions/(?P<sub>{_GUID})(?:/resourceGroups/(?P<rg>{_RG}))?/?",
                    re.IGNORECASE | re.ASCII)


def parse_scope(value: object, *, target: str) -> ScopeRef:
    match = _SCOPE.fullmatch(value.strip()) if isinstance(value, str) else None
    if not match or (match["rg"] is not None and not is_resource_group_name(match["rg"])):
        raise ValidationError(
            f"{target} is not a scope: expected /subscriptions/{{subscriptionId}} or "
            f"/subscriptions/{{subscriptionId}}/resourceGroups/{{resourceGroupName}}, got {quoted(value)}",
            target=target, code="InvalidScope",
        )
    return ScopeRef(match["sub"].lower(), match["rg"])


def scope_from_query(subscription_id: str | None, resource_group: str | None) -> ScopeRef | None:
    """`?subscriptionId=…&resourceGroup=…` filters: each must be only its own name (a subscription GUID,
    a resource group name), never a path that would be read as more of a resource id."""
    if resource_group and not subscription_id:
        raise ValidationError("resourceGroup needs subscriptionId", target="resourceGroup")
    if not subscription_id:
        return None
    if not GUID.fullmatch(subscription_id):
        raise ValidationError(f"subscriptionId must be a subscription GUID, got {quoted(subscription_id)}",
                              target="subscriptionId")
    if resource_group is not None and resource_group != "" and not is_resource_group_name(resource_group):
        raise ValidationError(f"resourceGroup must be a resource group name, got {quoted(resource_group)}",
                              target="resourceGroup")
    return ScopeRef(subscription_id.lower(), resource_group or None)


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
