"""What one queue receive costs the local stack's storage (Azurite) as messages wait in its queues (issue #22).

Why this exists: at 10,000 machines over four subscriptions the local stack ran about 17-24 queue messages a
second where Azure's budgets allow about 40, and Azurite's one Node.js thread was the busiest thing on the
machine. Azurite 3.37 keeps every queue's messages in one LokiJS collection with four binary indices, and two of
its calls hand LokiJS an array, which LokiJS treats as a batch: adaptive indices off, then all four indices of
the whole collection re-sorted with a JavaScript comparator. `clearExpiredMessages` does it before every Get
Messages, Peek, Delete and Update Message (`coll.remove(docs)`, nearly always with `docs` empty), and
`getMessages` again when it marks what it received (`coll.update(docs)`). So each queue request cost time in
proportion to n log n of the messages waiting anywhere in this Azurite, invisible ones included: the delayed
polls and slotted starts a large run keeps in flight by design. Azure Queue storage does not behave so (a
queue's target of 2,000 messages a second does not depend on its length:
https://learn.microsoft.com/azure/storage/queues/scalability-targets). `patches/azurite+3.37.0.patch` (applied
by patch-package on `npm ci`; the why and the numbers before it are in patches/README.md) removes both, so this
benchmark, which measures the Azurite installed, now shows what is left: the linear filters of LokiJS queries
that lead with `accountName`.

And in memory (--inMemoryPersistence) its queue garbage collector (`QueueGCManager`, every 60 s) deletes the
extents of the messages deleted since, one at a time, each delete also summing the sizes of every chunk still
held (`MemoryExtentStore.deleteExtents`, a log line's argument evaluated even with --silent): the whole process,
every queue of it, stops for 20-30 s once a minute at a few thousand messages a minute. On disk the extents are
files holding many messages and the pause goes. The second table measures that: a steady flow of one message at a
time (sent, received, deleted) beside 1,000 waiting, for STALL_SECONDS, in memory and on disk.

Measured here, in one run on this machine: the mean time of a receive (up to 16 messages, as the host's batchSize)
on an empty queue, and of one message's life (send, receive, delete) on a third queue, while another queue of the
same Azurite holds N invisible messages (the peer: N = 0), and, for contrast, a Table point read while a table
holds N entities. Prints a table; run with
`.venv/bin/python -m benchmarks.azurite_queues`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueClient

from tools.azurite import Azurite

STALL_SECONDS = 150  # two and a half of Azurite's 60 s GC intervals
WAITING = (0, 2_000, 5_000, 10_000, 20_000)  # invisible messages (and table entities) beside the measured call
CALLS = 40  # per measurement
BODY = "x" * 300  # about a step message's size


def _mean_ms(call: Callable[[], object], n: int = CALLS) -> float:
    started = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - started) / n * 1000


def measure() -> list[tuple[int, float, float, float]]:
    rows = []
    with Azurite(in_memory=True) as azurite:
        waiting = QueueClient.from_connection_string(azurite.connection_string, "waiting")
        waiting.create_queue()
        empty = QueueClient.from_connection_string(azurite.connection_string, "listened")
        empty.create_queue()
        work = QueueClient.from_connection_string(azurite.connection_string, "work")
        work.create_queue()

        def one_message() -> None:
            work.send_message(BODY)
            for msg in work.receive_messages(messages_per_page=1, max_messages=1):
                work.delete_message(msg)
        table = TableServiceClient.from_connection_string(azurite.connection_string).create_table("entities")
        table.upsert_entity({"PartitionKey": "p", "RowKey": "read", "x": 0})
        have = 0
        with ThreadPoolExecutor(16) as pool:
            for n in WAITING:
                # invisible for an hour, as a delayed poll or slotted start is until its time
                list(pool.map(lambda _: waiting.send_message(BODY, visibility_timeout=3600), range(n - have)))
                list(pool.map(lambda i: table.upsert_entity({"PartitionKey": f"run{i % 50}", "RowKey": f"m{i:06d}",
                                                             "body": BODY}), range(have, n)))
                have = n
                receive = _mean_ms(lambda: list(empty.receive_messages(messages_per_page=16, max_messages=16)))
                life = _mean_ms(one_message)
                read = _mean_ms(lambda: table.get_entity("p", "read"))
                rows.append((n, receive, life, read))
    return rows


def stalls(in_memory: bool, seconds: float = STALL_SECONDS, waiting: int = 1_000) -> tuple[int, float, int]:
    """A steady flow beside `waiting` invisible messages: (messages done, the longest single message's life in
    seconds, how many took over a second)."""
    with Azurite(in_memory=in_memory) as azurite:
        parked = QueueClient.from_connection_string(azurite.connection_string, "waiting")
        parked.create_queue()
        work = QueueClient.from_connection_string(azurite.connection_string, "work")
        work.create_queue()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda _: parked.send_message(BODY, visibility_timeout=3600), range(waiting)))
        done, longest, slow = 0, 0.0, 0
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            at = time.monotonic()
            work.send_message(BODY)
            for msg in work.receive_messages(messages_per_page=1, max_messages=1):
                work.delete_message(msg)
            took = time.monotonic() - at
            done, longest, slow = done + 1, max(longest, took), slow + (took > 1.0)
        return done, longest, slow


def main() -> int:
    flow = [(mode, *stalls(mode == "in memory")) for mode in ("in memory", "on disk")]
    rows = measure()
    base = rows[0][1]
    print("| messages waiting in the account | receive on an empty queue, ms | times the peer (none waiting) "
          "| one message sent, received and deleted, ms | times the peer | Table point read, ms (same count of "
          "entities) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, receive, life, read in rows:
        print(f"| {n:,} | {receive:.1f} | {receive / base:.1f} | {life:.1f} | {life / rows[0][2]:.1f} | {read:.1f} |")
    print()
    print(f"| Azurite's queues | messages sent, received and deleted one at a time in {STALL_SECONDS} s, "
          "1,000 waiting | longest single message, s | messages over 1 s |")
    print("| --- | ---: | ---: | ---: |")
    for mode, done, longest, slow in flow:
        print(f"| {mode} | {done:,} | {longest:.1f} | {slow} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
