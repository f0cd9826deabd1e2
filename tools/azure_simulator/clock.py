"""Azure's clock, as the simulator keeps it: the monotonic clock, moved forward whenever the wall clock is ahead.

Why not `time.monotonic` alone: Azure's time runs on while the machine that runs PatchPilot stands still. A
paused virtual machine (this development machine is one) stops CLOCK_MONOTONIC, and the wall clock jumps ahead
when it resumes: in session 23's benchmark log (docs/performance.md, session 24) an invocation that spanned a
12.8 s silence took 255 ms by the host's `time.monotonic` and 13.1 s by the wall clock. PatchPilot paces on the
wall clock (shared/runs/pacing.py: epoch seconds, shared by every host), as it must against Azure. A simulator
on the monotonic clock saw none of the pause: its buckets had not refilled and its operations had not moved on
while PatchPilot's schedule had, so the starts due in the pause were refused together, which Azure would not do.
Why not `time.time` alone: a wall clock stepped back (NTP) would run the simulator backwards or, held, stop it.
So: monotonic time plus an offset that only grows, to the wall clock's lead whenever that is larger. It reads as
epoch seconds, never goes back, keeps running through a backward step, and jumps forward over a pause (and over a
forward step of the wall clock, which is indistinguishable from one).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class AzureClock:
    """Callable: seconds, near the epoch's (see the module docstring). `wall` and `monotonic` are the sources
    (injectable for tests)."""

    def __init__(self, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._wall, self._monotonic = wall, monotonic
        self._offset = -math.inf
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            mono = self._monotonic()
            self._offset = max(self._offset, self._wall() - mono)
            return mono + self._offset


azure_clock = AzureClock()  # the simulator's default clock: buckets, operations, host updates
