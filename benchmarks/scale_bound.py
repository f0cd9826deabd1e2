"""The best makespan any client could reach, given the throttling buckets and the operations' durations.

Per subscription (each has its own ARM and Compute buckets): the i-th installPatches (0-based) cannot be sent
before every bucket it draws from has a token for it, i.e. not before max(0, (i + 1 - burst) / rate) for the
ARM write bucket and for Compute's guest-patch subscription bucket, which all start full. Given those
earliest start times and the durations the operations actually took, the smallest possible "last one done" pairs
the longest operations with the earliest starts (sorting both ways is optimal for max(start + duration)). A
finished operation must also be seen by one read, so ARM's read bucket gives a second floor. The per-VM guest-patch
bucket (6 burst) never binds one installPatches per VM. Sources: ARM's token-bucket limits
(learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling) and Compute's
throttling guide (learn.microsoft.com/troubleshoot/azure/virtual-machines/troubleshooting-throttling-errors).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budgets:
    """One subscription's buckets: burst size in requests, refill in requests per (real) second; None: no bucket."""

    read_burst: int
    read_rate: float
    write_burst: int
    write_rate: float
    patch_sub_burst: int | None
    patch_sub_rate: float | None


def earliest_starts(n: int, buckets: list[tuple[int, float]]) -> list[float]:
    """Seconds from the start at which the i-th of n requests, each taking a token from every bucket, can go."""
    return [max([0.0, *((i + 1 - burst) / rate for burst, rate in buckets)]) for i in range(n)]


def subscription_bound(durations: list[float], budgets: Budgets, *, in_order: bool = False) -> float:
    """Lower bound on the makespan (seconds) of one subscription's installs with these durations.

    `in_order`: the machines start in the order given: the request's, as a client that cannot know an
    installation's duration before it runs starts them (with durations of 1-11 minutes, the last machines
    started at the buckets' pace then take their own time, which pairing cannot hide), or the order a
    prediction gave (scale.py predicted_order_bound); otherwise the longest go first (a clairvoyant client's
    bound: what longest first with perfect predictions reaches)."""
    if not durations:
        return 0.0
    buckets = [(budgets.write_burst, budgets.write_rate)]
    if budgets.patch_sub_burst is not None and budgets.patch_sub_rate:
        buckets.append((budgets.patch_sub_burst, budgets.patch_sub_rate))
    starts = earliest_starts(len(durations), buckets)
    order = durations if in_order else sorted(durations, reverse=True)
    paired = max(s + d for s, d in zip(starts, order, strict=True))
    reads = max(0.0, (len(durations) - budgets.read_burst) / budgets.read_rate)
    return max(paired, reads)


def makespan_bound(durations_by_subscription: dict[str, list[float]], budgets: Budgets, *,
                   in_order: bool = False) -> float:
    """Lower bound on the whole fleet's makespan: the slowest subscription's (they share no bucket)."""
    return max((subscription_bound(d, budgets, in_order=in_order) for d in durations_by_subscription.values()),
               default=0.0)
