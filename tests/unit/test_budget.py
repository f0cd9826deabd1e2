"""The shared ARM budget's GCRA math (shared/runs/budget.py) with a fake clock: pure, no storage."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from shared.core.messages import BadMessageError, parse_step
from shared.runs.budget import (
    GUEST_PATCH,
    POLLS,
    READS,
    WRITES,
    Bucket,
    observe,
    observe_shared,
    penalize,
    remaining_by_bucket,
    reserve,
    reserve_all,
    slots,
)
from tools import metrics

PATCH = Bucket(GUEST_PATCH, 600, 200 / 60)


def spend(bucket: Bucket, now: float, calls: int, tat: float = 0.0) -> tuple[float, list[float]]:
    """`calls` reservations at `now`, one after the other: the final tat and each call's send time."""
    sent = []
    for _ in range(calls):
        grant = reserve(bucket, tat, now)
        tat = grant.tat
        sent.append(now + grant.wait)
    return tat, sent


def test_a_full_bucket_allows_its_burst_at_once_then_paces_at_its_rate() -> None:
    _, sent = spend(PATCH, 1000.0, 605)
    assert sent[:600] == [1000.0] * 600
    gaps = [b - a for a, b in itertools.pairwise(sent[600:])]
    assert sent[600] > 1000.0
    assert all(abs(g - 0.3) < 1e-9 for g in gaps)  # 200 per minute


def test_no_window_ever_holds_more_than_burst_plus_refill() -> None:
    bucket = Bucket(WRITES, 5, 2.0)
    tat, sent = spend(bucket, 0.0, 40)
    _, later = spend(bucket, 3.0, 20, tat)
    times = sorted(sent + later)
    for i, start in enumerate(times):
        for width in (0.5, 1.0, 4.0):
            inside = sum(1 for t in times[i:] if t <= start + width)
            assert inside <= bucket.burst + bucket.rate * width + 1e-9


def test_an_idle_bucket_refills_and_never_stores_credit() -> None:
    bucket = Bucket(WRITES, 4, 1.0)
    tat, _ = spend(bucket, 0.0, 4)
    assert reserve(bucket, tat, 0.0).wait > 0  # empty now
    assert reserve(bucket, tat, 100.0).wait == 0  # long idle: full again
    tat, sent = spend(bucket, 100.0, 6, tat)
    assert sent.count(100.0) == 4  # still only a burst, not 100 seconds of credit


def test_several_buckets_go_at_the_latest_and_all_are_charged_then() -> None:
    patch = Bucket(GUEST_PATCH, 1, 1.0)
    writes = Bucket(WRITES, 10, 10.0)
    new, wait = reserve_all({GUEST_PATCH: (patch, 5.0), WRITES: (writes, 0.0)}, now=0.0)
    assert wait == 5.0  # the guest-patch bucket is empty until 5 s
    assert new[GUEST_PATCH] == 6.0
    assert new[WRITES] == 5.1  # the write token is spent when the call goes, not before


def test_block_slots_equal_one_reservation_at_a_time() -> None:
    bucket = Bucket(GUEST_PATCH, 3, 1.0)
    tat, due = slots(bucket, 0.0, 10.0, 7)
    one_tat, sent = spend(bucket, 10.0, 7)
    assert abs(tat - one_tat) < 1e-9
    assert [round(10.0 + d, 9) for d in due] == [round(s, 9) for s in sent]


def test_a_429_empties_the_bucket_until_retry_after() -> None:
    bucket = Bucket(WRITES, 10, 1.0)
    tat = penalize(bucket, 0.0, 100.0, 30)
    assert abs(reserve(bucket, tat, 100.0).wait - 30.0) < 1e-9
    _, sent = spend(bucket, 100.0, 3, tat)
    assert [round(s - 130.0, 6) for s in sent] == [0.0, 1.0, 2.0]  # then one per interval, no burst
    assert penalize(bucket, 500.0, 100.0, 30) == 500.0  # never moves the budget back


