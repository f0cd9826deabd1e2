"""OpenTelemetry: the names PatchPilot's spans and metrics use, and the switch that sends them to Azure Monitor.

Off by default: with no SDK configured, the OpenTelemetry API is a no-op (its tracer and meter are
proxies), so nothing here costs more than a function call. `configure_telemetry()` (called once by
the composition root) turns on the Azure Monitor distro (azure-monitor-opentelemetry) when
APPLICATIONINSIGHTS_CONNECTION_STRING is set, as the Bicep sets it; the distro also instruments
azure-core, so every ARM call through shared/arm/client.py becomes a dependency span
(DistributedTracingPolicy), to which ArmTelemetryPolicy adds x-ms-request-id and the throttling headers.

What is recorded (learn.microsoft.com/azure/azure-monitor/app/opentelemetry-enable?tabs=python):
- a span per function invocation (`patchpilot.function` attributes), and on a machine's step
  RUN_ID, MACHINE_ID and QUEUE_STEP (`start`, `poll`, `recover`, `verify`); on a run's poll round RUN_ID and
  QUEUE_STEP `round`, with an INTERNAL span `machine_poll` per machine it polls (RUN_ID, MACHINE_ID, QUEUE_STEP `poll`);
- ARM calls: CLIENT spans with `az.service_request_id`, `http.response.status_code` (azure-core) and
  `patchpilot.arm.ratelimit.*` (the `x-ms-ratelimit-remaining-*` headers) and `patchpilot.arm.retry_after`;
- metrics: machines started, completed and failed (`{machine}`), ARM 429 answers (`{response}`), and
  the seconds a machine's next step was delayed because ARM throttled it (`patchpilot.budget.wait`, s).
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind

CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
AUTHENTICATION_STRING = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
RUN_ID = "patchpilot.run.id"
MACHINE_ID = "patchpilot.machine.resource_id"
QUEUE_STEP = "patchpilot.queue.step"
FUNCTION = "patchpilot.function"

tracer = trace.get_tracer("patchpilot")
_meter = metrics.get_meter("patchpilot")
# Counters: (name, unit, description); the app's own names, exported to Application Insights by the distro.
(machines_started, machines_completed, machines_failed, arm_calls, arm_throttled, queue_messages_sent,
 table_operations, budget_tokens_wasted) = (
    _meter.create_counter(name, unit=unit, description=text) for name, unit, text in (
        ("patchpilot.machines.started", "{machine}", "Machines whose operation ARM accepted"),
        ("patchpilot.machines.completed", "{machine}", "Machines that ended Completed"),
        ("patchpilot.machines.failed", "{machine}", "Machines that ended Failed or TimedOut"),
        ("patchpilot.arm.calls", "{request}", "ARM requests sent, by call (shared/arm/calls.py)"),
        ("patchpilot.arm.throttled", "{response}", "ARM answers with HTTP 429"),
        ("patchpilot.queue.sent", "{message}", "Queue messages sent, by queue (shared/runs/queues.py)"),
        ("patchpilot.table.operations", "{request}", "Azure Table round-trips, by store and operation"),
        ("patchpilot.budget.wasted", "{token}", "Leased ARM budget tokens dropped unspent, by budget")))
budget_wait = _meter.create_histogram("patchpilot.budget.wait", unit="s",
                                      description="Delay before a throttled machine's next step (ARM's Retry-After)")


def table_counter(store: str) -> Callable[[str], None]:
    """Counts one store's Table round-trips in `patchpilot.table.operations` (`op`: what the round-trip did)."""
    def count(op: str) -> None:
        table_operations.add(1, {"patchpilot.store": store, "patchpilot.table.op": op})
    return count


_configured = False
_lock = threading.Lock()


def configure_telemetry(environ: Mapping[str, str] = os.environ) -> bool:
    """Turn on the Azure Monitor distro when APPLICATIONINSIGHTS_CONNECTION_STRING is set (once per
    process); True when it is on. Without it nothing is exported (local runs, tests)."""
    global _configured  # noqa: PLW0603 -- one switch per process, as the distro itself is
    if not environ.get(CONNECTION_STRING, "").strip():
        return False
    with _lock:
        if not _configured:
            from azure.monitor.opentelemetry import configure_azure_monitor

            configure_azure_monitor(connection_string=environ[CONNECTION_STRING].strip(),
                                    logger_name="patchpilot", **_entra_credential(environ))
            _configured = True
    return True


def _entra_credential(environ: Mapping[str, str]) -> dict[str, Any]:
    """The Bicep turns local auth off and sets APPLICATIONINSIGHTS_AUTHENTICATION_STRING
    (`ClientId=<id>;Authorization=AAD`), which the Functions host reads and the Python distro does not:
    it needs the managed identity as a `credential` (learn.microsoft.com/azure/azure-monitor/app/
    azure-ad-authentication?tabs=python)."""
    parts = dict(p.split("=", 1) for p in environ.get(AUTHENTICATION_STRING, "").split(";") if "=" in p)
    if parts.get("Authorization", "").upper() != "AAD":
        return {}
    from azure.identity import ManagedIdentityCredential

    client_id = parts.get("ClientId") or None
    return {"credential": ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()}


def annotate(attributes: Mapping[str, str | int]) -> None:
    """Attributes on the current span (the function invocation's); a no-op when tracing is off."""
    trace.get_current_span().set_attributes(dict(attributes))


F = TypeVar("F", bound=Callable[..., Any])
A = TypeVar("A")
R = TypeVar("R")


def spanned_in_threads(name: str, fn: Callable[[A], R]) -> Callable[[A], R]:
    """`fn` for a pool's worker threads (ThreadPoolExecutor.map): each call runs in an INTERNAL span `name`, a child
    of the span current where this is called (a poll round's polls: shared/runs/poll_rounds.py). OpenTelemetry's
    context is per thread and a pool's threads start with none, so without this their spans (an ARM call's
    dependency span) would have no parent."""
    parent = otel_context.get_current()

    def run(arg: A) -> R:
        token = otel_context.attach(parent)
        try:
            with tracer.start_as_current_span(name, kind=SpanKind.INTERNAL):
                return fn(arg)
        finally:
            otel_context.detach(token)
    return run


def traced(kind: SpanKind = SpanKind.CONSUMER) -> Callable[[F], F]:
    """A span per invocation of a trigger function (sync or async), named after it; an exception is
    recorded on the span and raised on (the host retries the message). Signature kept (`functools.wraps`),
    so the Functions indexer still sees the trigger's parameter names."""

    def decorate(fn: F) -> F:
        attributes = {FUNCTION: fn.__name__, "faas.name": fn.__name__}
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with tracer.start_as_current_span(fn.__name__, kind=kind, attributes=attributes):
                    return await fn(*args, **kwargs)
            return run_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            with tracer.start_as_current_span(fn.__name__, kind=kind, attributes=attributes):
                return fn(*args, **kwargs)
        return run  # type: ignore[return-value]

    return decorate
