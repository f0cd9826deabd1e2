"""OpenTelemetry for one machine's whole path (create_run -> dispatch -> start, throttled once -> polls ->
Completed), against Azurite and the simulator, with an in-memory span exporter and metric reader: the
spans a per-invocation trace shows in Application Insights, their attributes, and the metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.settings import settings as azure_settings
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared.composition import Components
from shared.core.telemetry import MACHINE_ID, QUEUE_STEP, RUN_ID, configure_telemetry
from tests.integration.queue_pump import QueuePump
from tests.integration.test_machine_worker import finished, start
from tools import metrics as app_metrics
from tools.azure_simulator import Simulator

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def otel_sdk() -> Iterator[None]:
    """The SDK with an in-memory span exporter, set once (OpenTelemetry's global providers can be set once per
    process; the metric reader is the test session's, tools/metrics.py); azure-core's spans go through the same
    OpenTelemetry plugin the Azure Monitor distro uses."""
    trace.set_tracer_provider(provider := TracerProvider())
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    before = azure_settings.tracing_implementation()
    azure_settings.tracing_implementation = "opentelemetry"
    yield
    azure_settings.tracing_implementation = before
    provider.shutdown()  # later tests' spans are not kept


def metric_points() -> dict[str, list[Any]]:
    return app_metrics.points()


def total(points: dict[str, list[Any]], name: str) -> float:
    return sum(p.value for p in points.get(name, []))


def test_off_without_a_connection_string() -> None:
    assert configure_telemetry({}) is False
    assert configure_telemetry({"APPLICATIONINSIGHTS_CONNECTION_STRING": "  "}) is False


def test_one_machines_whole_path(services: Components, simulator: Simulator) -> None:
    vm = simulator.vm_ids()[0]
    EXPORTER.clear()
    before = metric_points()
    run_id = start([vm])
    pump = QueuePump(services)
    simulator.set_faults(throttle_rate=1.0, throttle_retry_after=1)
    pump.pump_once("dispatch")
    pump.pump_once(services.settings.queues.operations)  # the first step meets a 429
    simulator.set_faults(throttle_rate=0.0)
    pump.run_until(lambda: finished(run_id), timeout=60)

    spans = EXPORTER.get_finished_spans()
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)

    (create,) = by_name["create_run"]
    assert create.kind == SpanKind.SERVER
    assert create.attributes["http.response.status_code"] == 202
    assert by_name["dispatch_worker"]

    # starts on OPERATIONS_QUEUE: a consumer span per invocation. Polls (once claimed) are made by the run's poll
    # rounds on POLLS_QUEUE: a consumer span per round, and in it an INTERNAL span per machine it polled
    rounds = [s for s in by_name.get("poll_worker", []) if s.attributes.get(RUN_ID) == run_id]
    assert rounds and {s.attributes[QUEUE_STEP] for s in rounds} == {"round"}
    assert all(s.kind == SpanKind.CONSUMER for s in rounds)
    round_ids = {s.context.span_id for s in rounds}
    polls = [s for s in by_name.get("machine_poll", []) if s.attributes.get(RUN_ID) == run_id]
    assert polls and all(s.kind == SpanKind.INTERNAL and s.parent and s.parent.span_id in round_ids for s in polls)
    steps = [s for s in by_name["operation_worker"] if s.attributes.get(RUN_ID) == run_id] + polls
    for step in steps:
        assert step.attributes[MACHINE_ID].lower() == vm.lower()
        assert step.attributes[QUEUE_STEP] in ("start", "poll")
    phases = [s.attributes[QUEUE_STEP] for s in sorted(steps, key=lambda s: s.start_time or 0)]
    assert phases[:2] == ["start", "start"] and phases[-1] == "poll"  # throttled start, again, then polls

    step_ids = {s.context.span_id for s in steps}
    arm = [s for s in spans if s.kind == SpanKind.CLIENT and s.parent and s.parent.span_id in step_ids]
    assert arm, "ARM calls are dependency spans inside the step's span"
    statuses = sorted({s.attributes.get("http.response.status_code") or s.attributes.get("http.status_code")
                       for s in arm})
    assert 429 in statuses and 202 in statuses and 200 in statuses
    for span in arm:
        assert span.attributes.get("az.service_request_id"), span.name
        assert any(key.startswith("patchpilot.arm.ratelimit.") for key in span.attributes), span.name
    throttled = [s for s in arm if (s.attributes.get("http.response.status_code")
                                    or s.attributes.get("http.status_code")) == 429]
    assert all(s.attributes["patchpilot.arm.retry_after"] == "1" for s in throttled)

    # the request ids on the spans are the ones the run shows for its ARM calls (support tickets)
    from tests.integration.test_machine_worker import run_view
    recorded = {c["requestId"] for m in run_view(run_id)["machines"] for c in m["armCalls"]}
    assert recorded <= {s.attributes["az.service_request_id"] for s in arm}

    after = metric_points()
    assert total(after, "patchpilot.machines.started") - total(before, "patchpilot.machines.started") == 1
    assert total(after, "patchpilot.machines.completed") - total(before, "patchpilot.machines.completed") == 1
    assert total(after, "patchpilot.machines.failed") == total(before, "patchpilot.machines.failed")
    assert total(after, "patchpilot.arm.throttled") - total(before, "patchpilot.arm.throttled") >= 1
    waits = after["patchpilot.budget.wait"]
    assert sum(p.sum for p in waits) >= 1 and sum(p.count for p in waits) >= 1
    assert json.dumps([dict(s.attributes) for s in spans])  # attributes are plain values (exportable)


def test_entra_ingestion_uses_the_managed_identity_the_bicep_names() -> None:
    from azure.identity import ManagedIdentityCredential

    from shared.core.telemetry import _entra_credential

    assert _entra_credential({}) == {}
    got = _entra_credential({"APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "ClientId=1234;Authorization=AAD"})
    assert isinstance(got["credential"], ManagedIdentityCredential)
