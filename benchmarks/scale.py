"""Fleet scale (issue #14): PatchPilot against Azure's throttling budgets, beside the script users write today.

Every scenario runs on the ARM simulator on one compressed clock (`--scale k`: operation durations, ARM's
read/write buckets, Compute's guest-patch buckets and the 202's Retry-After all run k times faster than Azure,
bursts unchanged; PatchPilot's own timers are divided by k too), so Azure's ratios hold and an Azure hour takes
3600/k real seconds. Per scenario it prints: makespan, the lower bound computed from the buckets and the
operations' real durations (scale_bound.py), their ratio, 429s as a share of all ARM responses, ARM calls per
machine by kind, Table round-trips per machine, POST /api/runs latency, the longest gap with no queue
progress (a gap over 10 s is counted), and, in the note, the longest stall: time with a message due (visible)
and none finished, which leaves out the quiet of a run's last minutes between Retry-After polls.

PatchPilot runs as the local Functions host process(es) (`tools.local_host`, as `make run` starts it) with
Azurite behind a counting proxy (scale_proxy.py). A run over the app's MAX_MACHINES_PER_RUN is refused, so the
harness then splits it into runs of at most that many and times them together. The user script is
`ComputeManagementClient.virtual_machines.begin_install_patches(...).result()` in a ThreadPoolExecutor-like pool
of 15 and of 100 workers (the SDK's own retry policy on); it is stopped after `--sdk-seconds` and its makespan is
projected from what it did (per-machine time = the operation's duration + the overhead measured on finished
ones, machines handed to the first free worker in order), since at these sizes it would take hours. The
projection is checked in the same run: on `--sdk-check-machines` VMs (300) at `--sdk-check-scale` (20x) each
pool is projected from the same time box in Azure seconds, then run to completion, and both rows print.

Queue messages per machine print by queue (the setting's stem: dispatch, operations = starts, polls, ...), from
the deletes the proxy sees, i.e. messages the app's functions finished. `--worker-threads N` sets the local
host's PYTHON_THREADPOOL_THREAD_COUNT: a throttled consumer, to show that runs release work only as fast as it
is taken (backpressure) rather than letting the queues grow.

    make bench-scale                        # all of it: 10,000 VMs at 2x, longest (1 subscription), then 4 on one
                                            # host process and on two (--scaled-out) (~2 h 15 min)
    python -m benchmarks.scale --scenarios fleet --subscriptions 1 4   # issue #22's table: 1 and 4 subscriptions
                                            # (4 on one host process and on two), the SDK script (~75 min)
    python -m benchmarks.scale --quick      # 200 VMs at 20x, 1 subscription: about a minute
    python -m benchmarks.scale --machines 2000 --scale 6   # a shorter look (2,000 VMs at 6x, ~10 min)
    python -m benchmarks.scale --scenarios longest --subscriptions 1   # longest first (below): 10,000 VMs, ~75 min

`--scenarios longest` (issue #21, longest first): the fleet of the first `--subscriptions` count, patched twice
by PatchPilot on the same Azurite (same tables, so the first run's installation histories are there for the
second) and each time a fresh simulator of the same seed (the same VMs with the same patches): first with
LONGEST_FIRST=false (request order; its close writes every machine's history), then with LONGEST_FIRST=true
(each machine predicted from that history, the longest started first). Both rows print the request-order bound
and, beside it, the clairvoyant bound with the makespan's ratio to it (the target: at most 1.10 at 10,000
machines in one subscription); the second row's note gives the predictions' bases, their median error against
the durations the simulator drew, and the bound in the predicted order (what the predictions allow, before the
stack's own delays). The user script is not run in this scenario. By default both scenarios run, longest
first; its request-order row then stands for that subscription count's fleet row (it is one), and the fleet
scenario runs the other counts.

Why 2x for 10,000: at k-times speed the app must run about 2.6 queue messages and 9 Table round-trips per
machine at k x 3.3 starts/s per subscription, and on the 2-core development machine the local stack (Azurite's
single Node process and the host's one Python process) runs about 30-40 messages/s. Faster clocks measure the
machine, not the pacing. Azurite runs as two processes (queues and blobs; tables), since one Azurite process is
single-threaded. The queues' persists to disk: in memory (--inMemoryPersistence) its extent garbage collector
stops the whole process for 20-30 s once a minute at these rates (benchmarks/azurite_queues.py), which was this
benchmark's longest queue gaps. The tables' runs in memory (see --azurite-disk).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from azure.data.tables import TableClient

from benchmarks.scale_bound import Budgets, makespan_bound
from benchmarks.scale_proxy import CountingProxy, StorageCounts, flow, longest_gaps, longest_stall
from benchmarks.scale_sim import (
    arm_summary,
    budgets,
    compressed_config,
    config_fields,
    install_durations,
    install_seconds_by_vm,
)
from tests.integration.conftest import DEV_TOKEN, unique_settings
from tests.integration.local_host_process import HostProcess
from tools.azurite import REPO_ROOT, Azurite, connection_string

# An emergency install of Critical updates: in the simulated fleet these take 1-11 minutes (6 on average), so
# the throttling budgets, not one long installation, decide the makespan of a large fleet.
CLASSIFICATIONS = ["Critical"]
INSTALL = {"maximumDuration": "PT2H", "rebootSetting": "IfRequired",
           "windowsParameters": {"classificationsToInclude": CLASSIFICATIONS},
           "linuxParameters": {"classificationsToInclude": CLASSIFICATIONS}}
STALL_SECONDS = 10.0
SCENARIOS = ("fleet", "longest")
ARM_KINDS = ("installPatches", "poll", "get", "instanceView", "list")


@dataclass
class Row:
    client: str
    machines: int
    subscriptions: int
    scale: float
    makespan: float | None = None  # real seconds; None: did not finish
    projected: bool = False
    bound: float = 0.0  # machines started in request order at the buckets' pace (scale_bound.py, in_order)
    bound_any: float = 0.0  # the clairvoyant bound: longest operations first
    arm: dict[str, Any] = field(default_factory=dict)
    arm_per_machine: dict[str, float] = field(default_factory=dict)
    table_per_machine: float | None = None
    table_kinds: dict[str, float] = field(default_factory=dict)
    post_ms: list[float] = field(default_factory=list)
    runs: int = 0
    stall: tuple[float, list[float]] | None = None
    due_stall: float | None = None  # longest time a message was due and none finished (longest_stall)
    pauses: list[tuple[float, float]] = field(default_factory=list)  # the machine stood still (PauseWatch.between)
    messages: int = 0  # queue messages the app's functions finished (deletes through the proxy)
    message_kinds: dict[str, float] = field(default_factory=dict)  # per machine, by queue (setting name's stem)
    queue_requests: dict[str, float] = field(default_factory=dict)  # Queue requests per machine, by kind
    elapsed: float = 0.0  # real seconds the scenario was followed (the makespan, or the timeout)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per process over `elapsed` (cpu_seconds)
    rate_by_minute: list[float] = field(default_factory=list)  # messages finished per second, minute by minute
    waiting_by_minute: list[int] = field(default_factory=list)  # messages in the queues at each minute's end
    held_back: int = 0  # releases that held their window back: the consumers had not taken what was due
    paced: Counter[str] = field(default_factory=Counter)  # steps that found no budget, by "state budgets"
    done: int = 0
    note: str = ""


# ------------------------------------------------------------------------------------------------ CPU
def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants so far, from /proc (Linux; 0.0 elsewhere or
    when it is gone). Shows which process is the limit: Azurite's Node.js processes are single-threaded, so one
    near 100 % of a core is saturated whatever the others do (benchmarks/azurite_queues.py says why the queues' is)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    children: dict[int, list[int]] = {}
    usage: dict[int, float] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = entry.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ... (proc(5) fields 3-)
        this = int(entry.parent.name)
        children.setdefault(int(fields[1]), []).append(this)
        usage[this] = sum(int(f) for f in fields[11:15]) / tick  # utime, stime, and those of reaped children
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += usage.get(current, 0.0)
        todo.extend(children.get(current, []))
    return total


def machine_busy_seconds() -> float:
    """CPU seconds every core of this machine spent busy so far (all of /proc/stat's first line but idle and
    iowait), whoever spent them: against the processes' own shares it says whether the machine was full."""
    try:
        ticks = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / tick  # user..steal, less idle and iowait (proc(5))


