"""Poll rounds: one queue message polls every machine of a run in one subscription whose poll is due (issue #22).

Before, each poll of each machine was its own delayed queue message: at 10,000 machines about three messages a
machine, and a Table write per poll. Now a machine whose operation runs is left to its run's rounds: its row says
so (`pollRound`, with `nextActionAt` when its poll is due) and no message is sent for it. A run has a chain of
rounds per subscription (the budget its polls draw from is the subscription's; one chain per run polled only what
one round's time allows while four subscriptions' budgets allowed four times that). A round message, on
POLLS_QUEUE beside the step messages:
1. claims the round: the chain's round row (`seq`, `at`, `polling`, `wanted`: shared/storage/run_store.py, RowKey
   `pollround|<subscription>`) moves to `seq + 1`, polling since now, If-Match, so of two copies of one round
   message only one polls;
2. polls the chain's due machines (one query over the subscription's keys, whole rows: no read per machine, oldest
   due first) as the step does (MachineStep.poll), at most ROUND_POLLS of them on ROUND_THREADS threads and for at
   most ROUND_BUSY_SHARE of POLL_ROUND_SECONDS, and only while the subscription's polls' budget has a token now
   (what it has no time or budget for stays due, and its token goes back: a round never leaves a poll waiting with
   a token, which would take a message and a row write of its own); an installation that ended is finished there
   (its result, patches and events, as before);
3. writes the machines still running back in transactions of ≤ 100 rows (ETag per row), and then queues its
   successor for the earliest poll of the chain not yet due (one more query, of that column), no sooner than
   POLL_ROUND_SECONDS after itself, or sooner if a cover asked for it meanwhile (`wanted`): the row goes back to
   queued at `seq + 1` (If-Match on its claim; a cover's write makes it read `wanted` and try again) and one
   message is sent. After its writes, so the successor never polls a row this round polled and has not written
   back yet. Should the round fail halfway, it still queues a successor, POLL_ROUND_SECONDS on (the message is
   retried and finds the round claimed). A whole-run round (a message from before chains were per subscription)
   queues none of its own: it covers the chains of the machines it read.

`cover(run_id, subscription, at)` is how a machine joins the rounds (a started operation, a poll of its own that
found it running): it keeps the chain due no later than `at`. A round at work (`polling`) is asked for `at`
(`wanted`, written only when sooner than what it was asked for): it queues its successor when done, after its
queries, so no message is needed. A queued round due no later than `at` (even one due already, whose message is
on its way or in a backlog) is kept: it claims the row before it queries, so it queries after the caller's row was
written and sees the machine. Otherwise (no round queued, or a later one) the row is set to `at` at the same `seq`
and a round message queued for then: of two messages with one `seq`, the first to come claims it and the other
finds it moved on. A round whose claim loses to a cover claims again: the cover's machine was written before,
so its queries see it. A round claimed more than ROUND_STALE_SECONDS ago and still polling is taken for dead: a
cover queues a round in its place, as the sweeper does (`revive`).

What is lost (a host that died in a round, a failed cover) is found by the sweeper: machines left to the rounds
that are overdue, with no round due soon or lately nor one at work since lately, make it queue a round of their
chain at the row's seq (`revive`, shared/runs/sweeper.py), about STALL_AFTER_SECONDS plus a sweep after their poll
was due. A machine whose poll holds budget tokens (a paced or booked poll) keeps its own message, not the rounds:
the round could not spend those tokens. A machine whose poll raises is handed to a step message of its own, which
retries it and, when it keeps failing, ends the machine through the poison queue (machine_worker.fail_poisoned_step).

Cost at 10,000 machines: a round a run and subscription about every POLL_ROUND_SECONDS while polls are due (two
queries, the second of one column over the chain's running machines; the round row read once and written twice,
and once more for each cover that asks sooner while it polls; one message), where each poll was a message and a
write. A poll is late by up to POLL_ROUND_SECONDS plus the queue's delivery. One chain's rounds come one at a time,
each polling at most ROUND_POLLS; past that, polls wait (they are also paced to their share of the subscription's
reads, which in Azure binds first).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Protocol

from azure.core.exceptions import AzureError

from shared.core.clock import iso, parse_iso, utcnow
from shared.core.errors import ConflictError
from shared.core.messages import CarriedRow, PollRoundMessage
from shared.core.records import MachineRecord, PollRoundRow
from shared.core.telemetry import MACHINE_ID, QUEUE_STEP, RUN_ID, annotate, spanned_in_threads
from shared.runs.machine_worker import MachineStep, StepPorts, StepResult

log = logging.getLogger(__name__)
ROUND_POLLS = 400  # machines one round polls at most; with more due, the next round comes POLL_ROUND_SECONDS after it
DUE_READ = 1000  # due rows one round reads (one page), polled oldest first
# A round polls for at most this share of POLL_ROUND_SECONDS, and leaves what is still due to its successor: it has
# written its rows back before the successor queries them (a row polled but not yet written back is still due).
ROUND_BUSY_SHARE = 0.8
ROUND_THREADS = 8  # polls of one round at a time (each an ARM read and, when it ended, a few Table writes)
COVER_ATTEMPTS = 5  # a cover whose round-row write loses reads the row again this often
CLAIM_ATTEMPTS = 5
SUCCESSOR_ATTEMPTS = 20  # a round's end write loses only to covers asking a sooner time: each a new, sooner `wanted`
# A round claimed longer ago than this (or ROUND_STALE_ROUNDS times POLL_ROUND_SECONDS) and still polling is taken for
# dead (its host died, or its end write failed): a cover or the sweeper queues a round in its place. A round is busy
# for ROUND_BUSY_SHARE of POLL_ROUND_SECONDS plus its writes; should one be slower still, the round in its place
# polls rows it has not written back yet: their writes lose their ETags, nothing is done twice but the poll.
ROUND_STALE_SECONDS = 60
ROUND_STALE_ROUNDS = 6
LEFT = "left"  # a due machine a round had no time left for (its successor polls it)


class RoundResult(str, Enum):
    """What one round message did (logged by the queue trigger; asserted by tests)."""

    POLLED = "polled"  # claimed the round and polled what was due (maybe nothing)
    STALE = "stale"  # another copy, or a later round, has the run's round row


class RoundStore(Protocol):
    """The round row and the machine rows a round reads and writes (shared/storage/run_store.py RunStore)."""

    def get_round(self, run_id: str, subscription: str) -> PollRoundRow: ...

    def put_round(self, run_id: str, subscription: str, seq: int, at: str, etag: str | None, *,
                  polling: bool = False, wanted: str = "") -> str: ...

    def due_polls(self, run_id: str, subscription: str, before: str, top: int) -> list[MachineRecord]: ...

    def next_poll_at(self, run_id: str, subscription: str, after: str) -> str | None: ...

    def merge_polled(self, changes: list[tuple[MachineRecord, dict[str, Any]]]) -> int: ...

    def update_target(self, target: MachineRecord, changes: dict[str, Any]) -> MachineRecord: ...


class RoundSender(Protocol):
    """The queues a round sends to (shared/runs/queues.py WorkQueues)."""

    def send_round(self, run_id: str, subscription: str, seq: int, delay_seconds: int = 0) -> None: ...

    def send_step(self, run_id: str, machine: str, seq: int, delay_seconds: int = 0, *,
                  held: tuple[str, ...] = (), poll: bool = False, row: CarriedRow | None = None) -> None: ...


class PollRounds:
    """The step queue a machine step sends to (machine_worker.StepQueue): a step message goes to its queue as
    before (`send_step`); a poll left to the run's rounds makes sure a round comes by then (`send_poll`)."""

    def __init__(self, store: RoundStore, queues: RoundSender, *, round_seconds: int = 5,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.queues = queues
        self.round_seconds = round_seconds  # POLL_ROUND_SECONDS: a run's rounds come at most this often
        self.clock = clock

    def send_step(self, run_id: str, machine: str, seq: int, delay_seconds: int = 0, *,
                  held: tuple[str, ...] = (), poll: bool = False, row: CarriedRow | None = None) -> None:
        self.queues.send_step(run_id, machine, seq, delay_seconds, held=held, poll=poll, row=row)

    def send_poll(self, run_id: str, machine: str, seq: int, delay_seconds: int, at: datetime) -> None:
        """Machine `machine` (its row written with `pollRound` and `nextActionAt` = `at`) is polled by the run's
        rounds: one comes by `at`. A cover that fails (storage unreachable) is logged, not raised: the row is
        written, and a retry of the step would find it moved on; the sweeper revives the run's rounds when the
        machine is overdue."""
        try:
            self.cover(run_id, subscription_of(machine), at)
        except AzureError:
            log.warning("could not make sure of a poll round of run %s for %s; the sweeper will", run_id, machine,
                        exc_info=True)

    def cover(self, run_id: str, subscription: str, at: datetime) -> None:
        """Make sure a round of run `run_id`'s chain for `subscription` (lower case, as machine keys hold it) comes
        no later than `at` (module docstring). One read of the round row; a write and a message only when no
        round is queued for `at` or sooner; a round at work is asked for `at` instead (a write only when it was
        asked for no time as soon). A row that keeps changing (COVER_ATTEMPTS) is left:
        the sweeper revives the chain when its machines are overdue (revive)."""
        for _ in range(COVER_ATTEMPTS):
            row = self.store.get_round(run_id, subscription)
            now = self.clock()
            if self.at_work(row, now):  # it queues its successor when done: by `at`, if it is asked to
                if row.wanted and parse_iso(row.wanted) <= at:
                    return
                try:
                    self.store.put_round(run_id, subscription, row.seq, row.at, row.etag, polling=True,
                                         wanted=iso(at))
                except ConflictError:
                    continue  # it finished (or another cover asked) meanwhile: read it again
                return
            # Queued, not claimed: its queries come after its claim, so after this machine's row was written. Due
            # already, its message is on its way or waits in a backlog (a lost one: the sweeper revives the chain).
            if not row.polling and row.at and parse_iso(row.at) <= at:
                return
            when = max(at, now)
            try:
                self.store.put_round(run_id, subscription, row.seq, iso(when), row.etag)
            except ConflictError:
                continue
            self.queues.send_round(run_id, subscription, row.seq, math.ceil((when - now).total_seconds()))
            return
        log.warning("poll rounds of run %s (%s) kept changing; the sweeper will find what is overdue", run_id,
                    subscription or "all")

    def at_work(self, row: PollRoundRow, now: datetime) -> bool:
        """Whether a round claimed the chain's row (`polling`) lately enough to be alive (ROUND_STALE_SECONDS)."""
        return row.polling and bool(row.at) and parse_iso(row.at) > _stale_before(self.round_seconds, now)

    def revive(self, run_id: str, subscription: str, overdue_before: datetime) -> bool:
        """The sweeper found machines of the run in `subscription` left to its rounds overdue: queue a round of
        that chain now unless one is at work (claimed within ROUND_STALE_SECONDS: at_work), or one is due
        soon or was due lately, after `overdue_before` and no later than POLL_ROUND_SECONDS from now (its message is
        on its way, or waits in a backlog). A round row with none queued (""), one due long ago, or one due later
        than the overdue machines allow (a round or a cover that failed halfway left them so) gets one. True if
        one was queued. A copy of a round whose message was only late is harmless: the first to come claims the
        round's seq."""
        row = self.store.get_round(run_id, subscription)
        now = self.clock()
        if self.at_work(row, now):
            return False  # a round claimed it lately and is at work (it queues its successor when done)
        if not row.polling and row.at and overdue_before < parse_iso(row.at) <= now + timedelta(
                seconds=self.round_seconds):
            return False
        try:
            self.store.put_round(run_id, subscription, row.seq, iso(now), row.etag)
        except ConflictError:
            return False  # it moved meanwhile: a round is under way
        self.queues.send_round(run_id, subscription, row.seq)
        return True


def _stale_before(round_seconds: int, now: datetime) -> datetime:
    return now - timedelta(seconds=max(ROUND_STALE_SECONDS, ROUND_STALE_ROUNDS * round_seconds))


def subscription_of(machine: str) -> str:
    """The subscription id a machine key (MachineRef.key: "sub|rg|name…", lower case) starts with: its chain."""
    return machine.split("|", 1)[0]


def run_round(msg: PollRoundMessage, ports: StepPorts, store: RoundStore, rounds: PollRounds) -> RoundResult:
    """Process one round message (module docstring). Safe to run twice: a copy finds the round row moved on."""
    annotate({RUN_ID: msg.run_id, QUEUE_STEP: "round", "patchpilot.round.seq": msg.seq,
              "patchpilot.round.subscription": msg.subscription})
    sub = msg.subscription
    row = store.get_round(msg.run_id, sub)
    if row.etag is None or row.seq != msg.seq or row.polling:
        return RoundResult.STALE  # a copy, or a later round's message, moved it on (or a round is at work)
    now = rounds.clock()
    claimed: str | None = None
    for _ in range(CLAIM_ATTEMPTS):
        try:  # claimed: polling, since now; a cover meanwhile asks for its time (`wanted`) rather than queue a round
            claimed = store.put_round(msg.run_id, sub, msg.seq + 1, iso(now), row.etag, polling=True)
            break
        except ConflictError:
            # A cover moved this round meanwhile (its message has this seq and will find it moved on). Its machine
            # was written before the cover, so before this round's queries, which come after the claim: they see it.
            row = store.get_round(msg.run_id, sub)
            if row.seq != msg.seq or row.polling:
                return RoundResult.STALE  # a copy of this message claimed it
    if claimed is None:
        log.warning("poll round %d of run %s (%s) could not be claimed; the sweeper will find what is overdue",
                    msg.seq, msg.run_id, sub or "all")
        return RoundResult.STALE
    successor: datetime | None = None
    outcomes: Counter[str] = Counter()
    soonest = now + timedelta(seconds=rounds.round_seconds)
    due: list[MachineRecord] = []
    try:
        due_before = iso(now)  # not a moment sooner: Retry-After is a minimum (RFC 9110 §10.2.3)
        # Oldest due first: with more due than a round can poll, what it leaves is the newest, never the same rows.
        due = sorted(store.due_polls(msg.run_id, sub, due_before, DUE_READ),
                     key=lambda r: str(r.get("nextActionAt") or ""))
        later = store.next_poll_at(msg.run_id, sub, due_before)
        if later is not None:
            successor = _sooner(successor, max(parse_iso(later), soonest))
        if len(due) > ROUND_POLLS:
            successor, due = _sooner(successor, soonest), due[:ROUND_POLLS]
        outcomes, next_polls = _poll_all(due, ports, store, time.monotonic() + ROUND_BUSY_SHARE * rounds.round_seconds)
        if outcomes.get(LEFT) or outcomes.get(StepResult.NO_BUDGET.value):  # what the time or budget left is due
            successor = _sooner(successor, soonest)
        if next_polls is not None:
            successor = _sooner(successor, max(next_polls, soonest))
    except BaseException:  # failed halfway: what it read may still be due, or polled and not written back
        successor = _sooner(successor, soonest)
        raise
    finally:  # what was written stays covered (the message is retried and finds the round claimed: STALE)
        asked = successor
        if sub:
            successor = _queue_successor(msg, store, rounds, claimed, successor)
        else:  # a whole-run round queued before chains were per subscription: its machines go to their chains
            _queue_successor(msg, store, rounds, claimed, None)
            for chain in sorted({subscription_of(r.key) for r in due}):
                rounds.cover(msg.run_id, chain, successor or soonest)
    log.info("poll round %d of run %s (%s): %d due (%s)%s", msg.seq, msg.run_id, sub or "all", len(due),
             ", ".join(f"{k} {n}" for k, n in sorted(outcomes.items())),
             f", next by {iso(successor)}" if successor
             else ", its successor not queued" if asked is not None and sub else ", none left")
    return RoundResult.POLLED


def _queue_successor(msg: PollRoundMessage, store: RoundStore, rounds: PollRounds, etag: str,
                     successor: datetime | None) -> datetime | None:
    """End the round claimed with ETag `etag`: the chain's row goes back to queued, at seq + 1, due at `successor`
    or at what covers asked for while it polled (`wanted`), whichever is sooner, and that round's message is
    queued (none when neither is). Should the row have been revived meanwhile (the sweeper took this round for
    dead), `successor` is covered as a machine's poll is. Returns the time queued for."""
    sub, seq = msg.subscription, msg.seq + 1
    for _ in range(SUCCESSOR_ATTEMPTS):
        try:
            store.put_round(msg.run_id, sub, seq, iso(successor) if successor else "", etag)
            break
        except ConflictError:
            row = store.get_round(msg.run_id, sub)
            if row.seq != seq or not row.polling or row.etag is None:  # revived (or moved on) meanwhile
                if successor is not None:
                    rounds.cover(msg.run_id, sub, successor)
                return successor
            if row.wanted:  # a cover asked for its machine's poll
                successor = _sooner(successor, parse_iso(row.wanted))
            etag = row.etag
    else:
        log.warning("poll round %d of run %s (%s) could not queue its successor; a cover or the sweeper will take "
                    "it for dead after ROUND_STALE_SECONDS", msg.seq, msg.run_id, sub or "all")
        return None
    if successor is not None:
        now = rounds.clock()
        rounds.queues.send_round(msg.run_id, sub, seq, max(0, math.ceil((successor - now).total_seconds())))
    return successor


def _sooner(a: datetime | None, b: datetime) -> datetime:
    return b if a is None else min(a, b)


def _poll_all(due: list[MachineRecord], ports: StepPorts, store: RoundStore,
              busy_until: float) -> tuple[Counter[str], datetime | None]:
    """Poll `due` (whole rows as the round read them, oldest first) until `busy_until` (time.monotonic()) and write
    those still running back in batches. Returns what the steps did, by StepResult value ("handed-over": a poll that
    raised; LEFT: not polled, the time was up or its subscription's polls' budget was spent; "no-budget": the poll
    that found it spent; "unwritten": still running, but another writer moved the row first),
    and the earliest next poll of those written (None: none)."""
    if not due:
        return Counter(), None
    deferred: list[tuple[MachineRecord, dict[str, Any]]] = []
    lock = threading.Lock()
    spent: set[str] = set()  # subscriptions whose polls' budget a poll of this round found spent

    def poll(target: MachineRecord) -> str:
        subscription = subscription_of(target.key)
        if time.monotonic() > busy_until or subscription in spent:
            return LEFT
        annotate({RUN_ID: target.run_id, MACHINE_ID: str(target.get("resourceId") or ""), QUEUE_STEP: "poll"})
        kept: list[tuple[MachineRecord, dict[str, Any]]] = []
        # Not `carried`: the row is fresh from the round's query, so a finish does not read it again before its
        # patch rows; should another writer have moved it meanwhile, what the finish writes before its If-Match
        # write (patch rows, an assessment's fleet record) is the same final result written again.
        step = MachineStep(target, ports, deferred=kept)
        try:
            result = step.poll()
        except ConflictError:
            return StepResult.LOST_RACE.value  # another delivery (a step message, a copy of a round) moved it first
        except Exception:  # one machine must not stop the round: its own message retries it (module docstring)
            log.exception("poll of %s/%s in a round failed; handing it to a step message", target.run_id,
                          target.key)
            _hand_over(target, ports, store)
            return "handed-over"
        with lock:
            deferred.extend(kept)
            if result is StepResult.NO_BUDGET:  # the rest of the subscription waits for the successor too
                spent.add(subscription)
        return result.value

    with ThreadPoolExecutor(max_workers=min(ROUND_THREADS, len(due)), thread_name_prefix="poll-round") as pool:
        outcomes = Counter(pool.map(spanned_in_threads("machine_poll", poll), due))
    if not deferred:
        return outcomes, None
    unwritten = len(deferred) - store.merge_polled(deferred)
    if unwritten:
        outcomes["unwritten"] = unwritten
    return outcomes, min(parse_iso(str(changes["nextActionAt"])) for _, changes in deferred)


def _hand_over(target: MachineRecord, ports: StepPorts, store: RoundStore) -> None:
    """Take a machine whose poll raised out of the rounds and give it a step message (at its current seq)."""
    try:
        store.update_target(target, {"pollRound": False})
    except ConflictError:
        return  # it moved on meanwhile: whoever moved it queued what comes next
    ports.queue.send_step(target.run_id, target.key, target.seq, ports.retries.default_retry_after_seconds,
                          poll=True)
