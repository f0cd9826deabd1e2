"""Queue-triggered workers for runs: dispatch, per-machine steps, and their poison queues."""

from __future__ import annotations

import logging
from collections.abc import Callable

import azure.functions as func

from shared.composition import Components
from shared.core.messages import parse_dispatch, parse_step
from shared.core.telemetry import traced
from shared.functions.queue_input import parse_message
from shared.plans.build import build_plan
from shared.rollouts.controller import advance
from shared.runs.dispatch import dispatch_run, fail_undispatched
from shared.runs.machine_worker import fail_poisoned_step, run_step

log = logging.getLogger(__name__)


def blueprint(components: Callable[[], Components]) -> func.Blueprint:
    """This module's triggers, bound to the app's components (function_app.py calls this once)."""
    bp = func.Blueprint()

    @bp.queue_trigger(arg_name="msg", queue_name="%DISPATCH_QUEUE%", connection="AzureWebJobsStorage")
    @traced()
    def dispatch_worker(msg: func.QueueMessage) -> None:
        parsed = parse_message(msg, parse_dispatch, "dispatch")
        if parsed and parsed.plan:
            log.info("plan %s -> %s", parsed.run_id, build_plan(parsed.run_id, components()))
        elif parsed and parsed.advance:
            deps = components()
            log.info("rollout run=%s -> %s", parsed.run_id, advance(parsed.run_id, deps))
        elif parsed:
            dispatch_run(parsed, components())


    @bp.queue_trigger(arg_name="msg", queue_name="%OPERATIONS_QUEUE%", connection="AzureWebJobsStorage")
    @traced()
    def operation_worker(msg: func.QueueMessage) -> None:
        step = parse_message(msg, parse_step, "step")
        if step:
            outcome = run_step(step, components().step_ports)
            log.info("step run=%s machine=%s seq=%d dequeue=%s -> %s", step.run_id, step.machine, step.seq,
                     msg.dequeue_count, outcome)


    @bp.queue_trigger(arg_name="msg", queue_name="%POLLS_QUEUE%", connection="AzureWebJobsStorage")
    @traced()
    def poll_worker(msg: func.QueueMessage) -> None:
        """The same step as operation_worker, for machines whose operation was claimed (polls, health reads):
        their own queue, so a backlog of polls never delays a start (shared/runs/queues.py)."""
        step = parse_message(msg, parse_step, "poll")
        if step:
            outcome = run_step(step, components().step_ports)
            log.info("poll run=%s machine=%s seq=%d dequeue=%s -> %s", step.run_id, step.machine, step.seq,
                     msg.dequeue_count, outcome)


    @bp.queue_trigger(arg_name="msg", queue_name="%POLLS_QUEUE%-poison", connection="AzureWebJobsStorage")
    @traced()
    def poll_poison(msg: func.QueueMessage) -> None:
        step = parse_message(msg, parse_step, "poisoned poll")
        if step:
            deps = components()
            outcome = fail_poisoned_step(step, deps.step_ports, deps.settings.queues.polls)
            log.warning("poisoned poll run=%s machine=%s -> %s", step.run_id, step.machine, outcome)


    @bp.queue_trigger(arg_name="msg", queue_name="%OPERATIONS_QUEUE%-poison", connection="AzureWebJobsStorage")
    @traced()
    def operation_poison(msg: func.QueueMessage) -> None:
        step = parse_message(msg, parse_step, "poisoned step")
        if step:
            deps = components()
            outcome = fail_poisoned_step(step, deps.step_ports, deps.settings.queues.operations)
            log.warning("poisoned step run=%s machine=%s -> %s", step.run_id, step.machine, outcome)


    @bp.queue_trigger(arg_name="msg", queue_name="%DISPATCH_QUEUE%-poison", connection="AzureWebJobsStorage")
    @traced()
    def dispatch_poison(msg: func.QueueMessage) -> None:
        parsed = parse_message(msg, parse_dispatch, "poisoned dispatch")
        if parsed and parsed.plan:  # planning failed past its own error handling: a plan still Planning says Failed
            plans = components().plans
            plan = plans.get_plan(parsed.run_id)
            if plan is not None and plan.get("status") == "Planning":
                plans.update_plan(parsed.run_id, {"status": "Failed", "errorCode": "PlanningFailed",
                                                  "errorMessage": "planning failed repeatedly"}, etag=plan.etag)
        elif parsed and parsed.advance:  # only a nudge: the sweeper advances the run anyway
            log.warning("poisoned advance for run=%s dropped", parsed.run_id)
        elif parsed and parsed.release_from:  # the run was dispatched: the sweeper sends the release again
            log.warning("poisoned release of run=%s from %s dropped", parsed.run_id, parsed.release_from)
        elif parsed:
            deps = components()
            reason = (f"dispatching the run failed repeatedly and the message was moved to "
                      f"{deps.settings.queues.dispatch}-poison")
            failed = fail_undispatched(parsed.run_id, deps, deps.step_ports, reason)
            log.warning("poisoned dispatch run=%s: failed %d machines", parsed.run_id, failed)

    return bp
