"""host.json: the parts the local host honours (HTTP route prefix, queue listener and singleton options).

Values are validated with the same limits as the real host (batchSize 1..32, maxPollingInterval at least
100 ms, maxDequeueCount at least 1) so a host.json that would fail in Azure fails here too.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

_TIMESPAN = re.compile(
    r"^\s*(?P<neg>-)?(?:(?P<days>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{1,2})(?::(?P<s>\d{1,2})(?:\.(?P<f>\d{1,7}))?)?\s*$"
)


class HostConfigError(Exception):
    """host.json holds a value the real host would reject."""


def parse_timespan(text: str) -> timedelta:
    """Parse a .NET TimeSpan string: `[-][d.]hh:mm[:ss[.fffffff]]` or a whole number of days."""
    stripped = text.strip()
    if re.fullmatch(r"-?\d+", stripped):
        return timedelta(days=int(stripped))
    m = _TIMESPAN.match(text)
    if not m:
        raise ValueError(f"'{text}' is not a TimeSpan (expected hh:mm:ss)")
    hours, minutes, seconds = int(m["h"]), int(m["m"]), int(m["s"] or 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ValueError(f"'{text}' is not a TimeSpan: hours 0-23, minutes and seconds 0-59")
    frac = (m["f"] or "").ljust(7, "0")
    value = timedelta(
        days=int(m["days"] or 0), hours=hours, minutes=minutes, seconds=seconds, microseconds=int(frac) // 10
    )
    return -value if m["neg"] else value


def _duration(value: Any, what: str, *, ms_if_number: bool = False) -> timedelta:
    """host.json durations are TimeSpan strings; maxPollingInterval also accepts milliseconds as a number."""
    if isinstance(value, int | float) and ms_if_number:
        return timedelta(milliseconds=value)
    try:
        return parse_timespan(str(value))
    except ValueError as exc:
        raise HostConfigError(f"host.json {what}: {exc}") from None


@dataclass(frozen=True)
class QueuesOptions:
    """`extensions.queues`, defaults from the Storage Queues extension's QueuesOptions."""

    batch_size: int = 16
    new_batch_threshold: int = -1  # -1: batchSize/2 * processor count, as the host computes it
    max_polling_interval: timedelta = timedelta(minutes=1)
    visibility_timeout: timedelta = timedelta(0)
    max_dequeue_count: int = 5
    message_encoding: str = "base64"

    @property
    def effective_new_batch_threshold(self) -> int:
        if self.new_batch_threshold >= 0:
            return self.new_batch_threshold
        return (self.batch_size // 2) * (os.cpu_count() or 1)

    @property
    def max_in_flight(self) -> int:
        """Messages a listener may be processing at once: a batch, and the next fetched at the threshold."""
        return self.batch_size + self.effective_new_batch_threshold


@dataclass(frozen=True)
class SingletonOptions:
    """`singleton`: the blob-lease timings used to run each timer on one instance only."""

    lock_period: timedelta = timedelta(seconds=15)
    listener_lock_period: timedelta = timedelta(seconds=60)
    listener_lock_recovery_polling_interval: timedelta = timedelta(minutes=1)


DEFAULT_FUNCTION_TIMEOUT = timedelta(minutes=30)
MIN_FUNCTION_TIMEOUT = timedelta(seconds=1)


def _function_timeout(value: Any) -> timedelta | None:
    """functionTimeout as ScriptJobHostOptionsSetup reads it where timeouts may be unbounded.

    Unset: 30 minutes; "-1" (TimeSpan -1 day): no timeout; otherwise at least 00:00:01. The Consumption
    plan's own bounds (default 5 minutes, at most 10) do not apply: this host stands for the others.
    """
    if value is None:
        return DEFAULT_FUNCTION_TIMEOUT
    timeout = _duration(value, "functionTimeout")
    if timeout == timedelta(days=-1):
        return None
    if timeout < MIN_FUNCTION_TIMEOUT:
        raise HostConfigError(
            f"host.json functionTimeout: FunctionTimeout must be greater than 00:00:01, got {value}"
        )
    return timeout


@dataclass(frozen=True)
class HostConfig:
    route_prefix: str = "api"
    queues: QueuesOptions = field(default_factory=QueuesOptions)
    singleton: SingletonOptions = field(default_factory=SingletonOptions)
    # host.json functionTimeout; None means no limit ("-1"). ScriptJobHostOptionsSetup's default outside the
    # Consumption plan (Flex Consumption, Premium, Dedicated, and Core Tools) is 30 minutes.
    function_timeout: timedelta | None = DEFAULT_FUNCTION_TIMEOUT
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def _lower_keys(d: Any) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in d.items()} if isinstance(d, dict) else {}


