"""What Azure's answers say of a machine's health: one `SignalReading` per signal read (pure functions).

Verdicts:
    healthy     the signal passes
    unhealthy   the signal says the machine is not well (a definite answer)
    waiting     no verdict yet: Resource Health `Unknown`, or a status reported before the installation started
                (it cannot know of it: Resource Health can lag minutes behind a reboot)
    unreadable  the signal could not be read (403, 404, 5xx, no answer): never a pass (fail closed)

Sources:
- VM instance view (VirtualMachineInstanceView, Compute): `statuses[]` `PowerState/<state>`; `vmAgent.statuses[0]
  .displayStatus` "Ready" / "Not Ready"; `vmHealth.status.code` `HealthState/healthy|unhealthy|unknown`, present
  only for a VM with the Application Health extension (learn.microsoft.com/azure/virtual-machines/extensions/
  health-extension).
- Arc machine (HybridCompute Machine): `properties.status` Connected | Disconnected | Expired,
  `properties.lastStatusChange`.
- Resource Health (AvailabilityStatus): `properties.availabilityState` Available | Unavailable | Degraded |
  Unknown, `properties.reportedTime`, `properties.summary` (resourcehealth 2022-10-01 spec).
- Alerts Management (Alerts_GetAll 2019-05-05-preview): `value[].properties.essentials` severity,
  monitorCondition (an alert is `Fired` until `Resolved`), startDateTime, alertRule; `nextLink`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from shared.arm.client import ArmResponse
from shared.arm.patch_status import parse_time

HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
WAITING = "waiting"
UNREADABLE = "unreadable"
MAX_OBSERVED = 300
# A reading's code when it fails because the machine is not running (deallocated, stopped, an Arc agent not
# connected): before patching that is not "unhealthy" (the start answers it as it always does: VMNotRunning,
# MachineNotConnected); after patching it is.
NOT_RUNNING = "NotRunning"


@dataclass(frozen=True)
class SignalReading:
    """One signal read once: `verdict` (above), `observed` (what was read, in a line), `at` (ISO, when read),
    `code` (ARM's error code for an unreadable signal; NOT_RUNNING for a machine that is not running; else "")."""

    signal: str
    verdict: str
    observed: str
    at: str
    code: str = ""

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v != ""}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SignalReading:
        return cls(str(raw["signal"]), str(raw["verdict"]), str(raw.get("observed") or ""), str(raw.get("at") or ""),
                   str(raw.get("code") or ""))


def unreadable(signal: str, at: str, resp: ArmResponse | None = None, reason: str = "") -> SignalReading:
    """A signal that could not be read: ARM's error (status and code kept) or `reason` (no answer)."""
    if resp is None:
        return SignalReading(signal, UNREADABLE, reason[:MAX_OBSERVED], at, "NoAnswer")
    code, message = resp.error()
    return SignalReading(signal, UNREADABLE, f"HTTP {resp.status} {code}: {message}"[:MAX_OBSERVED], at, code)


def vm_reading(resp: ArmResponse, at: str) -> SignalReading:
    """The `vmHealth` signal of an Azure VM from its instance view: running, agent Ready, and `vmHealth` when the
    Application Health extension reports it."""
    if resp.status != 200 or not isinstance(resp.body, dict):
        return unreadable("vmHealth", at, resp)
    view = resp.body
    power = next((str(s.get("code"))[len("PowerState/"):] for s in view.get("statuses") or []
                  if str(s.get("code") or "").startswith("PowerState/")), "")
    if not power:
        return SignalReading("vmHealth", WAITING, "no PowerState in the instance view yet", at)
    if power != "running":
        return SignalReading("vmHealth", UNHEALTHY, f"PowerState/{power}", at, NOT_RUNNING)
    agent_statuses = (view.get("vmAgent") or {}).get("statuses") or []
    agent = str((agent_statuses[0] if agent_statuses else {}).get("displayStatus") or "")
    if agent != "Ready":
        verdict = UNHEALTHY if agent else WAITING  # no agent status yet: it reports a minute after boot
        return SignalReading("vmHealth", verdict, f"PowerState/running, VM agent {agent or 'not reporting'}", at)
    code = str(((view.get("vmHealth") or {}).get("status") or {}).get("code") or "")
    if not code:
        return SignalReading("vmHealth", HEALTHY, "PowerState/running, VM agent Ready (no Application Health "
                             "extension)", at)
    state = code.split("/", 1)[-1].lower()
    verdict = {"healthy": HEALTHY, "unhealthy": UNHEALTHY}.get(state, WAITING)
    return SignalReading("vmHealth", verdict, f"PowerState/running, VM agent Ready, vmHealth {code}", at)


