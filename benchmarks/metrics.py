"""The app's own OpenTelemetry counters, read in-process: what a benchmark prints per machine.

The app counts ARM calls (`patchpilot.arm.calls`, by call) and queue messages (`patchpilot.queue.sent`, by
queue) as OpenTelemetry metrics (shared/core/telemetry.py). A benchmark installs an in-memory reader once per
process and reads the sums, as Application Insights would receive them.
"""

from __future__ import annotations

from collections import Counter

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

_reader: InMemoryMetricReader | None = None


def install() -> None:
    """Route the app's meters to an in-memory reader (once per process; the API allows one provider)."""
    global _reader  # noqa: PLW0603 -- one provider per process, as OpenTelemetry's API allows
    if _reader is None:
        _reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[_reader]))


def counts(name: str, attribute: str) -> Counter[str]:
    """The cumulative sums of counter `name`, by the value of `attribute`."""
    assert _reader is not None, "call install() first"
    found: Counter[str] = Counter()
    data = _reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        found[str(point.attributes.get(attribute))] += int(point.value)
    return found


def arm_calls() -> Counter[str]:
    return counts("patchpilot.arm.calls", "patchpilot.arm.call")


def queue_messages() -> Counter[str]:
    return counts("patchpilot.queue.sent", "patchpilot.queue")
