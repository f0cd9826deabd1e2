"""Calling the user's Python functions the way the Python worker does, with the host's log lines.

The trigger value goes to the parameter the trigger's `arg_name` names; a parameter called `context`
gets a `func.Context`. `async def` functions run to completion on an event loop in the calling thread
(the worker uses one shared loop; per-invocation loops keep concurrent invocations independent here).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
from azure.functions import _abc as azf_abc

log = logging.getLogger("tools.local_host")


@dataclass
class FunctionInfo:
    """One indexed function: its trigger (with `%NAME%` already resolved) and the Python callable."""

    name: str
    trigger_type: str
    trigger_arg: str
    properties: dict[str, Any]
    func: Callable[..., Any]
    directory: str = ""
    parameters: list[str] = field(default_factory=list)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)


@dataclass
class InvocationRecord:
    """What happened to one invocation; LocalHost keeps the recent ones for tests and diagnostics."""

    function: str
    invocation_id: str
    reason: str
    succeeded: bool
    duration_ms: float
    error: BaseException | None = None
    result: Any = None


class _Context(azf_abc.Context):
    """The `context` argument: the same properties the Python worker provides."""

    def __init__(self, invocation_id: str, function_name: str, function_directory: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._function_directory = function_directory
        self._tls = threading.local()
        self._trace = func.TraceContext("", "", {}) if hasattr(func, "TraceContext") else None

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._tls

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> Any:
        return self._trace

    @property
    def retry_context(self) -> Any:
        return None


class Invoker:
    """Runs one invocation: builds the arguments, calls the function, logs like the host, records it."""

    def __init__(self, history: int = 1000) -> None:
        self.records: deque[InvocationRecord] = deque(maxlen=history)
        self._lock = threading.Lock()

    def invoke(
        self, fn: FunctionInfo, trigger_value: Any, reason: str, invocation_id: str | None = None
    ) -> InvocationRecord:
        """Never raises for a function failure: the record says Succeeded/Failed, as the host reports it."""
        invocation_id = invocation_id or str(uuid.uuid4())
        log.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", fn.name, reason, invocation_id)
        kwargs: dict[str, Any] = {fn.trigger_arg: trigger_value}
        if "context" in fn.parameters and fn.trigger_arg != "context":
            kwargs["context"] = _Context(invocation_id, fn.name, fn.directory)
        started = time.monotonic()
        error: BaseException | None = None
        result: Any = None
        try:
            result = fn.func(**kwargs)
            if inspect.isawaitable(result):
                result = asyncio.run(_await(result))
        except Exception as exc:  # the function's failure is the host's data, not ours
            error = exc
        duration = (time.monotonic() - started) * 1000
        record = InvocationRecord(fn.name, invocation_id, reason, error is None, duration, error, result)
        if error is None:
            log.info(
                "Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)", fn.name, invocation_id, duration
            )
        else:
            log.error(
                "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)",
                fn.name,
                invocation_id,
                duration,
                exc_info=error,
            )
        with self._lock:
            self.records.append(record)
        return record


async def _await(awaitable: Any) -> Any:
    return await awaitable
