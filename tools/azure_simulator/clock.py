"""Azure's clock, as the simulator keeps it: the wall clock, never going back.

Why not `time.monotonic`: Azure's time runs on while the machine that runs PatchPilot stands still. A
paused virtual machine (this development machine is one) stops CLOCK_MONOTONIC but not the wall clock,
which jumps ahead on resume: measured in a benchmark log (docs/performance.md, session 24), an invocation
that spanned a 12.8 s pause took 255 ms by `time.monotonic` and 13.1 s by the wall clock. PatchPilot paces on
the wall clock (shared/runs/pacing.py: epoch seconds, shared by every host), as it must against Azure. A
simulator on the monotonic clock then saw none of the pause: its buckets had not refilled and its operations
had not moved on, while PatchPilot's schedule had, so the starts due in the pause were refused together, which
Azure would not have done. The wall clock can also be stepped back (NTP): the simulator holds it at its
latest reading instead, so a bucket never drains and an operation never runs backwards.
"""

from __future__ import annotations

import threading
import time


class AzureClock:
    """Callable: epoch seconds, the latest of `time.time()` readings so far (never less than an earlier one)."""

    def __init__(self) -> None:
        self._latest = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        now = time.time()
        with self._lock:
            self._latest = max(self._latest, now)
            return self._latest


azure_clock = AzureClock()  # the simulator's one clock: buckets, operations, host updates
