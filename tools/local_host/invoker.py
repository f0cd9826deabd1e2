"""Calling the user's Python functions the way the Python worker does, timed out the way the host does.

The worker (Azure/azure-functions-python-worker, azure_functions_worker/dispatcher.py at 7e6acf36):
- runs every sync function, whatever its trigger, on ONE `ThreadPoolExecutor` (`_sync_call_tp`) whose
  `max_workers` is the app setting `PYTHON_THREADPOOL_THREAD_COUNT`; when it is unset (or not an integer
  >= 1, which is logged) the worker passes `None` on Python 3.9+ (`_get_sync_tp_max_workers`), so the
  pool has Python's default size, `min(32, os.cpu_count() + 4)` on 3.11;
- runs `async def` functions on its one event loop (`_run_async_func`), never on that pool.
The trigger value goes to the parameter the trigger's `arg_name` names; a parameter called `context`
gets a `func.Context`.

The host (Azure/azure-webjobs-sdk FunctionExecutor at f79ea0bf; Azure/azure-functions-host
WebScriptHostExceptionHandler and RpcFunctionInvocationDispatcher at 89dc438d):
- host.json `functionTimeout` is counted from when the host starts the invocation and hands it to the
  worker, so time spent waiting for a pool thread counts. When it passes, the host logs "Timeout value
  of <t> exceeded by function '<name>' (Id: '<id>'). Initiating cancellation.", the invocation fails
  with "Timeout value of <t> was exceeded by function: <name>" (a queue message is then released or
  poisoned as for any failure, an HTTP caller gets a 500);
- it then waits a grace period (2 s, TimeoutAttribute.GracePeriod) for the worker's answer; if none
  came, it restarts the worker process that holds the invocation ("A function timeout has occurred.
  Restarting worker process executing invocationId '<id>'."). Every other invocation that worker had
  is lost: the host disposes the channel without failing them (TryFailExecutions gets no exception),
  so each one ends only when its own `functionTimeout` passes, as a timeout failure.
Here a "worker" is a thread pool plus an event loop in this process. A restart starts a fresh pool and
loop, drops every answer the old one gives later, and stops the old one's functions the closest way
Python allows: `WorkerProcessExit` (a BaseException) is raised in each of its running threads at their
next Python instruction, and its async tasks are cancelled. Code blocked inside a C call (a socket read,
`time.sleep`) runs on until that call returns, where a killed process would stop at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import inspect
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import azure.functions as func
from azure.functions import _abc as azf_abc

log = logging.getLogger("tools.local_host")

THREAD_COUNT_SETTING = "PYTHON_THREADPOOL_THREAD_COUNT"
TIMEOUT_GRACE_PERIOD = timedelta(seconds=2)  # TimeoutAttribute.GracePeriod default in the WebJobs SDK


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


class FunctionTimeoutError(Exception):
    """The invocation ran past host.json `functionTimeout` (the host's FunctionTimeoutException)."""


class WorkerProcessExit(BaseException):
    """Raised inside a restarted worker's running functions: the stand-in for killing its process."""


def format_timespan(value: timedelta) -> str:
    """.NET TimeSpan's default format, `[d.]hh:mm:ss[.fffffff]`, as the host prints timeouts."""
    total = int(value.total_seconds())
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{hours:02}:{minutes:02}:{seconds:02}"
    if value.microseconds:
        text += f".{value.microseconds * 10:07}"
    return f"{days}.{text}" if days else text


def sync_pool_size(environ: Any = None) -> int | None:
    """`max_workers` for the sync pool: PYTHON_THREADPOOL_THREAD_COUNT, or None (Python's default)."""
    raw = (os.environ if environ is None else environ).get(THREAD_COUNT_SETTING)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        log.warning("%s must be an integer", THREAD_COUNT_SETTING)
        return None
    if value < 1:
        log.warning(
            "%s must be set to a value between 1 and sys.maxint. Reverting to default value for max_workers",
            THREAD_COUNT_SETTING,
        )
        return None
    return value


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


def _checkpoint() -> None:
    """A Python-level call: lets an exception raised into this thread land here, inside our try."""


class _Worker:
    """One language worker: the shared sync pool, the event loop for async functions, what it runs."""

    def __init__(self, generation: int, max_workers: int | None) -> None:
        self.generation = generation
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix=f"worker{generation}-sync"
        )
        self.max_workers: int = self.pool._max_workers
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self.loop.run_forever, name=f"worker{generation}-loop", daemon=True
        )
        self._loop_thread.start()
        self.alive = True
        self.lock = threading.Lock()
        self.executing: dict[str, threading.Event] = {}  # invocation id -> set when its answer arrives
        self._threads: dict[int, str] = {}  # thread ident -> invocation id, while a sync function runs

    def submit(
        self, fn: FunctionInfo, kwargs: dict[str, Any], invocation_id: str
    ) -> tuple[concurrent.futures.Future[Any], threading.Event]:
        """Hand an invocation over; the event is set when its answer arrives (never, if the worker dies)."""
        answered = threading.Event()
        with self.lock:
            self.executing[invocation_id] = answered
        future: concurrent.futures.Future[Any]
        if fn.is_async:
            future = asyncio.run_coroutine_threadsafe(_call_async(fn.func, kwargs), self.loop)
        else:
            future = self.pool.submit(self._run_sync, fn.func, kwargs, invocation_id)
        future.add_done_callback(lambda _f: self._answer(invocation_id))
        return future, answered

    def answered(self, invocation_id: str) -> threading.Event | None:
        with self.lock:
            return self.executing.get(invocation_id)

    def _answer(self, invocation_id: str) -> None:
        with self.lock:
            event = self.executing.pop(invocation_id, None) if self.alive else None
        if event is not None:
            event.set()

    def _run_sync(self, f: Callable[..., Any], kwargs: dict[str, Any], invocation_id: str) -> Any:
        tid = threading.get_ident()
        try:
            with self.lock:
                started = self.alive
                if started:
                    self._threads[tid] = invocation_id
            if not started:
                return None  # the worker died before this queued invocation began: nobody hears of it
            context = kwargs.get("context")
            if isinstance(context, _Context):  # the worker's _run_sync_func does this in the pool thread
                context.thread_local_storage.invocation_id = invocation_id
            try:
                return f(**kwargs)
            finally:
                with self.lock:
                    self._threads.pop(tid, None)
                _checkpoint()
        except WorkerProcessExit:
            log.debug("Worker %d: invocation %s stopped by the worker restart", self.generation, invocation_id)
            raise

    def kill(self) -> None:
        """Stop answering, stop running functions (see module docstring), free the pool and loop."""
        with self.lock:
            self.alive = False
            self.executing.clear()
            for tid in self._threads:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), ctypes.py_object(WorkerProcessExit))
            self._threads.clear()
        self.pool.shutdown(wait=False, cancel_futures=True)

        def _stop_loop() -> None:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            self.loop.call_soon(self.loop.stop)

        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(_stop_loop)

    def shutdown(self) -> None:
        """Host shutdown: no new work; queued invocations are dropped, running ones are left to finish."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)


async def _call_async(f: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    return await f(**kwargs)


class Invoker:
    """Runs invocations on the current worker, with the host's timeout and its log lines, and records them."""

    def __init__(self, history: int = 1000) -> None:
        self.records: deque[InvocationRecord] = deque(maxlen=history)
        self.function_timeout: timedelta | None = None
        self._max_workers: int | None = None
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._generation = 0
        self._restarts = 0

    # -- worker lifecycle ------------------------------------------------------------------------------
    def start(self, function_timeout: timedelta | None, max_workers: int | None) -> None:
        """Start the worker (after the app settings are applied: the pool size is read from them)."""
        self.function_timeout = function_timeout
        self._max_workers = max_workers
        with self._lock:
            self._worker = self._new_worker()
        log.info(
            "Python worker: sync thread pool max workers %d (%s: %s); functionTimeout %s",
            self._worker.max_workers,
            THREAD_COUNT_SETTING,
            max_workers if max_workers is not None else "unset",
            format_timespan(function_timeout) if function_timeout else "none",
        )

    def _new_worker(self) -> _Worker:
        self._generation += 1
        return _Worker(self._generation, self._max_workers)

    @property
    def worker(self) -> _Worker:
        with self._lock:
            if self._worker is None:  # used without start(): defaults, as for a host.json-less app
                self._worker = self._new_worker()
            return self._worker

    @property
    def worker_restarts(self) -> int:
        """How many worker restarts after a function timeout are done: counted once the old worker is killed
        (`WorkerProcessExit` pending in each of its running threads, its answers dropped)."""
        with self._lock:
            return self._restarts

    def restart_worker_with(self, invocation_id: str) -> bool:
        """RestartWorkerWithInvocationIdAsync: restart the worker only if it still runs that invocation."""
        with self._lock:
            old = self._worker
            if old is None or old.answered(invocation_id) is None:
                return False
            self._worker = self._new_worker()
        old.kill()
        with self._lock:  # counted after kill(): a caller that sees it can rely on the old threads being told
            self._restarts += 1
        return True

    def stop(self) -> None:
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.shutdown()

    # -- one invocation --------------------------------------------------------------------------------
    def invoke(
        self, fn: FunctionInfo, trigger_value: Any, reason: str, invocation_id: str | None = None
    ) -> InvocationRecord:
        """Dispatch to the worker and wait for its answer, at most `functionTimeout` from now.

        Never raises for a function failure: the record says Succeeded/Failed, as the host reports it.
        """
        invocation_id = invocation_id or str(uuid.uuid4())
        log.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", fn.name, reason, invocation_id)
        kwargs: dict[str, Any] = {fn.trigger_arg: trigger_value}
        if "context" in fn.parameters and fn.trigger_arg != "context":
            kwargs["context"] = _Context(invocation_id, fn.name, fn.directory)
        started = time.monotonic()
        timeout = self.function_timeout
        worker = self.worker
        future, answered = worker.submit(fn, kwargs, invocation_id)
        got_answer = answered.wait(timeout.total_seconds() if timeout else None)
        error: BaseException | None = None
        result: Any = None
        if got_answer:
            try:
                result = future.result(0)
            except Exception as exc:  # the function's failure is the host's data, not ours
                error = exc
            except (WorkerProcessExit, concurrent.futures.CancelledError):
                got_answer = False  # answered only as the worker died: the host never hears of it
        if not got_answer:
            if timeout is None:  # only when the worker was stopped with the host
                error = RuntimeError("the worker stopped before the function finished")
            else:
                answered.wait(max(0.0, started + timeout.total_seconds() - time.monotonic()))
                log.error(
                    "Timeout value of %s exceeded by function 'Functions.%s' (Id: '%s'). Initiating cancellation.",
                    format_timespan(timeout),
                    fn.name,
                    invocation_id,
                )
                error = FunctionTimeoutError(
                    f"Timeout value of {format_timespan(timeout)} was exceeded by function: Functions.{fn.name}"
                )
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
        if isinstance(error, FunctionTimeoutError):
            self._on_timeout(invocation_id, answered)
        return record

    def _on_timeout(self, invocation_id: str, answered: threading.Event) -> None:
        """WebScriptHostExceptionHandler.OnTimeoutExceptionAsync: grace period, then restart the worker."""
        if answered.wait(TIMEOUT_GRACE_PERIOD.total_seconds()):
            return  # the function finished within the grace period: the host only logged the timeout
        if self.worker.answered(invocation_id) is None:
            return  # that worker was already restarted: nothing to do
        log.warning(
            "A function timeout has occurred. Restarting worker process executing invocationId '%s'.",
            invocation_id,
        )
        if self.restart_worker_with(invocation_id):
            log.warning("Restart of language worker process(es) completed.")
