"""Reading a machine's health for a rollout's healthCheck (shared/validation/health_check.py): one round reads
every chosen signal once, each ARM read paced from the reads budget like any other read.

A round can span deliveries: when the budget says wait, the readings so far travel in the machine row
(`healthRound`) and the step comes back holding its token, so a signal is never read twice in one round and
a duplicate message finds `seq` moved on. The machine step (shared/runs/machine_worker.py) decides what a
round's readings mean:

    baseline (before the start)  any `unhealthy` reading: Skipped `UnhealthyBeforePatching` (not the patch's
                                 fault: no error budget spent); anything else starts the machine
    after (state Verifying)      every signal `healthy`: Completed; otherwise read again every
                                 HEALTH_RECHECK_SECONDS until `within` runs out, then Unhealthy: `Unhealthy` when
                                 a signal said so, `HealthUnknown` when a signal could only be unreadable or
                                 waiting (health that cannot be read is not health)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from shared.arm.calls import INSTANCE_VIEW, LIST_ALERTS, RESOURCE_HEALTH, ArmCall, get_machine
from shared.arm.client import ArmResponse
from shared.arm.health import (
    HEALTHY,
    UNHEALTHY,
    SignalReading,
    alerts_reading,
    arc_reading,
    fired_alerts,
    probe_reading,
    resource_health_reading,
    unreadable,
    vm_reading,
)
from shared.core.clock import iso, utcnow
from shared.core.errors import ArmAuthenticationError, ArmConnectionError, UntrustedEndpointError
from shared.core.ids import MachineRef
from shared.core.records import HealthCheck
from shared.validation.health_check import expand_probe_url

MAX_ALERT_PAGES = 10  # more pages of fired alerts than this: the signal is unreadable (not all was read)
TRANSIENT_TRIES = 3  # a 429, 5xx or no answer is read again this many times (Retry-After, backoff) in a round
TRANSIENT_BACKOFF_SECONDS = 5
# Alerts_GetAll's timeRange (2019-05-05-preview): the smallest that still covers the time since the operation
# started (alerts are listed by when they started); the baseline looks a week back.
TIME_RANGES = ((timedelta(hours=1), "1h"), (timedelta(days=1), "1d"), (timedelta(days=7), "7d"))


class ProbeAnswer(Protocol):
    @property
    def status(self) -> int | None: ...

    @property
    def error(self) -> str: ...


class Probe(Protocol):
    """GET a workload's health URL through the egress policy; the status only (shared/egress/session.py get)."""

    def __call__(self, url: str) -> ProbeAnswer: ...


class SignalCalls(Protocol):
    """What a round needs of the machine step: its pacing, its audited ARM calls, and URLs."""

    def reserve(self, budgets: tuple[str, ...]) -> tuple[int, tuple[str, ...]] | None: ...

    def call(self, call: ArmCall, target: MachineRef | str) -> ArmResponse: ...

    def url_for(self, call: ArmCall, machine: MachineRef, **query: str) -> str: ...


@dataclass
class Round:
    """A round's state as kept in the machine row between deliveries (`healthRound`, JSON)."""

    phase: str  # "baseline" | "after"
    readings: list[SignalReading] = field(default_factory=list)
    alerts_next: str = ""  # the next page of alerts to read
    alerts_found: list[str] = field(default_factory=list)
    alert_pages: int = 0
    tries: dict[str, int] = field(default_factory=dict)  # transient failures met, by signal

    def dump(self) -> str:
        return json.dumps({"phase": self.phase, "readings": [r.as_dict() for r in self.readings],
                           "alertsNext": self.alerts_next, "alertsFound": self.alerts_found,
                           "alertPages": self.alert_pages, "tries": self.tries})

    def again(self, signal: str, seconds: int) -> int | None:
        """Seconds to wait before reading `signal` again after a transient failure; None when its tries are spent
        (then it is unreadable)."""
        tries = self.tries.get(signal, 0)
        if tries >= TRANSIENT_TRIES:
            return None
        self.tries[signal] = tries + 1
        return max(1, seconds)

    @classmethod
    def load(cls, raw: str | None, phase: str) -> Round:
        data: dict[str, Any] = json.loads(raw) if raw else {}
        if data.get("phase") != phase:
            return cls(phase)
        return cls(phase, [SignalReading.from_dict(r) for r in data.get("readings") or []],
                   str(data.get("alertsNext") or ""), list(data.get("alertsFound") or []),
                   int(data.get("alertPages") or 0), dict(data.get("tries") or {}))


@dataclass(frozen=True)
class Wait:
    """No budget for the next read: come back after `seconds` holding `held`, with `round` kept."""

    seconds: int
    held: tuple[str, ...]
    round: Round


def _transient_wait(resp: ArmResponse, default_retry_after: int) -> int | None:
    """How long ARM asks to wait before reading again (a 429's Retry-After, a 5xx's or a backoff); None: the answer
    is not a transient failure."""
    if resp.status == 429:
        return resp.retry_after(default_retry_after)
    if resp.status == 408 or resp.status >= 500:
        return resp.retry_after(TRANSIENT_BACKOFF_SECONDS)
    return None


