"""Queue triggers, following the Storage Queues extension's QueueListener and QueueProcessor.

Per queue-triggered function:
- poll with ReceiveMessages(batchSize, visibilityTimeout=10 min); while messages keep coming, fetch the
  next batch as soon as the number still running drops to `newBatchThreshold` (so at most
  batchSize + newBatchThreshold run at once); when a poll finds nothing, back off with randomized
  exponential delays from 100 ms up to `maxPollingInterval`, back to 100 ms once a message is found;
- while a function runs, its message's invisibility is renewed to 10 minutes every 5 minutes, so a
  message whose host crashed reappears after at most 10 minutes;
- a message with DequeueCount > maxDequeueCount is moved to poison without invoking the function;
- success deletes the message; failure with DequeueCount >= maxDequeueCount copies the body to
  `<queue>-poison` (created when needed, written with the host's encoding) and deletes the original;
  any other failure makes the message visible again after `visibilityTimeout` (whole seconds: the
  Storage API takes seconds). Queues named `*-poison` (or too long for the suffix) have no poison queue:
  a failed message there stays invisible until its 10 minutes expire, as in the host;
- with `messageEncoding: base64` (the default) a message that is not valid base64 is not given to the
  function: like the host's MessageDecodingFailed handler it is logged and moved to the poison queue
  at once with its original text (a raw copy). Senders must use `TextBase64EncodePolicy`.

Deliberate differences: the trigger queue is created at startup if missing (the host only backs off
until it exists). This listener's own threads (batchSize + newBatchThreshold) only dispatch and wait:
the function runs on the worker's one sync pool, shared with every other trigger (invoker.py).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage

if TYPE_CHECKING:
    from azure.storage.queue import QueueClient, QueueServiceClient

    from .host_config import QueuesOptions
    from .invoker import FunctionInfo, Invoker

log = logging.getLogger("tools.local_host")

RECEIVE_VISIBILITY = timedelta(minutes=10)
MIN_POLLING_INTERVAL = timedelta(milliseconds=100)
MAX_QUEUE_NAME = 63
POISON_SUFFIX = "-poison"


def poison_queue_name(queue: str) -> str | None:
    """The host's poison queue for `queue`, or None when it has none."""
    if queue.endswith(POISON_SUFFIX) or len(queue) + len(POISON_SUFFIX) > MAX_QUEUE_NAME:
        return None
    return queue + POISON_SUFFIX


class NotBase64Error(ValueError):
    """The message text cannot be decoded with the host's (default) base64 message encoding."""


