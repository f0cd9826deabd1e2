"""Timer and queue triggers for assessments: the periodic sweep and scope discovery."""

from __future__ import annotations

import logging
from collections.abc import Callable

import azure.functions as func

from shared.assessments.periodic import start_periodic_sweep
from shared.composition import Components
from shared.core.clock import utcnow
from shared.core.messages import parse_discovery
from shared.core.telemetry import traced
from shared.functions.queue_input import parse_message
from shared.runs.discovery import discover_page, fail_poisoned_page

log = logging.getLogger(__name__)


def blueprint(components: Callable[[], Components]) -> func.Blueprint:
    """This module's triggers, bound to the app's components (function_app.py calls this once)."""
    bp = func.Blueprint()

    @bp.timer_trigger(schedule="%ASSESSMENT_SCHEDULE%", arg_name="timer", run_on_startup=False)
    @traced()
    def periodic_assessment(timer: func.TimerRequest) -> None:
        if timer.past_due:
            log.info("periodic assessment is late; it counts for the latest slot it missed")
        start_periodic_sweep(components(), utcnow())


    @bp.queue_trigger(arg_name="msg", queue_name="%DISCOVERY_QUEUE%", connection="AzureWebJobsStorage")
    @traced()
    def discovery_worker(msg: func.QueueMessage) -> None:
        page = parse_message(msg, parse_discovery, "discovery")
        if page:
            outcome = discover_page(page, components())
            log.info("discovery run=%s scope=%d page=%d -> %s", page.run_id, page.scope, page.page, outcome)


    @bp.queue_trigger(arg_name="msg", queue_name="%DISCOVERY_QUEUE%-poison", connection="AzureWebJobsStorage")
    @traced()
    def discovery_poison(msg: func.QueueMessage) -> None:
        page = parse_message(msg, parse_discovery, "poisoned discovery")
        if page:
            deps = components()
            outcome = fail_poisoned_page(page, deps, deps.settings.queues.discovery)
            log.warning("poisoned discovery run=%s scope=%d -> %s", page.run_id, page.scope, outcome)

    return bp
