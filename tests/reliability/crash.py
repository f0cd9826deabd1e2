"""Crash scenarios against the local Functions host process: submit install runs to the ARM simulator,
SIGKILL the host at random (seeded) points and restart it, restart Azurite gracefully once, then follow
every run to its end and judge it against what the simulator did. Shared by tests/reliability
(a small scenario with shortened waits) and benchmarks/chaos.py (the full one, with today's waits)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.integration.conftest import unique_settings
from tests.integration.local_host_process import wait_answering
from tests.support.bodies import INSTALL_WIDE
from tests.support.fleet import sim_config
from tools.azure_simulator import Simulator, SimulatorConfig
from tools.azurite import REPO_ROOT, Azurite, free_port

FINISHED = ("Succeeded", "CompletedWithWarnings", "Failed", "Canceled", "Halted")
Log = Callable[[str], None]


def quiet(_message: str) -> None:
    pass


class Host:
    """The local Functions host as a process (tests.reliability.bounded_host), restartable after a kill;
    a new port each start. `bounds` (environment) may shorten the lease and STALL_AFTER."""

    def __init__(self, settings: dict[str, str], logs: Path, bounds: dict[str, str] | None = None) -> None:
        self.settings, self.logs, self.bounds = settings, logs, bounds or {}
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 90.0) -> Host:
        self.starts += 1
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, **self.settings, **self.bounds, "PYTHONUNBUFFERED": "1"}
        log_path = self.logs / f"host-{self.starts}.log"
        with open(log_path, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.reliability.bounded_host", "--script-root", str(REPO_ROOT),
                 "--port", str(port)], env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
        wait_answering(self.process, self.url, log_path, timeout, probe_timeout=2)
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup; messages in flight stay leased."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def submit(host: Host, machines: list[str], key: str, log: Log = quiet, attempts: int = 5) -> str:
    """POST /api/runs with an Idempotency-Key, retried with the same key if the host is down at that moment."""
    for attempt in range(attempts):
        try:
            resp = requests.post(f"{host.url}/api/runs", json={"machines": machines, "installPatches": INSTALL_WIDE},
                                 headers={"Idempotency-Key": key}, timeout=30)
            if resp.status_code == 202:
                return str(resp.json()["id"])
            log(f"submit {key}: {resp.status_code} {resp.text[:200]}")
        except requests.RequestException as exc:
            log(f"submit {key}: {exc}")
        time.sleep(1 + attempt)
    raise RuntimeError(f"could not submit run {key}")


def wait_finished(host: Host, run_ids: list[str], deadline: float, log: Log = quiet,
                  restart_dead: bool = True) -> tuple[dict[str, dict[str, Any]], float | None]:
    """Follow every run until it answers 200 or the deadline passes: (last views, time all had finished)."""
    views: dict[str, dict[str, Any]] = {}
    done: set[str] = set()
    last_note = time.monotonic()
    while time.monotonic() < deadline:
        if restart_dead and not host.alive():
            log("the host died by itself; restarting it")
            host.start()
        for run_id in run_ids:
            if run_id in done:
                continue
            try:
                resp = requests.get(f"{host.url}/api/runs/{run_id}", timeout=15)
                views[run_id] = resp.json()
                if resp.status_code == 200:
                    done.add(run_id)
            except (requests.RequestException, ValueError):
                pass
        if len(done) == len(run_ids):
            return views, time.monotonic()
        if time.monotonic() - last_note > 60:
            last_note = time.monotonic()
            log(f"  waiting: {len(done)}/{len(run_ids)} runs finished; machines {machine_states(views)}; "
                f"{int(deadline - time.monotonic())} s left")
        time.sleep(1)
    return views, None


def machine_states(views: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Machines by state, with the error code for those that ended with one (e.g. Failed/OutcomeUnknown)."""
    return dict(Counter(str(m.get("state")) + (f"/{m['error']['code']}" if m.get("error") else "")
                        for v in views.values() for m in v.get("machines", [])))


@dataclass
class Verdict:
    runs: int = 0
    runs_finished: int = 0
    runs_correct: int = 0
    machines: int = 0
    double_installs: int = 0
    never_installed: int = 0
    false_failures: int = 0
    wrong_state: int = 0
    problems: list[str] = field(default_factory=list)
    # Machines that ended OutcomeUnknown (a kill between the claim and ARM's answer that Azure could not
    # settle); reported apart from false failures.
    outcome_unknown: set[str] = field(default_factory=set)

    def unexplained(self) -> list[str]:
        return [p for p in self.problems if p.split(":")[0] not in self.outcome_unknown]


