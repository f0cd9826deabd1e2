"""Queue-triggered workers for runs: dispatch, per-machine steps, and their poison queues."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.runs.dispatch import dispatch_run
from shared.runs.machine_worker import fail_poisoned_step, fail_undispatched, run_step
from shared.runs.messages import BadMessageError, parse_dispatch, parse_step
from shared.runs.services import get_services

bp = func.Blueprint()
log = logging.getLogger(__name__)


def message_text(msg: func.QueueMessage) -> str | None:
    try:
        return msg.get_body().decode("utf-8")
    except UnicodeDecodeError:
        log.error("queue message %s is not UTF-8; dropped", msg.id)
        return None


@bp.queue_trigger(arg_name="msg", queue_name="%DISPATCH_QUEUE%", connection="AzureWebJobsStorage")
def dispatch_worker(msg: func.QueueMessage) -> None:
    body = message_text(msg)
    try:
        parsed = parse_dispatch(body or "")
    except BadMessageError as exc:
        log.error("dispatch message %s dropped: %s", msg.id, exc)
        return
    dispatch_run(parsed, get_services())


@bp.queue_trigger(arg_name="msg", queue_name="%OPERATIONS_QUEUE%", connection="AzureWebJobsStorage")
def operation_worker(msg: func.QueueMessage) -> None:
    body = message_text(msg)
    try:
        step = parse_step(body or "")
    except BadMessageError as exc:
        log.error("step message %s dropped: %s", msg.id, exc)
        return
    outcome = run_step(step, get_services())
    log.info("step run=%s machine=%s seq=%d dequeue=%s -> %s", step.run_id, step.machine, step.seq,
             msg.dequeue_count, outcome)


@bp.queue_trigger(arg_name="msg", queue_name="%OPERATIONS_QUEUE%-poison", connection="AzureWebJobsStorage")
def operation_poison(msg: func.QueueMessage) -> None:
    try:
        step = parse_step(message_text(msg) or "")
    except BadMessageError as exc:
        log.error("poisoned step message %s is malformed (%s); nothing to fail", msg.id, exc)
        return
    svc = get_services()
    outcome = fail_poisoned_step(step, svc, svc.settings.operations_queue)
    log.warning("poisoned step run=%s machine=%s -> %s", step.run_id, step.machine, outcome)


@bp.queue_trigger(arg_name="msg", queue_name="%DISPATCH_QUEUE%-poison", connection="AzureWebJobsStorage")
def dispatch_poison(msg: func.QueueMessage) -> None:
    try:
        parsed = parse_dispatch(message_text(msg) or "")
    except BadMessageError as exc:
        log.error("poisoned dispatch message %s is malformed (%s)", msg.id, exc)
        return
    svc = get_services()
    failed = fail_undispatched(parsed.run_id, svc, f"dispatching the run failed repeatedly and the message was "
                                                   f"moved to {svc.settings.dispatch_queue}-poison")
    log.warning("poisoned dispatch run=%s: failed %d machines", parsed.run_id, failed)
