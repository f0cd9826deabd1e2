"""The compliance view: computed from the fleet snapshot in Table storage alone, no ARM calls.

The view reads each subscription's rollup (shared/storage/fleet_rollup.py: a few rows kept exact by every write
of a machine row, in the same transaction), so a GET costs one query per subscription whatever the number of
machines. A `resourceGroup` filter reads that resource group's rows instead (a RowKey range): the rollups are not
kept per resource group. A subscription without a usable rollup (rows written before rollups existed, or a
freshnessHours raised since) is answered from its rows once, and the rollup is built from them for later views.

Classifications are reported by the API's names (shared/arm/patch_results.py). Results have been stored
canonical since PatchPilot canonicalised them; rows (and the rollups that sum them) written before keep the names
Azure gave ("Security Updates"), so the report merges names when it renders, for the rollups and the rows alike:
a class is never split in two. (A row written before that named one class both ways counts that machine twice in
the class's `machines`, until its next assessment rewrites the row.) `linuxOtherUpdates` is the Linux machines
with updates classified Other and how many, from the same sums: no extra read.

`assessed` vs `stale` is decided in whole minutes: a machine assessed in or after the minute in which
now - freshnessHours falls is assessed, before it stale (fleet_rollup.cutoff_minute), for the rollups and the
rows alike, so both give the same answer. `compliance_report` is the same computation over rows, and the
definition the rollups are tested against.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from shared.arm.patch_results import OTHER, canonical_classification
from shared.core.clock import iso
from shared.core.ids import HYBRID_MACHINES, VIRTUAL_MACHINES, machine_kind_of
from shared.storage.fleet_rollup import SHARDS, Tally, cutoff_minute, is_built, shard_tally
from shared.storage.fleet_store import FleetStore

COLUMNS = ["resourceId", "osType", "powerState", "assessedAt", "assessmentStatus",
           "lastAttemptState", "errorCode", "rebootPending", "criticalAndSecurityPatchCount", "otherPatchCount",
           "classificationCounts", "missingPatches", "agentStatus"]
OS_TYPES = {"windows": "Windows", "linux": "Linux"}
MACHINE_KINDS = {"virtualmachines": VIRTUAL_MACHINES, "hybridmachines": HYBRID_MACHINES}
REBUILD_APPROXIMATE_AFTER = timedelta(hours=24)
LINUX_OTHER_NOTE = ("updates classified Other are not installed by a run whose "
                    "linuxParameters.classificationsToInclude lacks Other; "
                    "many Ubuntu security fixes are classified Other")
NAMES = ("machines", "assessed", "stale", "neverAssessed", "failed", "notRunning", "notConnected",
         "missingCriticalOrSecurity", "rebootPending", "upToDate")


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


def _canonical(by_class: Counter[str]) -> Counter[str]:
    """Sums by classification under the API's names: those of rows stored before PatchPilot canonicalised them
    ("Security Updates") merged into the API's ("Security")."""
    merged: Counter[str] = Counter()
    for name, n in by_class.items():
        merged[canonical_classification(name)] += n
    return merged


def compliance_report(rows: Iterable[dict[str, Any]], *, now: datetime, freshness_hours: int,
                      top: int = 10) -> dict[str, Any]:
    """Counts a platform engineer asks for first. Every machine is in exactly one of
    assessed / stale / neverAssessed; failed, notRunning and the patch counts overlap those."""
    return render_report(Tally.of_rows(rows), now=now, freshness_hours=freshness_hours, top=top)


