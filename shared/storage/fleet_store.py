"""The fleet as PatchPilot last saw it: each machine's latest assessment, and its history.

Layout (why: the compliance view and the per-machine view read partitions, never the whole table):
    MACHINES_TABLE     PK subscriptionId, RK "rg|vm"   latest snapshot: inventory (OS, power state, when last
                                                        listed) + latest assessment summary + last attempt.
                                                        A compliance query for a subscription is one partition;
                                                        for a resource group, a RowKey range inside it.
                       PK subscriptionId, RK "~rollup|<shard>"   the subscription's compliance sums
                                                        (shared/storage/fleet_rollup.py), kept in the same entity
                                                        group transaction as every write of a machine row
                       PK "~subscriptions", RK subId   every subscription ever seen, so "all subscriptions" is
                                                        one small partition read plus one query per subscription
    ASSESSMENTS_TABLE  PK "sub|rg|vm", RK inverted time    history summaries, newest first
                       PK "sub|rg|vm", RK "<inv>-pNNNN"    that assessment's availablePatches, one row each
                                                        (a Windows result can exceed the 64 KiB property limit)

Retention is enforced when a machine's new result is written: one query inside that machine's
partition finds rows past ASSESSMENT_RETENTION_DAYS, deleted in batches. No timer scans the table.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from shared.core.clock import iso, utcnow
from shared.core.errors import StorageContentionError
from shared.core.ids import MachineRef
from shared.core.settings import StorageSettings
from shared.core.telemetry import table_counter
from shared.storage.clients import StorageAccount
from shared.storage.fleet_rollup import (
    ROLLUP_PREFIX,
    SHARDS,
    Tally,
    collapse_before,
    delta,
    is_built,
    is_rollup_key,
    shard_entity,
    shard_key,
    shard_of,
    shard_tally,
)
from shared.storage.run_store import batches, key_range

log = logging.getLogger(__name__)

SUBSCRIPTIONS_PARTITION = "~subscriptions"
INVERTED_BASE = 10**13  # milliseconds since 1970 stay below this until the year 2286
MAX_MISSING_KEPT = 400  # per machine in the snapshot: enough for "most widespread"
MAX_MISSING_CHARS = 30_000  # a string property holds 64 KiB of UTF-16 (32,768 characters)
SUMMARY = "summary"
PATCH = "patch"

KEYS = ("PartitionKey", "RowKey")
WRITE_ATTEMPTS = 10  # conditional read-modify-write rounds before StorageContentionError (the message is retried)
MACHINES_PER_TRANSACTION = 100 - SHARDS  # a transaction holds 100 operations: the machines and their shards
CONFLICTS = (404, 409, 412)  # a row appeared, vanished or changed since it was read: read again
IF_MATCH = MatchConditions.IfNotModified

def inverted_key(when: datetime) -> str:
    """Fixed-width, newest-first RowKey prefix."""
    return f"{INVERTED_BASE - int(when.timestamp() * 1000):013d}"


def machine_row_key(vm: MachineRef) -> str:
    """`rg|name` for a VM (as before Arc), `rg|name|hybridmachines` for an Arc machine: the machine key
    without its subscription, so a resource group stays one RowKey range holding both kinds."""
    return vm.key.split("|", 1)[1]


def patch_key(patch: dict[str, Any]) -> str:
    """How a patch is counted across the fleet: its KB for Windows, its package name for Linux."""
    kb = str(patch.get("kbId") or "").strip()
    if kb:
        return kb.upper() if kb.upper().startswith("KB") else f"KB{kb}"
    return str(patch.get("name") or patch.get("patchId") or "unknown")


class FleetStore:
    """Table access for inventory, latest assessments and history; `ops` counts round-trips."""

    def __init__(self, storage: StorageSettings, account: StorageAccount, *, freshness_hours: int) -> None:
        self.machines: TableClient = account.table(storage.machines_table)
        self.history: TableClient = account.table(storage.assessments_table)
        self.freshness_hours = freshness_hours
        self._readers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fleet-read")  # threads made on use
        self._count = table_counter("fleet")  # Table round-trips, by operation (OpenTelemetry)

    # -- inventory and latest snapshot -----------------------------------------------------------
    # Every write below is a conditional read-modify-write of the machine rows *and* of the rollup shards they
    # count in, as one entity group transaction (same partition): the rollups never disagree with the rows.
    def upsert_machines(self, machines: Iterable[tuple[MachineRef, dict[str, Any]]]) -> None:
        """Merge inventory facts (seen when listing) into snapshots, keeping assessment fields."""
        by_partition: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        for vm, columns in machines:  # a machine listed twice: the later facts win, as two upserts would
            row_key = machine_row_key(vm)
            merged = {**by_partition[vm.subscription_id].get(row_key, {}), **columns}
            by_partition[vm.subscription_id][row_key] = {"PartitionKey": vm.subscription_id, "RowKey": row_key,
                                                         **merged}
        for partition, rows in sorted(by_partition.items()):
            for chunk in _chunks([rows[k] for k in sorted(rows)]):
                self._merge_rows(partition, chunk)

    def _merge_rows(self, partition: str, entities: list[dict[str, Any]]) -> None:
        for _ in range(WRITE_ATTEMPTS):
            found = self._read_rows(partition, [e["RowKey"] for e in entities]
                                    + [shard_key(s) for s in {shard_of(e["RowKey"]) for e in entities}])
            ops: list[Any] = []
            changes: dict[int, Tally] = defaultdict(Tally)
            for entity in entities:
                before = found.get(entity["RowKey"])
                if before is None:
                    ops.append(("create", entity))
                    after = entity
                else:
                    ops.append(("update", entity, {"mode": UpdateMode.MERGE, "etag": before["etag"],
                                                   "match_condition": IF_MATCH}))
                    after = {**before, **entity}
                changes[shard_of(entity["RowKey"])].add(delta([before], [after]))
            self._count("machineBatch")
            if self._commit(partition, ops, changes, found):
                return
        raise StorageContentionError(f"the snapshot of subscription {partition} kept changing; retrying the step")

    def note_subscriptions(self, subscription_ids: Iterable[str]) -> None:
        rows = [{"PartitionKey": SUBSCRIPTIONS_PARTITION, "RowKey": s.lower()} for s in sorted(set(subscription_ids))]
        for batch in batches(rows):
            self._count("subscriptionBatch")
            self.machines.submit_transaction([("upsert", e, {"mode": UpdateMode.MERGE}) for e in batch])

    def subscriptions(self) -> list[str]:
        self._count("listSubscriptions")
        rows = self.machines.query_entities("PartitionKey eq @partition",
                                            parameters={"partition": SUBSCRIPTIONS_PARTITION}, select=["RowKey"])
        return [r["RowKey"] for r in rows]

    def get_machine(self, vm: MachineRef) -> dict[str, Any] | None:
        self._count("getMachine")
        try:
            entity = self.machines.get_entity(vm.subscription_id, machine_row_key(vm))
        except ResourceNotFoundError:
            return None
        return {**entity, "etag": entity.metadata["etag"]}

    def record_attempt(self, vm: MachineRef, changes: dict[str, Any], *, assessed_at: str | None) -> bool:
        """Merge an assessment outcome into the snapshot, unless a newer assessment is already there.

        Assessments of one machine can finish out of order (a scheduled sweep and an on-demand one);
        the snapshot keeps the newest, conditionally on the ETag it read. Returns False if skipped.
        """
        partition, row_key = vm.subscription_id, machine_row_key(vm)
        shard = shard_of(row_key)
        for _ in range(WRITE_ATTEMPTS):
            found = self._read_rows(partition, [row_key, shard_key(shard)])  # the row and its shard, in parallel
            current = found.get(row_key)
            if assessed_at and current and str(current.get("assessedAt") or "") > assessed_at:
                return False
            entity = {"PartitionKey": partition, "RowKey": row_key, **changes}
            if current is None:  # first sight: it exists now, so a later listing may remove it
                entity = {"lastSeenAt": iso(utcnow()), **entity}
                op: Any = ("create", entity)
                after = entity
            else:
                op = ("update", entity, {"mode": UpdateMode.MERGE, "etag": current["etag"],
                                         "match_condition": IF_MATCH})
                after = {**current, **changes}
            self._count("writeMachine")
            if self._commit(partition, [op], {shard: delta([current], [after])}, found):
                return True
        raise StorageContentionError(f"the snapshot of {vm.resource_id} kept changing; retrying the step")

    def forget_machine(self, vm: MachineRef) -> None:
        """ARM says the VM does not exist: it leaves the compliance view (its history stays)."""
        partition, row_key = vm.subscription_id, machine_row_key(vm)
        shard = shard_of(row_key)
        for _ in range(WRITE_ATTEMPTS):
            found = self._read_rows(partition, [row_key, shard_key(shard)])
            current = found.get(row_key)
            if current is None:
                return
            self._count("deleteMachines")
            op = ("delete", {"PartitionKey": partition, "RowKey": row_key},
                  {"etag": current["etag"], "match_condition": IF_MATCH})
            if self._commit(partition, [op], {shard: delta([current], [None])}, found):
                return
        raise StorageContentionError(f"the snapshot of {vm.resource_id} kept changing; retrying the step")

    def query_machines(self, subscription_id: str, resource_group: str | None = None,
                       *, os_type: str | None = None, seen_before: str | None = None,
                       select: list[str] | None = None) -> list[dict[str, Any]]:
        """One partition (a subscription), optionally one resource group's RowKey range in it, one OS type,
        or only machines no listing has seen since `seen_before` (an ISO time)."""
        query = "PartitionKey eq @subscription"
        parameters: dict[str, Any] = {"subscription": subscription_id.lower()}
        if resource_group:
            query += " and RowKey ge @low and RowKey lt @high"
            parameters["low"], parameters["high"] = key_range(resource_group.lower() + "|")
        if os_type:
            query += " and osType eq @os"
            parameters["os"] = os_type
        if seen_before:
            query += " and lastSeenAt lt @seen"
            parameters["seen"] = seen_before
        if select is not None and "RowKey" not in select:
            select = [*select, "RowKey"]  # to tell the rollup rows in the partition from machines
        result: list[dict[str, Any]] = []
        for page in self.machines.query_entities(query, parameters=parameters, results_per_page=1000,
                                                 select=select).by_page():
            self._count("queryMachines")
            result.extend(dict(e) for e in page if not is_rollup_key(str(e.get("RowKey") or "")))
        return result

    def remove_unseen(self, subscription_id: str, resource_group: str | None, *, listed_since: str) -> int:
        """After a complete listing of a scope: machines no listing has seen since it began are gone.

        By time, not by run: another listing of the same scope running at the same time (an on-demand
        assessment during a sweep) stamps the machines it sees too, and they must stay.
        """
        gone = self.query_machines(subscription_id, resource_group, seen_before=listed_since, select=["RowKey"])
        removed = 0
        partition = subscription_id.lower()
        for chunk in _chunks(gone):
            keys = [e["RowKey"] for e in chunk]
            for _ in range(WRITE_ATTEMPTS):  # each round reads the rows again: one may have been seen since
                found = self._read_rows(partition, keys + [shard_key(s) for s in {shard_of(k) for k in keys}])
                rows = [found[k] for k in keys if k in found and "lastSeenAt" in found[k]
                        and str(found[k]["lastSeenAt"]) < listed_since]
                changes: dict[int, Tally] = defaultdict(Tally)
                for row in rows:
                    changes[shard_of(row["RowKey"])].add(delta([row], [None]))
                ops = [("delete", {"PartitionKey": partition, "RowKey": r["RowKey"]},
                        {"etag": r["etag"], "match_condition": IF_MATCH}) for r in rows]
                self._count("deleteMachines")
                if not ops or self._commit(partition, ops, changes, found):
                    removed += len(rows)
                    break
            else:
                raise StorageContentionError(f"the snapshot of subscription {partition} kept changing; "
                                             "retrying the step")
        return removed

    # -- rollups (shared/storage/fleet_rollup.py) ---------------------------------------------------------
    def read_rollup(self, subscription_id: str) -> dict[int, dict[str, Any]]:
        """The subscription's rollup shard rows by shard number, each with its `etag` (one query)."""
        low, high = key_range(ROLLUP_PREFIX)
        shards: dict[int, dict[str, Any]] = {}
        for page in self.machines.query_entities("PartitionKey eq @subscription and RowKey ge @low and RowKey lt @high",
                                                 parameters={"subscription": subscription_id.lower(), "low": low,
                                                             "high": high}).by_page():
            self._count("readRollup")
            for e in page:
                suffix = str(e["RowKey"])[len(ROLLUP_PREFIX):]
                if suffix.isdigit() and int(suffix) < SHARDS:
                    shards[int(suffix)] = {**e, "etag": e.metadata["etag"]}
        return shards

    def build_rollup(self, subscription_id: str, read: Mapping[int, Mapping[str, Any]],
                     rows: Iterable[Mapping[str, Any]], now: datetime, freshness_hours: int) -> bool:
        """Write every shard of the subscription from `rows` (each with its RowKey), all in one transaction
        conditional on the shard rows `read` (read_rollup, called *before* the rows were read). A machine write
        in between changed a shard, so this fails (False) rather than keep sums that miss that write.
        `freshness_hours`: the view's, so a view after the setting was raised builds a rollup it can use."""
        partition = subscription_id.lower()
        tallies = [Tally() for _ in range(SHARDS)]
        for row in rows:
            tallies[shard_of(str(row["RowKey"]))].add_row(row)
        ops: list[Any] = []
        for shard, tally in enumerate(tallies):
            entity = shard_entity(partition, shard, tally.collapse(collapse_before(now, freshness_hours))
                                  .drop_zeros(clamp=False), built_at=iso(now))
            current = read.get(shard)
            ops.append(("create", entity) if current is None else
                       ("update", entity, {"mode": UpdateMode.REPLACE, "etag": current["etag"],
                                           "match_condition": IF_MATCH}))
        self._count("buildRollup")
        try:
            self.machines.submit_transaction(ops)
        except TableTransactionError as exc:
            if exc.status_code not in CONFLICTS:
                raise
            return False
        return True

    def _read_rows(self, partition: str, row_keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The rows of `partition` with these RowKeys (absent ones left out), each with its `etag`: point reads,
        in parallel. Not one query with `RowKey eq a or RowKey eq b`: Azure runs that as a scan of the whole
        partition (learn.microsoft.com/azure/storage/tables/table-storage-design-for-query)."""
        keys = sorted(set(row_keys))

        def read(key: str) -> dict[str, Any] | None:
            self._count("readRow")
            try:
                entity = self.machines.get_entity(partition, key)
            except ResourceNotFoundError:
                return None
            return {**entity, "etag": entity.metadata["etag"]}

        rows = self._readers.map(read, keys) if len(keys) > 1 else map(read, keys)
        return {key: row for key, row in zip(keys, rows, strict=True) if row is not None}

    def _commit(self, partition: str, machine_ops: list[Any], changes: Mapping[int, Tally],
                found: Mapping[str, Mapping[str, Any]]) -> bool:
        """One transaction: `machine_ops` and the shard updates that count `changes`. False when a row changed
        since it was read: the caller reads again (no pause: a function does not sleep; a writer that keeps
        losing ends in StorageContentionError and its queue message is retried later)."""
        ops = list(machine_ops)
        now = utcnow()
        for shard, change in sorted(changes.items()):
            if not change.drop_zeros(clamp=False).groups:
                continue  # the machines count as before (a repeated delivery, a listing): the shard stays
            current = found.get(shard_key(shard))
            if is_built(current):
                assert current is not None
                tally = shard_tally(current)
                tally.add(change)  # then merge old minutes, so that uncounting from a merged minute lands in ""
                tally.collapse(collapse_before(now, self.freshness_hours))
                if not tally.approximate and any(v < 0 for g in tally.groups.values() for c in g.counters()
                                                 for v in c.values()):
                    log.warning("rollup shard %s of %s would count below zero: a machine row was written without "
                                "it (ROLLUP_VERSION?)", shard, partition)
                tally.drop_zeros(clamp=True)
                ops.append(("update", shard_entity(partition, shard, tally, built_at=str(current.get("builtAt"))),
                            {"mode": UpdateMode.REPLACE, "etag": current["etag"], "match_condition": IF_MATCH}))
            else:  # no complete pass yet: touch the shard so that a pass racing this write fails
                touch = {"PartitionKey": partition, "RowKey": shard_key(shard), "touchedAt": iso(now)}
                ops.append(("create", touch) if current is None else
                           ("update", touch, {"mode": UpdateMode.MERGE, "etag": current["etag"],
                                              "match_condition": IF_MATCH}))
        try:
            self.machines.submit_transaction(ops)
        except TableTransactionError as exc:
            if exc.status_code not in CONFLICTS:
                raise
            self._count("writeConflict")  # the caller reads again and retries (bounded), as run_store does
            return False
        return True

    # -- history ---------------------------------------------------------------------------------
    def save_history(self, vm: MachineRef, when: datetime, activity_id: str, summary: dict[str, Any],
                     patches: list[dict[str, Any]]) -> str:
        """Write one assessment (summary + every patch); the same result always gets the same keys,
        so a duplicated delivery rewrites identical rows. Returns the summary's RowKey."""
        row_key = f"{inverted_key(when)}-{(activity_id or 'none')[:8]}"
        partition = vm.key
        entities: list[dict[str, Any]] = [{
            "PartitionKey": partition, "RowKey": row_key, "kind": SUMMARY, "at": iso(when),
            "patchCount": len(patches), **summary,
        }]
        entities += [{"PartitionKey": partition, "RowKey": f"{row_key}-p{i:04d}", "kind": PATCH, "at": iso(when),
                      "detail": json.dumps(p, separators=(",", ":"))} for i, p in enumerate(patches)]
        for batch in batches(entities):
            self._count("historyBatch")
            self.history.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in batch])
        return row_key

    def prune_history(self, vm: MachineRef, older_than: datetime) -> int:
        """Delete this machine's history rows recorded before `older_than` (one partition query)."""
        self._count("pruneQuery")
        old = [{"PartitionKey": e["PartitionKey"], "RowKey": e["RowKey"]}
               for e in self.history.query_entities("PartitionKey eq @machine and at lt @before",
                                                    parameters={"machine": vm.key, "before": iso(older_than)},
                                                    select=["PartitionKey", "RowKey"])]
        for batch in batches(old):
            self._count("pruneBatch")
            self.history.submit_transaction([("delete", e) for e in batch])
        return len(old)

    def list_history(self, vm: MachineRef, top: int) -> list[dict[str, Any]]:
        """Summaries, newest first (keys are inverted time), each with its `historyKey` for history_patches."""
        self._count("listHistory")
        result: list[dict[str, Any]] = []
        pages = self.history.query_entities("PartitionKey eq @machine and kind eq @kind",
                                            parameters={"machine": vm.key, "kind": SUMMARY},
                                            results_per_page=top).by_page()
        for page in pages:  # a filtered query may answer an empty page with a continuation token
            result.extend({"historyKey": e["RowKey"], **{k: v for k, v in e.items() if k not in KEYS}}
                          for e in page)
            if len(result) >= top:
                break
        return result[:top]

    def history_patches(self, vm: MachineRef, history_key: str) -> list[dict[str, Any]]:
        self._count("historyPatches")
        rows = sorted(self.history.query_entities("PartitionKey eq @machine and RowKey gt @low and RowKey lt @high",
                                                  parameters={"machine": vm.key, "low": history_key + "-p",
                                                              "high": history_key + "-q"}),
                      key=lambda e: e["RowKey"])
        return [json.loads(e["detail"]) for e in rows]


def _chunks(entities: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Machine rows for one transaction each: room left for the shards, and for the shards' bytes."""
    current: list[dict[str, Any]] = []
    size = 0
    for entity in entities:
        entity_size = len(json.dumps(entity, default=str))
        if current and (len(current) == MACHINES_PER_TRANSACTION or size + entity_size > 256 * 1024):
            yield current
            current, size = [], 0
        current.append(entity)
        size += entity_size
    if current:
        yield current
