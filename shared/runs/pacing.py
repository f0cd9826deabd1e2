"""Pacing ARM calls against the shared budget (shared/runs/budget.py math, shared/storage/budget_store.py rows).

Which call draws from which bucket is said once, by the call's value (shared/arm/calls.py): a POST
installPatches / assessPatches takes guestPatch, then writes (one at a time: paced_delay); a GET of a machine,
its instance view and a page of a scope's list take reads; a poll takes polls (POLL_READ_PERCENT of ARM's
reads; `reads` has the rest). Budgets are per subscription (ARM's regional limits are counted at the ARM front
end that serves PatchPilot, one region, so a subscription is the key). A step asks `reserve` before its call:
0 means call now; otherwise the tokens are held and the step is re-queued to come back after that many seconds
and call without reserving again (StepMessage.held). Just before the call, `sending` counts it (a header
answering one call also counts those of ours in flight that ARM handled first); after it, `observe` moves
the budget on when ARM says it is lower than we accounted (remaining-* headers) or answered 429
(Retry-After), so the next reservations wait; it writes only then. A poll asks `spacing` how much later than
ARM's Retry-After to come, so that the polls fit their share instead of arriving early and being queued twice
(budget.spacing; docs/pacing.md#polls). Known gap: the calls `sending` counts
are this process's, so with several instances each takes the others' reads for another client's and paces a
little slower than it must.

Leases: a reservation (a GET, a poll, each bucket of a POST) is served from tokens this process took from
the shared row in one block, sized by the process's own demand over the last second (at most
PACING_LEASE_TOKENS). The block's tokens are due one refill interval apart, exactly as if they had been
reserved one by one, so the schedule the budget grants is unchanged; what changes is the cost, one Table
transaction per block instead of one per call, and the contention: threads of one process queue on a lock
instead of racing for the row's ETag (measured in benchmarks/scale.py: 8 lost races and 12 budget writes
per machine before, at 200 machines with 16 threads). A token not spent within PACING_LATE_SECONDS of its
due time is dropped (spending it later could exceed ARM's bucket, Bucket.late); a process that stops
needing tokens wastes at most one block. A 429 or a remaining-* header that moves a bucket drops its
leases, so the next call reserves from the moved row.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from shared.arm.calls import GUEST_PATCH, POLLS, READS, WRITES, ArmCall
from shared.core.errors import ConflictError, StorageContentionError
from shared.core.settings import PacingSettings
from shared.core.telemetry import budget_tokens_wasted
from shared.runs.budget import (
    COMPUTE_GUEST_PATCH_VM_POLICY,
    Bucket,
    observe,
    observe_shared,
    penalize,
    remaining_by_bucket,
)
from shared.runs.budget import reserve as reserve_one
from shared.runs.budget import reserve_all as reserve_tokens
from shared.runs.budget import slots as block_slots
from shared.runs.budget import spacing as next_spacing
from shared.storage.budget_store import BudgetRow, BudgetStore

if TYPE_CHECKING:
    from shared.arm.client import ArmResponse

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 8  # conditional writes lost in a row before the step fails and the queue retries it
SPACING_RETRY_AFTERS = 3  # Pacer.spacing adds at most this many of ARM's default Retry-After to a poll


def buckets_from(pacing: PacingSettings) -> dict[str, Bucket]:
    """The four buckets with the settings' limits (defaults: Azure's)."""
    share = pacing.poll_read_percent / 100
    late = pacing.pacing_late_seconds
    return {
        GUEST_PATCH: Bucket(GUEST_PATCH, pacing.guest_patch_burst, pacing.guest_patch_per_minute / 60, 1, late),
        WRITES: Bucket(WRITES, pacing.arm_write_burst, pacing.arm_writes_per_second, 1, late),
        READS: Bucket(READS, max(1.0, pacing.arm_read_burst * (1 - share)),
                      pacing.arm_reads_per_second * (1 - share), 1 - share, late),
        POLLS: Bucket(POLLS, max(1.0, pacing.arm_read_burst * share), pacing.arm_reads_per_second * share,
                      share, late),
    }


SHARED_READS = (READS, POLLS)  # two shares of ARM's one read limit: its remaining-reads header counts both
LEASE_DEMAND_SECONDS = 1.0  # a block covers what this process asked for in the last second


@dataclass
class Lease:
    """Tokens of one (subscription, bucket) this process reserved in a block: their due times (epoch s)."""

    due: deque[float] = field(default_factory=deque)
    asked: deque[float] = field(default_factory=deque)  # when reservations were asked (demand)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Pacer:
    """Reserves and corrects the shared budget; `clock` is epoch seconds (every host shares it).

    `lease_tokens`: the most tokens a single-bucket reservation takes from the shared row at once (1: no
    leases, every call one transaction). `spacing_ceiling`: the most seconds `spacing` adds to a call."""

    def __init__(self, store: BudgetStore, buckets: Mapping[str, Bucket],
                 clock: Callable[[], float] = time.time, lease_tokens: int = 1,
                 spacing_ceiling: float = 180.0) -> None:
        self.store = store
        self.buckets = dict(buckets)
        self.clock = clock
        self.lease_tokens = max(1, lease_tokens)
        self._leases: dict[tuple[str, str], Lease] = {}
        self._leases_lock = threading.Lock()
        self._row_locks: dict[str, threading.Lock] = {}
        self._spent: dict[tuple[str, str], float] = {}  # (subscription, read share): `tat` of its calls sent
        self._sent_reads: dict[str, float] = {}  # subscription: `tat` of all our read calls sent, at ARM's read rate
        self.spacing_ceiling = spacing_ceiling
        self._spacing: dict[tuple[str, str], tuple[float, float]] = {}  # (subscription, bucket): (seconds, when)
        self._spacing_lock = threading.Lock()

    def reserve(self, subscription: str, names: tuple[str, ...], k: int = 1) -> float:
        """Take `k` tokens from each named bucket: seconds from now until they may be spent (0: now)."""
        if len(names) == 1 and k == 1 and self.lease_tokens > 1:
            return self._reserve_leased(subscription, names[0])

        def decide(rows: dict[str, BudgetRow], now: float) -> tuple[dict[str, float], float]:
            return reserve_tokens({n: (self.buckets[n], rows[n].tat) for n in names}, now, k)
        wait = self._update(subscription, list(names), decide)
        if len(names) == 1 and k == 1:
            self._note_place(subscription, self.buckets[names[0]], tokens_after=0)
        return wait

    def _lease(self, subscription: str, name: str) -> Lease:
        with self._leases_lock:
            return self._leases.setdefault((subscription.lower(), name), Lease())

    def book(self, subscription: str, name: str, after: float) -> float | None:
        """Take one token of `name` for a call that will not go before `after` seconds from now (a poll about
        to be queued after ARM's Retry-After), but only when the bucket is backlogged that far: returns the
        seconds from now until the token may be spent, at least `after`. None, nothing taken, when the next
        token is due sooner: a token due before `after` would be spent late by the call before the queue's
        own lateness, and `Bucket.late` (the burst kept back) is for the queue's lateness (and the caller's
        rounding up to whole seconds).

        Why only then: the caller queues its message to arrive when its token is due and calls without
        reserving again (StepMessage.held), instead of arriving at `after`, finding the budget spent and
        being queued again (a queue message and a row write each time; 1.37 per machine at 10,000 in one
        subscription, docs/performance.md). A token taken for later than the bucket's backlog would leave
        the bucket idle until then: GCRA keeps one `tat`, so the capacity before a future token is lost."""
        return self._take_leased(subscription, name, after=after)

    def release(self, subscription: str, name: str, due: float) -> None:
        """Give back one token of `name` taken for a call that will not be made (a booked poll whose row write
        lost its race): `due` seconds from now, as `book` or `reserve` returned it. It goes back to this
        process's lease, where the next booking or leased reservation takes it (with PACING_LEASE_TOKENS 1,
        only a booking; dropped there if it is not spent in time)."""
        lease = self._lease(subscription, name)
        with lease.lock:
            bisect.insort(lease.due, self.clock() + max(0.0, due))

    def _reserve_leased(self, subscription: str, name: str) -> float:
        """One token of `name`, from this process's lease (refilled with a block when empty)."""
        due = self._take_leased(subscription, name, after=None)
        assert due is not None  # without `after` a token is always taken
        return due

    def _take_leased(self, subscription: str, name: str, after: float | None) -> float | None:
        bucket = self.buckets[name]
        lease = self._lease(subscription, name)
        with lease.lock:
            now = self.clock()
            while lease.due and lease.due[0] < now - bucket.late:  # too late to spend safely (Bucket.late)
                lease.due.popleft()
                budget_tokens_wasted.add(1, {"patchpilot.budget": name})
            if after is not None and self._next_due(subscription, bucket, lease, now) < after:
                return None
            lease.asked.append(now)
            while lease.asked and lease.asked[0] < now - LEASE_DEMAND_SECONDS:
                lease.asked.popleft()
            if not lease.due:
                size = min(self.lease_tokens, len(lease.asked))
                # due times as epoch seconds of the reservation's own clock reading: the row lock and the
                # Table round-trips before it must not make the tokens look due earlier than granted
                lease.due.extend(self.reserve_block(subscription, name, size, at_epoch=True))
            due = lease.due.popleft()
            # its due time is clamped to when the block was taken, so it cannot tell a full bucket from a busy one
            self._note_place(subscription, bucket, tokens_after=len(lease.due))
            return max(0.0, due - self.clock())

    def spacing(self, subscription: str, name: str) -> float:
        """Seconds to ask for a call of bucket `name` later than its earliest time (a poll: after ARM's
        Retry-After), so that calls which can wait fit the bucket instead of finding it spent and being queued
        twice: 0 unless this process's reservations of it have been finding its burst in use (budget.spacing,
        at most `spacing_ceiling`); the time since the last reservation counts as a quiet spell, so a spacing
        left from a busy run does not outlive it. Process-local: each host instance steers on the backlog of the
        one shared row, so several settle alike."""
        key = (subscription.lower(), name)
        with self._spacing_lock:
            current, at = self._spacing.get(key, (0.0, 0.0))
        if not current:
            return 0.0
        return next_spacing(self.buckets[name], current, 0.0, self.clock() - at, self.spacing_ceiling)

    def _note_place(self, subscription: str, bucket: Bucket, *, tokens_after: int) -> None:
        """A token of `bucket` was just taken: move its spacing by how far ahead of now the token stands in the
        bucket's schedule (the row's `tat` as this process last wrote or read it, less `tokens_after` of this
        process's own taken after it). A reading older than the last (threads report after their row lock) counts
        for no time."""
        rows = self.store.cached(subscription, [bucket.name])
        if rows is None:
            return
        now = self.clock()
        backlog = rows[bucket.name].tat - now - tokens_after * bucket.interval
        key = (subscription.lower(), bucket.name)
        with self._spacing_lock:
            current, at = self._spacing.get(key, (0.0, now))
            self._spacing[key] = (next_spacing(bucket, current, max(0.0, backlog), now - at, self.spacing_ceiling),
                                  max(at, now))

    def _next_due(self, subscription: str, bucket: Bucket, lease: Lease, now: float) -> float:
        """Seconds from `now` until this process's next token of `bucket` is due, read without taking it:
        the lease's first, else the first of a block from the shared row as this process last saw it
        (another instance's reservations since can only make it later). 0 when the row was never seen."""
        if lease.due:
            return lease.due[0] - now
        rows = self.store.cached(subscription, [bucket.name])
        return 0.0 if rows is None else reserve_one(bucket, rows[bucket.name].tat, now).wait

    def drop_leases(self, subscription: str, names: tuple[str, ...] | list[str]) -> None:
        """Forget this process's unspent tokens of `names` (the shared row moved on without them)."""
        for name in names:
            lease = self._lease(subscription, name)
            with lease.lock:
                lease.due.clear()

    def reserve_block(self, subscription: str, name: str, k: int, *, at_epoch: bool = False,
                      started: list[float] | None = None) -> list[float]:
        """`k` tokens of one bucket at once (a dispatcher's start slots, a lease): for each, seconds from
        now, or with `at_epoch` the epoch second it is due. `started` (if given) gets the epoch second the
        block counts from: now if the bucket was full, else when the tokens reserved before it run out."""
        due: list[float] = []

        def decide(rows: dict[str, BudgetRow], now: float) -> tuple[dict[str, float], float]:
            tat, found = block_slots(self.buckets[name], rows[name].tat, now, k)
            due[:] = [now + d for d in found] if at_epoch else found
            if started is not None:
                started[:] = [max(rows[name].tat, now)]
            return {name: tat}, 0.0
        self._update(subscription, [name], decide)
        return due

    def defer(self, subscription: str, name: str, seconds: float) -> None:
        """Move the bucket's schedule on by `seconds`: tokens already reserved are spent that much later
        (shared/runs/dispatch.py defer_start_schedule), so later reservations must come after them."""
        def decide(rows: dict[str, BudgetRow], now: float) -> tuple[dict[str, float], float]:
            return {name: rows[name].tat + seconds}, 0.0
        self._update(subscription, [name], decide)

    def peek(self, subscription: str) -> dict[str, float]:
        """Read, never take: each bucket's `tat` (epoch seconds) as stored, i.e. what other runs have reserved.
        A plan (shared/plans/) schedules its starts after them, as dispatch would."""
        rows = self.store.read(subscription, list(self.buckets))
        return {name: rows[name].tat for name in self.buckets}

    def observe(self, subscription: str, names: tuple[str, ...], status: int, headers: Mapping[str, str],
                retry_after: float | None = None) -> None:
        """After a call that drew from `names`: a 429 empties them until `retry_after`; a remaining-*
        header lower than our accounting moves the bucket it names on. Writes only when something moves."""
        remaining = remaining_by_bucket(headers)
        candidates = [n for n in self.buckets if n in names or n in remaining]

        why: list[str] = []  # of the last decide: what moved each bucket (logged once the row is written)

        def decide(rows: dict[str, BudgetRow], now: float) -> tuple[dict[str, float], float]:
            moved: dict[str, float] = {}
            why.clear()
            for n in candidates:
                bucket, tat = self.buckets[n], rows[n].tat
                if status == 429 and n in names:
                    new = penalize(bucket, tat, now, float(retry_after or 0))
                    if new > tat:
                        why.append(f"{n} 429 backlog {max(tat, now) - now:.1f}s -> {new - now:.1f}s")
                        moved[n] = new
                        tat = new
                if n not in remaining:
                    continue
                ours = None
                if n in SHARED_READS:
                    own_tat, ours = self._spent_now(subscription, n, now)
                    implied = observe_shared(bucket, tat, now, remaining[n], own_tat=own_tat, ours=ours)
                else:
                    implied = observe(bucket, tat, now, remaining[n])
                if implied is not None:
                    why.append(f"{n} header remaining {remaining[n]:g}" + (f" ours {ours:.0f}" if ours is not None
                                                                          else "")
                               + f" backlog {max(tat, now) - now:.1f}s -> {implied - now:.1f}s")
                    moved[n] = implied
            return moved, 0.0
        if candidates:
            moved_names: list[str] = []

            def decide_and_note(rows: dict[str, BudgetRow], now: float) -> tuple[dict[str, float], float]:
                moved, wait = decide(rows, now)
                moved_names[:] = list(moved)
                return moved, wait
            self._update(subscription, candidates, decide_and_note)
            if moved_names:
                # what slowed the pace, for an operator (and the benchmark): ARM's count or a 429, not ours
                log.info("budget moved subscription=%s status=%d %s", subscription, status, "; ".join(why))
                self.drop_leases(subscription, moved_names)

    def sending(self, subscription: str, names: tuple[str, ...]) -> None:
        """A call that draws from `names` is about to be sent: count it (for observe_shared) before it goes,
        so that a header answering one call, which already counts the other calls in flight, finds those
        counted as ours and not as another client's."""
        now = self.clock()
        reads = [n for n in names if n in SHARED_READS and n in self.buckets]
        if not reads:
            return
        arm_rate = self._arm_read_rate()
        cap = now + self._arm_read_burst() / arm_rate
        with self._leases_lock:
            for name in reads:
                key = (subscription.lower(), name)
                self._spent[key] = max(self._spent.get(key, 0.0), now) + self.buckets[name].interval
            sub = subscription.lower()
            self._sent_reads[sub] = min(max(self._sent_reads.get(sub, 0.0), now) + 1.0 / arm_rate, cap)

    def _arm_read_rate(self) -> float:
        return sum(self.buckets[n].rate for n in SHARED_READS if n in self.buckets)

    def _arm_read_burst(self) -> float:
        return max(self.buckets[n].burst / self.buckets[n].share for n in SHARED_READS if n in self.buckets)

    def _spent_now(self, subscription: str, name: str, now: float) -> tuple[float, float]:
        """For observe_shared: (the `tat` of `name`'s calls sent, how many of ARM's read tokens our calls of
        both shares still account for at `now`)."""
        with self._leases_lock:
            own = self._spent.get((subscription.lower(), name), 0.0)
            ours = max(0.0, self._sent_reads.get(subscription.lower(), 0.0) - now) * self._arm_read_rate()
        return own, ours

    def _update(self, subscription: str, names: list[str],
                decide: Callable[[dict[str, BudgetRow], float], tuple[dict[str, float], float]]) -> float:
        """Read-decide-write the subscription's rows. Threads of this process take turns (a lock per
        subscription), so only other instances can make the ETag race be lost."""
        with self._leases_lock:
            lock = self._row_locks.setdefault(subscription.lower(), threading.Lock())
        with lock:
            return self._update_rows(subscription, names, decide)

    def _update_rows(self, subscription: str, names: list[str],
                     decide: Callable[[dict[str, BudgetRow], float], tuple[dict[str, float], float]]) -> float:
        rows = self.store.cached(subscription, names)
        for _ in range(MAX_ATTEMPTS):
            if rows is None:  # one query reads (and caches) all of the subscription's buckets
                rows = self.store.read(subscription, list(self.buckets))
            now = self.clock()
            new, wait = decide(rows, now)
            if not new:
                return wait
            try:
                self.store.write(subscription, new, rows)
                return wait
            except ConflictError:
                rows = None  # another instance reserved first: decide again from what is stored
        raise StorageContentionError(f"the ARM budget of subscription {subscription} kept changing under "
                                     f"{MAX_ATTEMPTS} attempts; the queue will retry this step")


