"""`rollout.healthCheck`: what "healthy" means for a machine after its installation. Parse and normalise.

    "healthCheck": {
      "after": "PT5M",        # wait after the operation's final result (its reboot included) before reading
      "within": "PT20M",      # then read until every signal passes; out of time: the machine is Unhealthy
      "signals": ["vmHealth", "resourceHealth", "alerts", "probe"],      # default: vmHealth, resourceHealth
      "alerts": {"severities": ["Sev0", "Sev1"], "scope": "machine"},     # or "resourceGroup"
      "probe": {"url": "https://{machineName}.internal.example.com/healthz", "expectStatus": [200]}
    }

Signals (read by shared/runs/health_check.py; each ARM read is paced like any other):
    vmHealth        the VM's instance view: PowerState/running, the VM agent Ready, and `vmHealth` (Application
                    Health extension) where the VM has it; an Arc machine's agent status Connected
    resourceHealth  Microsoft.ResourceHealth/availabilityStatuses/current: Available passes, Unavailable or
                    Degraded fails, Unknown waits
    alerts          Azure Monitor alerts (Alerts Management) Fired on the machine at the chosen severities
    probe           an HTTPS GET of the templated URL (egress policy: public addresses, or HEALTH_PROBE_NETWORKS)

Stored normalised: durations also as whole seconds (`afterSeconds`, `withinSeconds`), signals canonical and
deduplicated in reading order, severities canonical ("Sev1"), the probe's statuses sorted.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from shared.core.errors import ValidationError, quoted
from shared.egress.policy import Networks, check_url
from shared.validation.durations import duration_field, format_duration
from shared.validation.install_parameters import json_object, reject_unknown

FIELDS = {"after", "within", "signals", "alerts", "probe"}
SIGNALS = {"vmhealth": "vmHealth", "resourcehealth": "resourceHealth", "alerts": "alerts", "probe": "probe"}
SIGNAL_ORDER = ("vmHealth", "resourceHealth", "alerts", "probe")  # cheapest first; the probe is not ARM
DEFAULT_SIGNALS = ["vmHealth", "resourceHealth"]
SEVERITIES = {f"sev{n}": f"Sev{n}" for n in range(5)}  # Alerts Management's Severity enum
DEFAULT_SEVERITIES = ["Sev0", "Sev1"]
ALERT_SCOPES = {"machine": "machine", "resourcegroup": "resourceGroup"}
DEFAULT_AFTER = timedelta(minutes=5)
DEFAULT_WITHIN = timedelta(minutes=20)
MAX_AFTER = timedelta(hours=6)
MAX_WITHIN = timedelta(hours=24)
PLACEHOLDERS = {"machineName": "machine-name", "resourceGroup": "resource-group",
                "subscriptionId": "00000000-0000-0000-0000-000000000000"}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
MAX_URL = 2048


def parse_health_check(raw: object, target: str = "rollout.healthCheck", *, allow_local: bool = False,
                       probe_networks: Networks = ()) -> dict[str, Any]:
    """The normalised healthCheck, or ValidationError naming the field (nothing is written then)."""
    spec = json_object(raw, target)
    reject_unknown(spec, FIELDS, target)
    after = _duration(spec.get("after"), f"{target}.after", DEFAULT_AFTER, MAX_AFTER)
    within = _duration(spec.get("within"), f"{target}.within", DEFAULT_WITHIN, MAX_WITHIN)
    signals = _signals(spec.get("signals"), f"{target}.signals")
    out: dict[str, Any] = {"after": format_duration(after), "afterSeconds": int(after.total_seconds()),
                           "within": format_duration(within), "withinSeconds": int(within.total_seconds()),
                           "signals": signals}
    for name in ("alerts", "probe"):
        if spec.get(name) is not None and name not in signals:
            raise ValidationError(f"{target}.{name} is set but {target}.signals does not include {quoted(name)}",
                                  target=f"{target}.{name}")
    if "alerts" in signals:
        out["alerts"] = _alerts(spec.get("alerts"), f"{target}.alerts")
    if "probe" in signals:
        if spec.get("probe") is None:
            raise ValidationError(f"{target}.probe is required when signals include \"probe\"",
                                  target=f"{target}.probe")
        out["probe"] = _probe(spec["probe"], f"{target}.probe", allow_local=allow_local, networks=probe_networks)
    return out


def _duration(value: object, target: str, default: timedelta, maximum: timedelta) -> timedelta:
    if value is None:
        return default
    return duration_field(value, target, maximum=maximum, example="PT5M", whole_seconds=True)


def _signals(value: object, target: str) -> list[str]:
    if value is None:
        return list(DEFAULT_SIGNALS)
    if not isinstance(value, list) or not value:
        raise ValidationError(f"{target} must be a non-empty array of: {', '.join(SIGNAL_ORDER)}", target=target)
    chosen: set[str] = set()
    for i, item in enumerate(value):
        canonical = SIGNALS.get(item.lower()) if isinstance(item, str) else None
        if canonical is None:
            raise ValidationError(f"{target}[{i}] is {_shown(item)}; allowed: {', '.join(SIGNAL_ORDER)}",
                                  target=f"{target}[{i}]")
        chosen.add(canonical)
    return [s for s in SIGNAL_ORDER if s in chosen]


def _alerts(value: object, target: str) -> dict[str, Any]:
    spec = json_object(value if value is not None else {}, target)
    reject_unknown(spec, {"severities", "scope"}, target)
    severities = spec.get("severities", DEFAULT_SEVERITIES)
    if not isinstance(severities, list) or not severities:
        raise ValidationError(f"{target}.severities must be a non-empty array of Sev0 to Sev4",
                              target=f"{target}.severities")
    clean: set[str] = set()
    for i, item in enumerate(severities):
        canonical = SEVERITIES.get(item.strip().lower()) if isinstance(item, str) else None
        if canonical is None:
            raise ValidationError(f"{target}.severities[{i}] is {quoted(item)}; allowed: Sev0, Sev1, Sev2, Sev3, "
                                  "Sev4", target=f"{target}.severities[{i}]")
        clean.add(canonical)
    scope = spec.get("scope", "machine")
    canonical_scope = ALERT_SCOPES.get(scope.lower()) if isinstance(scope, str) else None
    if canonical_scope is None:
        raise ValidationError(f"{target}.scope is {quoted(scope)}; allowed: machine, resourceGroup",
                              target=f"{target}.scope")
    return {"severities": sorted(clean), "scope": canonical_scope}


def _probe(value: object, target: str, *, allow_local: bool, networks: Networks) -> dict[str, Any]:
    spec = json_object(value, target)
    reject_unknown(spec, {"url", "expectStatus"}, target)
    url = spec.get("url")
    if not isinstance(url, str) or not url.strip() or len(url) > MAX_URL:
        raise ValidationError(f"{target}.url must be an https URL of at most {MAX_URL} characters",
                              target=f"{target}.url")
    unknown = [p for p in _PLACEHOLDER.findall(url) if p not in PLACEHOLDERS]
    allowed = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
    if unknown:
        raise ValidationError(f"{target}.url has placeholder {{{unknown[0]}}}; allowed: {allowed}",
                              target=f"{target}.url")
    if "{" in _PLACEHOLDER.sub("", url) or "}" in _PLACEHOLDER.sub("", url):
        raise ValidationError(f"{target}.url has an unclosed brace; placeholders are {allowed}",
                              target=f"{target}.url")
    try:  # the URL as it will be called, with a sample machine's names in it (a name is resolved only then)
        check_url(expand_probe_url(url, PLACEHOLDERS), allow_local=allow_local, allowed=networks)
    except ValueError as exc:
        raise ValidationError(f"{target}.url: {exc}", target=f"{target}.url") from None
    statuses = spec.get("expectStatus", [200])
    if not isinstance(statuses, list) or not statuses or not all(
            isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in statuses):
        raise ValidationError(f"{target}.expectStatus must be a non-empty array of HTTP statuses (100-599)",
                              target=f"{target}.expectStatus")
    return {"url": url.strip(), "expectStatus": sorted(set(statuses))}


def _shown(value: object) -> str:
    """A value as JSON shows it (null, not None)."""
    return quoted(value) if isinstance(value, str) else json.dumps(value, default=str)[:60]


def expand_probe_url(template: str, names: dict[str, str]) -> str:
    """`template` with {machineName}, {resourceGroup} and {subscriptionId} replaced by `names`' values,
    percent-encoded (a resource group may hold `(`, `)` and `.`)."""
    return _PLACEHOLDER.sub(lambda m: quote(names[m.group(1)], safe="") if m.group(1) in names else m.group(0),
                            template)