def test_a_low_remaining_header_moves_the_budget_a_high_one_does_not() -> None:
    bucket = Bucket(GUEST_PATCH, 600, 10.0)
    moved = observe(bucket, 0.0, 100.0, remaining=100)  # someone else spent 500
    assert moved is not None and reserve(bucket, moved, 100.0).wait == 0  # still 100 left ...
    tat = moved
    for _ in range(100):
        tat = reserve(bucket, tat, 100.0).tat
    assert reserve(bucket, tat, 100.0).wait > 0  # ... and then no more
    assert observe(bucket, 0.0, 100.0, remaining=599.5) is None  # agrees with us (within slack)
    assert observe(bucket, 150.0, 100.0, remaining=600) is None  # never gives reserved tokens back


def test_the_shared_read_header_moves_each_share_by_its_part_of_what_our_calls_do_not_explain() -> None:
    reads, polls = Bucket(READS, 125, 12.5, share=0.5), Bucket(POLLS, 125, 12.5, share=0.5)
    idle = {"own_tat": 0.0, "ours": 0.0}
    moved = observe_shared(polls, 0.0, 10.0, 50, **idle)  # 200 of ARM's 250 reads spent, none of them ours
    assert moved is not None and (moved - 10.0) / polls.interval == pytest.approx(100)  # half of them: polls' share
    assert observe_shared(reads, 0.0, 10.0, 50, **idle) == moved  # and reads by the same (its share)
    assert observe_shared(polls, moved, 10.0, 50, **idle) is None  # absolute: the same header moves it once
    sixty = 10.0 + 60 * polls.interval  # we just sent 60 polls: 60 of ARM's tokens are ours
    # ARM's 60 used are our polls: reads stay
    assert observe_shared(reads, 0.0, 10.0, 190, own_tat=0.0, ours=60) is None
    assert observe_shared(polls, sixty, 10.0, 190, own_tat=sixty, ours=60) is None  # polls too: as reserved


def test_our_calls_drain_from_arms_read_bucket_at_arms_rate_not_their_shares() -> None:
    from shared.runs.pacing import Pacer
    clock = [1000.0]
    store = RowStore()
    shares = {READS: Bucket(READS, 125, 12.5, 0.5), POLLS: Bucket(POLLS, 125, 12.5, 0.5)}
    p = Pacer(store, shares, clock=lambda: clock[0], lease_tokens=1)  # type: ignore[arg-type]
    for _ in range(100):  # 100 polls reserved and sent at once: ARM (25/s) has refilled them all 4 s later
        p.reserve("sub", (POLLS,))
        p.sending("sub", (POLLS,))
    clock[0] += 4.0
    before = store.rows[("sub", POLLS)][0]
    # 50 of ARM's 250 are used now, and none of them are ours: another client's, of which polls take half.
    # Counted at the polls' own 12.5/s, our 100 would still explain 50 of them and nothing would move.
    p.observe("sub", (POLLS,), 200, {"x-ms-ratelimit-remaining-subscription-reads": "200"})
    assert store.rows[("sub", POLLS)][0] - before == pytest.approx(25 * shares[POLLS].interval)


def test_calls_in_flight_are_ours_when_a_header_answering_one_of_them_counts_them_all() -> None:
    from shared.runs.pacing import Pacer
    clock = [1000.0]
    store = RowStore()
    shares = {READS: Bucket(READS, 125, 12.5, 0.5), POLLS: Bucket(POLLS, 125, 12.5, 0.5)}
    p = Pacer(store, shares, clock=lambda: clock[0], lease_tokens=1)  # type: ignore[arg-type]
    p.reserve("sub", (READS,))  # a start's read, due now
    for _ in range(40):  # 40 polls reserved and sent by as many threads before the first answer comes back
        p.reserve("sub", (POLLS,))
        p.sending("sub", (POLLS,))
    rows = dict(store.rows)
    for left in range(210, 250):  # the answers, each header counting all 40 (and what ARM refilled since)
        p.observe("sub", (POLLS,), 200, {"x-ms-ratelimit-remaining-subscription-reads": str(left)})
    # nothing moved: every call the header counts is ours. Counted as each answer came back, the first header's
    # 39 calls still in flight would look like another client's and push the start's read 1.6 s on.
    assert store.rows == rows


