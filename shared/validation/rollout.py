"""`rollout` on a run: waves, concurrency, an error budget and one patch set. Parse and normalise.

    "rollout": {
      "waves": [{"name": "canary", "size": 1}, {"size": "10%"}, {"size": "rest"}],
      "soakTime": "PT30M",
      "maxConcurrency": 10,                      # or "20%": operations in flight in the whole run
      "maxConcurrencyPerSubscription": "10%",    # and in any one subscription
      "maxFailures": 1,                          # or "5%": then nothing new starts; the run ends Halted
      "failureOn": ["Failed", "TimedOut", "FailedPatches"],
      "approveAfterDays": 7,                     # Windows: install nothing published in the last 7 days
      "preHook": {"url": "https://...", "timeoutSeconds": 60},  # must answer 2xx before the first wave
      "postHook": {"url": "https://..."},        # told the outcome when the run ends
      "healthCheck": {"after": "PT5M", "within": "PT20M", "signals": [...]}  # shared/validation/health_check.py
    }
With a healthCheck and no failureOn, failureOn is the default plus "Unhealthy"; with no maxFailures, it is 1.
A wave is `{"size": n | "n%" | "rest"}`, `{"machines": [VM ids]}` or `{"selector": {"subscriptions",
"resourceGroups"}}` (what a VM id says; tags and locations need the VM itself and are not offered).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from shared.core.clock import utcnow
from shared.core.errors import ValidationError, quoted
from shared.core.settings import (
    MAX_EVENT_READ_SECONDS,
    SettingsError,
    check_hook_url,
)
from shared.egress.policy import Networks
from shared.validation.durations import duration_field, format_duration
from shared.validation.health_check import parse_health_check
from shared.validation.install_parameters import json_object, reject_unknown
from shared.validation.resource_ids import GUID, is_resource_group_name, parse_machine_id

FIELDS = {"waves", "soakTime", "maxConcurrency", "maxConcurrencyPerSubscription", "maxFailures", "failureOn",
          "approveAfterDays", "preHook", "postHook", "healthCheck"}
MAX_HOOK_SECONDS = MAX_EVENT_READ_SECONDS  # with the connect timeout, well within the 5-minute functionTimeout
WAVE_FIELDS = {"name", "size", "machines", "selector"}
FAILURES = {"failed": "Failed", "timedout": "TimedOut", "failedpatches": "FailedPatches",
            "completedwithwarnings": "CompletedWithWarnings", "maintenancewindowexceeded": "MaintenanceWindowExceeded",
            "unhealthy": "Unhealthy"}
DEFAULT_FAILURE_ON = ["Failed", "TimedOut", "FailedPatches"]
DEFAULT_FAILURE_ON_WITH_HEALTH = sorted([*DEFAULT_FAILURE_ON, "Unhealthy"])  # when healthCheck is set
MAX_WAVES = 20
MAX_WAVE_NAME = 64
_PERCENT = re.compile(r"([0-9]{1,3})%")  # ASCII digits, whole string (fullmatch)
MAX_COUNT = 1_000_000  # counts beyond any run's machines mean "no limit"; larger numbers are typos
MAX_SOAK = timedelta(days=30)  # a soak longer than a month is a run nobody is watching



def pin_windows_publish_date(parameters: dict[str, Any], rollout: dict[str, Any]) -> dict[str, Any]:
    """One patch set: every wave installs nothing published after the run started (or, with
    approveAfterDays, after that many days before it), unless the request set its own date."""
    windows = parameters.get("windowsParameters")
    if not windows or windows.get("maxPatchPublishDate"):
        return parameters
    cutoff = utcnow() - timedelta(days=int(rollout.get("approveAfterDays") or 0))
    return {**parameters, "windowsParameters": {**windows,
                                                "maxPatchPublishDate": cutoff.strftime("%Y-%m-%dT%H:%M:%SZ")}}

def count_or_percent(value: object, target: str, *, allow_rest: bool = False) -> int | str:
    """A whole number >= 0 (>= 1 for sizes), "N%" with 1-100, or "rest"."""
    if isinstance(value, bool):
        raise ValidationError(f"{target} must be a number or a percentage such as \"10%\"", target=target)
    if isinstance(value, int) and 0 <= value <= MAX_COUNT:
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if allow_rest and text == "rest":
            return "rest"
        match = _PERCENT.fullmatch(text)
        if match and 1 <= int(match[1]) <= 100:
            return f"{int(match[1])}%"
    rest = ', or "rest"' if allow_rest else ""
    raise ValidationError(f"{target} must be a whole number from 0 to {MAX_COUNT} or a percentage from 1% to "
                          f"100%{rest}", target=target)


def resolve(value: int | str | None, total: int) -> int | None:
    """A count or percentage of `total` machines; a percentage rounds up so it is never zero."""
    if value is None or value == "rest":
        return None
    if isinstance(value, int):
        return value
    return max(1, -(-total * int(value.rstrip("%")) // 100))


def parse_rollout(raw: object, *, allow_local_hooks: bool = False, probe_networks: Networks = ()) -> dict[str, Any]:
    spec = json_object(raw, "rollout")
    reject_unknown(spec, FIELDS, "rollout")
    out: dict[str, Any] = {}
    waves = spec.get("waves")
    if waves is not None:
        if not isinstance(waves, list) or not 1 <= len(waves) <= MAX_WAVES:
            raise ValidationError(f"rollout.waves must be an array of 1 to {MAX_WAVES} waves", target="rollout.waves")
        out["waves"] = [_wave(w, f"rollout.waves[{i}]") for i, w in enumerate(waves)]
        rests = [i for i, w in enumerate(out["waves"]) if w.get("size") == "rest"]
        if len(rests) > 1 or (rests and rests[0] != len(out["waves"]) - 1):
            raise ValidationError("only the last wave may be \"rest\"", target=f"rollout.waves[{rests[0]}].size")
    if spec.get("soakTime") is not None:
        out["soakTime"] = _soak_time(spec["soakTime"])
    for name in ("maxConcurrency", "maxConcurrencyPerSubscription", "maxFailures"):
        if spec.get(name) is not None:
            value = count_or_percent(spec[name], f"rollout.{name}")
            if name != "maxFailures" and value == 0:
                raise ValidationError(f"rollout.{name} must be at least 1", target=f"rollout.{name}")
            out[name] = value
    failure_on = spec.get("failureOn")
    if failure_on is not None:
        if not isinstance(failure_on, list) or not failure_on:
            raise ValidationError("rollout.failureOn must be a non-empty array", target="rollout.failureOn")
        kinds = []
        for i, kind in enumerate(failure_on):
            canonical = FAILURES.get(kind.replace(" ", "").lower()) if isinstance(kind, str) else None
            if canonical is None:
                raise ValidationError(f"rollout.failureOn[{i}] is {quoted(kind)}; allowed: "
                                      f"{', '.join(FAILURES.values())}",
                                      target=f"rollout.failureOn[{i}]")
            kinds.append(canonical)
        out["failureOn"] = sorted(set(kinds))
    if spec.get("approveAfterDays") is not None:
        days = spec["approveAfterDays"]
        if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 365:
            raise ValidationError("rollout.approveAfterDays must be a whole number of days from 0 to 365",
                                  target="rollout.approveAfterDays")
        out["approveAfterDays"] = days
    for name in ("preHook", "postHook"):
        if spec.get(name) is not None:
            out[name] = _hook(spec[name], f"rollout.{name}", timeout=name == "preHook",
                              allow_local=allow_local_hooks)
    if spec.get("healthCheck") is not None:
        out["healthCheck"] = parse_health_check(spec["healthCheck"], allow_local=allow_local_hooks,
                                                probe_networks=probe_networks)
        out.setdefault("failureOn", DEFAULT_FAILURE_ON_WITH_HEALTH)
        out.setdefault("maxFailures", 1)  # a bad patch halts the rollout by itself, unless told otherwise
    return out


def _soak_time(value: object) -> str:
    """An ISO 8601 duration from PT0S to MAX_SOAK."""
    return format_duration(duration_field(value, "rollout.soakTime", maximum=MAX_SOAK, example="PT30M"))


def _hook(raw: object, target: str, *, timeout: bool, allow_local: bool) -> dict[str, Any]:
    """`{"url": "https://...", "timeoutSeconds": 60}`: a webhook PatchPilot POSTs to (signed).

    Only what the URL says is checked here (shared/egress/policy.py), never DNS: a host's addresses
    are checked when the call connects, so a DNS blip cannot turn a request into a 400."""
    hook = json_object(raw, target)
    reject_unknown(hook, {"url", "timeoutSeconds"} if timeout else {"url"}, target)
    try:
        out: dict[str, Any] = {"url": check_hook_url(str(hook.get("url") or ""), f"{target}.url",
                                                     allow_local=allow_local)}
    except SettingsError as exc:
        raise ValidationError(str(exc), target=f"{target}.url") from None
    if timeout:
        seconds = hook.get("timeoutSeconds", 60)
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= MAX_HOOK_SECONDS:
            raise ValidationError(f"{target}.timeoutSeconds must be 1 to {MAX_HOOK_SECONDS}",
                                  target=f"{target}.timeoutSeconds")
        out["timeoutSeconds"] = seconds
    return out


def _wave(raw: object, target: str) -> dict[str, Any]:
    wave = json_object(raw, target)
    reject_unknown(wave, WAVE_FIELDS, target)
    kinds = [k for k in ("size", "machines", "selector") if k in wave]
    if len(kinds) != 1:
        raise ValidationError(f"{target} needs exactly one of size, machines or selector", target=target)
    name = wave.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > MAX_WAVE_NAME):
        raise ValidationError(f"{target}.name must be a string of at most {MAX_WAVE_NAME} characters",
                              target=f"{target}.name")
    out: dict[str, Any] = {"name": name or ""}
    if "size" in wave:
        size = count_or_percent(wave["size"], f"{target}.size", allow_rest=True)
        if size == 0:
            raise ValidationError(f"{target}.size must be at least 1", target=f"{target}.size")
        out["size"] = size
    elif "machines" in wave:
        machines = wave["machines"]
        if not isinstance(machines, list) or not machines:
            raise ValidationError(f"{target}.machines must be a non-empty array of VM ids", target=f"{target}.machines")
        out["machines"] = [parse_machine_id(m, target=f"{target}.machines[{i}]").key for i, m in enumerate(machines)]
    else:
        selector = json_object(wave["selector"], f"{target}.selector")
        reject_unknown(selector, {"subscriptions", "resourceGroups"}, f"{target}.selector")
        clean: dict[str, list[str]] = {}
        for key in ("subscriptions", "resourceGroups"):
            values = selector.get(key)
            if values is not None:
                if not isinstance(values, list) or not all(
                        isinstance(v, str) and (GUID.fullmatch(v) if key == "subscriptions"
                                                else is_resource_group_name(v)) for v in values):
                    raise ValidationError(f"{target}.selector.{key} must be an array of "
                                          f"{'subscription ids' if key == 'subscriptions' else 'resource group names'}",
                                          target=f"{target}.selector.{key}")
                clean[key] = [v.lower() for v in values]
        if not clean:
            raise ValidationError(f"{target}.selector needs subscriptions and/or resourceGroups",
                                  target=f"{target}.selector")
        out["selector"] = clean
    return out