def read_round(check: HealthCheck, machine: MachineRef, state: Round, *, io: SignalCalls, probe: Probe,
               since: datetime | None, default_retry_after: int = 60,
               now: Callable[[], datetime] = utcnow) -> list[SignalReading] | Wait:
    """Read each of `check.signals` not yet read in `state`, in order; the round's readings, or a Wait (the budget,
    or a transient failure read again after ARM's Retry-After or a backoff, TRANSIENT_TRIES times, before the
    signal counts as unreadable). `since`: the operation's start (alerts fired since then count; a Resource Health
    status reported before it cannot know of the installation); None for the baseline. Not its end: a result carries
    no end time, and when PatchPilot saw it is later than when Resource Health did."""
    done = {r.signal for r in state.readings}
    for signal in check.signals:
        if signal in done:
            continue
        if signal == "probe":
            names = {"machineName": machine.name, "resourceGroup": machine.resource_group,
                     "subscriptionId": machine.subscription_id}
            answer = probe(expand_probe_url(check.probe_url, names))
            state.readings.append(probe_reading(answer.status, answer.error, iso(now()), expect=check.expect_status))
            continue
        if signal == "alerts":
            reading = _read_alerts(check, machine, state, io=io, since=since, now=now,
                                   default_retry_after=default_retry_after)
            if isinstance(reading, Wait):
                return reading
            state.readings.append(reading)
            continue
        call = _arm_call(signal, machine)
        if (paced := io.reserve(call.budgets)) is not None:
            return Wait(paced[0], paced[1], state)
        at = iso(now())
        try:
            resp = io.call(call, machine)
        except (ArmConnectionError, ArmAuthenticationError) as exc:
            if (wait := state.again(signal, TRANSIENT_BACKOFF_SECONDS)) is not None:
                return Wait(wait, (), state)
            state.readings.append(unreadable(signal, at, reason=str(exc)))
            continue
        if (seconds := _transient_wait(resp, default_retry_after)) is not None and \
                (wait := state.again(signal, seconds)) is not None:
            return Wait(wait, (), state)
        if signal == "resourceHealth":
            state.readings.append(resource_health_reading(resp, at, since=since))
        elif machine.is_hybrid:
            state.readings.append(arc_reading(resp, at))
        else:
            state.readings.append(vm_reading(resp, at))
    return state.readings


def _arm_call(signal: str, machine: MachineRef) -> ArmCall:
    if signal == "resourceHealth":
        return RESOURCE_HEALTH
    return get_machine(machine) if machine.is_hybrid else INSTANCE_VIEW


def _time_range(since: datetime | None, now: datetime) -> str:
    if since is None:
        return "7d"
    return next((name for span, name in TIME_RANGES if now - since < span), "30d")


def _read_alerts(check: HealthCheck, machine: MachineRef, state: Round, *, io: SignalCalls, since: datetime | None,
                 now: Callable[[], datetime], default_retry_after: int) -> SignalReading | Wait:
    """Every page of the machine's Fired alerts since the operation started, each page a paced read."""
    while True:
        if (paced := io.reserve(LIST_ALERTS.budgets)) is not None:
            return Wait(paced[0], paced[1], state)
        at = iso(now())
        if state.alerts_next:
            target: MachineRef | str = state.alerts_next
        else:
            query = {"targetResourceGroup": machine.resource_group} if check.alert_scope == "resourceGroup" \
                else {"targetResource": machine.resource_id}
            target = io.url_for(LIST_ALERTS, machine, **query, monitorCondition="Fired",
                                timeRange=_time_range(since, now()))
        try:
            resp = io.call(LIST_ALERTS, target)
        except UntrustedEndpointError as exc:
            return unreadable("alerts", at, reason=f"nextLink off the ARM endpoint: {exc}")
        except (ArmConnectionError, ArmAuthenticationError) as exc:
            if (wait := state.again("alerts", TRANSIENT_BACKOFF_SECONDS)) is not None:
                return Wait(wait, (), state)
            return unreadable("alerts", at, reason=str(exc))
        if (seconds := _transient_wait(resp, default_retry_after)) is not None and \
                (wait := state.again("alerts", seconds)) is not None:
            return Wait(wait, (), state)
        if resp.status != 200 or not isinstance(resp.body, dict):
            return unreadable("alerts", at, resp)
        state.alerts_found += fired_alerts(resp, severities=check.alert_severities, since=since,
                                           machine_id=machine.resource_id, scope=check.alert_scope)
        state.alert_pages += 1
        next_link = str(resp.body.get("nextLink") or "")
        if not next_link or state.alert_pages >= MAX_ALERT_PAGES or state.alerts_found:
            reading = alerts_reading(state.alerts_found, at)  # one alert that counts is enough to say so
            if next_link and not state.alerts_found:  # fail closed: what was not read may hold one
                reading = unreadable("alerts", at, reason=f"more than {MAX_ALERT_PAGES} pages of fired alerts; "
                                     "not all of them could be read")
            state.alerts_next, state.alerts_found, state.alert_pages = "", [], 0
            return reading
        state.alerts_next = next_link


def verdict(readings: list[SignalReading]) -> str:
    """The round's: "Healthy" when every signal passed; "Unhealthy" when one said so; else "HealthUnknown"."""
    if all(r.verdict == HEALTHY for r in readings):
        return "Healthy"
    if any(r.verdict == UNHEALTHY for r in readings):
        return "Unhealthy"
    return "HealthUnknown"


def failing(readings: list[SignalReading]) -> list[SignalReading]:
    """The readings that kept the machine from passing."""
    return [r for r in readings if r.verdict != HEALTHY]


def describe(readings: list[SignalReading]) -> str:
    """`resourceHealth: Unavailable (...); alerts: Sev1 'CPU' fired ...`: the failing signals, in a line."""
    return "; ".join(f"{r.signal} {r.verdict}: {r.observed}" for r in failing(readings))