def test_a_burst_of_our_own_polls_does_not_pace_the_reads_but_another_clients_reads_do(
        caplog: pytest.LogCaptureFixture) -> None:
    from shared.runs.pacing import Pacer
    clock = [1000.0]
    store = RowStore()
    shares = {READS: Bucket(READS, 125, 12.5, 0.5), POLLS: Bucket(POLLS, 125, 12.5, 0.5)}
    p = Pacer(store, shares, clock=lambda: clock[0], lease_tokens=1)  # type: ignore[arg-type]
    p.reserve("sub", (READS,))
    caplog.set_level("INFO", logger="shared.runs.pacing")
    for left in range(249, 189, -1):  # 60 polls at once, ARM's remaining reads falling with each
        p.reserve("sub", (POLLS,))
        p.sending("sub", (POLLS,))
        p.observe("sub", (POLLS,), 200, {"x-ms-ratelimit-remaining-subscription-reads": str(left)})
    assert store.rows[("sub", READS)][0] <= clock[0] + shares[READS].interval  # one read reserved, nothing moved
    assert not [r for r in caplog.records if "budget moved" in r.getMessage()]  # our own polls: nothing said
    p.sending("sub", (READS,))
    p.observe("sub", (READS,), 200, {"x-ms-ratelimit-remaining-subscription-reads": "40"})  # 150 not ours
    assert store.rows[("sub", READS)][0] - clock[0] == pytest.approx(75 * shares[READS].interval, abs=0.1)
    # an operator (and the benchmark's log) sees what slowed the pace: ARM's count, what of it was ours, how far
    said = [r.getMessage() for r in caplog.records if "budget moved" in r.getMessage()]
    assert len(said) == 1 and "subscription=sub" in said[0] and "reads header remaining 40" in said[0]
    assert "-> 6.0s" in said[0]  # 75 tokens of the reads share at 12.5/s


def test_headers_are_read_by_bucket() -> None:
    found = remaining_by_bucket({
        "x-ms-ratelimit-remaining-subscription-reads": "249",
        "x-ms-ratelimit-remaining-subscription-writes": "nonsense",
        "x-ms-ratelimit-remaining-resource": "Microsoft.Compute/VMGuestPatchOperationSubscriptionMaximum;599, "
                                             "Microsoft.Compute/VMGuestPatchOperationResource;5",
    })
    assert found == {READS: 249.0, POLLS: 249.0, GUEST_PATCH: 599.0}
    assert remaining_by_bucket({}) == {}


def test_tokens_spent_up_to_late_seconds_late_still_fit_arms_bucket() -> None:
    bucket = Bucket(GUEST_PATCH, 6, 2.0, late=1.0)
    _, sent = spend(bucket, 0.0, 30)
    rng = random.Random(7)
    spent = sorted(t + rng.uniform(0, bucket.late) for t in sent)  # each delivered up to a second late
    assert ok_for_token_bucket(spent, burst=6, rate=2.0)
    assert not ok_for_token_bucket(sorted(t + rng.uniform(0, 1.0) for t in spend(Bucket(GUEST_PATCH, 6, 2.0),
                                                                                   0.0, 30)[1]), burst=6, rate=2.0)


def ok_for_token_bucket(times: list[float], *, burst: float, rate: float) -> bool:
    """Would ARM's token bucket (full at the start) have taken every call at these times?"""
    level, last = burst, times[0]
    for t in times:
        level = min(burst, level + (t - last) * rate)
        last = t
        if level < 1 - 1e-9:
            return False
        level -= 1
    return True


def test_a_step_message_names_the_buckets_it_holds() -> None:
    body = '{"runId":"0123456789a-0123abcd","machine":"s|rg|vm","seq":3,"held":["guestPatch","writes"]}'
    assert parse_step(body).held == ("guestPatch", "writes")
    assert parse_step(body.replace(',"held":["guestPatch","writes"]', "")).held == ()
    for bad in ('"held":"guestPatch"', '"held":[1]', '"held":["a|b"]'):
        with pytest.raises(BadMessageError):
            parse_step(body.replace('"held":["guestPatch","writes"]', bad))


