"""Poll rounds: one queue message polls every machine of a run whose poll is due (issue #22).

Before, each poll of each machine was its own delayed queue message: at 10,000 machines about three messages a
machine, and a Table write per poll. Now a machine whose operation runs is left to its run's rounds: its row says
so (`pollRound`, with `nextActionAt` when its poll is due) and no message is sent for it. A round message, on
POLLS_QUEUE beside the step messages:
1. claims the round: the run's round row (`seq`, `at`: shared/storage/run_store.py) moves to `seq + 1`, If-Match,
   so of two copies of one round message only one polls, and the next round (`seq + 1`) is queued for the earliest
   poll not yet due, POLL_ROUND_SECONDS after this one at the soonest: before any poll, so a round that dies halfway
   still has a successor;
2. polls the due machines (one query, whole rows: no read per machine) as the step does (MachineStep.poll), at most
   ROUND_POLLS of them on ROUND_THREADS threads; an installation that ended is finished there (its result, patches
   and events, as before);
3. writes the machines still running back in transactions of ≤ 100 rows (ETag per row) and makes sure a round comes
   by the earliest of their next polls (`cover`).

`cover(run_id, at)` is how a machine joins the rounds (a started operation, a poll that found it running): it keeps
the round row due no later than `at`. A round row due in the future, no later than `at`, is kept: that round queries
after the caller's row was written, so it sees the machine. Otherwise (no round, a later one, or one due now that may
have queried already) the row is set to `at` at the same `seq` and a round message queued for then: of two messages
with one `seq`, the first to come claims it and the other finds it moved on. A round whose claim loses to a cover
takes the cover's time into its own successor's.

What is lost is found by the sweeper: machines left to the rounds that are overdue, with no round due lately, make it
queue a round at the row's seq (`revive`, shared/runs/sweeper.py); a machine
whose poll holds budget tokens (a paced or booked poll) keeps its own message, not the rounds: the round could not
spend those tokens. A machine whose poll raises is handed to a step message of its own, which retries it and, when
it keeps failing, ends the machine through the poison queue (machine_worker.fail_poisoned_step).

Cost at 10,000 machines: a round a run about every POLL_ROUND_SECONDS while polls are due (two queries, the round row's
read and write, one message), where each poll was a message and a write. A poll is late by up to POLL_ROUND_SECONDS plus
the queue's delivery.
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

from shared.core.clock import iso, parse_iso, utcnow
from shared.core.errors import ConflictError
from shared.core.messages import CarriedRow, PollRoundMessage
from shared.core.records import MachineRecord, PollRoundRow
from shared.core.telemetry import MACHINE_ID, QUEUE_STEP, RUN_ID, annotate, spanned_in_threads
from shared.runs.machine_worker import MachineStep, StepPorts, StepResult

log = logging.getLogger(__name__)
ROUND_POLLS = 400  # machines one round reads; with more due, the next round comes POLL_ROUND_SECONDS after it
# A round polls for at most this share of POLL_ROUND_SECONDS, and leaves what is still due to its successor: it has
# written its rows back before the successor queries them (a row polled but not yet written back is still due).
ROUND_BUSY_SHARE = 0.8
ROUND_THREADS = 8  # polls of one round at a time (each an ARM read and, when it ended, a few Table writes)
COVER_ATTEMPTS = 5  # a cover whose round-row write loses reads the row again this often
CLAIM_ATTEMPTS = 5
# A round due this soon may be at work already (its query made before the caller's write), should the host's clock
# run behind the queue service's: not relied on. Its message was queued with a whole-second delay rounded up, so it
# becomes visible at its `at` or after, never before.
IN_FLIGHT = timedelta(seconds=0.5)
LEFT = "left"  # a due machine a round had no time left for (its successor polls it)


class RoundResult(str, Enum):
    """What one round message did (logged by the queue trigger; asserted by tests)."""

    POLLED = "polled"  # claimed the round and polled what was due (maybe nothing)
    STALE = "stale"  # another copy, or a later round, has the run's round row


class RoundStore(Protocol):
    """The round row and the machine rows a round reads and writes (shared/storage/run_store.py RunStore)."""

    def get_round(self, run_id: str) -> PollRoundRow: ...

    def put_round(self, run_id: str, seq: int, at: str, etag: str | None) -> None: ...

    def due_polls(self, run_id: str, before: str, top: int) -> list[MachineRecord]: ...

    def next_poll_at(self, run_id: str, after: str) -> str | None: ...

    def merge_polled(self, changes: list[tuple[MachineRecord, dict[str, Any]]]) -> int: ...

    def update_target(self, target: MachineRecord, changes: dict[str, Any]) -> MachineRecord: ...


class RoundSender(Protocol):
    """The queues a round sends to (shared/runs/queues.py WorkQueues)."""

    def send_round(self, run_id: str, seq: int, delay_seconds: int = 0) -> None: ...

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
        rounds: one comes by `at`."""
        self.cover(run_id, at)

    def cover(self, run_id: str, at: datetime) -> None:
        """Make sure a round of run `run_id` comes no later than `at` and after now (module docstring). One read
        of the round row; a write and a message only when no round is due in (now + IN_FLIGHT, at]. A row that
        keeps changing (COVER_ATTEMPTS) is left: the sweeper sends the machine a step message when it is
        overdue."""
        for _ in range(COVER_ATTEMPTS):
            row = self.store.get_round(run_id)
            now = self.clock()
            if row.at and now + IN_FLIGHT < parse_iso(row.at) <= at:
                return
            when = max(at, now)
            try:
                self.store.put_round(run_id, row.seq, iso(when), row.etag)
            except ConflictError:
                continue
            self.queues.send_round(run_id, row.seq, math.ceil((when - now).total_seconds()))
            return
        log.warning("poll rounds of run %s kept changing; the sweeper will find what is overdue", run_id)

    def revive(self, run_id: str, overdue_before: datetime) -> bool:
        """The sweeper found machines of the run left to its rounds overdue: queue a round now unless one was due
        after `overdue_before` (its message is on its way, or waits in a backlog). True if one was queued. A copy
        of a round whose message was only late is harmless: the first to come claims the round's seq."""
        row = self.store.get_round(run_id)
        if row.at and parse_iso(row.at) > overdue_before:
            return False
        now = self.clock()
        try:
            self.store.put_round(run_id, row.seq, iso(now), row.etag)
        except ConflictError:
            return False  # it moved meanwhile: a round is under way
        self.queues.send_round(run_id, row.seq)
        return True