def judge(sim: Simulator, views: dict[str, dict[str, Any]], expected: dict[str, list[str]]) -> Verdict:
    """Every run's machines against the simulator: one accepted installPatches each, the run's state and
    status equal to the simulator's result, and no Failed/TimedOut machine the simulator installed (or is
    still installing: the run gave up on an operation that goes on)."""
    calls = sim.calls()["byVm"]
    state = {v["id"].lower(): v for v in sim.state()["vms"]}
    verdict = Verdict(runs=len(expected))
    for run_id, machines in expected.items():
        view = views.get(run_id, {})
        finished = view.get("status") in FINISHED
        verdict.runs_finished += finished
        by_id = {m["id"].lower(): m for m in view.get("machines", [])}
        correct = finished and len(by_id) == len(machines)
        for vm in (m.lower() for m in machines):
            verdict.machines += 1
            installs = calls.get(vm, {}).get("installPatchesAccepted", 0)
            ops = [op for op in state[vm]["operations"] if op["kind"] == "installPatches"]
            machine = by_id.get(vm, {})
            # The operation's result status once done; while it still runs, its status (InProgress).
            sim_status = ((ops[-1]["result"] or {}).get("status") or ops[-1]["status"]) if ops else None
            if installs > 1:
                verdict.double_installs += 1
                verdict.problems.append(f"{vm}: {installs} accepted installPatches")
            if installs == 0:
                verdict.never_installed += 1
            if machine.get("state") in ("Failed", "TimedOut") and sim_status in ("Succeeded", "CompletedWithWarnings",
                                                                                   "InProgress"):
                verdict.false_failures += 1
                if (machine.get("error") or {}).get("code") == "OutcomeUnknown":
                    verdict.outcome_unknown.add(vm)
                verdict.problems.append(f"{vm}: {machine.get('state')} ({machine.get('error')}) but the simulator "
                                        f"installed it: {sim_status}")
            ok = installs == 1 and machine.get("state") == "Completed" and machine.get("status") == sim_status
            if finished and not ok:
                verdict.wrong_state += 1
                verdict.problems.append(f"{vm}: the run says {machine.get('state')}/{machine.get('status')}, the "
                                        f"simulator {sim_status} after {installs} installs")
            correct = correct and ok
        verdict.runs_correct += bool(correct)
    return verdict


@dataclass
class CrashResult:
    verdict: Verdict
    kills: int
    azurite_restarts: int
    host_starts: int
    after_restart: float | None  # seconds from the last host restart until every run had finished
    after_kill: float | None  # ... from the last kill
    unfinished: str = ""
    end_states: dict[str, int] = field(default_factory=dict)


def simulator_config(vms: int, seed: int, time_scale: float) -> SimulatorConfig:
    return sim_config(vms=vms, subscriptions=2, seed=seed, time_scale=time_scale)


def crash_scenario(*, seed: int, vms: int, runs: int, kills: int, time_scale: float, recovery_timeout: float,
                   sweep_schedule: str, logs: Path, bounds: dict[str, str] | None = None,
                   log: Log = quiet) -> CrashResult:
    """Submit `runs` runs over `vms` VMs (disjoint), interleaved with `kills` SIGKILLs of the host at random
    points (0.2-4 s apart) and one graceful Azurite restart; then follow the runs for `recovery_timeout`."""
    rng = random.Random(f"chaos-crash:{seed}")
    location = tempfile.mkdtemp(prefix="chaos-azurite-")
    azurite = Azurite(location=location).start()
    sim = Simulator(simulator_config(vms, seed, time_scale)).start()
    host = Host({**unique_settings(azurite, sim.url), "SWEEP_SCHEDULE": sweep_schedule}, logs, bounds)
    try:
        host.start()
        ids = sim.vm_ids()
        size = max(1, len(ids) // runs)
        batches = [ids[i * size:(i + 1) * size] for i in range(runs)]
        expected: dict[str, list[str]] = {}
        done_kills = azurite_restarts = 0
        restart_azurite_after = rng.randrange(kills) if kills else -1
        last_kill = last_restart = time.monotonic()
        for k in range(max(kills, len(batches))):
            if k < len(batches):
                expected[submit(host, batches[k], f"chaos-{seed}-{k}", log)] = batches[k]
            if k >= kills:
                continue
            time.sleep(rng.uniform(0.2, 4.0))  # a random point of the runs in flight
            host.kill()
            done_kills += 1
            last_kill = time.monotonic()
            log(f"crash: killed the host ({done_kills}/{kills})")
            if k == restart_azurite_after:
                azurite.stop()  # SIGTERM: Azurite saves its data and exits
                azurite.start()  # the same ports and folder
                azurite_restarts += 1
                log("crash: restarted Azurite gracefully")
            time.sleep(rng.uniform(0.0, 2.0))
            host.start()
            last_restart = time.monotonic()
        log(f"crash: {len(expected)} runs of {size} VMs submitted; following them for up to {recovery_timeout:.0f} s")
        views, finished_at = wait_finished(host, list(expected), time.monotonic() + recovery_timeout, log)
        verdict = judge(sim, views, expected)
        unfinished = "" if finished_at is not None else \
            f"{len(expected) - verdict.runs_finished} runs unfinished; machines {machine_states(views)}"
        return CrashResult(verdict, done_kills, azurite_restarts, host.starts,
                           None if finished_at is None else finished_at - last_restart,
                           None if finished_at is None else finished_at - last_kill, unfinished,
                           machine_states(views))
    finally:
        host.stop()
        sim.stop()
        azurite.stop()
        shutil.rmtree(location, ignore_errors=True)
