"""Queue trigger that delivers events and calls hooks, and its poison handler (a dead letter)."""

from __future__ import annotations

import json
import logging

import azure.functions as func

from shared.composition import AppServices
from shared.events.delivery import deliver
from shared.functions.queue_input import parse_message
from shared.rollouts.prehook import fail_pre_hook, pre_hook
from shared.runs.messages import BadMessageError

log = logging.getLogger(__name__)


def parse_delivery(body: str) -> dict[str, object]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise BadMessageError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("kind") not in ("event", "posthook", "prehook"):
        raise BadMessageError("not a delivery message")
    if data["kind"] == "prehook" and not isinstance(data.get("runId"), str):
        raise BadMessageError("a prehook message needs runId")
    if data["kind"] != "prehook" and not isinstance(data.get("url"), str):
        raise BadMessageError("a delivery needs url")
    return data


def blueprint(services: AppServices) -> func.Blueprint:
    """This module's triggers, bound to the app's services (function_app.py calls this once)."""
    bp = func.Blueprint()

    @bp.queue_trigger(arg_name="msg", queue_name="%EVENTS_QUEUE%", connection="AzureWebJobsStorage")
    def event_delivery(msg: func.QueueMessage) -> None:
        message = parse_message(msg, parse_delivery, "delivery")
        if message:
            svc = services.get()
            done = pre_hook(message, svc) if message["kind"] == "prehook" else deliver(message, svc)
            log.info("delivery %s -> %s", message.get("kind"), done)


    @bp.queue_trigger(arg_name="msg", queue_name="%EVENTS_QUEUE%-poison", connection="AzureWebJobsStorage")
    def event_delivery_poison(msg: func.QueueMessage) -> None:
        message = parse_message(msg, parse_delivery, "poisoned delivery")
        if message and message["kind"] == "prehook":
            fail_pre_hook(str(message["runId"]), services.get(),
                          "calling the pre-run hook failed repeatedly (poison queue); the run was not started")
        elif message:
            services.get().store.dead_letter({"url": str(message.get("url") or ""), "kind": str(message["kind"]),
                                              "attempts": int(str(message.get("attempt") or 1)),
                                              "lastError": "the delivery worker failed repeatedly (poison queue)",
                                              "body": json.dumps(message)[:30000]})

    return bp
