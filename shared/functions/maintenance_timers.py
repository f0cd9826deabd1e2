"""Timer-triggered housekeeping."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.runs.model import utcnow
from shared.runs.services import get_services
from shared.runs.sweeper import sweep

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.timer_trigger(schedule="%SWEEP_SCHEDULE%", arg_name="timer", run_on_startup=False)
def sweeper(timer: func.TimerRequest) -> None:
    if timer.past_due:
        log.info("sweeper is running late; one sweep covers the missed ones")
    counts = sweep(get_services(), utcnow())
    log.info("sweep: %s", counts)