def render_report(tally: Tally, *, now: datetime, freshness_hours: int, top: int = 10,
                  os_type: str | None = None, machine_kind: str | None = None) -> dict[str, Any]:
    """The report over the machines `tally` sums, keeping only one OS type / machine kind if given.
    `mostWidespreadMissingPatchesApproximate` is true when a rollup had to drop per-patch counts to fit
    (fleet_rollup.shard_entity): those counts may then be low."""
    cutoff = cutoff_minute(now, freshness_hours)
    if tally.collapsed_before > cutoff:
        raise ValueError(f"the sums merged assessment times before {tally.collapsed_before}, after {cutoff}")
    counts: Counter[str] = Counter()
    os_counts: Counter[str] = Counter()
    kind_counts: Counter[str] = Counter()
    patches_by_class: Counter[str] = Counter()
    machines_by_class: Counter[str] = Counter()
    widespread: Counter[tuple[str, str]] = Counter()
    linux_other: Counter[str] = Counter()
    by_subscription: dict[str, Counter[str]] = {}
    for (subscription, os, kind), g in tally.groups.items():
        if (os_type and os != os_type) or (machine_kind and kind != machine_kind):
            continue
        stale = sum(n for minute, n in g.at.items() if minute < cutoff)
        counts.update(g.n)
        counts.update({"assessed": sum(g.at.values()) - stale, "stale": stale})
        by_subscription.setdefault(subscription, Counter()).update(
            {"machines": g.n["machines"], "missingCriticalOrSecurity": g.n["missingCriticalOrSecurity"],
             "stale": stale, "neverAssessed": g.n["neverAssessed"]})
        os_counts[os or "Unknown"] += g.n["machines"]
        kind_counts[kind] += g.n["machines"]
        patches, machines = _canonical(g.patches_by_class), _canonical(g.machines_by_class)
        patches_by_class.update(patches)
        machines_by_class.update(machines)
        for (key, name), n in g.widespread.items():
            widespread[(key, canonical_classification(name))] += n
        if os.lower() == "linux":
            linux_other.update({"machines": machines[OTHER], "updates": patches[OTHER]})
    return {
        "generatedAt": iso(now),
        "freshnessHours": freshness_hours,
        **{name: counts[name] for name in NAMES},
        "byOsType": {k: v for k, v in sorted(os_counts.items()) if v > 0},
        "byMachineKind": {k: v for k, v in sorted(kind_counts.items()) if v > 0},
        "byClassification": {c: {"missingPatches": patches_by_class[c], "machines": machines_by_class[c]}
                             for c in sorted(machines_by_class) if machines_by_class[c] > 0},
        # per subscription: machines, missing critical/security, stale, never assessed (the dashboard's chart)
        "bySubscription": {s: {k: c[k] for k in ("machines", "missingCriticalOrSecurity", "stale", "neverAssessed")}
                           for s, c in sorted(by_subscription.items()) if c["machines"] > 0},
        "mostWidespreadMissingPatches": [
            {"patch": key, "classification": classification, "machines": n}
            for (key, classification), n in sorted(((k, n) for k, n in widespread.items() if n > 0),
                                                   key=lambda kv: (-kv[1], kv[0]))[:top]
        ],
        "mostWidespreadMissingPatchesApproximate": tally.approximate,
        # Linux machines whose latest assessment lists updates classified Other, and how many such updates
        "linuxOtherUpdates": {"machines": linux_other["machines"], "updates": linux_other["updates"],
                              **({"note": LINUX_OTHER_NOTE} if linux_other["machines"] > 0 else {})},
    }


def subscription_tally(fleet: FleetStore, subscription_id: str, *, now: datetime, freshness_hours: int) -> Tally:
    """The sums over one subscription's machines: from its rollup (one query), or, if it has none usable, from its
    rows, building the rollup from them on the way (if a machine write races the build, the build is dropped and
    the next view tries again; this answer, from the rows, is exact either way). A rollup that had to drop
    per-patch counts is built again from the rows once it is REBUILD_APPROXIMATE_AFTER old, so the counts it
    lost since do not drift for longer than that."""
    shards = fleet.read_rollup(subscription_id)
    cutoff = cutoff_minute(now, freshness_hours)
    approximate_until = iso(now - REBUILD_APPROXIMATE_AFTER)
    if len(shards) == SHARDS and all(is_built(e) and str(e.get("collapsedBefore") or "") <= cutoff
                                     and not (e.get("approximate") and str(e.get("builtAt")) < approximate_until)
                                     for e in shards.values()):
        total = Tally()
        for shard in shards.values():
            total.add(shard_tally(shard))
        return total
    rows = fleet.query_machines(subscription_id, select=COLUMNS)
    if rows or shards:  # not for a subscription nobody has seen: a GET of any GUID would write rows
        fleet.build_rollup(subscription_id, shards, rows, now, freshness_hours)
    return Tally.of_rows(rows)


def compliance_view(fleet: FleetStore, *, subscription_id: str | None, resource_group: str | None,
                    os_type: str | None, machine_kind: str | None, now: datetime, freshness_hours: int,
                    top: int = 10) -> dict[str, Any]:
    """GET /api/compliance: one subscription or all of them from their rollups (subscriptions in parallel),
    or one resource group from its rows. Same report as compliance_report over the rows in scope."""
    if resource_group:
        rows = load_snapshot(fleet, subscription_id=subscription_id, resource_group=resource_group,
                             os_type=os_type, machine_kind=machine_kind)
        return compliance_report(rows, now=now, freshness_hours=freshness_hours, top=top)
    subscriptions = [subscription_id] if subscription_id else fleet.subscriptions()
    total = Tally()
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(subscriptions)))) as pool:
        for tally in pool.map(lambda s: subscription_tally(fleet, s, now=now, freshness_hours=freshness_hours),
                              subscriptions):
            total.add(tally)
    return render_report(total, now=now, freshness_hours=freshness_hours, top=top, os_type=os_type,
                         machine_kind=machine_kind)
