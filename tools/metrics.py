"""The app's own OpenTelemetry counters, read in-process: what benchmarks print per machine and tests assert.

The app counts ARM calls (`patchpilot.arm.calls`, by call), queue messages (`patchpilot.queue.sent`, by queue)
and Table round-trips (`patchpilot.table.operations`, by store and operation) as OpenTelemetry metrics
(shared/core/telemetry.py), exported to Application Insights in Azure. A benchmark or the test session installs
an in-memory reader once per process and reads the cumulative sums; a measurement is the difference of two
readings (`Counter` subtraction).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

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


def points() -> dict[str, list[Any]]:
    """Every metric's data points, by metric name."""
    assert _reader is not None, "call install() first"
    data = _reader.get_metrics_data()
    out: dict[str, list[Any]] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


def counts(name: str, attribute: str, **where: str) -> Counter[str]:
    """The cumulative sums of counter `name` by the value of `attribute`, over the points whose attributes
    include `where` (keys with `_` for `.`: `patchpilot_store="runs"`)."""
    assert _reader is not None, "call install() first"
    wanted = {k.replace("_", "."): v for k, v in where.items()}
    found: Counter[str] = Counter()
    for point in points().get(name, []):
        if all(point.attributes.get(k) == v for k, v in wanted.items()):
            found[str(point.attributes.get(attribute))] += int(point.value)
    return found


def arm_calls() -> Counter[str]:
    return counts("patchpilot.arm.calls", "patchpilot.arm.call")


def queue_messages() -> Counter[str]:
    return counts("patchpilot.queue.sent", "patchpilot.queue")


def table_operations(store: str) -> Counter[str]:
    """Table round-trips of one store (`runs`, `fleet`, `budget`, `maintenance`), by operation."""
    return counts("patchpilot.table.operations", "patchpilot.table.op", patchpilot_store=store)