def run_round(msg: PollRoundMessage, ports: StepPorts, store: RoundStore, rounds: PollRounds) -> RoundResult:
    """Process one round message (module docstring). Safe to run twice: a copy finds the round row moved on."""
    annotate({RUN_ID: msg.run_id, QUEUE_STEP: "round", "patchpilot.round.seq": msg.seq})
    row = store.get_round(msg.run_id)
    if row.etag is None or row.seq != msg.seq:
        return RoundResult.STALE
    now = rounds.clock()
    due_before = iso(now + timedelta(seconds=1))
    due = store.due_polls(msg.run_id, due_before, ROUND_POLLS + 1)
    more = len(due) > ROUND_POLLS
    due = due[:ROUND_POLLS]
    soonest = now + timedelta(seconds=rounds.round_seconds)
    successor: datetime | None = soonest if more else None
    if not more and (later := store.next_poll_at(msg.run_id, due_before)) is not None:
        successor = max(parse_iso(later), soonest)
    for _ in range(CLAIM_ATTEMPTS):
        try:
            store.put_round(msg.run_id, msg.seq + 1, iso(successor) if successor else "", row.etag)
            break
        except ConflictError:
            row = store.get_round(msg.run_id)
            if row.seq != msg.seq:
                return RoundResult.STALE  # a copy of this message claimed it
            if row.at:  # a cover moved this round earlier meanwhile: its machine is polled by the successor
                asked = max(parse_iso(row.at), now + timedelta(seconds=1))
                successor = asked if successor is None else min(successor, asked)
    else:
        log.warning("poll round %d of run %s could not be claimed; the sweeper will find what is overdue",
                    msg.seq, msg.run_id)
        return RoundResult.STALE
    if successor is not None:
        rounds.queues.send_round(msg.run_id, msg.seq + 1, math.ceil((successor - now).total_seconds()))
    outcomes = _poll_all(due, ports, store, rounds,
                         time.monotonic() + ROUND_BUSY_SHARE * rounds.round_seconds) if due else Counter()
    if outcomes.get(LEFT):  # what the time ran out on is still due: the successor comes at the soonest
        rounds.cover(msg.run_id, soonest)
    log.info("poll round %d of run %s: %d due (%s)%s", msg.seq, msg.run_id, len(due),
             ", ".join(f"{k} {n}" for k, n in sorted(outcomes.items())),
             f", next at {iso(successor)}" if successor else ", none left")
    return RoundResult.POLLED


def _poll_all(due: list[MachineRecord], ports: StepPorts, store: RoundStore, rounds: PollRounds,
              busy_until: float) -> Counter[str]:
    """Poll `due` (whole rows as the round read them) until `busy_until` (time.monotonic()), write those still
    running in batches, cover their next polls; returns what the steps did, by StepResult value ("handed-over":
    a poll that raised; LEFT: not polled, the time was up)."""
    deferred: list[tuple[MachineRecord, dict[str, Any]]] = []
    lock = threading.Lock()

    def poll(target: MachineRecord) -> str:
        if time.monotonic() > busy_until:
            return LEFT
        annotate({RUN_ID: target.run_id, MACHINE_ID: str(target.get("resourceId") or ""), QUEUE_STEP: "poll"})
        kept: list[tuple[MachineRecord, dict[str, Any]]] = []
        step = MachineStep(target, ports, deferred=kept)
        try:
            result = step.poll()
        except ConflictError:
            return StepResult.LOST_RACE.value  # another delivery (a step message, the sweeper's copy) moved it first
        except Exception:  # one machine must not stop the round: its own message retries it (module docstring)
            log.exception("poll of %s/%s in a round failed; handing it to a step message", target.run_id,
                          target.key)
            _hand_over(target, ports, store)
            return "handed-over"
        with lock:
            deferred.extend(kept)
        return result.value

    with ThreadPoolExecutor(max_workers=min(ROUND_THREADS, len(due)), thread_name_prefix="poll-round") as pool:
        outcomes = Counter(pool.map(spanned_in_threads("machine_poll", poll), due))
    if deferred:
        written = store.merge_polled(deferred)
        outcomes["lost-race"] += len(deferred) - written
        outcomes[StepResult.PENDING.value] -= len(deferred) - written
        rounds.cover(due[0].run_id, min(parse_iso(str(changes["nextActionAt"])) for _, changes in deferred))
    return +outcomes


def _hand_over(target: MachineRecord, ports: StepPorts, store: RoundStore) -> None:
    """Take a machine whose poll raised out of the rounds and give it a step message (at its current seq)."""
    try:
        store.update_target(target, {"pollRound": False})
    except ConflictError:
        return  # it moved on meanwhile: whoever moved it queued what comes next
    ports.queue.send_step(target.run_id, target.key, target.seq, ports.retries.default_retry_after_seconds,
                          poll=True)