class Budget(Protocol):
    """What a caller of ARM needs of the shared budget (`Pacer` is one; a unit test's fake is another)."""

    def reserve(self, subscription: str, names: tuple[str, ...], k: int = 1) -> float: ...

    def book(self, subscription: str, name: str, after: float) -> float | None: ...

    def spacing(self, subscription: str, name: str) -> float: ...

    def release(self, subscription: str, name: str, due: float) -> None: ...

    def sending(self, subscription: str, names: tuple[str, ...]) -> None: ...

    def observe(self, subscription: str, names: tuple[str, ...], status: int, headers: Mapping[str, str],
                retry_after: float | None = None) -> None: ...


def paced_delay(pacer: Budget, subscription: str, call: ArmCall | tuple[str, ...],
                held: set[str]) -> tuple[int, tuple[str, ...]] | None:
    """Reserve the budget for one `call` (or its budgets) in `subscription`: None to call now, else (whole
    seconds to wait, the buckets now reserved for then: the step holds them). Buckets in `held` were reserved
    when the step was queued and are spent now however late it comes, so a backlogged queue still makes
    progress (Bucket.late keeps burst back for lateness up to PACING_LATE_SECONDS; beyond it ARM may answer
    429, which only delays).

    The buckets are taken one at a time, in the order given (a POST's: guest-patch first, the slow one), and
    the first that must wait ends it, holding what it took: charging a fast bucket (ARM's writes) at the
    far time a slow one (Compute's guest patches, reserved for a whole run) grants would push the fast
    one's single `tat` there too and stall every other write of the subscription (the benchmark met this:
    28 throttled retries moved the writes 20 minutes ahead). The bucket taken afterwards is taken when
    the call is about to go."""
    names = call.budgets if isinstance(call, ArmCall) else call
    reserved: list[str] = []
    for name in (n for n in names if n not in held):
        wait = pacer.reserve(subscription, (name,))
        reserved.append(name)
        if wait > 0:
            return math.ceil(wait), tuple(reserved)
    return None


