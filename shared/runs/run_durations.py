"""How long a run's installations are taking, as this process saw them end: the first poll of a machine with no
history of its own (shared/runs/predictions.py `shortest`) waits for the run's early ends instead of polling at
ARM's Retry-After from the start.

Why: on a fleet's first run no machine has a history, so every installation was polled from its first
Retry-After (60 s in Azure) on. At 10,000 machines over four subscriptions (benchmarks/scale.py), the
simulator's installations take 30-340 s on the 2x clock (median 197; Linux's tenth percentile 57, Windows'
124): about seven polls each if nothing else slows them, each a queue message and a Table write, where the
stack's message rate is the limit (docs/performance.md). Once a run has seen MIN_SAMPLES machines of an OS
type end, a machine of that type started later has its first poll at 90% of their LOW_QUANTILE (the same
FIRST_POLL_SHARE as a machine's own shortest: retry_policy.first_poll_delay). A duration is counted to when the
poll that saw the end was due (not when the queue delivered it: a backlog's lateness is not installation time),
so a machine that ended before its first poll counts as that poll's time, which lowers the quantile, as a
machine's shortest does. An end seen twice (a duplicate delivery) is counted twice: it is a hint.

Measured (docs/performance.md, session 22): no change in either benchmark scenario. With four subscriptions the
polls queue's own lateness is longer than the wait this adds; with one, the polls share of ARM's reads caps the
polls below the demand with or without it (6.8 polls a machine unhindered, 5.1 with it, from the simulator's
durations). It is for a queue that keeps up and Azure's longer installations.

**Later polls** (issue #22: a first run spent 3.4 polls a machine, each a queue message and a Table write): a poll
that finds the installation still running at age `t` asks `later_end`: the wait until LATER_QUANTILE (half) of
the run's installations on that OS type that ran longer than `t` had ended, when MIN_SAMPLES of them have been
seen. retry_policy.later_poll_delay waits that long, never less than Retry-After and never more than
LATER_POLL_CAP Retry-Afters, so an end is seen at most that late. Where few installations ran longer (the run's
tail, or its early minutes) it is None and the next poll is at Retry-After, as before. What the run has seen
lags its longer installations (they end later), so the wait errs short. An end is still counted at the poll that
saw it, so a longer wait adds to the samples and, through the quantiles, to the next waits; the cap bounds that.
(Counting it at the middle of its last interval instead lowered the tenth percentile the first polls use, and
four subscriptions polled more: 1.74 polls a machine, docs/performance.md session 28.)

Process-local on purpose: it is a hint, read on every start, and one more Table read per start costs more than
it saves. Each host instance learns from the ends it polled; one that has seen fewer than MIN_SAMPLES polls at
Retry-After, as before. Bounded: MAX_SAMPLES per (run, OS type), halved by keeping every other one when full
(the quantiles stay), and the MAX_RUNS runs seen last.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from typing import Protocol

MIN_SAMPLES = 20  # ends of an OS type seen in the run before they time a first poll (or a later one)
LOW_QUANTILE = 0.1
LATER_QUANTILE = 1 / 2  # a later poll when half the run's longer installations had ended (a third: session 28)
MAX_SAMPLES = 2048
MAX_RUNS = 64


class DurationHints(Protocol):
    """What a machine step uses (shared/runs/machine_worker.py StepPorts)."""

    def observe(self, run_id: str, os_type: str, seconds: float) -> None: ...

    def early_end(self, run_id: str, os_type: str) -> float | None: ...

    def later_end(self, run_id: str, os_type: str, elapsed: float) -> float | None: ...


class RunDurations:
    """Thread-safe; one per process (shared/composition.py)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: OrderedDict[str, dict[str, list[float]]] = OrderedDict()

    def observe(self, run_id: str, os_type: str, seconds: float) -> None:
        """An installation of the run on a machine of `os_type` was seen ended by a poll due `seconds` after ARM
        accepted it (the module's docstring says why the poll's due time, not when it ran)."""
        if not os_type or seconds <= 0:
            return
        with self._lock:
            by_os = self._runs.setdefault(run_id, {})
            self._runs.move_to_end(run_id)
            while len(self._runs) > MAX_RUNS:
                self._runs.popitem(last=False)
            samples = by_os.setdefault(os_type, [])
            bisect.insort(samples, seconds)
            if len(samples) > MAX_SAMPLES:
                del samples[1::2]

    def early_end(self, run_id: str, os_type: str) -> float | None:
        """Seconds by which LOW_QUANTILE of the run's installations on `os_type` machines had ended, as this
        process saw them; None until it has seen MIN_SAMPLES."""
        with self._lock:
            samples = self._runs.get(run_id, {}).get(os_type)
            if not samples or len(samples) < MIN_SAMPLES:
                return None
            return samples[int(LOW_QUANTILE * (len(samples) - 1))]

    def later_end(self, run_id: str, os_type: str, elapsed: float) -> float | None:
        """Seconds from `elapsed` (seconds since ARM accepted an installation that a poll has just found still
        running) until LATER_QUANTILE of the run's installations on `os_type` that took longer than `elapsed`
        had ended, as this process saw them; None until it has seen MIN_SAMPLES such installations."""
        with self._lock:
            samples = self._runs.get(run_id, {}).get(os_type)
            if not samples:
                return None
            shorter = bisect.bisect_right(samples, elapsed)
            longer = len(samples) - shorter
            if longer < MIN_SAMPLES:
                return None
            return samples[shorter + int(LATER_QUANTILE * (longer - 1))] - elapsed