def decode_base64(text: str) -> bytes:
    """Strict base64 like .NET Convert.FromBase64String (whitespace ignored, padding required)."""
    compact = "".join(text.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NotBase64Error(str(exc)) from None


class BackoffDelay:
    """RandomizedExponentialBackoffStrategy: min on success, else min + random(0.8..1.2) * 2^(n-1) * min."""

    def __init__(self, minimum: timedelta, maximum: timedelta) -> None:
        self.minimum = minimum.total_seconds()
        self.maximum = max(maximum.total_seconds(), self.minimum)
        self.current = self.minimum
        self.exponent = 1

    def next(self, succeeded: bool) -> float:
        if succeeded:
            self.current, self.exponent = self.minimum, 1
        elif self.current != self.maximum:
            candidate = self.minimum + random.uniform(0.8, 1.2) * 2 ** (self.exponent - 1) * self.minimum
            if candidate < self.maximum:
                self.current = candidate
                self.exponent += 1
            else:
                self.current = self.maximum
        return self.current


@dataclass
class _InFlight:
    """A received message while its function runs; the pop receipt changes with each renewal."""

    id: str
    pop_receipt: str
    renew_at: float
    lock: threading.Lock


class QueueListener:
    """Feeds one queue's messages to one function, `batchSize` at a time, until stopped."""

    def __init__(
        self, fn: FunctionInfo, invoker: Invoker, service: QueueServiceClient, options: QueuesOptions
    ) -> None:
        self.fn = fn
        self.invoker = invoker
        self.options = options
        self.queue_name = str(fn.properties["queueName"]).lower()
        self.queue: QueueClient = service.get_queue_client(self.queue_name)
        poison = poison_queue_name(self.queue_name)
        self.poison: QueueClient | None = service.get_queue_client(poison) if poison else None
        self.threshold = options.effective_new_batch_threshold
        self._pool = ThreadPoolExecutor(
            max_workers=options.max_in_flight, thread_name_prefix=f"queue-{fn.name}"
        )
        self._processing: set[Future[None]] = set()
        self._in_flight: dict[str, _InFlight] = {}
        self._in_flight_lock = threading.Lock()
        self._stop = threading.Event()
        self._backoff = BackoffDelay(MIN_POLLING_INTERVAL, options.max_polling_interval)
        self._thread: threading.Thread | None = None
        self._renewer: threading.Thread | None = None

    def start(self) -> None:
        with contextlib.suppress(ResourceExistsError):
            self.queue.create_queue()
        self._thread = threading.Thread(
            target=self._poll_loop, name=f"queue-listener-{self.fn.name}", daemon=True
        )
        self._renewer = threading.Thread(
            target=self._renew_loop, name=f"queue-renew-{self.fn.name}", daemon=True
        )
        self._thread.start()
        self._renewer.start()

    def stop(self, timeout: float) -> None:
        """Stop fetching; running invocations finish (bounded by `timeout`); unfetched messages stay put."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)
        if self._processing:
            wait(list(self._processing), timeout=timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- polling ---------------------------------------------------------------------------------------
    def _poll_loop(self) -> None:
        found_since_delay = False
        while not self._stop.is_set():
            try:
                messages = list(
                    self.queue.receive_messages(
                        messages_per_page=self.options.batch_size,
                        max_messages=self.options.batch_size,
                        visibility_timeout=int(RECEIVE_VISIBILITY.total_seconds()),
                    )
                )
            except ResourceNotFoundError:
                log.warning("Queue '%s' does not exist; waiting for it", self.queue_name)
                messages = []
            except HttpResponseError as exc:
                log.warning("Polling queue '%s' failed: %s", self.queue_name, exc)
                messages = []
            if not messages:
                delay = self._backoff.next(found_since_delay)
                found_since_delay = False
                self._stop.wait(delay)
                continue
            found_since_delay = True
            for message in messages:
                self._track(message)
                self._processing.add(self._pool.submit(self._process, message))
            # WaitForNewBatchThreshold: fetch again at once when few enough are still running
            while len(self._processing) > self.threshold and not self._stop.is_set():
                done, _ = wait(list(self._processing), timeout=0.5, return_when=FIRST_COMPLETED)
                self._processing.difference_update(done)
            self._processing = {f for f in self._processing if not f.done()}

    # -- visibility renewal ----------------------------------------------------------------------------
    def _track(self, message: Any) -> None:
        half = RECEIVE_VISIBILITY.total_seconds() / 2
        with self._in_flight_lock:
            self._in_flight[message.id] = _InFlight(
                message.id, message.pop_receipt, time.monotonic() + half, threading.Lock()
            )

    def _renew_loop(self) -> None:
        half = RECEIVE_VISIBILITY.total_seconds() / 2
        while True:
            if self._stop.wait(1.0) and not self._in_flight:
                return
            now = time.monotonic()
            with self._in_flight_lock:
                due = [m for m in self._in_flight.values() if m.renew_at <= now]
            for m in due:
                with m.lock:
                    try:
                        receipt = self.queue.update_message(
                            m.id, m.pop_receipt, visibility_timeout=int(RECEIVE_VISIBILITY.total_seconds())
                        )
                        m.pop_receipt = receipt.pop_receipt
                        m.renew_at = now + half
                    except HttpResponseError as exc:
                        log.warning("Could not renew visibility of message %s: %s", m.id, exc)
                        m.renew_at = now + 60

    def _untrack(self, message_id: str) -> _InFlight | None:
        with self._in_flight_lock:
            return self._in_flight.pop(message_id, None)

    # -- processing ------------------------------------------------------------------------------------
    def _process(self, message: Any) -> None:
        try:
            self._process_one(message)
        except Exception:
            log.exception("Processing message %s from '%s' failed", message.id, self.queue_name)
        finally:
            self._untrack(message.id)

    def _process_one(self, message: Any) -> None:
        if message.dequeue_count > self.options.max_dequeue_count:
            self._move_to_poison(message, message.content or "", self._max_dequeue_reason())
            return
        text: str = message.content or ""
        if self.options.message_encoding == "base64":
            try:
                body = decode_base64(text)
            except NotBase64Error as exc:
                log.error(
                    "Message %s on queue '%s' is not valid base64 (%s), so function '%s' cannot receive it. "
                    "host.json sets messageEncoding 'base64' (the default): send messages with "
                    "QueueClient(..., message_encode_policy=TextBase64EncodePolicy()) or set "
                    "extensions.queues.messageEncoding to 'none'. Moving it to the poison queue.",
                    message.id,
                    self.queue_name,
                    exc,
                    self.fn.name,
                )
                self._move_to_poison(message, text, "it could not be decoded")
                return
        else:
            body = text.encode("utf-8")
        msg = QueueMessage(
            id=message.id,
            body=body,
            pop_receipt=self._receipt(message),
            dequeue_count=message.dequeue_count,
            insertion_time=message.inserted_on,
            expiration_time=message.expires_on,
            time_next_visible=message.next_visible_on,
        )
        record = self.invoker.invoke(self.fn, msg, f"New queue message detected on '{self.queue_name}'.")
        if record.succeeded:
            self._delete(message)
        elif self.poison is None:
            pass  # no poison queue: leave it invisible (no fast infinite retry loop), as the host does
        elif message.dequeue_count >= self.options.max_dequeue_count:
            self._move_to_poison(message, text, self._max_dequeue_reason())
        else:
            self._release(message, self.options.visibility_timeout)

    def _receipt(self, message: Any) -> str:
        with self._in_flight_lock:
            m = self._in_flight.get(message.id)
        return m.pop_receipt if m else message.pop_receipt

    def _locked(self, message: Any) -> contextlib.AbstractContextManager[Any]:
        m = self._untrack(message.id)
        return m.lock if m else contextlib.nullcontext()

    def _delete(self, message: Any) -> None:
        receipt = self._receipt(message)
        with self._locked(message):
            try:
                self.queue.delete_message(message.id, receipt)
            except ResourceNotFoundError:
                log.debug("Message %s was already gone from '%s'", message.id, self.queue_name)
            except HttpResponseError as exc:
                if exc.status_code != 400:  # 400: pop receipt mismatch, someone else owns it now
                    raise

    def _release(self, message: Any, visibility: timedelta) -> None:
        receipt = self._receipt(message)
        with self._locked(message):
            try:
                self.queue.update_message(
                    message.id, receipt, visibility_timeout=int(visibility.total_seconds())
                )
            except (ResourceNotFoundError, HttpResponseError) as exc:
                log.debug("Could not release message %s: %s", message.id, exc)

    def _max_dequeue_reason(self) -> str:
        return f"Message has reached MaxDequeueCount of {self.options.max_dequeue_count}"

    def _move_to_poison(self, message: Any, text: str, reason: str) -> None:
        """Copy the stored text to `<queue>-poison` and delete the original.

        The stored text is what the host writes too: for base64 it re-encodes the decoded body (the same
        text), and for an undecodable message its raw-copy client writes the original text.
        """
        if self.poison is None:
            return
        log.warning("%s. Moving message %s to queue '%s'.", reason, message.id, self.poison.queue_name)
        try:
            self.poison.send_message(text)
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                self.poison.create_queue()
            self.poison.send_message(text)
        self._delete(message)
