"""A counting loopback proxy in front of Azurite's Table and Queue endpoints.

The app runs in its own host process, so its in-process counters cannot be read from the harness; every
Table and Queue request passes through here instead and is counted (one request = one storage round-trip).
It also stamps queue progress (a message sent, deleted or updated), so a stall of Azurite's queue service
(a long gap with no progress while work is outstanding) shows up as a number.

Own code rather than a library: no well-kept Python package counts HTTP/1.1 requests on a keep-alive
connection without terminating it; this reads only the request line and Content-Length of each request
(the Azure SDKs never send chunked request bodies) and pipes the responses through untouched.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import math
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field

from tools.azurite import free_port


@dataclass
class StorageCounts:
    """What went through the proxy: requests by service and kind, and queue progress stamps."""

    requests: Counter[str] = field(default_factory=Counter)  # "table:query", "queue:send", ...
    done_by_queue: Counter[str] = field(default_factory=Counter)  # queue name -> messages deleted (finished)
    progress: list[float] = field(default_factory=list)  # monotonic stamps of queue sends/deletes/updates
    sends: list[float] = field(default_factory=list)  # monotonic stamps of queue sends
    deletes: list[float] = field(default_factory=list)  # monotonic stamps of queue deletes (a message finished)
    dues: list[float] = field(default_factory=list)  # when each sent message became visible: send + visibilitytimeout
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> tuple[Counter[str], list[float]]:
        with self.lock:
            return Counter(self.requests), list(self.progress)

    def flow_stamps(self) -> tuple[list[float], list[float]]:
        """(sends, deletes) stamps so far."""
        with self.lock:
            return list(self.sends), list(self.deletes)

    def due_stamps(self) -> tuple[list[float], list[float]]:
        """(dues, deletes) stamps so far: when each sent message became visible, and when messages finished."""
        with self.lock:
            return list(self.dues), list(self.deletes)

    def done_snapshot(self) -> Counter[str]:
        with self.lock:
            return Counter(self.done_by_queue)

    @staticmethod
    def table(counts: Counter[str]) -> int:
        return sum(v for k, v in counts.items() if k.startswith("table:"))


def classify(service: str, method: str, path: str) -> str:
    """The kind of one storage request: "table:<query|get|write|batch>", or "queue:<what it does to messages>"."""
    bare = path.split("?", 1)[0].rstrip("/")
    if service == "table":
        if bare.endswith("$batch"):
            return "table:batch"
        if method != "GET":
            return "table:write"
        return "table:get" if bare.endswith(")") and "PartitionKey=" in bare else "table:query"
    parts = bare.split("/")
    if "messages" in parts:
        at_message = parts[-1] != "messages"
        if method == "POST":
            return "queue:send"
        if method == "DELETE" and at_message:
            return "queue:delete"
        if method == "PUT" and at_message:
            return "queue:update"
        if method == "GET":
            return "queue:peek" if "peekonly=true" in path.lower() else "queue:receive"
    return "queue:other"


def queue_name(path: str) -> str:
    """The queue of a message request's path: /<account>/<queue>/messages/<id> (Azurite's path-style URL)."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    return parts[parts.index("messages") - 1] if "messages" in parts and parts.index("messages") > 0 else ""


PROGRESS = frozenset({"queue:send", "queue:delete", "queue:update"})


def visibility_timeout(path: str) -> float:
    """Put Message's `visibilitytimeout` (whole seconds; 0 when absent: visible at once)."""
    query = urllib.parse.parse_qs(path.partition("?")[2])
    try:
        return float(query.get("visibilitytimeout", ["0"])[0])
    except ValueError:
        return 0.0


class CountingProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<target>, counting requests; runs its own event loop thread."""

    def __init__(self, service: str, target_port: int, counts: StorageCounts) -> None:
        self.service = service
        self.target_port = target_port
        self.counts = counts
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"proxy-{service}", daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def start(self) -> CountingProxy:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port, limit=1 << 22), self._loop)
        self._server = fut.result(timeout=10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _count(self, head: bytes) -> None:
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        method, _, rest = line.partition(" ")
        path = rest.rsplit(" ", 1)[0]
        kind = classify(self.service, method, path)
        with self.counts.lock:
            self.counts.requests[kind] += 1
            if kind == "queue:delete":
                self.counts.done_by_queue[queue_name(path)] += 1
                self.counts.deletes.append(time.monotonic())
            elif kind == "queue:send":
                now = time.monotonic()
                self.counts.sends.append(now)
                self.counts.dues.append(now + visibility_timeout(path))
            if kind in PROGRESS:
                self.counts.progress.append(time.monotonic())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port, limit=1 << 22)
        except OSError:
            writer.close()
            return
        back = asyncio.ensure_future(self._pipe(up_reader, writer))
        try:
            await self._requests(reader, up_writer)
        except asyncio.CancelledError:
            # stop() cancels open connections. asyncio's server reads this task's exception() in a callback, which
            # raises for a cancelled task and printed a traceback per kept-alive connection at every stop.
            back.cancel()
            for stream in (up_writer, writer):
                with contextlib.suppress(Exception):
                    stream.close()
            return
        with contextlib.suppress(Exception):
            up_writer.close()
        await asyncio.wait([back], timeout=30)  # the last responses reach the client before it is closed
        with contextlib.suppress(Exception):
            writer.close()

    async def _requests(self, reader: asyncio.StreamReader, up: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            self._count(head)
            length = 0
            chunked = False
            for raw in head.split(b"\r\n")[1:]:
                name, _, value = raw.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or b"0")
                elif name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            up.write(head)
            if chunked:  # not sent by the Azure SDKs; pass the rest through uncounted rather than misparse it
                await self._pipe(reader, up)
                return
            try:
                if length:
                    up.write(await reader.readexactly(length))
                await up.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                # the client went away mid-request (seen once at 10,000 machines, beside a Table request that
                # failed with RemoteDisconnected; likely a kept-alive connection closed under a send): drop it quietly
                return

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


def flow(sends: list[float], deletes: list[float], start: float, end: float, minute: float = 60.0
         ) -> tuple[list[float], list[int]]:
    """Per `minute` of [start, end): messages finished per second, and messages in the queues at the minute's end
    (sent minus finished since `start`, visible or not yet). Shows backpressure: a steady rate and a bounded count,
    not a collapse."""
    bins = max(1, math.ceil((end - start) / minute))
    done = [0] * bins
    added = [0] * bins
    for stamps, into in ((deletes, done), (sends, added)):
        for t in stamps:
            if start <= t < end:
                into[min(bins - 1, int((t - start) // minute))] += 1
    waiting, level = [], 0
    for a, d in zip(added, done, strict=True):
        level += a - d
        waiting.append(level)
    return [d / minute for d in done], waiting


def longest_stall(dues: list[float], finishes: list[float], start: float, end: float) -> float:
    """The longest time in [start, end] during which a message was due (visible) and none finished, in seconds.

    A plain gap between finished messages (longest_gaps) also counts the quiet of a run's last minutes, when the
    few machines left are polled once a Retry-After and nothing is due between polls: no stall, only the cadence.
    Here a gap counts only from the moment more messages had come due than had finished (the queue held visible
    work): approximate, as a delete is matched to no particular send, but a stall of the queue service or of the
    consumers shows whole."""
    due = sorted(dues)
    done = sorted(finishes)
    before = bisect.bisect_right(done, start)  # finished before the window (an earlier scenario's messages)
    points = [start, *done[before:bisect.bisect_right(done, end)], end]
    longest = 0.0
    for i, (a, b) in enumerate(itertools.pairwise(points)):
        finished = before + i  # during (a, b) this many have finished; the next to come due is work left waiting
        if finished < len(due) and due[finished] < b:
            longest = max(longest, b - max(a, due[finished]))
    return longest


def longest_gaps(stamps: list[float], start: float, end: float, threshold: float) -> tuple[float, list[float]]:
    """(longest gap in seconds, start offsets of the gaps over `threshold`) between progress stamps in [start, end]."""
    points = [start, *sorted(s for s in stamps if start <= s <= end), end]
    gaps = [(b - a, a - start) for a, b in itertools.pairwise(points)]
    return max((g for g, _ in gaps), default=0.0), [at for g, at in gaps if g > threshold]
