"""PollRounds.cover and revive, and a round's claim (shared/runs/poll_rounds.py): when a machine joins its run's poll
rounds, a round is kept due no later than its poll, and one message is queued only when none is."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from shared.core.clock import iso
from shared.core.errors import ConflictError
from shared.core.messages import CarriedRow, PollRoundMessage
from shared.core.records import MachineRecord, PollRoundRow
from shared.runs.machine_worker import StepPorts
from shared.runs.poll_rounds import PollRounds, RoundResult, run_round

NOW = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
RUN = "run-1"
SUB = "0f6c2d3e-1a2b-4c5d-8e9f-000000000001"  # a chain's subscription, as machine keys hold it


class Rows:
    """The round row as a Table would keep it: an ETag that changes with each write, If-Match enforced."""

    def __init__(self, row: PollRoundRow | None = None, *, conflicts: int = 0) -> None:
        self.row = row  # the row of SUB's chain
        self.others: dict[str, PollRoundRow] = {}  # other subscriptions' chains (written as-is)
        self.writes: list[tuple[int, str]] = []
        self.conflicts = conflicts  # writes that lose to another writer first

    def get_round(self, run_id: str, subscription: str) -> PollRoundRow:
        if subscription != SUB:
            return self.others.get(subscription, PollRoundRow(0, "", None))
        return self.row or PollRoundRow(0, "", None)

    def put_round(self, run_id: str, subscription: str, seq: int, at: str, etag: str | None, *,
                  polling: bool = False, wanted: str = "") -> str:
        if subscription != SUB:
            self.others[subscription] = PollRoundRow(seq, at, "o")
            return "o"
        current = self.row.etag if self.row else None
        if self.conflicts:
            self.conflicts -= 1
            self.row = replace(self.get_round(run_id, subscription), etag=f"{current}-other")
            raise ConflictError("changed")
        if etag != current:
            raise ConflictError("changed")
        self.row = PollRoundRow(seq, at, f"e{len(self.writes) + 1}", polling, wanted)
        self.writes.append((seq, at) if not (polling or wanted) else (seq, at, polling, wanted))
        return self.row.etag or ""

    def due_polls(self, run_id: str, subscription: str, before: str, top: int) -> list[MachineRecord]:
        return []

    def next_poll_at(self, run_id: str, subscription: str, after: str) -> str | None:
        return None

    def merge_polled(self, changes: list[tuple[MachineRecord, dict[str, Any]]]) -> int:
        return len(changes)

    def update_target(self, target: MachineRecord, changes: dict[str, Any]) -> MachineRecord:
        return target


class Queues:
    def __init__(self) -> None:
        self.rounds: list[tuple[int, int]] = []  # SUB's chain: (seq, delay)
        self.others: list[tuple[str, int, int]] = []

    def send_round(self, run_id: str, subscription: str, seq: int, delay_seconds: int = 0) -> None:
        if subscription == SUB:
            self.rounds.append((seq, delay_seconds))
        else:
            self.others.append((subscription, seq, delay_seconds))

    def send_step(self, run_id: str, machine: str, seq: int, delay_seconds: int = 0, *,
                  held: tuple[str, ...] = (), poll: bool = False, row: CarriedRow | None = None) -> None:
        raise AssertionError("no step message")


def rounds(row: PollRoundRow | None = None, **kw: Any) -> tuple[PollRounds, Rows, Queues]:
    store, queues = Rows(row, **kw), Queues()
    return PollRounds(store, queues, clock=lambda: NOW), store, queues


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def test_the_first_machine_of_a_run_queues_its_first_round() -> None:
    chain, store, queues = rounds()
    chain.cover(RUN, SUB, at(30))
    assert store.writes == [(0, iso(at(30)))] and queues.rounds == [(0, 30)]


def test_a_round_already_due_before_the_poll_is_kept_and_nothing_is_sent() -> None:
    chain, store, queues = rounds(PollRoundRow(4, iso(at(10)), "e0"))
    chain.cover(RUN, SUB, at(30))
    chain.cover(RUN, SUB, at(10))  # due at the same moment: that round queries after this machine's row was written
    assert store.writes == [] and queues.rounds == []


def test_a_poll_due_before_the_next_round_brings_a_round_forward_at_the_same_seq() -> None:
    chain, store, queues = rounds(PollRoundRow(4, iso(at(60)), "e0"))
    chain.cover(RUN, SUB, at(12.5))
    # the later message keeps seq 4 too: whichever comes first claims the round, the other finds it moved on
    assert store.writes == [(4, iso(at(12.5)))] and queues.rounds == [(4, 13)]  # the delay rounded up, never early


def test_a_round_due_already_but_not_claimed_is_kept_for_it_queries_after_its_claim() -> None:
    for due in (at(0.4), at(0), at(-3)):  # its message on its way, or waiting in a backlog: no copy of it
        chain, store, queues = rounds(PollRoundRow(7, iso(due), "e0"))
        chain.cover(RUN, SUB, at(20))
        assert store.writes == [] and queues.rounds == []


def test_no_round_left_after_a_run_went_quiet_queues_one() -> None:
    chain, store, queues = rounds(PollRoundRow(9, "", "e0"))  # the last round found nothing more to poll
    chain.cover(RUN, SUB, at(5))
    assert store.writes == [(9, iso(at(5)))] and queues.rounds == [(9, 5)]


def test_a_cover_that_loses_its_write_reads_the_row_again() -> None:
    chain, store, queues = rounds(PollRoundRow(2, iso(at(90)), "e0"), conflicts=1)
    chain.cover(RUN, SUB, at(30))
    assert store.writes == [(2, iso(at(30)))] and queues.rounds == [(2, 30)]


def test_the_sweeper_revives_a_run_whose_round_is_overdue_but_not_one_due_soon_or_lately() -> None:
    chain, store, queues = rounds(PollRoundRow(3, iso(at(-30)), "e0"))
    assert chain.revive(RUN, SUB, at(-60)) is False  # due 30 s ago: its message may be on its way or in a backlog
    assert chain.revive(RUN, SUB, at(-10)) is True
    assert store.writes == [(3, iso(NOW))] and queues.rounds == [(3, 0)]
    # none queued (a round that claimed and died), or one due later than overdue machines allow: revived
    for row in (PollRoundRow(3, "", "e0"), PollRoundRow(3, iso(at(600)), "e0")):
        chain, store, queues = rounds(row)
        assert chain.revive(RUN, SUB, at(-60)) is True and queues.rounds == [(3, 0)]
    chain, store, queues = rounds(PollRoundRow(3, iso(at(4)), "e0"))  # due within POLL_ROUND_SECONDS: left
    assert chain.revive(RUN, SUB, at(-60)) is False and queues.rounds == []


class CoveredMeanwhile(Rows):
    """A cover writes the row (same seq, its machine's poll time) between the round's read and its claim."""

    def __init__(self, row: PollRoundRow, cover_at: datetime, later: datetime | None) -> None:
        super().__init__(row)
        self.cover_at, self.later = cover_at, later

    def next_poll_at(self, run_id: str, subscription: str, after: str) -> str | None:
        return iso(self.later) if self.later else None

    def put_round(self, run_id: str, subscription: str, seq: int, at: str, etag: str | None, *,
                  polling: bool = False, wanted: str = "") -> str:
        if self.cover_at is not None:
            row = self.get_round(run_id, subscription)
            self.row, self.cover_at = PollRoundRow(row.seq, iso(self.cover_at), "e-cover"), None  # type: ignore[assignment]
        return super().put_round(run_id, subscription, seq, at, etag, polling=polling, wanted=wanted)


def test_a_round_whose_claim_loses_to_a_cover_claims_again_and_takes_its_successor_from_its_query() -> None:
    """The cover's machine was written before the cover, so before the round's queries (they come after its
    claim): the query (next_poll_at here) sees it, and no extra round is queued for the cover's time."""
    for later in (at(100), None, at(6)):
        store, queues = CoveredMeanwhile(PollRoundRow(0, iso(at(-1)), "e0"), at(7), later), Queues()
        chain = PollRounds(store, queues, clock=lambda: NOW)
        assert run_round(PollRoundMessage(RUN, 0, SUB), cast(StepPorts, None), store, chain) is RoundResult.POLLED
        assert store.writes == [(1, iso(NOW), True, ""), (1, iso(later) if later else "")]
        assert queues.rounds == ([(1, round((later - NOW).total_seconds()))] if later else [])


class ClaimFirst(Rows):
    """A round's queries must come after its claim: that is what lets a cover trust a queued round due already."""

    def due_polls(self, run_id: str, subscription: str, before: str, top: int) -> list[MachineRecord]:
        assert self.row is not None and self.row.polling, "queried before claiming"
        return []


def test_a_round_claims_before_it_queries() -> None:
    store, queues = ClaimFirst(PollRoundRow(2, iso(at(-1)), "e0")), Queues()
    assert run_round(PollRoundMessage(RUN, 2, SUB), cast(StepPorts, None), store,
                     PollRounds(store, queues, clock=lambda: NOW)) is RoundResult.POLLED


class FailsHalfway(Rows):
    def due_polls(self, run_id: str, subscription: str, before: str, top: int) -> list[MachineRecord]:
        raise RuntimeError("storage went away mid-round")


def test_a_round_that_fails_halfway_still_queues_its_successor() -> None:
    store, queues = FailsHalfway(PollRoundRow(2, iso(at(-1)), "e0")), Queues()
    chain = PollRounds(store, queues, clock=lambda: NOW)
    with pytest.raises(RuntimeError):
        run_round(PollRoundMessage(RUN, 2, SUB), cast(StepPorts, None), store, chain)
    assert store.row is not None and not store.row.polling and queues.rounds == [(3, 5)]  # POLL_ROUND_SECONDS on


def test_a_cover_takes_a_round_claimed_long_ago_for_dead_and_queues_one_in_its_place() -> None:
    chain, store, queues = rounds(PollRoundRow(6, iso(at(-600)), "e0", polling=True, wanted=iso(at(-500))))
    chain.cover(RUN, SUB, at(30))
    assert store.row == PollRoundRow(6, iso(at(30)), "e1") and queues.rounds == [(6, 30)]


def test_a_whole_run_round_from_before_chains_covers_the_chains_of_what_it_read() -> None:
    """A message queued before chains were per subscription (no subscription) polls the run once more and hands
    its machines to their subscriptions' chains: no whole-run chain goes on beside them."""
    other = "0f6c2d3e-1a2b-4c5d-8e9f-000000000002"

    class Legacy(Rows):
        def get_round(self, run_id: str, subscription: str) -> PollRoundRow:  # the whole-run row stands as SUB's
            return super().get_round(run_id, SUB if subscription == "" else subscription)

        def put_round(self, run_id: str, subscription: str, seq: int, at: str, etag: str | None, *,
                      polling: bool = False, wanted: str = "") -> str:
            return super().put_round(run_id, SUB if subscription == "" else subscription, seq, at, etag,
                                     polling=polling, wanted=wanted)

    store, queues = Legacy(PollRoundRow(3, iso(at(-1)), "e0")), Queues()
    chain = PollRounds(store, queues, clock=lambda: NOW)
    due = [MachineRecord(etag="x", columns={"state": "Done"}, run_id=RUN, key=f"{other}|rg|vm-{i}") for i in range(2)]
    store.due_polls = lambda run_id, subscription, before, top: due  # type: ignore[method-assign]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("shared.runs.poll_rounds._poll_all", lambda *a: (Counter(), None))
        assert run_round(PollRoundMessage(RUN, 3), cast(StepPorts, None), store, chain) is RoundResult.POLLED
    assert queues.rounds == []  # no successor on the whole-run row
    assert queues.others == [(other, 0, 5)]  # its machines' chain covered, POLL_ROUND_SECONDS on


def test_a_copy_of_a_round_or_one_for_a_run_without_rounds_does_nothing() -> None:
    for row in (PollRoundRow(5, iso(at(-1)), "e0"), None):
        chain, store, queues = rounds(row)
        assert run_round(PollRoundMessage(RUN, 4, SUB), cast(StepPorts, None), store, chain) is RoundResult.STALE
        assert store.writes == [] and queues.rounds == []


def test_each_subscription_has_its_own_chain_of_rounds() -> None:
    """A round polls one subscription's machines (its budget is that subscription's): a round of one chain due
    soon does not cover a machine of another, which gets its own round row and message."""
    chain, store, queues = rounds(PollRoundRow(4, iso(at(10)), "e0"))
    other = "0f6c2d3e-1a2b-4c5d-8e9f-000000000002"
    chain.send_poll(RUN, f"{other}|rg|vm-7", 3, 30, at(30))
    assert store.writes == [] and queues.rounds == []  # SUB's chain untouched
    assert store.others == {other: PollRoundRow(0, iso(at(30)), "o")} and queues.others == [(other, 0, 30)]
    chain.send_poll(RUN, f"{SUB}|rg|vm-1", 3, 30, at(30))  # SUB's round at +10 s covers it
    assert store.writes == [] and queues.rounds == []


def test_a_cover_while_a_round_polls_asks_that_round_for_its_time_and_sends_nothing() -> None:
    chain, store, queues = rounds(PollRoundRow(5, iso(at(-1)), "e0", polling=True))  # claimed a second ago
    chain.cover(RUN, SUB, at(30))
    chain.cover(RUN, SUB, at(40))  # asked for no later already: not written
    assert store.writes == [(5, iso(at(-1)), True, iso(at(30)))] and queues.rounds == []
    chain.cover(RUN, SUB, at(20))
    assert store.writes[-1] == (5, iso(at(-1)), True, iso(at(20))) and queues.rounds == []


class CoveredWhilePolling(Rows):
    """Covers come while the round polls (between its query and its end), as starts of the run do."""

    def __init__(self, row: PollRoundRow, chain: list[PollRounds], asks: list[datetime]) -> None:
        super().__init__(row)
        self.chain, self.asks = chain, asks

    def next_poll_at(self, run_id: str, subscription: str, after: str) -> str | None:
        for when in self.asks:
            self.chain[0].cover(run_id, subscription, when)
        return iso(at(60))  # the earliest poll the round's query saw


def test_a_round_queues_one_successor_by_the_earliest_poll_covers_asked_for_while_it_polled() -> None:
    for asks, successor in (([at(30), at(12)], at(12)), ([], at(60)), ([at(90)], at(60))):
        holder: list[PollRounds] = []
        store, queues = CoveredWhilePolling(PollRoundRow(0, iso(at(-1)), "e0"), holder, asks), Queues()
        holder.append(PollRounds(store, queues, clock=lambda: NOW))
        assert run_round(PollRoundMessage(RUN, 0, SUB), cast(StepPorts, None), store, holder[0]) is RoundResult.POLLED
        # one message, the successor's, whatever the covers asked (they sent none); the row queued again
        assert queues.rounds == [(1, round((successor - NOW).total_seconds()))]
        assert store.row == PollRoundRow(1, iso(successor), store.row.etag if store.row else None)


def test_the_sweeper_revives_a_round_that_claimed_long_ago_and_never_finished() -> None:
    chain, store, queues = rounds(PollRoundRow(6, iso(at(-1)), "e0", polling=True, wanted=iso(at(5))))
    assert chain.revive(RUN, SUB, at(-60)) is False and queues.rounds == []  # at work
    chain, store, queues = rounds(PollRoundRow(6, iso(at(-600)), "e0", polling=True))  # its host died in it
    assert chain.revive(RUN, SUB, at(-60)) is True
    assert store.row == PollRoundRow(6, iso(NOW), "e1") and queues.rounds == [(6, 0)]
    # a copy of the message of the round taken for dead finds the row moved on
    assert run_round(PollRoundMessage(RUN, 5, SUB), cast(StepPorts, None), store, chain) is RoundResult.STALE


class RevivedWhilePolling(Rows):
    """The sweeper took the round for dead while it polled (revive): the row is queued again at the claimed seq, or
    that revived round has already claimed it in turn."""

    def __init__(self, row: PollRoundRow, chain: list[PollRounds], then: PollRoundRow) -> None:
        super().__init__(row)
        self.chain, self.then = chain, then

    def next_poll_at(self, run_id: str, subscription: str, after: str) -> str | None:
        self.row = self.then  # the round's end write, If-Match on its claim, now fails
        return iso(at(60))


def test_a_round_revived_while_it_polled_covers_its_successor_instead_of_queuing_it() -> None:
    # revived and queued for now: that round comes first, so nothing is written or sent
    # revived and already claimed by the revived round: the successor's time goes to that round as `wanted`
    for then, writes in ((PollRoundRow(1, iso(NOW), "r1"), []),
                         (PollRoundRow(2, iso(NOW), "r2", polling=True), [(2, iso(NOW), True, iso(at(60)))])):
        holder: list[PollRounds] = []
        store, queues = RevivedWhilePolling(PollRoundRow(0, iso(at(-1)), "e0"), holder, then), Queues()
        holder.append(PollRounds(store, queues, clock=lambda: NOW))
        assert run_round(PollRoundMessage(RUN, 0, SUB), cast(StepPorts, None), store, holder[0]) is RoundResult.POLLED
        assert store.writes[1:] == writes and queues.rounds == []  # the claim, then only what the cover wrote
