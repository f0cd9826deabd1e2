"""The ARM call budget as a GCRA (generic cell rate algorithm): pure math, no I/O, times in seconds.

A bucket of `burst` tokens refilling at `rate` tokens/s is kept as ONE number, the theoretical arrival
time `tat` (epoch seconds): the bucket is full when `tat <= now`, and each token taken moves `tat` on by
`interval = 1/rate`. Taking `k` tokens at `now` is allowed when `max(tat, now) + k·interval - now <=
burst·interval`; otherwise it is allowed `wait` seconds later. `reserve` always takes the tokens (the new
`tat` is stored), so a caller that must wait holds its place: it comes back after `wait` and calls without
reserving again. One scalar per bucket is what makes a shared budget one conditional Table write.

Azure's limits (defaults of the settings that override them):
- ARM, per subscription and region, token bucket (learn.microsoft.com/azure/azure-resource-manager/
  management/request-limits-and-throttling, "Migrating to regional throttling and token bucket algorithm"):
  reads 250 burst, 25/s; writes 200 burst, 10/s. Remaining tokens come back in
  `x-ms-ratelimit-remaining-subscription-reads` / `-writes`.
- Compute's guest-patch operations (installPatches, assessPatches), per subscription: 600 burst, 200/min
  (and per VM 6 burst, 2/min, which one POST per machine respects by itself); remaining tokens come back in
  `x-ms-ratelimit-remaining-resource: Microsoft.Compute/VMGuestPatchOperationSubscriptionMaximum;599,...`
  (learn.microsoft.com/troubleshoot/azure/virtual-machines/troubleshooting-throttling-errors).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.arm.calls import GUEST_PATCH, POLLS, READS, WRITES  # the budgets' names (which call draws on which)

COMPUTE_GUEST_PATCH_POLICY = "Microsoft.Compute/VMGuestPatchOperationSubscriptionMaximum"
COMPUTE_GUEST_PATCH_VM_POLICY = "Microsoft.Compute/VMGuestPatchOperationResource"  # per VM (Azure CLI recording)
SLACK_TOKENS = 2  # a header must show this many tokens fewer than we account before it moves `tat`


@dataclass(frozen=True)
class Bucket:
    """`burst` tokens, refilled at `rate` tokens per second; `share` of ARM's bucket it stands for
    (polls: POLL_READ_PERCENT of the reads, reads the rest: observe_shared reads ARM's header with it).

    `late` seconds: how late a reserved token may be spent. A queue delivers a delayed message late, and
    tokens spent late can pile up where ARM's bucket has no room; keeping `rate·late` tokens of the burst
    back makes any schedule we grant, spent up to `late` seconds late, still fit ARM's bucket: a window of
    w seconds holds the tokens due in w + late seconds, at most (burst - rate·late) + rate·(w + late)."""

    name: str
    burst: float
    rate: float
    share: float = 1.0
    late: float = 0.0

    @property
    def interval(self) -> float:
        return 1.0 / self.rate

    @property
    def tolerance(self) -> float:
        """How far ahead of now `tat` may run: the burst we grant (at least one token) in seconds."""
        return max(1.0, self.burst - self.rate * self.late) * self.interval


@dataclass(frozen=True)
class Grant:
    tat: float  # the bucket's new theoretical arrival time, to store
    wait: float  # seconds from now until the tokens may be spent (0: now)


def reserve(bucket: Bucket, tat: float, now: float, k: int = 1, not_before: float = 0.0) -> Grant:
    """Take `k` tokens; they may be spent `wait` seconds from `now` (at least `not_before`).

    The k tokens are taken one `interval` apart: the i-th (0-based) of them is due at
    `slot(bucket, grant, i, k)`; `wait` is when the last one is, for k = 1 the only one."""
    start = max(tat, now + not_before)
    new_tat = start + k * bucket.interval
    return Grant(new_tat, max(not_before, new_tat - bucket.tolerance - now, 0.0))


def reserve_all(buckets: Mapping[str, tuple[Bucket, float]], now: float, k: int = 1) -> tuple[dict[str, float], float]:
    """Take `k` tokens from each bucket {name: (bucket, tat)} for one call spent at a common time:
    returns ({name: new tat}, wait). A bucket with room is charged as of that later time (its tokens are
    then spent when the call goes, never earlier)."""
    wait = max((reserve(b, tat, now, k).wait for b, tat in buckets.values()), default=0.0)
    return {name: reserve(b, tat, now, k, wait).tat for name, (b, tat) in buckets.items()}, wait


def slots(bucket: Bucket, tat: float, now: float, k: int) -> tuple[float, list[float]]:
    """A block of `k` tokens taken at once (a dispatcher's start slots): the new `tat` and, for each
    token, the seconds from now at which it may be spent (non-decreasing)."""
    start = max(tat, now)
    due = [max(0.0, start + (i + 1) * bucket.interval - bucket.tolerance - now) for i in range(k)]
    return start + k * bucket.interval, due


def penalize(bucket: Bucket, tat: float, now: float, retry_after: float) -> float:
    """After a 429: nothing is spent before `retry_after` seconds and then the bucket refills from empty
    (at most one token is there), whatever we had accounted."""
    return max(tat, now + retry_after + bucket.tolerance - bucket.interval)


def observe(bucket: Bucket, tat: float, now: float, remaining: float) -> float | None:
    """ARM says `remaining` tokens are left of a bucket that is ours alone (writes, guest patches; the two
    shares of ARM's reads: observe_shared): the `tat` that implies, if it is later than ours by more than
    SLACK_TOKENS (someone else spends from the same budget, or our accounting is behind); else None.
    A header never moves `tat` back: tokens we reserved and have not spent yet are not in ARM's count."""
    used = bucket.burst - max(0.0, remaining)
    implied = now + used * bucket.interval
    return implied if implied > max(tat, now) + SLACK_TOKENS * bucket.interval else None


def observe_shared(bucket: Bucket, tat: float, now: float, remaining: float, *,
                   own_tat: float, ours: float) -> float | None:
    """ARM's read limit is one bucket that our reads and polls buckets share (each its `share` of it): its
    remaining-reads header counts the calls of both, and every other client's. `ours`: how many of ARM's read
    tokens this process's calls still account for (a GCRA of every read call we sent, of either share, at ARM's
    own refill rate, capped at its burst: ARM refills its bucket at that rate whoever spent it). What the header
    shows used beyond `ours` is someone else's (another tool in the subscription, or another instance of this
    app, whose reservations are in the shared rows already, so that errs slow). Each share is moved by its part
    of it, counted from `own_tat` (a GCRA of this share's calls sent, at the share's rate, so the same header
    moves it once): the `tat` that implies, if later than ours by more than SLACK_TOKENS, else None.

    Why not `observe` with the header scaled by the share, as before: our own polls go in bursts (a lease, a
    queue batch), and a burst of 60 polls read as "our reads share spent 30" moved the reads bucket on by
    2.4 s, so the starts due then were paced for a second or three and queued again: 0.68 a machine at
    10,000 machines in one subscription (docs/performance.md). Why `ours` drains at ARM's rate, not each
    share's: a share's calls drain from ARM's bucket at ARM's rate, so counting them at the share's slower rate
    took up to (burst - share's burst) of another client's reads for ours, and missed them."""
    arm_burst = bucket.burst / bucket.share
    unexplained = max(0.0, arm_burst - max(0.0, remaining) - min(max(0.0, ours), arm_burst))
    implied = max(own_tat, now) + unexplained * bucket.share * bucket.interval
    return implied if implied > max(tat, now) + SLACK_TOKENS * bucket.interval else None


SPACING_GAIN = 0.3  # seconds of spacing added per second while the backlog is one tolerance over the target
SPACING_TARGET = 0.25  # the backlog the spacing steers to, as a share of the bucket's tolerance (its burst in use)
SPACING_ERROR_MAX = 2.0  # tolerances: a backlog further on (a wait, a 429, another client) counts as this much
SPACING_STEP_MAX = 5.0  # seconds: one reading grows the spacing for at most this long (the first after a quiet spell)


def spacing(bucket: Bucket, current: float, backlog: float, elapsed: float, ceiling: float) -> float:
    """The next value of a bucket's spacing (seconds, in [0, ceiling]): how much later than their earliest
    time its calls that can wait (a poll, which ARM's Retry-After lets come at or after a time) should be
    asked for, so that their demand fits the bucket instead of finding it spent and coming back twice.

    `backlog`: how far the bucket's schedule ran ahead of now at a reservation just taken (the token's place in
    it: one `interval` when the bucket had its whole burst, above `tolerance` when the call must wait), or 0 for
    no reservation at all (a quiet spell); `elapsed`: seconds since the last reading. An integral controller: the
    spacing grows while the backlog is over SPACING_TARGET of the tolerance and shrinks while it is under it, at
    SPACING_GAIN seconds a second per tolerance of difference, so it settles where the calls fit the rate with a
    little burst in use. Growth counts at most SPACING_STEP_MAX seconds of one reading (the first after a quiet
    spell says little about the spell); shrinking counts the whole of it.

    Why an integral, not the wait itself: with N operations polled every `d + spacing` seconds, a poll share of
    rate r is saturated while N / r > d + spacing, and the wait each poll finds is what is missing; a spacing
    equal to the last wait leaves the next poll finding the same wait, an integral stops where it is gone.
    Measured on a model (docs/pacing.md#polls: the Pacer with a fake clock, 2,000 installations of 30-340 s
    started at 1.33 a second, a share of 5 polls a second, Retry-After 30 s): 3.66 paced polls a machine
    without it, 0.23 with it, each end seen 38 s after it happened on average instead of 26 s; docs/performance.md
    has the benchmark's runs."""
    error = min(SPACING_ERROR_MAX, (backlog - SPACING_TARGET * bucket.tolerance) / bucket.tolerance)
    counted = max(0.0, elapsed) if error < 0 else min(max(0.0, elapsed), SPACING_STEP_MAX)
    return min(max(0.0, current + SPACING_GAIN * error * counted), ceiling)


def remaining_by_bucket(headers: Mapping[str, str]) -> dict[str, float]:
    """The remaining-token headers of an ARM response, by bucket name (absent or unreadable: left out)."""
    found: dict[str, float] = {}
    for header, name in (("x-ms-ratelimit-remaining-subscription-reads", READS),
                         ("x-ms-ratelimit-remaining-subscription-writes", WRITES)):
        value = _number(headers.get(header))
        if value is not None:
            found[name] = value
    for pair in (headers.get("x-ms-ratelimit-remaining-resource") or "").split(","):
        policy, _, count = pair.strip().partition(";")
        value = _number(count)
        if policy.strip() == COMPUTE_GUEST_PATCH_POLICY and value is not None:
            found[GUEST_PATCH] = value
    if READS in found:
        found[POLLS] = found[READS]  # the same ARM bucket, read for each share by observe_shared
    return found


def _number(raw: str | None) -> float | None:
    try:
        return float(raw) if raw is not None and raw.strip() else None
    except ValueError:
        return None