# -- leases (shared/runs/pacing.py): a process takes a block of tokens from the shared row and hands them out --
class RowStore:
    """The budget rows as BudgetStore keeps them, in a dict with ETags: enough to drive the Pacer's logic
    (the Table transaction itself is tested against Azurite in tests/integration/test_pacing.py)."""

    def __init__(self) -> None:
        from collections import Counter
        self.rows: dict[tuple[str, str], tuple[float, str]] = {}
        self.ops: Counter[str] = Counter()

    def cached(self, subscription: str, buckets: list[str]) -> dict[str, Any] | None:
        """As BudgetStore: the rows this process last read or wrote (it is the only process here)."""
        from shared.storage.budget_store import BudgetRow
        if not all((subscription, b) in self.rows for b in buckets):
            return None
        return {b: BudgetRow(*self.rows[(subscription, b)]) for b in buckets}

    def read(self, subscription: str, buckets: list[str]) -> dict[str, Any]:
        from shared.storage.budget_store import BudgetRow
        self.ops["budgetRead"] += 1
        return {b: BudgetRow(*self.rows[(subscription, b)]) if (subscription, b) in self.rows else BudgetRow(0.0, None)
                for b in buckets}

    def write(self, subscription: str, new: dict[str, float], read_as: dict[str, Any]) -> None:
        from shared.core.errors import ConflictError
        self.ops["budgetWrite"] += 1
        for b in new:
            if self.rows.get((subscription, b), (0.0, None))[1] != read_as[b].etag:
                raise ConflictError(b)
        for b, tat in new.items():
            self.rows[(subscription, b)] = (tat, str(self.ops["budgetWrite"]))


def pacer(clock: list[float], lease_tokens: int, store: RowStore | None = None) -> Any:
    from shared.runs.pacing import Pacer
    return Pacer(store or RowStore(), {READS: Bucket(READS, 10, 5, 1, 1)},  # type: ignore[arg-type]
                 clock=lambda: clock[0], lease_tokens=lease_tokens)


def test_a_lease_grants_the_same_schedule_as_one_reservation_at_a_time_for_fewer_writes() -> None:
    schedules = []
    for lease_tokens in (1, 32):
        clock = [1000.0]
        store = RowStore()
        p = pacer(clock, lease_tokens, store)
        sent = []
        for i in range(60):  # 60 calls over 6 s, asked 10/s: the bucket (9 usable burst, 5/s) makes them wait
            clock[0] = 1000.0 + i * 0.1
            sent.append(round(clock[0] + p.reserve("sub", (READS,)), 6))
        schedules.append((sent, store.ops["budgetWrite"]))
    (one_by_one, writes_one), (leased, writes_leased) = schedules
    assert leased == one_by_one
    assert writes_one == 60 and writes_leased < 15


def test_leased_tokens_not_spent_in_time_are_dropped_not_saved_up() -> None:
    clock = [1000.0]
    p = pacer(clock, 32)
    wasted_before = metrics.counts("patchpilot.budget.wasted", "patchpilot.budget")
    for _ in range(20):  # demand of 20 in a second: the next block is 20 tokens
        p.reserve("sub", (READS,))
    clock[0] += 60.0  # the process went quiet; its tokens' due times are long past (late is 1 s)
    assert p.reserve("sub", (READS,)) == 0.0
    assert (metrics.counts("patchpilot.budget.wasted", "patchpilot.budget") - wasted_before)[READS] > 0
    lease = p._lease("sub", READS)
    assert all(due >= clock[0] - 1 for due in lease.due)


def test_a_429_drops_the_lease_so_the_next_call_waits_for_the_moved_row() -> None:
    clock = [1000.0]
    p = pacer(clock, 32)
    for _ in range(5):
        p.reserve("sub", (READS,))
    p.observe("sub", (READS,), 429, {}, retry_after=30.0)
    assert p.reserve("sub", (READS,)) >= 29.0


def test_a_poll_is_booked_only_when_the_budget_is_backlogged_past_its_retry_after() -> None:
    clock = [1000.0]
    p = pacer(clock, 32)  # 5 tokens/s, 5 of its burst granted at once (late 1 s keeps 5 back)
    assert p.book("sub", READS, 10.0) is None  # a row never seen: nothing is booked
    for _ in range(60):  # 61 polls due now: the last waits (61 - 5) / 5 = 11.2 s
        p.reserve("sub", (READS,))
    backlog = p.reserve("sub", (READS,))
    assert backlog == pytest.approx(11.2)
    assert p.book("sub", READS, 30.0) is None  # Retry-After 30 s: the budget has room before then
    # Retry-After 12 s: the next token (11.4 s) would be spent 0.6 s late before the queue adds its own lateness
    assert p.book("sub", READS, 12.0) is None
    booked = p.book("sub", READS, 11.0)  # Retry-After 11 s: the next token is due after it: booked
    assert booked == pytest.approx(11.4)
    assert p.reserve("sub", (READS,)) > booked  # the booked token is taken: the next reservation comes after it
    clock[0] += 60.0  # the backlog is spent: a poll after Retry-After needs no booking, and nothing was wasted
    assert p.book("sub", READS, 5.0) is None and p.reserve("sub", (READS,)) == 0.0