def arc_reading(resp: ArmResponse, at: str) -> SignalReading:
    """The `vmHealth` signal of an Arc machine: its Connected Machine agent `Connected` (read `after` the result,
    so after its reboot). Not `lastStatusChange`: it moves only when the agent's status flips, and a reboot
    shorter than the agent's disconnect threshold never flips it."""
    if resp.status != 200 or not isinstance(resp.body, dict):
        return unreadable("vmHealth", at, resp)
    props = resp.body.get("properties") or {}
    status = str(props.get("status") or "")
    if status != "Connected":
        return SignalReading("vmHealth", UNHEALTHY if status else WAITING,
                             f"agent {status or 'status missing'} since {props.get('lastStatusChange') or '?'}", at,
                             NOT_RUNNING if status else "")
    return SignalReading("vmHealth", HEALTHY, "agent Connected", at)


def resource_health_reading(resp: ArmResponse, at: str, *, since: datetime | None) -> SignalReading:
    """`resourceHealth`: Available passes, Unavailable/Degraded fail, Unknown waits; a status reported before
    `since` (the installation's start) is not about the patched machine yet: it waits."""
    if resp.status != 200 or not isinstance(resp.body, dict):
        return unreadable("resourceHealth", at, resp)
    props = resp.body.get("properties") or {}
    state = str(props.get("availabilityState") or "")
    reported = parse_time(props.get("reportedTime"))
    summary = str(props.get("summary") or props.get("title") or "")
    observed = f"{state or 'no availabilityState'}" + (f": {summary}" if summary else "") + \
        (f" (reported {props.get('reportedTime')})" if props.get("reportedTime") else "")
    if since is not None and reported is not None and reported < since:
        return SignalReading("resourceHealth", WAITING, f"{observed}; reported before the installation started"
                             [:MAX_OBSERVED], at)
    verdict = {"available": HEALTHY, "unavailable": UNHEALTHY, "degraded": UNHEALTHY}.get(state.lower(), WAITING)
    # Unavailable because someone stopped it (reasonType "Customer Initiated"): not running, not broken
    stopped = verdict == UNHEALTHY and str(props.get("reasonType") or "").lower() == "customer initiated"
    return SignalReading("resourceHealth", verdict, observed[:MAX_OBSERVED], at, NOT_RUNNING if stopped else "")


def fired_alerts(resp: ArmResponse, *, severities: Iterable[str], since: datetime | None,
                 machine_id: str, scope: str) -> list[str]:
    """The alerts in one page of Alerts_GetAll that count: `Fired`, at one of `severities`, started at or after
    `since` (None: any start; the baseline), on the machine (or, with scope "resourceGroup", anywhere in the page,
    which the query already limited to the machine's resource group). Each as a line: severity, name, start."""
    wanted = {s.lower() for s in severities}
    found = []
    for alert in (resp.body or {}).get("value") or []:
        essentials = ((alert or {}).get("properties") or {}).get("essentials") or {}
        if str(essentials.get("monitorCondition") or "").lower() != "fired":
            continue
        if str(essentials.get("severity") or "").lower() not in wanted:
            continue
        if scope == "machine" and str(essentials.get("targetResource") or "").lower() != machine_id.lower():
            continue
        started = parse_time(essentials.get("startDateTime"))
        if since is not None and (started is None or started < since):
            continue
        found.append(f"{essentials.get('severity')} '{alert.get('name') or essentials.get('alertRule') or '?'}' "
                     f"fired {essentials.get('startDateTime') or '?'}")
    return found


def alerts_reading(found: list[str], at: str) -> SignalReading:
    """`alerts` after every page was read: unhealthy with the alerts that count, else healthy."""
    if found:
        more = f" and {len(found) - 3} more" if len(found) > 3 else ""
        return SignalReading("alerts", UNHEALTHY, ("; ".join(found[:3]) + more)[:MAX_OBSERVED], at)
    return SignalReading("alerts", HEALTHY, "no alert fired at the chosen severities", at)


def probe_reading(status: int | None, error: str, at: str, *, expect: Iterable[int]) -> SignalReading:
    """`probe`: a status in `expect` passes, another fails; no status (unreachable, refused, timed out) is
    unreadable."""
    if status is None:
        return SignalReading("probe", UNREADABLE, f"no answer: {error}"[:MAX_OBSERVED], at, "ProbeUnreachable")
    verdict = HEALTHY if status in set(expect) else UNHEALTHY
    return SignalReading("probe", verdict, f"HTTP {status}", at)
