"""Per-subscription rollups of the fleet snapshot: what the compliance view needs, without reading every machine.

Layout: rows of MACHINES_TABLE in the subscription's own partition, RowKey "~rollup|<shard>" (a resource group
name cannot hold "~", so no machine's "rg|vm" key is one). A machine counts in shard crc32(its RowKey) % SHARDS;
SHARDS rows per subscription spread the writers' ETag contention and keep each row small.

Exactness: a rollup row sits in the same partition as the machines it counts, so every write of a machine row is
one entity group transaction with its shard's update, both ETag-conditional; the shard's change is the difference
between that machine's contribution before and after, computed from the row as read. A duplicated delivery reads
the row it already wrote: the difference is zero and the shard is not written (no double count, no contention).
A shard is "built" when a complete pass over the subscription's rows wrote it (`version` = ROLLUP_VERSION, all
SHARDS rows in one transaction, conditional on every shard's ETag as read *before* the rows were read); until
then a writer whose difference is not zero touches its (unbuilt) shard instead, so a pass racing it fails its
transaction and is not kept. See FleetStore.build_rollup.

Time: a machine is `assessed` if its assessedAt falls in or after the minute in which now - freshnessHours falls,
`stale` before it (whole minutes; see `cutoff_minute`). So a shard keeps a histogram of assessedAt by minute
("YYYY-MM-DDTHH:MM") and the view sums the buckets. Buckets older than `collapse_before` (now - freshnessHours
- COLLAPSE_MARGIN at the write) are merged into the bucket "", which only ever holds stale machines; the row
records that minute as `collapsedBefore`, and a view whose cutoff is earlier (freshnessHours raised since) cannot
use the rollup and reads the rows instead. The histogram therefore holds at most (freshnessHours + 1) x 60 buckets
per group, whatever the number of machines.

Size: a shard's JSON is split over properties d0, d1, ... of at most CHUNK_CHARS characters (a property holds
64 KiB of UTF-16) and the whole row is kept under MAX_SHARD_BYTES (an entity holds 1 MiB) and, as sent, under
MAX_SHARD_WIRE_BYTES (SHARDS of them plus machine rows must fit a 4 MiB transaction). Only the per-patch counts
(mostWidespreadMissingPatches) are unbounded in principle: if they do not fit, the least widespread entries are
dropped and the shard is marked `approximate` (its later counts for a dropped patch start again from zero) until
it is built again. Everything else is exact.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.core.clock import iso
from shared.core.ids import machine_kind_of
from shared.core.states import MachineState
from shared.storage.limits import MAX_PROPERTY_BYTES, entity_bytes

ROLLUP_PREFIX = "~rollup|"
SHARDS = 4
ROLLUP_VERSION = 1  # bump when the contribution of a row changes: older shards then count as unbuilt
CHUNK_CHARS = MAX_PROPERTY_BYTES // 2 - 2_768  # 30,000 < 32,768 UTF-16 units: a property holds 64 KiB
MAX_SHARD_BYTES = 800 * 1024  # entity_bytes (UTF-16): under the 1 MiB entity limit
# The same row as sent (JSON, UTF-8: more than UTF-16 for non-Latin names): SHARDS of them and a quarter MiB of
# machine rows (fleet_store._chunks) stay inside the 4 MiB of one transaction.
MAX_SHARD_WIRE_BYTES = 850 * 1024
COLLAPSE_MARGIN = timedelta(hours=1)  # room for clock skew between the writing host and the viewing host
FAILED_ATTEMPTS = {MachineState.FAILED.value, MachineState.TIMED_OUT.value}
# Per-machine counters; "assessed"/"stale" come from the histogram (they depend on the time of the view).
COUNTERS = ("machines", "neverAssessed", "failed", "notRunning", "notConnected", "missingCriticalOrSecurity",
            "rebootPending", "upToDate")

GroupKey = tuple[str, str, str]  # (subscription from the resource id, osType as stored, machine kind)


def shard_of(row_key: str) -> int:
    """The shard a machine row counts in (stable across processes: crc32, not hash())."""
    return zlib.crc32(row_key.encode()) % SHARDS


def shard_key(shard: int) -> str:
    return f"{ROLLUP_PREFIX}{shard}"


def is_rollup_key(row_key: str) -> bool:
    return row_key.startswith(ROLLUP_PREFIX)


def cutoff_minute(now: datetime, freshness_hours: int) -> str:
    """"YYYY-MM-DDTHH:MM": machines assessed in or after this minute are `assessed`, before it `stale`."""
    return iso(now - timedelta(hours=freshness_hours))[:16]


def collapse_before(now: datetime, freshness_hours: int) -> str:
    """The minute before which a write may merge histogram buckets: stale for every later view."""
    return iso(now - timedelta(hours=freshness_hours) - COLLAPSE_MARGIN)[:16]


@dataclass
class Group:
    """The sums over one group of machines. `at`: assessed machines by assessedAt minute ("" = collapsed)."""
    n: Counter[str] = field(default_factory=Counter)
    at: Counter[str] = field(default_factory=Counter)
    patches_by_class: Counter[str] = field(default_factory=Counter)
    machines_by_class: Counter[str] = field(default_factory=Counter)
    widespread: Counter[tuple[str, str]] = field(default_factory=Counter)

    def counters(self) -> Iterable[Counter[Any]]:
        return (self.n, self.at, self.patches_by_class, self.machines_by_class, self.widespread)

    def add(self, other: Group, sign: int = 1) -> None:
        for mine, theirs in zip(self.counters(), other.counters(), strict=True):
            for key, value in theirs.items():
                mine[key] += sign * value

    def drop_zeros(self, *, clamp: bool) -> None:
        """Remove zero entries (and, with `clamp`, negative ones: a sum of machines is never negative)."""
        for counter in self.counters():
            for key in [k for k, v in counter.items() if v == 0 or (clamp and v < 0)]:
                del counter[key]

    def empty(self) -> bool:
        return not any(self.counters())


@dataclass
class Tally:
    """Sums over some machines of one or more subscriptions, by group; what a rollup shard stores."""
    groups: dict[GroupKey, Group] = field(default_factory=dict)
    collapsed_before: str = ""  # "" = no bucket merged
    approximate: bool = False  # per-patch counts were dropped to fit (see the module docstring)

    def group(self, key: GroupKey) -> Group:
        return self.groups.setdefault(key, Group())

    def add_row(self, row: Mapping[str, Any], sign: int = 1) -> None:
        """Count one machine row (sign -1: uncount it), exactly as the compliance report does."""
        resource_id = str(row.get("resourceId") or "")
        parts = resource_id.split("/")
        key = (parts[2].lower() if len(parts) > 2 else "", str(row.get("osType") or ""), machine_kind_of(resource_id))
        g = Group()
        g.n["machines"] = 1
        assessed_at = str(row.get("assessedAt") or "")
        if not assessed_at:
            g.n["neverAssessed"] = 1
        else:
            g.at[assessed_at[:16]] = 1
        if row.get("lastAttemptState") in FAILED_ATTEMPTS:
            g.n["failed"] = 1
        if str(row.get("powerState") or "running") not in ("running", "unknown"):
            g.n["notRunning"] = 1
        if str(row.get("agentStatus") or "Connected") != "Connected":  # an Arc machine's agent (shared/arm/hybrid)
            g.n["notConnected"] = 1
        if assessed_at:  # patch facts only from a successful assessment
            critical = int(row.get("criticalAndSecurityPatchCount") or 0)
            if critical > 0:
                g.n["missingCriticalOrSecurity"] = 1
            if row.get("rebootPending"):
                g.n["rebootPending"] = 1
            if critical + int(row.get("otherPatchCount") or 0) == 0:
                g.n["upToDate"] = 1
            for classification, count in json.loads(row.get("classificationCounts") or "{}").items():
                g.patches_by_class[classification] += int(count)
                g.machines_by_class[classification] += 1
            for patch, classification in json.loads(row.get("missingPatches") or "[]"):
                g.widespread[(patch, classification)] += 1
        self.group(key).add(g, sign)

    def add(self, other: Tally, sign: int = 1) -> None:
        for key, g in other.groups.items():
            self.group(key).add(g, sign)
        self.approximate = self.approximate or other.approximate
        self.collapsed_before = max(self.collapsed_before, other.collapsed_before)

    def drop_zeros(self, *, clamp: bool) -> Tally:
        for key in list(self.groups):
            self.groups[key].drop_zeros(clamp=clamp)
            if self.groups[key].empty():
                del self.groups[key]
        return self

    def collapse(self, before: str) -> Tally:
        """Merge the histogram buckets of minutes before `before` (or before the minute merged already, if later)
        into the bucket "". A change subtracting a machine from a merged minute lands in "" too."""
        self.collapsed_before = max(before, self.collapsed_before)
        for g in self.groups.values():
            for m in [m for m in g.at if m and m < self.collapsed_before]:
                g.at[""] += g.at.pop(m)
        return self

    @classmethod
    def of_rows(cls, rows: Iterable[Mapping[str, Any]]) -> Tally:
        tally = cls()
        for row in rows:
            tally.add_row(row)
        return tally

    # -- storage -------------------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({
            "collapsedBefore": self.collapsed_before, "approximate": self.approximate,
            "groups": [{"key": list(k), "n": g.n, "at": g.at, "pc": g.patches_by_class, "mc": g.machines_by_class,
                        "w": sorted([p, c, v] for (p, c), v in g.widespread.items())}
                       for k, g in sorted(self.groups.items())]}, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Tally:
        doc = json.loads(text)
        tally = cls(collapsed_before=str(doc.get("collapsedBefore") or ""), approximate=bool(doc.get("approximate")))
        for item in doc.get("groups") or []:
            sub, os_type, kind = item["key"]
            tally.groups[(sub, os_type, kind)] = Group(
                Counter(item["n"]), Counter(item["at"]), Counter(item["pc"]), Counter(item["mc"]),
                Counter({(p, c): int(v) for p, c, v in item["w"]}))
        return tally


def shard_entity(partition: str, shard: int, tally: Tally, *, built_at: str,
                 max_bytes: int = MAX_SHARD_BYTES) -> dict[str, Any]:
    """The row that stores `tally` as shard `shard` of `partition`, within `max_bytes` (see the module docstring:
    per-patch counts are dropped, least widespread first, and the shard marked approximate, if they do not fit)."""
    while True:
        text = tally.to_json()
        entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": shard_key(shard), "version": ROLLUP_VERSION,
                                  "builtAt": built_at, "collapsedBefore": tally.collapsed_before,
                                  "approximate": tally.approximate, "chunks": 0}
        for i in range(0, len(text), CHUNK_CHARS):
            entity[f"d{i // CHUNK_CHARS}"] = text[i:i + CHUNK_CHARS]
            entity["chunks"] += 1
        size = entity_bytes(entity)
        if size <= max_bytes and len(json.dumps(entity).encode()) <= MAX_SHARD_WIRE_BYTES:
            return entity
        totals: Counter[tuple[str, str]] = Counter()
        for g in tally.groups.values():
            totals.update(g.widespread)
        if not totals:
            raise ValueError(f"rollup shard {shard} of {partition} takes {size} bytes without any per-patch count")
        tally.approximate = True
        # The least widespread tenth (last in the report's order: most machines first, then by name), measure again.
        last_first = sorted(totals, key=lambda pc: (-totals[pc], pc), reverse=True)
        for patch in last_first[: max(1, len(last_first) // 10)]:
            for g in tally.groups.values():
                g.widespread.pop(patch, None)


def is_built(entity: Mapping[str, Any] | None) -> bool:
    return entity is not None and entity.get("version") == ROLLUP_VERSION


def shard_tally(entity: Mapping[str, Any]) -> Tally:
    """The Tally a built shard row holds."""
    return Tally.from_json("".join(str(entity.get(f"d{i}") or "") for i in range(int(entity.get("chunks") or 0))))


def delta(before: Iterable[Mapping[str, Any] | None], after: Iterable[Mapping[str, Any] | None]) -> Tally:
    """What changes in the sums when the rows `before` become `after` (None: no row); empty if nothing."""
    change = Tally()
    for row in before:
        if row is not None:
            change.add_row(row, -1)
    for row in after:
        if row is not None:
            change.add_row(row)
    return change.drop_zeros(clamp=False)