def test_a_released_token_is_the_next_one_reserved() -> None:
    clock = [1000.0]
    p = pacer(clock, 32)
    for _ in range(60):
        p.reserve("sub", (READS,))
    booked = p.book("sub", READS, 11.0)
    assert booked is not None
    p.release("sub", READS, booked)  # its poll will not be sent (its row's write lost the race)
    assert p.reserve("sub", (READS,)) == pytest.approx(booked)  # not lost: the next reservation takes it


@pytest.mark.parametrize(("headers", "expected"), [
    # Compute's subscription policy at zero: only the guest-patch bucket waits (not ARM's writes)
    ({"x-ms-ratelimit-remaining-resource":
      "Microsoft.Compute/VMGuestPatchOperationSubscriptionMaximum;0,Microsoft.Compute/VMGuestPatchOperationResource;3"},
     (GUEST_PATCH,)),
    # one VM's own policy (6 per VM) at zero: that machine's Retry-After; no shared bucket moves
    ({"x-ms-ratelimit-remaining-resource":
      "Microsoft.Compute/VMGuestPatchOperationSubscriptionMaximum;412,Microsoft.Compute/VMGuestPatchOperationResource;0"},
     ()),
    # Compute refused but neither guest-patch policy is out (another policy): the guest-patch bucket waits
    ({"x-ms-ratelimit-remaining-resource": "Microsoft.Compute/VMGuestPatchOperationSubscriptionMaximum;412"},
     (GUEST_PATCH,)),
    # ARM's own 429 (no Compute header): both buckets of the POST wait
    ({"x-ms-ratelimit-remaining-subscription-writes": "0"}, (GUEST_PATCH, WRITES)),
    ({}, (GUEST_PATCH, WRITES)),
])
def test_a_429_empties_the_bucket_that_refused(headers: dict[str, str], expected: tuple[str, ...]) -> None:
    from shared.runs.pacing import throttled_buckets
    assert throttled_buckets(headers) == expected


def test_a_start_that_waits_for_guest_patch_does_not_charge_the_writes_at_that_far_time() -> None:
    from shared.arm.calls import INSTALL_PATCHES
    from shared.runs.pacing import Pacer, paced_delay
    clock = [1000.0]
    store = RowStore()
    p = Pacer(store, {GUEST_PATCH: Bucket(GUEST_PATCH, 10, 1, 1, 0),  # type: ignore[arg-type]
                      WRITES: Bucket(WRITES, 10, 10, 1, 0)}, clock=lambda: clock[0])
    p.reserve_block("sub", GUEST_PATCH, 1000)  # a whole run's start slots: guest patches ~1000 s ahead
    paced = paced_delay(p, "sub", INSTALL_PATCHES, set())
    assert paced is not None and paced[0] > 900 and paced[1] == (GUEST_PATCH,)  # holds only what it took
    assert ("sub", WRITES) not in store.rows  # ARM's writes are free for every other call meanwhile
    assert paced_delay(p, "sub", INSTALL_PATCHES, {GUEST_PATCH}) is None  # held: writes now


