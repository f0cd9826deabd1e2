"""Turning a queue trigger's message into a typed message, or dropping it with a log line.

A malformed body can never succeed, so it is dropped rather than retried into the poison queue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import azure.functions as func

from shared.core.messages import BadMessageError

T = TypeVar("T")
log = logging.getLogger(__name__)


def parse_message(msg: func.QueueMessage, parse: Callable[[str], T], what: str) -> T | None:
    try:
        return parse(msg.get_body().decode("utf-8"))
    except UnicodeDecodeError:
        log.error("%s message %s is not UTF-8; dropped", what, msg.id)
    except BadMessageError as exc:
        log.error("%s message %s dropped: %s", what, msg.id, exc)
    return None