class PauseWatch:
    """Times this machine stood still: a paused virtual machine stops the monotonic clock, and the wall clock jumps
    ahead when it resumes (tools/azure_simulator/clock.py). Every stamp the stack's gaps and stalls are measured
    on is monotonic, so a pause is none of them; it is reported beside them so that what follows one (starts due
    together) is read as the machine's doing. A thread compares the two clocks every `every` seconds; a pause is
    the wall clock running on `threshold` seconds or more beyond the monotonic one (a forward step of the wall
    clock, NTP's, reads as one too). `pauses`: (monotonic stamp when it was seen, up to `every` after the resume,
    seconds)."""

    def __init__(self, every: float = 0.25, threshold: float = 1.0) -> None:
        self.every, self.threshold = every, threshold
        self.pauses: list[tuple[float, float]] = []
        self._last: tuple[float, float] | None = None
        self.readings = 0  # the thread's
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="pause-watch", daemon=True)

    def start(self) -> PauseWatch:
        self.observe(time.time(), time.monotonic())
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            self.observe(time.time(), time.monotonic())
            self.readings += 1

    def observe(self, wall: float, mono: float) -> None:
        """One reading of both clocks: a pause if the wall clock ran on `threshold` s or more beyond the other."""
        if self._last is not None and (wall - self._last[0]) - (mono - self._last[1]) >= self.threshold:
            self.pauses.append((mono, (wall - self._last[0]) - (mono - self._last[1])))
        self._last = (wall, mono)

    def between(self, start: float, end: float) -> list[tuple[float, float]]:
        """The pauses that ended between two monotonic stamps: (seconds after `start`, seconds paused)."""
        return [(at - start, lost) for at, lost in self.pauses if start <= at <= end]


