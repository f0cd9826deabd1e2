"""Deliver queue messages to the app's trigger functions in this process.

The local host does this for real (see tests/integration/test_local_host_runs.py); the pump
exists for tests that need control over delivery, such as delivering every message twice, at
once and one after the other, to prove the workers are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import azure.functions as func
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from shared.composition import Components
from tests.app import assessment_workers, event_workers, run_workers


class QueuePump:
    def __init__(self, svc: Components, *, duplicate: bool = False) -> None:
        self.svc = svc
        self.duplicate = duplicate
        self.delivered: Counter[str] = Counter()
        conn = svc.settings.storage.connection
        settings = svc.settings
        self.routes: list[tuple[QueueClient, Callable[[func.QueueMessage], None]]] = [
            (QueueClient.from_connection_string(conn, name, message_decode_policy=TextBase64DecodePolicy()), fn)
            for name, fn in ((settings.queues.dispatch, run_workers.dispatch_worker),
                             (settings.queues.operations, run_workers.operation_worker),
                             (settings.queues.discovery, assessment_workers.discovery_worker),
                             (settings.queues.events, event_workers.event_delivery),
                             (settings.queues.polls, run_workers.poll_worker))
        ]
        for client, _fn in self.routes:
            with contextlib.suppress(ResourceExistsError):
                client.create_queue()

    def _deliver(self, function: Callable[[func.QueueMessage], None], qm: func.QueueMessage, n: int) -> None:
        fn = _synchronous(function)
        if not self.duplicate:
            fn(qm)
            return
        if n % 2 == 0:  # both copies at the same time
            threads = [threading.Thread(target=fn, args=(qm,)) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        else:  # one copy after the other
            fn(qm)
            fn(qm)

    def pump_once(self, only: str | None = None) -> int:
        """Deliver what is visible now; `only="dispatch"` or `"operations"` limits it to one queue."""
        handled = 0
        for client, fn in self.routes:
            if only and not client.queue_name.startswith(only):
                continue
            for msg in client.receive_messages(messages_per_page=32, visibility_timeout=60, max_messages=32):
                qm = func.QueueMessage(id=msg.id, body=msg.content.encode(), pop_receipt=msg.pop_receipt)
                self._deliver(fn, qm, handled)
                self.delivered[client.queue_name] += 2 if self.duplicate else 1
                client.delete_message(msg)
                handled += 1
        return handled

    def run_until(self, done: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.pump_once():
                if done():
                    return
                time.sleep(0.1)
        raise AssertionError(f"not done within {timeout}s")


def _synchronous(fn: Callable[[func.QueueMessage], None]) -> Callable[[func.QueueMessage], None]:
    """An `async def` trigger runs to completion on a loop of its own, as the local host runs it."""

    def call(qm: func.QueueMessage) -> None:
        result = fn(qm)
        if inspect.isawaitable(result):
            asyncio.run(_await(result))

    return call


async def _await(awaitable: Any) -> Any:
    return await awaitable
