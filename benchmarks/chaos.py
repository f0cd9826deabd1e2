"""`make chaos`: the full reliability run (issue #15). A script, not a test: it prints a table of figures.

1. Fuzz: every HTTP endpoint in-process (tests/reliability: Hypothesis, valid shapes and mutations),
   thousands of examples: requests tried, 5xx (known bugs / new), hangs, writes on refused requests.
2. Crash: the local Functions host (tools/local_host, a process as `make run` starts it) runs install runs
   against the ARM simulator; it is killed with SIGKILL at random points and restarted, and Azurite is
   restarted gracefully once. Then every run must end correct: each machine's state and status equal what
   the simulator did, exactly one accepted installPatches per machine (the simulator's call counts), and
   no machine Failed/TimedOut that the simulator installed (a false failure). Recovery time: from the
   last host restart (and from the last kill) until every run has finished.
3. Faults: one run on a clean simulator, the same run with the simulator's faults (5xx, dropped
   connections, 429s, plus 429 bursts where every request is throttled for a few seconds): the
   slowdown, and the same correctness checks.

Everything is on loopback, bounded in count and time (each phase has a deadline and reports what was
unfinished when it passed), and stops by itself. Seeds are fixed and printed; `--seed` replays a run.

Recovery is bounded by the app settings STALL_AFTER_SECONDS (60 s: a step recorded but never queued, or
whose message a dead host holds, is queued again when that overdue), CLAIM_TIMEOUT_SECONDS (90 s) and
SWEEP_SCHEDULE (every minute), not by the host's 10-minute message lease (tools/local_host RECEIVE_VISIBILITY,
as the real Functions host: a duplicate that arrives after it is harmless). The table prints them beside
the measured times.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.core.settings import Settings
from tests.app import reset_services
from tests.integration.conftest import DEV_TOKEN, FAST, unique_settings
from tests.reliability.conftest import CONFIG_NAME, seed_app
from tests.reliability.crash import (
    CrashResult,
    Host,
    Verdict,
    crash_scenario,
    judge,
    simulator_config,
    submit,
    wait_finished,
)
from tests.reliability.fuzz import DEFAULT_SEED, fuzz
from tests.reliability.harness import ENDPOINTS, KNOWN_BUGS, HttpSender, StorageProbe, Tally
from tools.azure_simulator import Simulator, SimulatorConfig
from tools.azurite import Azurite
from tools.local_host.queue_listener import RECEIVE_VISIBILITY

FAULTS = {"error_rate": 0.10, "drop_rate": 0.05, "throttle_rate": 0.05, "throttle_retry_after": 2}
BURST = (3.0, 12.0)  # every request answered 429 for 3 s out of every 12 s


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- phases ------------------------------------------------------------------------------------------------
def phase_fuzz(azurite: Azurite, args: argparse.Namespace, logs: Path) -> tuple[Tally, Tally | None]:
    """In-process (with the write checks), then over HTTP through the local host process (no write checks
    there: the host's own workers write while it runs)."""
    examples, seed = args.fuzz_examples, args.seed
    log(f"fuzz: {examples} examples in-process + {args.http_examples} over HTTP, {len(ENDPOINTS)} endpoints, "
        f"seed {seed}")
    with Simulator(SimulatorConfig(vms=2, seed=5, required_token=DEV_TOKEN)) as sim:
        settings = unique_settings(azurite, sim.url)
        saved = dict(os.environ)
        os.environ.update({**settings, "WEBSITE_HOSTNAME": "127.0.0.1:7071"})  # as Core Tools sets it
        reset_services()
        try:
            known = seed_app()
            # Bodies are where the validation lives: they get two thirds of the examples.
            bodies = [e.name for e in ENDPOINTS if e.body]
            others = [e.name for e in ENDPOINTS if not e.body]
            tally = fuzz(bodies, examples=examples * 2 // 3, seed=seed, probe=StorageProbe(settings),
                         config_name=CONFIG_NAME, known=known)
            fuzz(others, examples=examples - examples * 2 // 3, seed=seed + 1, probe=StorageProbe(settings),
                 config_name=CONFIG_NAME, known=known, tally=tally)
            log(f"fuzz: {tally.tried} requests in-process, statuses {dict(sorted(tally.by_status.items()))}")
            http: Tally | None = None
            if args.http_examples:
                (logs / "fuzz").mkdir(exist_ok=True)
                host = Host(settings, logs / "fuzz").start()
                try:
                    send = HttpSender(host.url)
                    http = fuzz(bodies, examples=args.http_examples * 2 // 3, seed=seed + 2, probe=None,
                                config_name=CONFIG_NAME, known=known, send=send)
                    fuzz(others, examples=args.http_examples - args.http_examples * 2 // 3, seed=seed + 3,
                         probe=None, config_name=CONFIG_NAME, known=known, tally=http, send=send)
                finally:
                    host.stop()
                log(f"fuzz: {http.tried} requests over HTTP, statuses {dict(sorted(http.by_status.items()))}")
        finally:
            reset_services()
            os.environ.clear()
            os.environ.update(saved)
    return tally, http


def phase_crash(args: argparse.Namespace, logs: Path) -> CrashResult:
    bounds = {}
    if args.lease_seconds is not None:
        bounds["RELIABILITY_LEASE_SECONDS"] = str(args.lease_seconds)
    if args.stall_after_seconds is not None:
        bounds["RELIABILITY_STALL_AFTER_SECONDS"] = str(args.stall_after_seconds)
    if bounds:
        log(f"crash: the harness shortens the host's lease / the sweeper's STALL_AFTER: {bounds}")
    return crash_scenario(seed=args.seed, vms=args.vms, runs=args.runs, kills=args.kills, time_scale=args.time_scale,
                          recovery_timeout=args.recovery_timeout, sweep_schedule=args.sweep_schedule, logs=logs,
                          bounds=bounds, log=log)


@dataclass
class FaultResult:
    clean_seconds: float | None
    faulted_seconds: float | None
    clean: Verdict
    faulted: Verdict
    faults_injected: int
    throttled: int


def timed_run(azurite: Azurite, args: argparse.Namespace, logs: Path, label: str,
              faults: dict[str, Any] | None) -> tuple[float | None, Verdict, dict[str, Any]]:
    sim = Simulator(simulator_config(args.fault_vms, args.seed + 1, args.time_scale)).start()
    host = Host(unique_settings(azurite, sim.url), logs / label).start()
    stop_bursts = threading.Event()
    try:
        if faults:
            sim.set_faults({**faults, "seed": args.seed})

            def bursts() -> None:  # 429 bursts: every request throttled for a while, as a hot subscription is
                on, period = BURST
                while not stop_bursts.wait(period - on):
                    sim.set_faults(throttle_rate=1.0)
                    stop_bursts.wait(on)
                    sim.set_faults(throttle_rate=faults["throttle_rate"])

            threading.Thread(target=bursts, daemon=True).start()
        started = time.monotonic()
        run_id = submit(host, sim.vm_ids(), f"{label}-{args.seed}", log)
        views, finished_at = wait_finished(host, [run_id], started + args.fault_timeout, log, restart_dead=False)
        stop_bursts.set()
        sim.set_faults(error_rate=0.0, drop_rate=0.0, throttle_rate=0.0)
        seconds = None if finished_at is None else finished_at - started
        log(f"faults: {label} run: {f'{seconds:.1f} s' if seconds else 'unfinished'}")
        return seconds, judge(sim, views, {run_id: sim.vm_ids()}), sim.calls()
    finally:
        stop_bursts.set()
        host.stop()
        sim.stop()


def phase_faults(azurite: Azurite, args: argparse.Namespace, logs: Path) -> FaultResult:
    (logs / "clean").mkdir(exist_ok=True)
    (logs / "faulted").mkdir(exist_ok=True)
    clean, clean_verdict, _ = timed_run(azurite, args, logs, "clean", None)
    faulted, faulted_verdict, calls = timed_run(azurite, args, logs, "faulted", FAULTS)
    return FaultResult(clean, faulted, clean_verdict, faulted_verdict, int(calls["faults"]), int(calls["throttled"]))


# -- the table ---------------------------------------------------------------------------------------------
def seconds(value: float | None, bound: float) -> str:
    return f"{value:.1f} s" if value is not None else f"> {bound:.0f} s (not recovered)"


def table(args: argparse.Namespace, tally: Tally | None, http: Tally | None, crash: CrashResult | None,
          faults: FaultResult | None) -> str:
    rows: list[tuple[str, str]] = [("seed", f"{args.seed} (replay: python -m benchmarks.chaos --seed {args.seed})")]
    if tally is not None:
        rows += [
            ("fuzz: requests tried", str(tally.tried)),
            ("fuzz: statuses", ", ".join(f"{k}: {v}" for k, v in sorted(tally.by_status.items()))),
            ("fuzz: 5xx", f"{tally.server_errors} ({sum(tally.known.values())} known bugs, {len(tally.unknown)} new)"),
            ("fuzz: hangs (> 10 s)", str(len(tally.hangs))),
            ("fuzz: writes on a refused request", str(len(tally.wrote_on_refusal))),
            ("fuzz: 4xx not in ARM's error shape", str(len(tally.bad_error_shape))),
            ("fuzz: valid requests refused", str(len(tally.valid_refused))),
            ("fuzz: slowest request", f"{tally.slowest:.2f} s"),
        ]
    if http is not None:
        rows += [
            ("fuzz over HTTP (local host): requests tried", f"{http.tried} (+{http.unsendable} with header values "
                                                            "no client sends)"),
            ("fuzz over HTTP: statuses", ", ".join(f"{k}: {v}" for k, v in sorted(http.by_status.items()))),
            ("fuzz over HTTP: 5xx", f"{http.server_errors} ({sum(http.known.values())} known bugs, "
                                    f"{len(http.unknown)} new)"),
            ("fuzz over HTTP: hangs (> 10 s)", str(len(http.hangs))),
            ("fuzz over HTTP: 4xx not in ARM's error shape", str(len(http.bad_error_shape))),
        ]
    if crash is not None:
        v = crash.verdict
        rows += [
            ("crash: host kills (SIGKILL) / Azurite restarts", f"{crash.kills} / {crash.azurite_restarts}"),
            ("crash: runs correct", f"{v.runs_correct} of {v.runs} ({v.runs_finished} finished; {v.machines} VMs)"),
            ("crash: double installs", str(v.double_installs)),
            ("crash: false failures", f"{v.false_failures} ({len(v.outcome_unknown)} OutcomeUnknown: killed between "
                                      "the claim and ARM's answer)"),
            ("crash: machines wrong or never installed", f"{v.wrong_state} / {v.never_installed}"),
            ("crash: machines at the end", ", ".join(f"{k}: {n}" for k, n in sorted(crash.end_states.items()))),
            ("crash: recovery, host restart -> all finished", seconds(crash.after_restart, args.recovery_timeout)),
            ("crash: recovery, last kill -> all finished", seconds(crash.after_kill, args.recovery_timeout)),
        ]
        if crash.unfinished:
            rows.append(("crash: at the deadline", crash.unfinished))
        met = crash.after_restart is not None and crash.after_restart <= args.recovery_goal
        rows.append((f"crash: goal, recovered within {args.recovery_goal:.0f} s of a restart",
                     "met" if met else "MISSED"))
    if faults is not None:
        ratio = (f"{faults.faulted_seconds / faults.clean_seconds:.2f}x"
                 if faults.clean_seconds and faults.faulted_seconds else "n/a")
        rows += [
            ("faults: clean run / faulted run", f"{seconds(faults.clean_seconds, args.fault_timeout)} / "
                                                f"{seconds(faults.faulted_seconds, args.fault_timeout)} "
                                                f"({args.fault_vms} VMs)"),
            ("faults: slowdown", ratio),
            ("faults: injected (5xx + drops) / 429s", f"{faults.faults_injected} / {faults.throttled}"),
            ("faults: runs correct (clean, faulted)", f"{faults.clean.runs_correct}, {faults.faulted.runs_correct}"),
            ("faults: double installs / false failures",
             f"{faults.faulted.double_installs} / {faults.faulted.false_failures}"),
        ]
    rows += [
        ("bound: message lease after a host dies",
         f"{RECEIVE_VISIBILITY.total_seconds():.0f} s (tools/local_host RECEIVE_VISIBILITY, as the Functions host)"
         + (f"; shortened by the harness to {args.lease_seconds:g} s" if args.lease_seconds is not None else "")),
        ("bound: STALL_AFTER_SECONDS", f"{Settings.from_env().retries.stall_after_seconds} s (app setting)"
         + (f"; shortened by the harness to {args.stall_after_seconds:g} s"
            if args.stall_after_seconds is not None else "")),
        ("setting: SWEEP_SCHEDULE", args.sweep_schedule),
        ("settings: test timings (all phases)", ", ".join(f"{k}={v}" for k, v in FAST.items())),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", DEFAULT_SEED)))
    parser.add_argument("--fuzz-examples", type=int, default=3000, help="in-process requests")
    parser.add_argument("--http-examples", type=int, default=600, help="requests through the local host process")
    parser.add_argument("--vms", type=int, default=24, help="crash phase: simulated VMs, split over --runs runs")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--kills", type=int, default=4, help="host SIGKILLs (Azurite is restarted after one)")
    parser.add_argument("--time-scale", type=float, default=300.0, help="simulated seconds per real second")
    parser.add_argument("--recovery-timeout", type=float, default=1500.0,
                        help="seconds to wait for every run after the last restart (today's bounds: 10-20 min)")
    parser.add_argument("--recovery-goal", type=float, default=120.0,
                        help="seconds from a host restart to every run finished that the app aims for")
    parser.add_argument("--sweep-schedule", default="0 * * * * *", help="the SWEEP_SCHEDULE app setting")
    parser.add_argument("--lease-seconds", type=float, default=None,
                        help="shorten the host's 10-minute message lease (harness only; not an app setting)")
    parser.add_argument("--stall-after-seconds", type=float, default=None,
                        help="set STALL_AFTER_SECONDS (the app setting; 60 s by default)")
    parser.add_argument("--fault-vms", type=int, default=30)
    parser.add_argument("--fault-timeout", type=float, default=600.0)
    parser.add_argument("--skip", action="append", default=[], choices=("fuzz", "crash", "faults"))
    args = parser.parse_args(argv)
    logs = Path(tempfile.mkdtemp(prefix="chaos-logs-"))
    log(f"chaos: seed {args.seed}; host logs in {logs}")
    tally = http = crash = faults = None
    with Azurite() as azurite:
        if "fuzz" not in args.skip:
            tally, http = phase_fuzz(azurite, args, logs)
        if "faults" not in args.skip:
            faults = phase_faults(azurite, args, logs)
    if "crash" not in args.skip:
        crash = phase_crash(args, logs)
    print()
    print(table(args, tally, http, crash, faults))
    problems: list[str] = []
    for fuzzed in (t for t in (tally, http) if t is not None):
        problems += fuzzed.problems()
        for sig, count in fuzzed.known.items():
            print(f"known bug ({count}x): {sig}: {KNOWN_BUGS[sig]}")
    for verdict in ([crash.verdict] if crash else []) + ([faults.clean, faults.faulted] if faults else []):
        problems += verdict.problems
    if problems:
        print(f"\n{len(problems)} problems; the first ones:")
        for problem in problems[:10]:
            print(" -", problem[:2000])
    print(json.dumps({"seed": args.seed, "problems": len(problems)}))
    return 1 if problems or (crash and crash.after_restart is None) else 0


if __name__ == "__main__":
    sys.exit(main())