def cpu_snapshot(processes: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process (with its children), of this harness's own process (its
    counting proxy forwards every storage request), and of the whole machine (at most N cores times the time)."""
    return {**{name: cpu_seconds(pid) for name, pid in processes.items()},
            "harness (this process: counting proxy, driver)": time.process_time(),
            f"machine, {os.cpu_count() or 1} cores": machine_busy_seconds()}


# ------------------------------------------------------------------------------------------------ simulator
class SimProcess:
    """The simulator in its own process; metrics over its /_sim admin API."""

    def __init__(self, machines: int, subscriptions: int, scale: float, seed: int) -> None:
        self.config = compressed_config(scale, vms=machines, subscriptions=subscriptions, seed=seed,
                                        required_token=DEV_TOKEN)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.scale_sim", json.dumps(config_fields(self.config))],
            cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http"):
            raise RuntimeError("simulator did not start")

    def get(self, path: str) -> Any:
        return requests.get(f"{self.url}/_sim/{path}", timeout=120).json()

    def vm_ids(self) -> list[str]:
        return [vm["id"] for vm in self.get("vms")["vms"]]

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def scaled_timers(scale: float) -> dict[str, str]:
    """PatchPilot's Azure-facing waits (production defaults in Azure seconds) divided by the clock's factor."""
    def s(azure_seconds: float) -> str:
        return str(max(1, round(azure_seconds / scale)))
    return {"POLL_MIN_SECONDS": "0", "DEFAULT_RETRY_AFTER_SECONDS": s(60),
            "RETRY_BASE_SECONDS": s(5), "RETRY_MAX_SECONDS": s(600), "CONFLICT_RETRY_SECONDS": s(120),
            "DISPATCH_HORIZON_SECONDS": s(120), "RUN_RETRY_AFTER_SECONDS": "1", "POLL_ROUND_SECONDS": s(5),
            # The app's budget runs on the simulator's clock too: Azure's refill rates times k, bursts unchanged.
            # Queue lateness is real time, so the burst kept back for it (rate x late) would grow k-fold: at 6x
            # and 5 s, more than the read bucket's whole burst. It is divided by k as well (at least 1 s).
            "GUEST_PATCH_PER_MINUTE": str(round(200 * scale)), "ARM_WRITES_PER_SECOND": str(round(10 * scale)),
            "ARM_READS_PER_SECOND": str(round(25 * scale)), "PACING_LATE_SECONDS": s(5)}


def per_machine_calls(calls: dict[str, Any], vms: list[str]) -> dict[str, float]:
    """Mean ARM calls of each kind over `vms` (lists are fleet-wide and spread over them)."""
    by_vm = calls.get("byVm", {})
    n = max(1, len(vms))
    out = {k: sum(by_vm.get(v.lower(), {}).get(k, 0) for v in vms) / n for k in ARM_KINDS if k != "list"}
    out["list"] = calls.get("total", {}).get("list", 0) / n
    return out


# ------------------------------------------------------------------------------------------------ PatchPilot
def post_runs(base: str, vms: list[str]) -> tuple[list[str], list[float], list[str]]:
    """POST the whole fleet as one run; if the app refuses it for its per-run cap or its request-size limit,
    POST it in equal runs that fit. Returns the run ids, the accepted POSTs' latencies and the refusals' codes."""
    refusals: list[str] = []
    chunk = len(vms)
    while True:
        ids: list[str] = []
        latencies: list[float] = []
        for i in range(0, len(vms), chunk):
            started = time.perf_counter()
            resp = requests.post(f"{base}/api/runs", json={"machines": vms[i:i + chunk], "installPatches": INSTALL},
                                 timeout=300)
            if resp.status_code == 202:
                latencies.append((time.perf_counter() - started) * 1000)
                ids.append(resp.json()["id"])
                continue
            smaller = smaller_chunk(resp, chunk) if i == 0 else None
            if smaller is None:
                raise RuntimeError(f"POST /api/runs ({chunk} machines): {resp.status_code} {resp.text[:300]}")
            refusals.append(str(resp.json()["error"]["code"]))
            chunk = smaller
            break
        else:
            return ids, latencies, refusals


def smaller_chunk(resp: requests.Response, chunk: int) -> int | None:
    """How many machines per run the app's refusal allows: its stated cap, or what fits its request-size limit."""
    try:
        error = resp.json()["error"]
        message = str(error["message"])
    except (ValueError, KeyError, TypeError):
        return None
    numbers = [int(w) for w in message.replace(",", "").replace(";", " ").split() if w.isdecimal()]
    if error.get("target") == "machines" and "at most" in message and numbers:
        return min(numbers[-1], chunk - 1)
    if error.get("code") == "RequestBodyTooLarge" and len(numbers) >= 2 and numbers[0] > numbers[1]:
        return max(1, chunk * numbers[1] // numbers[0] * 95 // 100)
    return None


def wait_runs(base: str, ids: list[str], timeout: float, counts: StorageCounts) -> tuple[dict[str, str], int]:
    """Follow the runs through GET /api/runs (the light listing) until each has completedAt; returns those seen.
    Prints storage progress every 30 s, so a long run shows where it is."""
    started = time.monotonic()
    deadline = started + timeout
    done: dict[str, str] = {}
    gets = 0
    last = (started, counts.snapshot()[0])
    while len(done) < len(ids) and time.monotonic() < deadline:
        time.sleep(1.0)
        now = time.monotonic()
        if now - last[0] >= 30:
            current = counts.snapshot()[0]
            rate = {k: (current[k] - last[1][k]) / (now - last[0]) for k in ("table:query", "queue:delete")}
            rate["table"] = (StorageCounts.table(current) - StorageCounts.table(last[1])) / (now - last[0])
            print(f"    {now - started:4.0f} s: {len(done)}/{len(ids)} runs done; Table {rate['table']:.0f}/s "
                  f"({rate['table:query']:.0f} queries), queue messages done {rate['queue:delete']:.0f}/s", flush=True)
            last = (now, current)
        gets += 1
        try:
            listed = requests.get(f"{base}/api/runs?top={max(20, len(ids))}", timeout=30).json()["value"]
        except (requests.RequestException, ValueError, KeyError):
            continue
        done.update({r["id"]: r["completedAt"] for r in listed if r["id"] in ids and r.get("completedAt")})
    return done, gets


def machine_states(base: str, ids: list[str]) -> str:
    """The runs' machine states added up (one full GET per run, after the timing), e.g. "Completed 1500"."""
    states: dict[str, int] = {}
    for run_id in ids:
        try:
            for state, count in requests.get(f"{base}/api/runs/{run_id}", timeout=120).json()["states"].items():
                states[state] = states.get(state, 0) + int(count)
        except (requests.RequestException, ValueError, KeyError):
            return "states unread"
    return ", ".join(f"{k} {v}" for k, v in sorted(states.items()) if v)


def run_patchpilot(azurite: Azurite, tables: Azurite, n: int, subs: int, args: argparse.Namespace, *,
                   logs: Path, label: str = "PatchPilot", base: dict[str, str] | None = None,
                   then: Callable[[Row, dict[str, str], list[str], SimProcess], None] | None = None,
                   hosts_count: int | None = None) -> Row:
    """`azurite` serves blobs and queues, `tables` the Table service: two Node processes, so storage can use
    both cores of the development machine (one Azurite process is single-threaded). `base`: the app's settings
    (default: fresh table and queue names; the same `base` twice shares its tables); `then(row, settings, ids,
    sim)`: called once the runs are done and measured, before the hosts stop. `hosts_count`: local host processes
    sharing the queues (default `--hosts`)."""
    hosts_count = args.hosts if hosts_count is None else hosts_count
    row = Row(label + (f" ({hosts_count} hosts)" if hosts_count > 1 else ""), n, subs, args.scale)
    sim = SimProcess(n, subs, args.scale, args.seed)
    counts = StorageCounts()
    proxies = [CountingProxy("table", tables.table_port, counts).start(),
               CountingProxy("queue", azurite.queue_port, counts).start()]
    hosts: list[HostProcess] = []
    watch = PauseWatch().start()
    try:
        settings = {**(base or unique_settings(azurite, sim.url)), "ARM_ENDPOINT": sim.url}
        for name in ("MAX_TRANSIENT_RETRIES", "MAX_CONFLICT_RETRIES"):  # production defaults, not the tests' 30
            settings.pop(name, None)
        settings.update(scaled_timers(args.scale))
        if args.worker_threads:
            settings["PYTHON_THREADPOOL_THREAD_COUNT"] = str(args.worker_threads)
        settings["AzureWebJobsStorage"] = connection_string(azurite.blob_port, proxies[1].port, proxies[0].port)
        hosts = [HostProcess(settings, logs / f"host-{n}-{subs}-{hosts_count}-{i}.log") for i in range(hosts_count)]
        for host in hosts:
            host.wait_ready()
        vms = sim.vm_ids()
        base = hosts[0].base_url
        before, _ = counts.snapshot()
        done_before = counts.done_snapshot()
        watched = {"queues Azurite": azurite.process.pid if azurite.process else 0,
                   "tables Azurite": tables.process.pid if tables.process else 0, "simulator": sim.process.pid,
                   **{f"host {i}" if len(hosts) > 1 else "host": h.process.pid for i, h in enumerate(hosts)}}
        cpu_before = cpu_snapshot(watched)
        started = time.monotonic()
        wall_started = time.time()
        ids, row.post_ms, refusals = post_runs(base, vms)
        row.runs = len(ids)
        if refusals:
            row.note = f"one run of {n:,} refused ({', then '.join(refusals)}): split into {len(ids)} runs"
        done, gets = wait_runs(base, ids, args.timeout, counts)
        ended = time.monotonic()
        row.elapsed = ended - started
        row.cpu = {k: v - cpu_before.get(k, 0.0) for k, v in cpu_snapshot(watched).items()}
        after, stamps = counts.snapshot()
        if len(done) == len(ids):
            last = max(datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() for v in done.values())
            row.makespan = min(ended - started, max(0.0, last - wall_started))
        else:
            row.note = "; ".join(filter(None, [row.note, f"{len(done)}/{len(ids)} runs done in {args.timeout:.0f} s"]))
        row.stall = longest_gaps(stamps, started, ended, STALL_SECONDS)
        row.due_stall = longest_stall(*counts.due_stamps(), started, ended)
        row.pauses = watch.between(started, ended)
        row.rate_by_minute, row.waiting_by_minute = flow(*counts.flow_stamps(), started, ended)
        host_logs = [path.read_text(errors="replace")
                     for path in (logs / f"host-{n}-{subs}-{hosts_count}-{i}.log" for i in range(hosts_count))
                     if path.exists()]
        row.held_back = sum(text.count("holds back the window") for text in host_logs)
        row.paced = sum((paced_steps(text) for text in host_logs), Counter())
        row.note = "; ".join(filter(None, [row.note, machine_states(base, ids)]))
        # Table round-trips of the app: all Table requests less the harness's own GET /api/runs (one query each).
        row.table_per_machine = max(0, StorageCounts.table(after) - StorageCounts.table(before) - gets) / n
        row.table_kinds = {k[6:]: (after[k] - before[k]) / n for k in after if k.startswith("table:")}
        row.table_kinds["query"] = max(0.0, row.table_kinds.get("query", 0.0) - gets / n)
        row.queue_requests = {k[6:]: (after[k] - before[k]) / n for k in after if k.startswith("queue:")}
        row.messages = after["queue:delete"] - before["queue:delete"]
        queues = {str(v).lower(): k.removesuffix("_QUEUE").lower() for k, v in settings.items() if k.endswith("_QUEUE")}
        for queue, count in (counts.done_snapshot() - done_before).items():
            kind = queues.get(queue.lower(), "other")
            row.message_kinds[kind] = row.message_kinds.get(kind, 0.0) + count / n
        calls = sim.get("calls")
        row.arm = arm_summary(calls)
        row.arm_per_machine = per_machine_calls(calls, vms)
        durations = install_durations(sim.get("vms"))
        row.done = sum(len(d) for d in durations.values())
        row.bound = makespan_bound(durations, budgets(sim.config), in_order=True)
        row.bound_any = makespan_bound(durations, budgets(sim.config))
        if then is not None:
            then(row, settings, ids, sim)
        return row
    finally:
        watch.stop()
        for host in hosts:
            host.stop()
        for proxy in proxies:
            proxy.stop()
        sim.stop()


# ------------------------------------------------------------------------------------------------ longest first
def run_longest(azurite: Azurite, tables: Azurite, n: int, subs: int, args: argparse.Namespace, *,
                logs: Path, taken: Callable[[Row], None] = lambda row: None) -> list[Row]:
    """The fleet twice on the same tables, each time on a fresh simulator of the same seed: request order (its
    close writes the histories), then longest first from them (module doc)."""
    base = unique_settings(azurite, "http://127.0.0.1:9")  # ARM_ENDPOINT: each run's own simulator
    tables_url = connection_string(azurite.blob_port, azurite.queue_port, tables.table_port)

    def histories_written(row: Row, settings: dict[str, str], ids: list[str], sim: SimProcess) -> None:
        # The close writes them after the run's final write: wait for them before the host stops.
        client = TableClient.from_connection_string(tables_url, settings["MACHINES_TABLE"])
        subscriptions = {vm.split("/")[2].lower() for vm in sim.vm_ids()}
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            stored = sum(1 for sub in subscriptions for _ in client.query_entities(
                "PartitionKey eq @p", parameters={"p": f"~durations|{sub}"}, select=["RowKey"]))
            if stored >= row.done:
                break
            time.sleep(2)
        row.note = "; ".join(filter(None, [row.note, f"{stored:,} histories written"]))

    def predictions(row: Row, settings: dict[str, str], ids: list[str], sim: SimProcess) -> None:
        client = TableClient.from_connection_string(tables_url, settings["TARGETS_TABLE"])
        predicted: dict[str, float] = {}
        bases: dict[str, int] = {}
        for run_id in ids:
            for e in client.query_entities("PartitionKey eq @run and RowKey lt '~'", parameters={"run": run_id},
                                           select=["resourceId", "predictedSeconds", "predictionBasis"]):
                predicted[str(e["resourceId"]).lower()] = float(e.get("predictedSeconds") or 0)
                basis = str(e.get("predictionBasis") or "none")
                bases[basis] = bases.get(basis, 0) + 1
        real = install_seconds_by_vm(sim.get("vms"))
        errors = sorted(abs(predicted[vm] - s) / s for vm, s in real.items() if vm in predicted and s > 0)
        in_predicted_order = predicted_order_bound(sim.vm_ids(), predicted, real, budgets(sim.config))
        row.note = "; ".join(filter(None, [
            row.note, "predicted: " + ", ".join(f"{k} {v:,}" for k, v in sorted(bases.items())),
            f"median prediction error {100 * errors[len(errors) // 2]:.0f}%" if errors else "",
            f"bound in predicted order {fmt_time(in_predicted_order, row.scale)}"]))

    first = run_patchpilot(azurite, tables, n, subs, args, logs=logs, label="PatchPilot, request order",
                           base={**base, "LONGEST_FIRST": "false"}, then=histories_written)
    print(f"  PatchPilot {n}/{subs}, request order: done", flush=True)
    taken(first)
    second = run_patchpilot(azurite, tables, n, subs, args, logs=logs, label="PatchPilot, longest first",
                            base={**base, "LONGEST_FIRST": "true"}, then=predictions)
    print(f"  PatchPilot {n}/{subs}, longest first: done", flush=True)
    taken(second)
    return [first, second]


def predicted_order_bound(vms: list[str], predicted: dict[str, float], real: dict[str, float],
                          budget: Budgets) -> float:
    """The makespan bound when each subscription's machines start in the predicted order (longest first; equal
    predictions in request order, as the app sorts), each taking what it really took (scale_bound.py)."""
    by_sub: dict[str, list[float]] = {}
    for vm in sorted((v.lower() for v in vms if v.lower() in real), key=lambda v: -predicted.get(v, 0.0)):
        by_sub.setdefault(vm.split("/")[2], []).append(real[vm])
    return makespan_bound(by_sub, budget, in_order=True)


# ------------------------------------------------------------------------------------------------ user script
def run_sdk(n: int, subs: int, workers: int, args: argparse.Namespace, *, scale: float | None = None,
            seconds: float | None = None, label: str = "") -> Row:
    """The script users write today: begin_install_patches(...).result() per VM in a pool of `workers` threads,
    stopped after `seconds` (default `--sdk-seconds`; `math.inf`: to completion) and projected if unfinished,
    on a clock of `scale` (default `--scale`)."""
    scale = args.scale if scale is None else scale
    seconds = args.sdk_seconds if seconds is None else seconds
    from azure.core.credentials import AccessToken
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.compute.models import LinuxParameters, VirtualMachineInstallPatchesParameters, WindowsParameters

    class StaticToken:
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            return AccessToken(DEV_TOKEN, int(time.time()) + 3600)

    row = Row(f"SDK script, {workers} workers{label}", n, subs, scale)
    sim = SimProcess(n, subs, scale, args.seed)
    try:
        vms = sim.vm_ids()
        clients = {sub: ComputeManagementClient(StaticToken(), sub, base_url=sim.url, connection_verify=False)
                   for sub in {v.split("/")[2] for v in vms}}
        params = VirtualMachineInstallPatchesParameters(
            maximum_duration=INSTALL["maximumDuration"], reboot_setting=INSTALL["rebootSetting"],
            windows_parameters=WindowsParameters(classifications_to_include=CLASSIFICATIONS),
            linux_parameters=LinuxParameters(classifications_to_include=CLASSIFICATIONS))
        todo = list(vms)
        lock = threading.Lock()
        stop = threading.Event()
        times: dict[str, tuple[float, float]] = {}
        started_vms: list[str] = []
        failures: list[str] = []

        def worker() -> None:
            while not stop.is_set():
                with lock:
                    if not todo:
                        return
                    vm = todo.pop(0)
                    started_vms.append(vm)
                parts = vm.split("/")
                t0 = time.monotonic()
                try:
                    # enforce_https=False: azure-core's per-operation option for a bearer token over plain http.
                    clients[parts[2]].virtual_machines.begin_install_patches(
                        parts[4], parts[8], params, enforce_https=False).result()
                except Exception as exc:  # counted; the script users write would log it and go on
                    if stop.is_set():
                        return
                    failures.append(f"{type(exc).__name__}: {str(exc)[:120]}")
                    continue
                with lock:
                    times[vm] = (t0, time.monotonic())

        begin = time.monotonic()
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
        for t in threads:
            t.start()
        deadline = begin + seconds
        while time.monotonic() < deadline and any(t.is_alive() for t in threads):
            time.sleep(0.5)
        stop.set()
        end = time.monotonic()
        calls = sim.get("calls")
        durations = install_durations(sim.get("vms"))
        row.arm = arm_summary(calls)
        finished = list(times)
        row.done = len(finished)
        row.arm_per_machine = per_machine_calls(calls, finished)
        row.bound = makespan_bound(durations, budgets(sim.config), in_order=True)
        row.bound_any = makespan_bound(durations, budgets(sim.config))
        if len(finished) == n:
            row.makespan = max(e for _, e in times.values()) - begin
        else:
            row.makespan, row.projected = project(vms, started_vms, times, sim.get("vms"), workers), True
            if row.bound and len(durations) < n:  # the bound needs every duration: estimate the rest by the mean
                mean = statistics.mean(d for ds in durations.values() for d in ds)
                per_sub: dict[str, list[float]] = {}
                for v in vms:
                    per_sub.setdefault(v.split("/")[2].lower(), []).append(mean)
                for sub, ds in durations.items():
                    per_sub[sub][:len(ds)] = ds
                row.bound = makespan_bound(per_sub, budgets(sim.config), in_order=True)
                row.bound_any = makespan_bound(per_sub, budgets(sim.config))
            row.note = f"{len(finished)} done, {len(started_vms)} started in {end - begin:.0f} s; projected"
        if failures:
            row.note += f"; {len(failures)} failed ({failures[0]})"
        return row
    finally:
        sim.stop()


def project(vms: list[str], started: list[str], times: dict[str, tuple[float, float]], state: dict[str, Any],
            workers: int) -> float:
    """Projected makespan of the whole pool: machines go to the first free worker in order (as the pool takes
    them); a finished machine costs what it took, a started one its operation's duration plus the overhead
    measured on finished ones (throttling waits, poll lag), and one not started the cost of a started one
    (cycling through them, so long operations keep their share)."""
    real = {vm["id"]: float(ops[0]["realSeconds"]) for vm in state["vms"]
            if (ops := [o for o in vm.get("operations", []) if o.get("kind") == "installPatches"])}
    overheads = [(e - s) - real[v] for v, (s, e) in times.items() if v in real]
    overhead = statistics.median(overheads) if overheads else 0.0
    costs = [times[v][1] - times[v][0] if v in times else real[v] + overhead for v in started if v in real]
    if not costs:
        return float("inf")
    costs += [costs[i % len(costs)] for i in range(len(vms) - len(costs))]
    free = [0.0] * workers
    for cost in costs:
        heapq.heappush(free, heapq.heappop(free) + cost)
    return max(free)


# ------------------------------------------------------------------------------------------------ table
def fmt_time(seconds: float | None, scale: float) -> str:
    if seconds is None:
        return "not done"
    azure = seconds * scale
    return f"{seconds:.0f} s ({azure / 3600:.1f} h)" if azure >= 3600 else f"{seconds:.0f} s ({azure / 60:.0f} min)"


def print_table(rows: list[Row], *, header: bool = True) -> None:
    if header:
        print_header()
    for r in rows:
        print_row(r)


def print_header() -> None:
    print("| client | VMs / subs | makespan real (Azure) | bound, request order, real (Azure) | ratio | "
          "clairvoyant bound (ratio) | 429s / ARM calls | "
          "ARM calls per machine: install, poll, get, instanceView, list | Table round-trips per machine (by kind) | "
          "POST /api/runs ms (runs) | queue messages per machine (per s) (by queue) | "
          "longest queue gap s (gaps >10 s) | peak in flight | note |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | --- |")


def print_row(r: Row) -> None:
    ratio = f"{r.makespan / r.bound:.2f}" if r.makespan and r.bound else "-"
    any_order = (f"{fmt_time(r.bound_any, r.scale)} ({r.makespan / r.bound_any:.2f})"
                 if r.makespan and r.bound_any else "-")
    share = f"{100 * r.arm.get('throttled', 0) / max(1, r.arm.get('responses', 0)):.1f}%"
    by_bucket = r.arm.get("throttledByBucket")
    if by_bucket:
        share += " (" + ", ".join(f"{k} {v}" for k, v in sorted(by_bucket.items())) + ")"
    kinds = ", ".join(f"{r.arm_per_machine.get(k, 0):.2f}" for k in ARM_KINDS)
    table = "-" if r.table_per_machine is None else f"{r.table_per_machine:.1f} (" + ", ".join(
        f"{k} {v:.1f}" for k, v in sorted(r.table_kinds.items())) + ")"
    post = (f"{statistics.median(r.post_ms):.0f} p50, {max(r.post_ms):.0f} max ({r.runs})" if r.post_ms else "-")
    stall = (f"{r.stall[0]:.1f} ({len(r.stall[1])}" + "".join(f", at {at:.0f} s" for at in r.stall[1][:3]) + ")"
             if r.stall else "-")
    msgs = f"{r.messages / r.machines:.2f} ({r.messages / r.elapsed:.0f}/s)" if r.messages and r.elapsed else "-"
    if r.message_kinds:
        msgs += " (" + ", ".join(f"{k} {v:.2f}" for k, v in sorted(r.message_kinds.items()) if v >= 0.005) + ")"
    makespan = ("~" if r.projected else "") + fmt_time(r.makespan, r.scale)
    peak = r.arm.get("peakInFlight", 0) or "-"
    note = r.note
    if len(r.rate_by_minute) >= 3:  # the first and last minutes are ramps: the steady part is between
        steady = sorted(r.rate_by_minute[1:-1])
        q = [steady[min(len(steady) - 1, int(p * len(steady)))] for p in (0.1, 0.5, 0.9)]
        note = "; ".join(filter(None, [note, f"messages finished per s by minute p10/p50/p90 {q[0]:.0f}/{q[1]:.0f}/"
                                             f"{q[2]:.0f}; in the queues at most {max(r.waiting_by_minute):,}, "
                                             f"{r.waiting_by_minute[-1]:,} at the end; releases held back "
                                             f"{r.held_back:,} times"]))
    if r.due_stall is not None:
        note = "; ".join(filter(None, [note, f"longest stall (a message due, none finished) {r.due_stall:.1f} s"]))
    if r.pauses:  # not the stack's: every process stood still (PauseWatch)
        at, longest = max(r.pauses, key=lambda p: p[1])
        paused = sum(p[1] for p in r.pauses)
        times = f"{len(r.pauses)} time" + ("s" if len(r.pauses) > 1 else "")
        note = "; ".join(filter(None, [note, f"the machine was paused {times} ({paused:.1f} s; "
                                             f"longest {longest:.1f} s, at {at:.0f} s)"]))
    if r.queue_requests:  # each one Azurite scans its waiting messages for, but sends (benchmarks/azurite_queues.py)
        note = "; ".join(filter(None, [note, "Queue requests per machine: " + ", ".join(
            f"{k} {v:.2f}" for k, v in sorted(r.queue_requests.items(), key=lambda kv: -kv[1]) if v >= 0.005)]))
    if r.paced:
        note = "; ".join(filter(None, [note, "paced steps per machine: " + ", ".join(
            f"{k} {v / r.machines:.2f}" for k, v in r.paced.most_common())]))
    if r.cpu and r.elapsed:
        busy = ", ".join(f"{k} {100 * v / r.elapsed:.0f}%" for k, v in sorted(r.cpu.items(), key=lambda kv: -kv[1]))
        note = "; ".join(filter(None, [note, f"CPU, share of one core: {busy}"]))
    print(f"| {r.client} | {r.machines:,} / {r.subscriptions} | {makespan} | {fmt_time(r.bound, r.scale)} | "
          f"{ratio} | {any_order} | {share} | {kinds} | {table} | {post} | {msgs} | {stall} | {peak} | {note} |")


PACED_LINE = re.compile(r"paced run=\S+ machine=\S+ state=(\w+) wait=\d+s budgets=(\S+)")


def paced_steps(log_text: str) -> Counter[str]:
    """Steps that found no ARM budget and were queued again (machine_worker's "paced" log line), counted by
    the machine's state and the buckets it waited for: "Queued reads" is a start, "Running polls" a poll."""
    return Counter(f"{state} {budgets}" for state, budgets in PACED_LINE.findall(log_text))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--machines", type=int, default=10000, help="VMs per scenario (default: the issue's 10,000)")
    p.add_argument("--subscriptions", type=int, nargs="+", default=[1, 4], help="one scenario per count")
    p.add_argument("--scale", type=float, default=2.0, help="Azure seconds per real second, for everything")
    p.add_argument("--hosts", type=int, default=1, help="local host processes sharing the queues")
    p.add_argument("--scaled-out", type=int, default=2,
                   help="each fleet scenario over more than one subscription runs again on this many host processes "
                        "(as Azure scales a queue-triggered app out to more instances; 0: not run)")
    p.add_argument("--sdk-workers", type=int, nargs="*", default=[15, 100], help="pool sizes of the user script")
    p.add_argument("--sdk-seconds", type=float, default=30.0, help="time box of each user-script run")
    p.add_argument("--timeout", type=float, default=3600.0, help="give up on a PatchPilot scenario after this")
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--azurite-disk", action="store_true",
                   help="the tables' Azurite persisting to disk too (default: --inMemoryPersistence; its LokiJS store "
                        "re-serialises every table to disk every few seconds, which at 10,000 machines is its main "
                        "cost). The queues' always persists to disk: in memory its garbage collector stalls it")
    p.add_argument("--sdk-check-machines", type=int, default=300,
                   help="the user script also runs to completion on this many VMs (one subscription), beside its "
                        "projection from the same time box, so the projection is checked (0: skip)")
    p.add_argument("--sdk-check-scale", type=float, default=20.0,
                   help="the clock of that check (at 2x, 15 workers would take an hour on 300 VMs)")
    p.add_argument("--worker-threads", type=int, default=0,
                   help="PYTHON_THREADPOOL_THREAD_COUNT of the local host (0: the worker's default): fewer threads "
                        "throttle the consumer, to show backpressure")
    p.add_argument("--quick", action="store_true", help="200 VMs at 20x, one subscription: about a minute")
    p.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=["longest", "fleet"],
                   help="fleet: PatchPilot and the user script per --subscriptions count; longest: the first "
                        "count's fleet twice, request order then longest first from its history (default: both, "
                        "longest first; its request-order row stands for that count's fleet row)")
    args = p.parse_args(argv)
    if args.quick:
        args.machines, args.scale, args.sdk_seconds, args.timeout = 200, 20.0, 10.0, 180.0
        args.subscriptions = [1]
        args.sdk_check_machines = 100
        args.scaled_out = 0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    random.seed(args.seed)
    rows: list[Row] = []
    logs = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    print(f"Fleet scale: {args.machines:,} VMs per scenario, clock {args.scale:g}x Azure (an Azure hour = "
          f"{3600 / args.scale:.0f} s), PatchPilot through {args.hosts} local host process(es); logs in {logs}",
          flush=True)

    def done(*new: Row) -> None:  # each row as it is taken, so a long run that is stopped keeps what it measured
        for row in new:
            if not rows:
                print_header()
            rows.append(row)
            print_row(row)
        sys.stdout.flush()

    # Each scenario on fresh Azurite processes (the longest pair shares them by design), so a scenario is measured as
    # it runs alone: the tables' Azurite keeps every table in memory, and before this four subscriptions ran after
    # one subscription's two 10,000-machine runs (1.57 and 1.87 of their bound in two full runs; alone 1.25-1.53 over
    # six runs, so the spread hides how much that cost: docs/performance.md, session 24). The queues' Azurite is on
    # disk: in memory its extent GC stops it for 20-30 s a minute (azurite_queues.py).
    covered: set[int] = set()
    if "longest" in args.scenarios:
        with Azurite(in_memory=False) as azurite, Azurite(in_memory=not args.azurite_disk) as tables:
            run_longest(azurite, tables, args.machines, args.subscriptions[0], args, logs=logs, taken=done)
        covered.add(args.subscriptions[0])  # its request-order row is that count's fleet row
    for subs in args.subscriptions if "fleet" in args.scenarios else []:
        started = time.monotonic()
        if subs not in covered:
            with Azurite(in_memory=False) as azurite, Azurite(in_memory=not args.azurite_disk) as tables:
                done(run_patchpilot(azurite, tables, args.machines, subs, args, logs=logs))
            print(f"  PatchPilot {args.machines}/{subs}: {time.monotonic() - started:.0f} s", flush=True)
        if subs > 1 and args.scaled_out > args.hosts:
            # The same scenario on more host processes sharing the queues: what one process of one 2-core machine
            # cannot take, Azure's scale-out (instances) or FUNCTIONS_WORKER_PROCESS_COUNT does (issue #22).
            started = time.monotonic()
            with Azurite(in_memory=False) as azurite, Azurite(in_memory=not args.azurite_disk) as tables:
                done(run_patchpilot(azurite, tables, args.machines, subs, args, logs=logs,
                                    hosts_count=args.scaled_out))
            print(f"  PatchPilot {args.machines}/{subs} on {args.scaled_out} hosts: "
                  f"{time.monotonic() - started:.0f} s", flush=True)
        for workers in args.sdk_workers:
            done(run_sdk(args.machines, subs, workers, args))
    for workers in args.sdk_workers if args.sdk_check_machines and "fleet" in args.scenarios else []:
        # The projection checked: the same pool time-boxed and projected, then run to completion (module doc).
        box = args.sdk_seconds * args.scale / args.sdk_check_scale
        done(run_sdk(args.sdk_check_machines, 1, workers, args, scale=args.sdk_check_scale, seconds=box,
                     label=", projected"),
             run_sdk(args.sdk_check_machines, 1, workers, args, scale=args.sdk_check_scale, seconds=math.inf,
                     label=", measured"))
    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
