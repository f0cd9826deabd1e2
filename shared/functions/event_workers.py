"""Queue trigger that delivers events and calls hooks, and its poison handler (a dead letter).

A call to a receiver may take up to its deadline (EVENT_CONNECT_TIMEOUT_SECONDS + the read timeout, at
most 60 + 200 s). A sync function would hold one of the Python worker's shared threads for all that
time (min(32, CPUs + 4) threads unless PYTHON_THREADPOOL_THREAD_COUNT says otherwise), and invocations
queued behind slow receivers would run into functionTimeout before they start. So the trigger is
`async` and runs each delivery on a pool of its own with a thread for every invocation the host may
run at once (host.json `extensions.queues`: batchSize + newBatchThreshold per function): no delivery
waits for a thread, none holds the worker's, and each invocation lasts its few storage calls plus one
call's deadline, inside the 5-minute functionTimeout.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import azure.functions as func

from shared.composition import Components
from shared.core.messages import parse_delivery
from shared.core.telemetry import traced
from shared.events.delivery import deliver
from shared.functions.queue_input import parse_message
from shared.rollouts.prehook import fail_pre_hook, pre_hook

log = logging.getLogger(__name__)
DELIVERY_THREADS = 24  # host.json batchSize 16 + newBatchThreshold 8 (tests/unit checks the two agree)
_delivery_pool = ThreadPoolExecutor(max_workers=DELIVERY_THREADS, thread_name_prefix="event-delivery")
T = TypeVar("T")


async def off_the_loop(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on the delivery pool, with this invocation's context (the worker ties log lines to
    the invocation through context variables)."""
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(_delivery_pool, functools.partial(context.run, fn, *args))


def blueprint(components: Callable[[], Components]) -> func.Blueprint:
    """This module's triggers, bound to the app's components (function_app.py calls this once)."""
    bp = func.Blueprint()

    @bp.queue_trigger(arg_name="msg", queue_name="%EVENTS_QUEUE%", connection="AzureWebJobsStorage")
    @traced()
    async def event_delivery(msg: func.QueueMessage) -> None:
        message = parse_message(msg, parse_delivery, "delivery")
        if message:
            act = pre_hook if message["kind"] == "prehook" else deliver
            outcome = await off_the_loop(act, message, components())
            log.info("delivery %s -> %s", message.get("kind"), outcome)


    @bp.queue_trigger(arg_name="msg", queue_name="%EVENTS_QUEUE%-poison", connection="AzureWebJobsStorage")
    @traced()
    def event_delivery_poison(msg: func.QueueMessage) -> None:
        message = parse_message(msg, parse_delivery, "poisoned delivery")
        if message and message["kind"] == "prehook":
            fail_pre_hook(str(message["runId"]), components(),
                          "calling the pre-run hook failed repeatedly (poison queue); the run was not started")
        elif message:
            components().store.dead_letter({"url": str(message.get("url") or ""), "kind": str(message["kind"]),
                                              "attempts": int(str(message.get("attempt") or 1)),
                                              "lastError": "the delivery worker failed repeatedly (poison queue)",
                                              "body": json.dumps(message)[:30000]})

    return bp
