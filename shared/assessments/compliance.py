"""The compliance view: computed from the fleet snapshot in Table storage alone, no ARM calls.

Loading reads one partition per subscription (a key range for a resource group), selecting
only the columns the report uses; the report itself is a pure function of those rows, so it is
tested directly and costs one pass over them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from shared.core.clock import iso
from shared.core.ids import HYBRID_MACHINES, VIRTUAL_MACHINES, machine_kind_of
from shared.core.states import MachineState
from shared.storage.fleet_store import FleetStore

COLUMNS = ["resourceId", "osType", "powerState", "assessedAt", "assessmentStatus",
           "lastAttemptState", "errorCode", "rebootPending", "criticalAndSecurityPatchCount", "otherPatchCount",
           "classificationCounts", "missingPatches", "agentStatus"]
FAILED_ATTEMPTS = {MachineState.FAILED.value, MachineState.TIMED_OUT.value}
OS_TYPES = {"windows": "Windows", "linux": "Linux"}
MACHINE_KINDS = {"virtualmachines": VIRTUAL_MACHINES, "hybridmachines": HYBRID_MACHINES}


def load_snapshot(fleet: FleetStore, *, subscription_id: str | None, resource_group: str | None,
                  os_type: str | None, machine_kind: str | None = None) -> list[dict[str, Any]]:
    """The snapshot rows in scope, read partition by partition (subscriptions in parallel); `machine_kind`
    (virtualMachines or hybridMachines) keeps one kind. The kind is read from the resource id: rows written
    before Arc support have no machineKind column, and a Table filter cannot test for a missing one."""
    subscriptions = [subscription_id] if subscription_id else fleet.subscriptions()
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(subscriptions)))) as pool:
        parts = pool.map(lambda s: fleet.query_machines(s, resource_group, os_type=os_type, select=COLUMNS),
                         subscriptions)
        rows = [row for part in parts for row in part]
    if machine_kind:
        rows = [row for row in rows if machine_kind_of(str(row.get("resourceId") or "")) == machine_kind]
    return rows


def compliance_report(rows: Iterable[dict[str, Any]], *, now: datetime, freshness_hours: int,
                      top: int = 10) -> dict[str, Any]:
    """Counts a platform engineer asks for first. Every machine is in exactly one of
    assessed / stale / neverAssessed; failed, notRunning and the patch counts overlap those."""
    fresh_after = iso(now - timedelta(hours=freshness_hours))
    counts: Counter[str] = Counter()
    os_counts: Counter[str] = Counter()
    kind_counts: Counter[str] = Counter()
    patches_by_class: Counter[str] = Counter()
    machines_by_class: Counter[str] = Counter()
    widespread: Counter[tuple[str, str]] = Counter()
    by_subscription: dict[str, Counter[str]] = {}
    for row in rows:
        counts["machines"] += 1
        parts = str(row.get("resourceId") or "").split("/")
        sub = by_subscription.setdefault(parts[2].lower() if len(parts) > 2 else "", Counter())
        sub["machines"] += 1
        os_counts[row.get("osType") or "Unknown"] += 1
        kind_counts[machine_kind_of(str(row.get("resourceId") or ""))] += 1
        assessed_at = str(row.get("assessedAt") or "")
        if not assessed_at:
            counts["neverAssessed"] += 1
            sub["neverAssessed"] += 1
        elif assessed_at >= fresh_after:
            counts["assessed"] += 1
        else:
            counts["stale"] += 1
            sub["stale"] += 1
        if row.get("lastAttemptState") in FAILED_ATTEMPTS:
            counts["failed"] += 1
        if str(row.get("powerState") or "running") not in ("running", "unknown"):
            counts["notRunning"] += 1
        if str(row.get("agentStatus") or "Connected") != "Connected":  # an Arc machine's agent (shared/arm/hybrid)
            counts["notConnected"] += 1
        if not assessed_at:
            continue  # patch facts only from a successful assessment
        if int(row.get("criticalAndSecurityPatchCount") or 0) > 0:
            counts["missingCriticalOrSecurity"] += 1
            sub["missingCriticalOrSecurity"] += 1
        if row.get("rebootPending"):
            counts["rebootPending"] += 1
        if int(row.get("criticalAndSecurityPatchCount") or 0) + int(row.get("otherPatchCount") or 0) == 0:
            counts["upToDate"] += 1
        for classification, n in json.loads(row.get("classificationCounts") or "{}").items():
            patches_by_class[classification] += int(n)
            machines_by_class[classification] += 1
        for key, classification in json.loads(row.get("missingPatches") or "[]"):
            widespread[(key, classification)] += 1
    names = ("machines", "assessed", "stale", "neverAssessed", "failed", "notRunning", "notConnected",
             "missingCriticalOrSecurity", "rebootPending", "upToDate")
    return {
        "generatedAt": iso(now),
        "freshnessHours": freshness_hours,
        **{name: counts[name] for name in names},
        "byOsType": dict(sorted(os_counts.items())),
        "byMachineKind": dict(sorted(kind_counts.items())),
        "byClassification": {c: {"missingPatches": patches_by_class[c], "machines": machines_by_class[c]}
                             for c in sorted(patches_by_class)},
        # per subscription: machines, missing critical/security, stale, never assessed (the dashboard's chart)
        "bySubscription": {s: {k: c[k] for k in ("machines", "missingCriticalOrSecurity", "stale", "neverAssessed")}
                           for s, c in sorted(by_subscription.items())},
        "mostWidespreadMissingPatches": [
            {"patch": key, "classification": classification, "machines": n}
            for (key, classification), n in sorted(widespread.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        ],
    }
