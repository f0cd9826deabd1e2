"""Timer-triggered housekeeping, and the timer that opens maintenance windows."""

from __future__ import annotations

import logging
from collections.abc import Callable

import azure.functions as func

from shared.composition import Components
from shared.core.clock import schedule_now, utcnow
from shared.core.telemetry import traced
from shared.maintenance.windows import open_due_windows
from shared.runs.sweeper import sweep

log = logging.getLogger(__name__)


def blueprint(components: Callable[[], Components]) -> func.Blueprint:
    """This module's triggers, bound to the app's components (function_app.py calls this once)."""
    bp = func.Blueprint()

    @bp.timer_trigger(schedule="%SWEEP_SCHEDULE%", arg_name="timer", run_on_startup=False)
    @traced()
    def sweeper(timer: func.TimerRequest) -> None:
        if timer.past_due:
            log.info("sweeper is running late; one sweep covers the missed ones")
        counts = sweep(components(), utcnow())
        log.info("sweep: %s", counts)


    @bp.timer_trigger(schedule="%MAINTENANCE_SCHEDULE%", arg_name="timer", run_on_startup=False)
    @traced()
    def maintenance_windows(timer: func.TimerRequest) -> None:
        """Every minute by default: a window opens within a minute of its start, or is recorded as skipped."""
        deps = components()
        counts = open_due_windows(deps, schedule_now(deps.settings.local))
        if counts:
            log.info("maintenance windows: %s", dict(counts))

    return bp
