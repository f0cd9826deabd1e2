"""Queue-triggered workers for runs: dispatch, per-machine steps, and their poison queues."""

from __future__ import annotations

import logging
from collections.abc import Callable

import azure.functions as func

from shared.composition import Components
from shared.core.messages import PollRoundMessage, parse_dispatch, parse_poll, parse_step
from shared.core.telemetry import traced
from shared.functions.queue_input import parse_message
from shared.plans.build import build_plan
from shared.rollouts.controller import advance
from shared.runs.dispatch import dispatch_run, fail_undispatched
from shared.runs.machine_worker import fail_poisoned_step, run_step
from shared.runs.poll_rounds import run_round

log = logging.getLogger(__name__)


def blueprint(components: Callable[[], Components]) -> func.Blueprint:
    """This module's triggers, bound to the app's components (function_app.py calls this once)."""
    bp = func.Blueprint()

    def step_from(msg: func.QueueMessage, what: str) -> None:
        """Both step queues (starts, polls) run the same machine step."""
        step = parse_message(msg, parse_step, what)
        if step:
            outcome = run_step(step, components().step_ports)
            log.info("%s run=%s machine=%s seq=%d dequeue=%s -> %s", what, step.run_id, step.machine, step.seq,
                     msg.dequeue_count, outcome)

    def poisoned_step(msg: func.QueueMessage, what: str, queue_name: str) -> None:
        step = parse_message(msg, parse_poll, f"poisoned {what}")
        if isinstance(step, PollRoundMessage):  # only a nudge: the sweeper finds its machines when overdue
            log.warning("poisoned poll round %d of run=%s dropped", step.seq, step.run_id)
        elif step:
            outcome = fail_poisoned_step(step, components().step_ports, queue_name)
            log.warning("poisoned %s run=%s machine=%s -> %s", what, step.run_id, step.machine, outcome)

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
        step_from(msg, "step")


    @bp.queue_trigger(arg_name="msg", queue_name="%POLLS_QUEUE%", connection="AzureWebJobsStorage")
    @traced()
    def poll_worker(msg: func.QueueMessage) -> None:
        """The same step as operation_worker, for machines whose operation was claimed (polls, health reads):
        their own queue, so a backlog of polls never delays a start (shared/runs/queues.py); and runs' poll
        rounds (shared/runs/poll_rounds.py)."""
        parsed = parse_message(msg, parse_poll, "poll")
        if isinstance(parsed, PollRoundMessage):
            deps = components()
            log.info("poll round run=%s subscription=%s seq=%d dequeue=%s -> %s", parsed.run_id,
                     parsed.subscription or "all", parsed.seq, msg.dequeue_count,
                     run_round(parsed, deps.step_ports, deps.store, deps.poll_rounds))
        elif parsed:
            outcome = run_step(parsed, components().step_ports)
            log.info("poll run=%s machine=%s seq=%d dequeue=%s -> %s", parsed.run_id, parsed.machine, parsed.seq,
                     msg.dequeue_count, outcome)


    @bp.queue_trigger(arg_name="msg", queue_name="%POLLS_QUEUE%-poison", connection="AzureWebJobsStorage")
    @traced()
    def poll_poison(msg: func.QueueMessage) -> None:
        poisoned_step(msg, "poll", components().settings.queues.polls)


    @bp.queue_trigger(arg_name="msg", queue_name="%OPERATIONS_QUEUE%-poison", connection="AzureWebJobsStorage")
    @traced()
    def operation_poison(msg: func.QueueMessage) -> None:
        poisoned_step(msg, "step", components().settings.queues.operations)


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
