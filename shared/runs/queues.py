"""The app's work queues: every message a run sends, through one sender per queue.

A delayed message is how PatchPilot waits (Retry-After, polling, pacing): the function returns and the queue
brings the work back later. Message bodies are the contracts of shared/core/messages.py.
"""

from __future__ import annotations

from typing import Any, Protocol

from shared.core.messages import (
    CarriedRow,
    DiscoveryMessage,
    DispatchMessage,
    PollRoundMessage,
    StepMessage,
    encode_delivery,
)
from shared.core.telemetry import queue_messages_sent

MAX_VISIBILITY_SECONDS = 7 * 24 * 3600 - 1  # Azure Queue's limit for a message's initial invisibility


class QueueSender(Protocol):
    """What sending (and the sweeper's look at a backlog) needs of azure-storage-queue's `QueueClient` (built with
    TextBase64EncodePolicy)."""

    def send_message(self, content: Any, *, visibility_timeout: int | None = None) -> Any: ...

    def peek_messages(self, max_messages: int | None = None, **kwargs: Any) -> Any: ...


class WorkQueues:
    """Sends each kind of message to its queue (names from the QUEUE settings)."""

    def __init__(self, *, operations: QueueSender, dispatch: QueueSender, discovery: QueueSender,
                 events: QueueSender, polls: QueueSender | None = None) -> None:
        self._operations = operations
        self._polls = polls or operations
        self._dispatch = dispatch
        self._discovery = discovery
        self._events = events

    def send_step(self, run_id: str, machine: str, seq: int, delay_seconds: int = 0, *,
                  held: tuple[str, ...] = (), poll: bool = False, row: CarriedRow | None = None) -> None:
        """A machine's next step. `held`: the ARM budget buckets its tokens are already reserved in
        (shared/runs/pacing.py). `poll`: the machine's operation was claimed (a poll, a retry after the claim, a
        health read): POLLS_QUEUE, so a backlog of polls never delays a start, whose slot holds budget tokens
        that are spent on time or wasted (issue #22). Starts (and their paced or retried tries) go to
        OPERATIONS_QUEUE. Both queues' triggers run the same step; `seq` fences a copy on either. `row`: the
        machine's row as just written, carried so the step need not read it (shared/core/messages.py CarriedRow)."""
        body = StepMessage(run_id, machine, seq, held, row).encode()
        if poll:
            _send(self._polls, "polls", body, delay_seconds)
        else:
            _send(self._operations, "operations", body, delay_seconds)

    def send_round(self, run_id: str, subscription: str, seq: int, delay_seconds: int = 0) -> None:
        """A poll round of a run's machines in `subscription` (shared/runs/poll_rounds.py), on POLLS_QUEUE with the
        polls it replaces."""
        _send(self._polls, "polls", PollRoundMessage(run_id, seq, subscription).encode(), delay_seconds)

    def waiting(self, *, poll: bool) -> bool:
        """Whether the step queue (POLLS_QUEUE if `poll`, else OPERATIONS_QUEUE) has a message that is visible now,
        i.e. due and not taken by any host: one Peek Messages call. A live host's leased messages and a dead
        host's are invisible, so a visible one means the consumers are behind (a backlog), not that messages
        were lost (shared/runs/sweeper.py)."""
        client = self._polls if poll else self._operations
        return any(True for _ in client.peek_messages(max_messages=1))

    def send_discovery(self, run_id: str, scope: int, page: int, delay_seconds: int = 0, *,
                       held: bool = False) -> None:
        _send(self._discovery, "discovery", DiscoveryMessage(run_id, scope, page, held).encode(), delay_seconds)

    def send_delivery(self, message: dict[str, Any], delay_seconds: int = 0) -> None:
        """An event or hook call to make, off the caller's path (shared/events/delivery.py)."""
        _send(self._events, "events", encode_delivery(message), delay_seconds)

    def send_dispatch(self, run_id: str, delay_seconds: int = 0) -> None:
        """Fan the run out; `delay_seconds`: not before then (a run applied ahead of its maintenance window)."""
        _send(self._dispatch, "dispatch", DispatchMessage(run_id).encode(), delay_seconds)

    def send_plan(self, plan_id: str) -> None:
        """Plan a stored plan request (shared/plans/build.py), on the dispatch queue."""
        _send(self._dispatch, "dispatch", DispatchMessage(plan_id, plan=True).encode())

    def send_release(self, run_id: str, release_from: str, delay_seconds: int) -> None:
        """Come back at `delay_seconds` to queue the start messages due from `release_from` on (dispatch.py)."""
        _send(self._dispatch, "dispatch", DispatchMessage(run_id, release_from=release_from).encode(), delay_seconds)

    def send_advance(self, run_id: str, delay_seconds: int = 0) -> None:
        """Ask the rollout controller to look at the run again (after a soak, or when it was busy)."""
        _send(self._dispatch, "dispatch", DispatchMessage(run_id, advance=True).encode(), delay_seconds)


def _send(client: QueueSender, name: str, body: str, delay_seconds: int = 0) -> None:
    delay = max(0, min(int(delay_seconds), MAX_VISIBILITY_SECONDS))
    client.send_message(body, visibility_timeout=delay or None)
    queue_messages_sent.add(1, {"patchpilot.queue": name})
