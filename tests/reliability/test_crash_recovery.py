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
from pathlib import Path

from tests.reliability.crash import crash_scenario
from tests.reliability.fuzz import DEFAULT_SEED

SEED = int(os.environ.get("RELIABILITY_SEED", DEFAULT_SEED))


def test_runs_end_correct_after_host_kills_and_an_azurite_restart(tmp_path: Path) -> None:
    result = crash_scenario(seed=SEED, vms=8, runs=2, kills=2, time_scale=300.0, recovery_timeout=120.0,
                            sweep_schedule="*/5 * * * * *", logs=tmp_path,
                            bounds={"RELIABILITY_LEASE_SECONDS": "5", "RELIABILITY_STALL_AFTER_SECONDS": "20"})
    verdict = result.verdict
    assert (result.kills, result.azurite_restarts) == (2, 1)
    assert verdict.machines == 8
    assert verdict.double_installs == 0, verdict.problems
    assert verdict.false_failures == 0, verdict.problems
    assert result.after_restart is not None, f"seed {SEED}: {result.unfinished}; host logs in {tmp_path}"
    assert verdict.runs_correct == verdict.runs == 2, (f"seed {SEED}", verdict.problems)