def parse_host_config(data: dict[str, Any]) -> HostConfig:
    """Build a HostConfig from parsed host.json (keys are case-insensitive, as in the host)."""
    top = _lower_keys(data)
    version = top.get("version")
    if version is not None and str(version) != "2.0":
        raise HostConfigError(f"host.json version '{version}' is not supported: use \"2.0\"")
    ext = _lower_keys(top.get("extensions"))
    http = _lower_keys(ext.get("http"))
    route_prefix = str(http.get("routeprefix", "api")).strip("/")

    q = _lower_keys(ext.get("queues"))
    batch_size = int(q.get("batchsize", 16))
    if not 1 <= batch_size <= 32:
        raise HostConfigError(f"host.json extensions.queues.batchSize must be 1..32, got {batch_size}")
    threshold = int(q.get("newbatchthreshold", -1))
    if "newbatchthreshold" in q and threshold < 0:
        raise HostConfigError("host.json extensions.queues.newBatchThreshold must not be negative")
    max_poll = _duration(
        q.get("maxpollinginterval", "00:01:00"), "extensions.queues.maxPollingInterval", ms_if_number=True
    )
    if max_poll < timedelta(milliseconds=100):
        raise HostConfigError(
            "host.json extensions.queues.maxPollingInterval must not be less than 00:00:00.1"
        )
    max_dequeue = int(q.get("maxdequeuecount", 5))
    if max_dequeue < 1:
        raise HostConfigError("host.json extensions.queues.maxDequeueCount must not be less than 1")
    encoding = str(q.get("messageencoding", "base64")).lower()
    if encoding not in ("base64", "none"):
        raise HostConfigError(
            f"host.json extensions.queues.messageEncoding must be base64 or none, got {encoding}"
        )
    queues = QueuesOptions(
        batch_size=batch_size,
        new_batch_threshold=threshold,
        max_polling_interval=max_poll,
        visibility_timeout=_duration(
            q.get("visibilitytimeout", "00:00:00"), "extensions.queues.visibilityTimeout"
        ),
        max_dequeue_count=max_dequeue,
        message_encoding=encoding,
    )

    s = _lower_keys(top.get("singleton"))
    singleton = SingletonOptions(
        lock_period=_duration(s.get("lockperiod", "00:00:15"), "singleton.lockPeriod"),
        listener_lock_period=_duration(
            s.get("listenerlockperiod", "00:01:00"), "singleton.listenerLockPeriod"
        ),
        listener_lock_recovery_polling_interval=_duration(
            s.get("listenerlockrecoverypollinginterval", "00:01:00"),
            "singleton.listenerLockRecoveryPollingInterval",
        ),
    )
    for what, value in (
        ("lockPeriod", singleton.lock_period),
        ("listenerLockPeriod", singleton.listener_lock_period),
    ):
        if not timedelta(seconds=15) <= value <= timedelta(seconds=60):
            raise HostConfigError(f"host.json singleton.{what} must be between 00:00:15 and 00:01:00")

    return HostConfig(
        route_prefix=route_prefix,
        queues=queues,
        singleton=singleton,
        function_timeout=_function_timeout(top.get("functiontimeout")),
        raw=data,
    )


def load_host_config(script_root: Path) -> HostConfig:
    """Read `<script_root>/host.json`; a missing file means all defaults (the host would create one)."""
    path = script_root / "host.json"
    if not path.exists():
        return HostConfig()
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise HostConfigError(f"{path} is not valid JSON: {exc}") from exc
    return parse_host_config(data)