def test_spacing_grows_while_the_backlog_is_over_its_target_and_shrinks_to_zero_under_it() -> None:
    from shared.runs.budget import SPACING_ERROR_MAX, SPACING_GAIN, SPACING_STEP_MAX, SPACING_TARGET, spacing
    polls = Bucket(POLLS, 10, 5, 1, 1)  # tolerance 1 s
    assert polls.tolerance == 1.0
    at_target = SPACING_TARGET * polls.tolerance
    assert spacing(polls, 4.0, at_target, 1.0, 60.0) == pytest.approx(4.0)  # at the target: stays
    assert spacing(polls, 4.0, at_target + 1.0, 2.0, 60.0) == pytest.approx(4.0 + SPACING_GAIN * 2.0)
    assert spacing(polls, 4.0, 0.0, 2.0, 60.0) == pytest.approx(4.0 - SPACING_GAIN * at_target * 2.0)
    assert spacing(polls, 0.0, 0.0, 2.0, 60.0) == 0.0  # never negative: a poll never comes before Retry-After
    assert spacing(polls, 59.0, 500.0, 2.0, 60.0) == 60.0  # at most the ceiling
    # a reading after a long quiet spell counts for SPACING_STEP_MAX at most, and a far backlog (a 429's) is capped
    assert spacing(polls, 0.0, 1e6, 3600.0, 1e9) == pytest.approx(SPACING_GAIN * SPACING_ERROR_MAX * SPACING_STEP_MAX)


def closed_loop(p: Any, clock: list[float], operations: int, seconds: float, delay: float, *,
                spaced: bool) -> tuple[int, int]:
    """`operations` running installations, each polled `delay` seconds (ARM's Retry-After) after its last poll,
    plus the pacer's spacing if `spaced`; a poll that must wait comes back when its token is due, holding it (a
    second queue message). Returns (polls sent, polls paced)."""
    import heapq
    due = [(clock[0] + i * delay / operations, i, False) for i in range(operations)]
    heapq.heapify(due)
    sent = paced = 0
    end = clock[0] + seconds
    while due[0][0] < end:
        at, op, held = heapq.heappop(due)
        clock[0] = at
        wait = 0.0 if held else p.reserve("sub", (POLLS,))
        if wait > 0:
            paced += 1
            heapq.heappush(due, (at + wait, op, True))
            continue
        sent += 1
        heapq.heappush(due, (at + delay + (p.spacing("sub", POLLS) if spaced else 0.0), op, False))
    return sent, paced


@pytest.mark.parametrize("lease_tokens", [1, 32])
def test_polls_spaced_by_the_pacer_fit_the_budget_instead_of_being_paced_twice(lease_tokens: int) -> None:
    from shared.runs.pacing import Pacer

    def fresh() -> tuple[Any, list[float]]:  # the benchmark's polls share over 5: tolerance 3 s, Retry-After 30 s
        clock = [1000.0]
        return Pacer(RowStore(), {POLLS: Bucket(POLLS, 25, 5, 1, 2)},  # type: ignore[arg-type]
                     clock=lambda: clock[0], lease_tokens=lease_tokens, spacing_ceiling=90.0), clock
    # 300 operations polled every 30 s ask 10 polls a second of a share that grants 5
    p, clock = fresh()
    sent, paced = closed_loop(p, clock, 300, 600.0, 30.0, spaced=False)
    assert paced > 0.8 * sent  # at Retry-After alone, nearly every poll arrives early and is queued twice
    p, clock = fresh()
    closed_loop(p, clock, 300, 600.0, 30.0, spaced=True)  # the spacing settles
    sent, paced = closed_loop(p, clock, 300, 600.0, 30.0, spaced=True)
    assert paced < 0.25 * sent  # most polls come when their token is due
    # the share is still used, though not to the last token: the spacing overshoots a demand that comes all at
    # once (300 operations in 30 s) and swings about its settling point (docs/pacing.md)
    assert sent > 0.7 * 5 * 600
    assert 15.0 < p.spacing("sub", POLLS) < 60.0  # about 300 / 5 - 30 s
    settled = p.spacing("sub", POLLS)
    quiet = Pacer(RowStore(), {POLLS: Bucket(POLLS, 25, 5, 1, 2)},  # type: ignore[arg-type]
                  clock=lambda: clock[0] + 600.0, spacing_ceiling=90.0)
    quiet._spacing = dict(p._spacing)
    assert quiet.spacing("sub", POLLS) == 0.0  # ten minutes without a poll: a busy run's spacing is gone
    closed_loop(p, clock, 30, 300.0, 30.0, spaced=True)  # demand falls to 1 a second: the spacing falls
    assert p.spacing("sub", POLLS) < settled - 5.0
    closed_loop(p, clock, 30, 1500.0, 30.0, spaced=True)  # and is gone: polls at about Retry-After again
    assert p.spacing("sub", POLLS) < 1.0