def throttled_buckets(headers: Mapping[str, str], budgets: tuple[str, ...] = (GUEST_PATCH, WRITES)) -> tuple[str, ...]:
    """Which of a POST's buckets a 429 empties. Compute's throttle names its policies with what is left
    (`x-ms-ratelimit-remaining-resource`, troubleshooting-throttling-errors): its subscription policy at
    zero is our guest-patch bucket; a per-VM policy alone (six per VM) is that machine's, which its own
    Retry-After already waits out, so no shared bucket moves. Without Compute's header the 429 is ARM's
    write limit (or unknown): both buckets wait."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if "x-ms-ratelimit-remaining-resource" not in lowered:
        return budgets
    guest = remaining_by_bucket(headers).get(GUEST_PATCH)
    per_vm = [count for policy, _, count in (pair.strip().partition(";") for pair in
                                             lowered["x-ms-ratelimit-remaining-resource"].split(","))
              if policy.strip() == COMPUTE_GUEST_PATCH_VM_POLICY]
    if (guest is None or guest >= 1) and per_vm and per_vm[0].strip() in ("0", "0.0"):
        return ()  # only the VM's own policy ran out
    return (GUEST_PATCH,)  # the subscription's policy, or another Compute policy we do not model


def record_call(pacer: Budget, subscription: str, call: ArmCall, resp: ArmResponse, *,
                default_retry_after: int) -> None:
    """After an ARM call: ARM's remaining-* headers and a 429's Retry-After move the shared budget, whatever the
    counters still show. A 429 on a read (or a poll) moves both read shares, never a write's; on a write, what
    Compute's headers say ran out (`throttled_buckets`).

    Never raises: the call was made, and failing the step now would leave a machine claimed with its
    operation sent (shared/runs/machine_worker.py). A correction missed costs at most one more 429."""
    names = call.budgets
    retry_after = resp.retry_after(default_retry_after) if resp.status == 429 else None
    if resp.status == 429 and call.is_write:
        names = throttled_buckets(resp.headers, call.budgets)
    elif resp.status == 429:  # reads and polls are two shares of one ARM read limit: both wait it out
        names = tuple(dict.fromkeys((*call.budgets, READS, POLLS)))
    try:
        pacer.observe(subscription, names, resp.status, resp.headers, retry_after)
    except Exception:  # the budget is advice: the call already happened (docstring)
        log.warning("could not record ARM's budget headers for %s", subscription, exc_info=True)
