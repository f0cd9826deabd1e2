"""A small crash scenario over real processes: the local Functions host is SIGKILLed twice at random
(seeded) points while two install runs are in flight, Azurite is restarted gracefully once, and every
run must still end correct: each machine Completed with the simulator's own result, exactly one accepted
installPatches per machine, and no machine reported Failed that the simulator installed.

The waits that bound recovery (the host's 10-minute message lease, the sweeper's 15-minute STALL_AFTER)
are shortened here to seconds (tests/reliability/bounded_host.py), so the test checks what recovery does,
not how long it takes: `make chaos` measures that with today's waits.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.integration.conftest import unique_settings
from tests.reliability.crash import Host, crash_scenario, judge, simulator_config, submit, wait_finished
from tests.reliability.fuzz import DEFAULT_SEED
from tools.azure_simulator import Simulator
from tools.azurite import Azurite

SEED = int(os.environ.get("RELIABILITY_SEED", DEFAULT_SEED))


def test_runs_end_correct_after_host_kills_and_an_azurite_restart(tmp_path: Path) -> None:
    result = crash_scenario(seed=SEED, vms=8, runs=2, kills=2, time_scale=300.0, recovery_timeout=120.0,
                            sweep_schedule="*/5 * * * * *", logs=tmp_path,
                            bounds={"RELIABILITY_LEASE_SECONDS": "5", "RELIABILITY_STALL_AFTER_SECONDS": "20"})
    verdict = result.verdict
    assert (result.kills, result.azurite_restarts) == (2, 1)
    assert verdict.machines == 8
    assert result.after_restart is not None, f"seed {SEED}: {result.unfinished}; host logs in {tmp_path}"
    assert verdict.runs_finished == verdict.runs == 2
    assert verdict.double_installs == 0, verdict.problems
    # A kill that lands between a machine's claim and ARM's answer fails it (OutcomeUnknown) though ARM
    # installed it: the known bug pinned below, whose own test makes it happen on purpose. Anything else
    # wrong with any machine fails this test.
    assert verdict.unexplained() == [], (f"seed {SEED}", verdict.problems)
    assert verdict.runs_correct + len(verdict.outcome_unknown) >= verdict.runs


def test_a_kill_between_the_claim_and_arms_answer_is_not_a_false_failure(azurite: Azurite, tmp_path: Path) -> None:
    with Simulator(simulator_config(1, SEED, 300.0)) as sim:
        sim.set_faults(latency_ms=1500)  # ARM holds each request 1.5 s: the kill lands inside installPatches
        settings = {**unique_settings(azurite, sim.url), "SWEEP_SCHEDULE": "*/2 * * * * *",
                    "CLAIM_TIMEOUT_SECONDS": "3"}
        host = Host(settings, tmp_path, {"RELIABILITY_LEASE_SECONDS": "3", "RELIABILITY_STALL_AFTER_SECONDS": "8"})
        try:
            host.start()
            run_id = submit(host, sim.vm_ids(), "claim-window")
            deadline = time.monotonic() + 60
            while sim.calls()["total"]["installPatches"] == 0:  # counted as it arrives, before the latency
                if time.monotonic() > deadline:
                    pytest.fail("installPatches was never sent")
                time.sleep(0.01)
            host.kill()
            sim.set_faults(latency_ms=0)
            host.start()
            views, finished_at = wait_finished(host, [run_id], time.monotonic() + 90)
        finally:
            host.stop()
        verdict = judge(sim, views, {run_id: sim.vm_ids()})
    if sim.calls()["total"]["installPatchesAccepted"] != 1 or finished_at is None:
        pytest.fail(f"the scenario did not happen as planned: {sim.calls()['total']}, finished: {views}")
    assert verdict.false_failures == 0, verdict.problems
    assert verdict.runs_correct == 1, verdict.problems
