"""Pure rollout decisions: which wave each machine is in, in which order a wave's machines start, and which
outcomes spend the error budget."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from shared.core.counters import failure_kinds, first_failure_kind
from shared.validation.rollout import DEFAULT_FAILURE_ON, resolve


def assign_waves(keys: list[str], waves: list[dict[str, Any]]) -> dict[str, int]:
    """Machine key -> wave index. Waves naming machines or selecting them claim first, in wave order;
    sized waves then take from the rest in request order; anything left over joins the last wave."""
    if not waves:
        return dict.fromkeys(keys, 0)
    total = len(keys)
    remaining = list(keys)
    assigned: dict[str, int] = {}
    for index, wave in enumerate(waves):
        if "machines" in wave:
            chosen = [k for k in remaining if k in set(wave["machines"])]
        elif "selector" in wave:
            chosen = [k for k in remaining if _selected(k, wave["selector"])]
        else:
            continue
        for key in chosen:
            assigned[key] = index
        remaining = [k for k in remaining if k not in assigned]
    for index, wave in enumerate(waves):
        if "size" in wave:
            count = len(remaining) if wave["size"] == "rest" else resolve(wave["size"], total) or 0
            for key in remaining[:count]:
                assigned[key] = index
            remaining = remaining[count:]
    for key in remaining:
        assigned[key] = len(waves) - 1
    return assigned


def start_ranks(order: list[str], waves: Mapping[str, int], predicted: Mapping[str, float], *,
                longest_first: bool) -> dict[str, int]:
    """Machine key -> its place (0-based) in its wave's start order: `order` (the request's), or with
    `longest_first` the longest predicted seconds first (a stable sort: equal predictions keep `order`; a machine
    without a prediction counts as 0 s). Every key of `order` must have a wave."""
    by_wave: dict[int, list[str]] = defaultdict(list)
    for key in order:
        by_wave[waves[key]].append(key)
    ranks: dict[str, int] = {}
    for members in by_wave.values():
        if longest_first:
            members.sort(key=lambda k: -predicted.get(k, 0.0))
        ranks.update((key, rank) for rank, key in enumerate(members))
    return ranks


def _selected(key: str, selector: dict[str, list[str]]) -> bool:
    sub, group = key.split("|")[:2]  # MachineRef.key; an Arc machine's has a 4th part
    return (not selector.get("subscriptions") or sub in selector["subscriptions"]) and (
        not selector.get("resourceGroups") or group in selector["resourceGroups"])


def failure_kind(target: Mapping[str, Any], failure_on: list[str] | None = None) -> str | None:
    """Why a finished machine counts against maxFailures, or None: the first of its failure kinds
    (shared.core.counters.failure_kinds) that `failure_on` names. Skipped machines never do, nor do
    OutcomeUnknown ones (Azure may still be patching them: shared.core.states)."""
    return first_failure_kind(failure_kinds(target), failure_on or DEFAULT_FAILURE_ON)
