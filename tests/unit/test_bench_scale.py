"""The fleet-scale benchmark's arithmetic: the makespan bound, the compressed simulator clock, storage counting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from benchmarks.scale import PauseWatch, cpu_seconds, machine_busy_seconds, paced_steps
from benchmarks.scale_bound import Budgets, earliest_starts, makespan_bound, subscription_bound
from benchmarks.scale_proxy import (
    CountingProxy,
    StorageCounts,
    classify,
    flow,
    longest_gaps,
    longest_stall,
    queue_name,
    visibility_timeout,
)
from benchmarks.scale_sim import budgets, compressed_config

AZURE = Budgets(read_burst=250, read_rate=25.0, write_burst=200, write_rate=10.0,
                patch_sub_burst=600, patch_sub_rate=200 / 60)


def test_starts_follow_the_tightest_bucket_after_its_burst() -> None:
    starts = earliest_starts(603, [(200, 10.0), (600, 200 / 60)])
    assert starts[:200] == [0.0] * 200
    assert starts[200] == pytest.approx(0.1)  # the write bucket binds first: 10/s
    assert starts[599] == pytest.approx(40.0)
    assert starts[602] == pytest.approx(max(40.3, 3 * 60 / 200))


def test_ten_thousand_installs_in_one_subscription_take_the_guest_patch_refill() -> None:
    # 9,400 after the 600 burst at 200/min: 47 minutes before the last can start; it lasts 60 s at best.
    bound = subscription_bound([60.0] * 10_000, AZURE)
    assert bound == pytest.approx((10_000 - 600) / (200 / 60) + 60.0)


def test_longest_operations_pair_with_the_earliest_starts() -> None:
    budgets = Budgets(read_burst=1000, read_rate=1.0, write_burst=1000, write_rate=1.0,
                      patch_sub_burst=1, patch_sub_rate=1.0)
    # starts 0, 1, 2: a 10 s operation first ends at 10; the short ones end at 1+1 and 2+1.
    assert subscription_bound([1.0, 10.0, 1.0], budgets) == pytest.approx(10.0)
    assert subscription_bound([1.0, 1.0, 1.0], budgets) == pytest.approx(3.0)


def test_in_request_order_the_long_operation_keeps_its_start() -> None:
    budgets = Budgets(read_burst=1000, read_rate=1.0, write_burst=1000, write_rate=1.0,
                      patch_sub_burst=1, patch_sub_rate=1.0)
    # starts 0, 1, 2 in the order given: the 10 s operation, second, ends at 1 + 10.
    assert subscription_bound([1.0, 10.0, 1.0], budgets, in_order=True) == pytest.approx(11.0)


def test_subscriptions_have_their_own_buckets() -> None:
    one = makespan_bound({"a": [60.0] * 10_000}, AZURE)
    four = makespan_bound({s: [60.0] * 2_500 for s in "abcd"}, AZURE)
    assert four == pytest.approx((2_500 - 600) / (200 / 60) + 60.0) and four < one / 4


def test_one_read_per_machine_bounds_when_reads_refill_slowest() -> None:
    slow_reads = Budgets(read_burst=10, read_rate=1.0, write_burst=200, write_rate=10.0,
                         patch_sub_burst=None, patch_sub_rate=None)
    assert subscription_bound([0.0] * 110, slow_reads) == pytest.approx(100.0)
    assert subscription_bound([0.0] * 1250, AZURE) == pytest.approx((1250 - 600) / (200 / 60))  # not reads


def test_compressed_clock_scales_every_refill_and_keeps_bursts() -> None:
    config = compressed_config(30, vms=3)
    b = budgets(config)
    assert config.time_scale == 30
    assert (b.read_burst, b.write_burst, b.patch_sub_burst) == (250, 200, 600)
    assert (b.read_rate, b.write_rate) == (pytest.approx(750.0), pytest.approx(300.0))
    assert b.patch_sub_rate == pytest.approx(200 * 30 / 60)
    assert config.retry_after_seconds == 2  # Azure's 60 s


def test_storage_requests_are_classified_by_what_they_do_to_messages() -> None:
    assert classify("table", "GET", "/devstoreaccount1/runs()?$filter=PartitionKey%20eq%20'r'") == "table:query"
    assert classify("table", "GET", "/devstoreaccount1/runs(PartitionKey='r',RowKey='1')") == "table:get"
    assert classify("table", "PATCH", "/devstoreaccount1/runs(PartitionKey='r',RowKey='1')") == "table:write"
    assert classify("table", "POST", "/devstoreaccount1/$batch") == "table:batch"
    assert classify("queue", "POST", "/devstoreaccount1/q/messages?visibilitytimeout=3") == "queue:send"
    assert classify("queue", "GET", "/devstoreaccount1/q/messages?numofmessages=16") == "queue:receive"
    assert classify("queue", "GET", "/devstoreaccount1/q/messages?peekonly=true") == "queue:peek"
    assert classify("queue", "DELETE", "/devstoreaccount1/q/messages/abc?popreceipt=x") == "queue:delete"
    assert classify("queue", "PUT", "/devstoreaccount1/q/messages/abc?popreceipt=x") == "queue:update"
    assert classify("queue", "DELETE", "/devstoreaccount1/q/messages") == "queue:other"  # clear, not progress
    assert queue_name("/devstoreaccount1/patch-polls/messages/abc?popreceipt=x") == "patch-polls"
    assert queue_name("/devstoreaccount1/patch-polls") == ""


def test_gaps_include_the_edges_and_count_only_long_ones() -> None:
    assert longest_gaps([2.0, 3.0, 15.0], 0.0, 16.0, 10.0) == (12.0, [3.0])
    assert longest_gaps([], 0.0, 5.0, 10.0) == (5.0, [])


def test_a_stall_is_time_with_a_message_due_and_none_finished_not_a_quiet_tail() -> None:
    # A run's last machines are polled once a Retry-After (30 s): 32 s between finished messages, but nothing was
    # due in between, so no stall; longest_gaps counts that quiet as a 32 s gap.
    tail_dues, tail_done = [0.0, 32.0], [0.5, 32.5]
    assert longest_gaps(tail_done, 0.0, 33.0, 10.0)[0] == pytest.approx(32.0)
    assert longest_stall(tail_dues, tail_done, 0.0, 33.0) == pytest.approx(0.5)
    # A message due at 5 s that nothing finishes until 40 s (the queue service paused): a 35 s stall.
    assert longest_stall([1.0, 5.0, 6.0], [1.2, 40.0, 40.1], 0.0, 41.0) == pytest.approx(35.0)
    # Still waiting at the end of the window: counted up to the end.
    assert longest_stall([1.0, 2.0], [1.5], 0.0, 20.0) == pytest.approx(18.0)
    # An earlier scenario's messages, due and finished before this window, do not shift the count.
    assert longest_stall([-50.0, -40.0, 3.0], [-45.0, -39.0, 3.5], 0.0, 30.0) == pytest.approx(0.5)


def test_the_proxy_records_when_a_sent_message_comes_due() -> None:
    assert visibility_timeout("/devstoreaccount1/q/messages?visibilitytimeout=30&messagettl=-1") == 30.0
    assert visibility_timeout("/devstoreaccount1/q/messages") == 0.0


def test_proxy_counts_each_request_on_a_keep_alive_connection() -> None:
    # A tiny HTTP/1.1 server answering every request with an empty 204, on one kept-alive connection.
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            lines = head.split(b"\r\n")
            length = next((int(h.split(b":")[1]) for h in lines if h.lower().startswith(b"content-length")), 0)
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        writer.close()

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    counts = StorageCounts()
    proxy = CountingProxy("queue", port, counts).start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as conn:
            requests = [b"POST /a/q/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
                        b"GET /a/q/messages?numofmessages=1 HTTP/1.1\r\nHost: x\r\n\r\n",
                        b"DELETE /a/q/messages/m1?popreceipt=p HTTP/1.1\r\nHost: x\r\n\r\n"]
            for req in requests:
                conn.sendall(req)
                assert conn.recv(1024).startswith(b"HTTP/1.1 204")
        got, progress = counts.snapshot()
        assert got == {"queue:send": 1, "queue:receive": 1, "queue:delete": 1}
        assert len(progress) == 2
        assert counts.done_snapshot() == {"q": 1}  # finished messages by queue, for messages per machine by kind
    finally:
        proxy.stop()
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)


def test_proxy_survives_a_client_that_leaves_mid_request() -> None:
    # Azurite (Node) closes a kept-alive connection after 5 idle seconds; a client that sent on it just then
    # leaves mid-body. The proxy dropped that connection with an unhandled IncompleteReadError on its loop
    # (bench-scale printed the traceback in session 19); it must close quietly and go on serving others.
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while head := await reader.readuntil(b"\r\n\r\n"):
                del head
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        writer.close()

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    proxy = CountingProxy("queue", server.sockets[0].getsockname()[1], StorageCounts()).start()
    unhandled: list[dict[str, object]] = []
    proxy._loop.call_soon_threadsafe(proxy._loop.set_exception_handler, lambda _, ctx: unhandled.append(ctx))
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as conn:
            conn.sendall(b"POST /a/q/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1012\r\n\r\nabc")
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as conn:
            conn.sendall(b"GET /a/q/messages?numofmessages=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert conn.recv(1024).startswith(b"HTTP/1.1 204")
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0.2), proxy._loop).result(timeout=5)
        assert unhandled == []
    finally:
        proxy.stop()
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)


def test_user_script_projection_hands_machines_to_the_first_free_worker() -> None:
    from benchmarks.scale import project

    def vm(name: str, seconds: float) -> dict[str, object]:
        return {"id": name, "operations": [{"kind": "installPatches", "realSeconds": seconds}]}

    state = {"vms": [vm("a", 10.0), vm("b", 1.0), vm("c", 1.0)]}
    # "b" finished in 2 s (1 s of overhead); "a" and "c" started: their durations plus that overhead.
    # Two workers: a (11) on one, b (2) then c (2) on the other: 11 s, not (11 + 2 + 2) / 2.
    assert project(["a", "b", "c"], ["a", "b", "c"], {"b": (0.0, 2.0)}, state, workers=2) == pytest.approx(11.0)
    # Machines never started cost what the started ones did, in turn: a, b, then a again.
    assert project(["a", "b", "x"], ["a", "b"], {"b": (0.0, 2.0)}, state, workers=2) == pytest.approx(13.0)


def test_a_refused_fleet_is_split_by_what_the_refusal_says() -> None:
    import requests

    from benchmarks.scale import smaller_chunk

    def refusal(error: dict[str, str]) -> requests.Response:
        resp = requests.Response()
        resp.status_code = 400
        resp._content = json.dumps({"error": error}).encode()
        return resp

    cap = {"code": "InvalidRequest", "target": "machines",
           "message": "machines has 2000 entries; a run takes at most 1000 (setting MAX_MACHINES_PER_RUN)"}
    size = {"code": "RequestBodyTooLarge", "message": "the request body is 2000000 bytes; at most 1000000 are accepted"}
    assert smaller_chunk(refusal(cap), 2000) == 1000
    assert smaller_chunk(refusal(size), 10_000) == 4750  # half fits; 5% slack for longer ids
    assert smaller_chunk(refusal({"code": "InvalidRequest", "target": "installPatches", "message": "no"}), 10) is None


def test_the_predicted_order_bound_starts_machines_as_the_app_sorts_them() -> None:
    from benchmarks.scale import parse_args, predicted_order_bound

    budgets = Budgets(read_burst=1000, read_rate=1.0, write_burst=1000, write_rate=1.0,
                      patch_sub_burst=1, patch_sub_rate=1.0)
    vms = [f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{n}" for n in "abc"]
    real = {vm.lower(): seconds for vm, seconds in zip(vms, [1.0, 10.0, 1.0], strict=True)}
    right = {vm.lower(): seconds for vm, seconds in zip(vms, [1.0, 9.0, 2.0], strict=True)}
    assert predicted_order_bound(vms, right, real, budgets) == pytest.approx(10.0)  # b first: as the clairvoyant
    wrong = {vms[0].lower(): 9.0}  # a first, then b and c (no prediction: 0 s) in request order
    assert predicted_order_bound(vms, wrong, real, budgets) == pytest.approx(11.0)
    assert parse_args([]).scenarios == ["longest", "fleet"]  # make bench-scale: both issues' tables in one run
    assert parse_args(["--scenarios", "longest", "--quick"]).scenarios == ["longest"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_cpu_seconds_count_a_process_and_its_children_running_or_ended() -> None:
    burn = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\n"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys\n"
        f"subprocess.run([sys.executable, '-c', {burn!r}])\n"  # ended and reaped: in the parent's children times
        f"child = subprocess.Popen([sys.executable, '-c', {burn!r} + 'input()'], stdin=subprocess.PIPE)\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "child.communicate(b'\\n')\n")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 10
        while cpu_seconds(parent.pid) < 0.8 and time.monotonic() < deadline:  # the live child's burn is ending
            time.sleep(0.05)
        assert cpu_seconds(parent.pid) >= 0.8  # both children's 0.4 s, the running one through the process tree
        assert cpu_seconds(2**22 + 7) == 0.0  # no such process
    finally:
        assert parent.stdin is not None
        parent.stdin.write("\n")
        parent.stdin.close()
        parent.wait(10)


def test_flow_gives_the_rate_and_what_waits_minute_by_minute() -> None:
    sends = [0.5] * 120 + [61.0] * 30  # a window released at once, then a smaller one
    deletes = [10.0 + i / 2 for i in range(100)] + [70.0 + i for i in range(40)]  # 100 in minute 0, 40 in minute 1
    rate, waiting = flow(sends, deletes, start=0.0, end=120.0)
    assert rate == [100 / 60, 40 / 60] and waiting == [20, 10]
    assert flow([], [130.0], start=0.0, end=120.0) == ([0.0, 0.0], [0, 0])  # stamps after the end are not counted


def test_paced_steps_are_counted_by_state_and_budget_from_the_workers_own_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    from shared.arm.calls import READS
    from shared.runs.machine_worker import StepResult
    from tests.unit.test_machine_step import harness
    h = harness({}, waits={READS: 3.0})  # no OS type yet: the start reads the VM first, and that read must wait
    with caplog.at_level("INFO", logger="shared.runs.machine_worker"):
        assert h.step() is StepResult.PACED
    text = "\n".join(f"[2026-12-05 01:00:00,000] {r.getMessage()}" for r in caplog.records)
    assert paced_steps(text + "\n" + text) == {"Queued reads": 2}
    assert paced_steps("step run=r machine=m seq=0 dequeue=1 -> StepResult.PACED") == {}  # the result line is not it


def test_machine_busy_seconds_grow_by_what_a_process_burns() -> None:
    before, started = machine_busy_seconds(), time.process_time()
    deadline = time.monotonic() + 20
    while time.process_time() - started < 0.3 and time.monotonic() < deadline:  # 0.3 s of CPU, however shared
        pass
    burnt = time.process_time() - started
    assert burnt >= 0.3 and machine_busy_seconds() - before >= burnt - 0.05  # this loop's own CPU is in it


def test_a_pause_is_the_wall_clock_running_on_beyond_the_monotonic_one() -> None:
    """A paused VM: the monotonic clock stands, the wall clock jumps ahead on resume (PauseWatch)."""
    watch = PauseWatch(threshold=1.0)
    wall, mono = 1000.0, 50.0
    for jump in (0.0, 0.5, 0.0, 13.0, 0.0):  # 0.25 s readings; 0.5 s is under the threshold, 13 s a pause
        wall, mono = wall + 0.25 + jump, mono + 0.25
        watch.observe(wall, mono)
    assert watch.pauses == [(51.0, pytest.approx(13.0))]
    assert watch.between(50.0, mono) == [(1.0, pytest.approx(13.0))]
    assert watch.between(51.1, mono) == []
    live = PauseWatch(every=0.01, threshold=30.0).start()  # the thread's own readings of a machine not paused
    deadline = time.monotonic() + 10
    while live.readings < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    live.stop()
    assert live.readings >= 3 and live.pauses == []
