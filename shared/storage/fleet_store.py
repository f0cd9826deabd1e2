"""The fleet as PatchPilot last saw it: each machine's latest assessment, and its history.

Layout (why: the compliance view and the per-machine view read partitions, never the whole table):
    MACHINES_TABLE     PK subscriptionId, RK "rg|vm"   latest snapshot: inventory (OS, power state, when last
                                                        listed) + latest assessment summary + last attempt.
                                                        A compliance query for a subscription is one partition;
                                                        for a resource group, a RowKey range inside it.
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
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.core.clock import iso, utcnow
from shared.core.errors import StorageContentionError
from shared.core.ids import VmRef
from shared.core.settings import Settings
from shared.storage.clients import StorageAccount
from shared.storage.run_store import batches, key_range

SUBSCRIPTIONS_PARTITION = "~subscriptions"
INVERTED_BASE = 10**13  # milliseconds since 1970 stay below this until the year 2286
MAX_MISSING_KEPT = 400  # per machine in the snapshot: enough for "most widespread"
MAX_MISSING_CHARS = 30_000  # a string property holds 64 KiB of UTF-16 (32,768 characters)
SUMMARY = "summary"
PATCH = "patch"

KEYS = ("PartitionKey", "RowKey")

def inverted_key(when: datetime) -> str:
    """Fixed-width, newest-first RowKey prefix."""
    return f"{INVERTED_BASE - int(when.timestamp() * 1000):013d}"


def machine_row_key(vm: VmRef) -> str:
    """`rg|name` for a VM (as before Arc), `rg|name|hybridmachines` for an Arc machine: the machine key
    without its subscription, so a resource group stays one RowKey range holding both kinds."""
    return vm.key.split("|", 1)[1]


def patch_key(patch: dict[str, Any]) -> str:
    """How a patch is counted across the fleet: its KB for Windows, its package name for Linux."""
    kb = str(patch.get("kbId") or "").strip()
    if kb:
        return kb.upper() if kb.upper().startswith("KB") else f"KB{kb}"
    return str(patch.get("name") or patch.get("patchId") or "unknown")


def patch_classification(patch: dict[str, Any]) -> str:
    classes = patch.get("classifications") or []
    return str(classes[0]) if classes else "Unclassified"


class FleetStore:
    """Table access for inventory, latest assessments and history; `ops` counts round-trips."""

    def __init__(self, settings: Settings, account: StorageAccount) -> None:
        self.machines: TableClient = account.table(settings.machines_table)
        self.history: TableClient = account.table(settings.assessments_table)
        self.ops: Counter[str] = Counter()

    # -- inventory and latest snapshot -----------------------------------------------------------
    def upsert_machines(self, machines: Iterable[tuple[VmRef, dict[str, Any]]]) -> None:
        """Merge inventory facts (seen when listing) into snapshots, keeping assessment fields."""
        entities = [{"PartitionKey": vm.subscription_id, "RowKey": machine_row_key(vm), **columns}
                    for vm, columns in machines]
        ordered = sorted(entities, key=lambda e: e["PartitionKey"])
        for batch in batches(ordered):
            self.ops["machineBatch"] += 1
            self.machines.submit_transaction([("upsert", e, {"mode": UpdateMode.MERGE}) for e in batch])

    def note_subscriptions(self, subscription_ids: Iterable[str]) -> None:
        rows = [{"PartitionKey": SUBSCRIPTIONS_PARTITION, "RowKey": s.lower()} for s in sorted(set(subscription_ids))]
        for batch in batches(rows):
            self.ops["subscriptionBatch"] += 1
            self.machines.submit_transaction([("upsert", e, {"mode": UpdateMode.MERGE}) for e in batch])

    def subscriptions(self) -> list[str]:
        self.ops["listSubscriptions"] += 1
        rows = self.machines.query_entities("PartitionKey eq @partition",
                                            parameters={"partition": SUBSCRIPTIONS_PARTITION}, select=["RowKey"])
        return [r["RowKey"] for r in rows]

    def get_machine(self, vm: VmRef) -> dict[str, Any] | None:
        self.ops["getMachine"] += 1
        try:
            entity = self.machines.get_entity(vm.subscription_id, machine_row_key(vm))
        except ResourceNotFoundError:
            return None
        return {**entity, "etag": entity.metadata["etag"]}

    def record_attempt(self, vm: VmRef, changes: dict[str, Any], *, assessed_at: str | None) -> bool:
        """Merge an assessment outcome into the snapshot, unless a newer assessment is already there.

        Assessments of one machine can finish out of order (a scheduled sweep and an on-demand one);
        the snapshot keeps the newest, conditionally on the ETag it read. Returns False if skipped.
        """
        for _ in range(5):
            current = self.get_machine(vm)
            if assessed_at and current and str(current.get("assessedAt") or "") > assessed_at:
                return False
            entity = {"PartitionKey": vm.subscription_id, "RowKey": machine_row_key(vm), **changes}
            self.ops["writeMachine"] += 1
            try:
                if current is None:  # first sight: it exists now, so a later listing may remove it
                    self.machines.create_entity({"lastSeenAt": iso(utcnow()), **entity})
                else:
                    self.machines.update_entity(entity, mode=UpdateMode.MERGE, etag=current["etag"],
                                                match_condition=MatchConditions.IfNotModified)
                return True
            except (ResourceExistsError, ResourceModifiedError):
                continue  # someone wrote in between: read again and decide again
        raise StorageContentionError(f"the snapshot of {vm.resource_id} kept changing; retrying the step")

    def forget_machine(self, vm: VmRef) -> None:
        """ARM says the VM does not exist: it leaves the compliance view (its history stays)."""
        self.ops["deleteMachines"] += 1
        self.machines.delete_entity(vm.subscription_id, machine_row_key(vm))

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
        result: list[dict[str, Any]] = []
        for page in self.machines.query_entities(query, parameters=parameters, results_per_page=1000,
                                                 select=select).by_page():
            self.ops["queryMachines"] += 1
            result.extend(dict(e) for e in page)
        return result

    def remove_unseen(self, subscription_id: str, resource_group: str | None, *, listed_since: str) -> int:
        """After a complete listing of a scope: machines no listing has seen since it began are gone.

        By time, not by run: another listing of the same scope running at the same time (an on-demand
        assessment during a sweep) stamps the machines it sees too, and they must stay.
        """
        gone = self.query_machines(subscription_id, resource_group, seen_before=listed_since)
        for batch in batches({"PartitionKey": e["PartitionKey"], "RowKey": e["RowKey"]} for e in gone):
            self.ops["deleteMachines"] += 1
            self.machines.submit_transaction([("delete", e) for e in batch])
        return len(gone)

    # -- history ---------------------------------------------------------------------------------
    def save_history(self, vm: VmRef, when: datetime, activity_id: str, summary: dict[str, Any],
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
            self.ops["historyBatch"] += 1
            self.history.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in batch])
        return row_key

    def prune_history(self, vm: VmRef, older_than: datetime) -> int:
        """Delete this machine's history rows recorded before `older_than` (one partition query)."""
        self.ops["pruneQuery"] += 1
        old = [{"PartitionKey": e["PartitionKey"], "RowKey": e["RowKey"]}
               for e in self.history.query_entities("PartitionKey eq @machine and at lt @before",
                                                    parameters={"machine": vm.key, "before": iso(older_than)},
                                                    select=["PartitionKey", "RowKey"])]
        for batch in batches(old):
            self.ops["pruneBatch"] += 1
            self.history.submit_transaction([("delete", e) for e in batch])
        return len(old)

    def list_history(self, vm: VmRef, top: int) -> list[dict[str, Any]]:
        """Summaries, newest first (keys are inverted time), each with its `historyKey` for history_patches."""
        self.ops["listHistory"] += 1
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

    def history_patches(self, vm: VmRef, history_key: str) -> list[dict[str, Any]]:
        self.ops["historyPatches"] += 1
        rows = sorted(self.history.query_entities("PartitionKey eq @machine and RowKey gt @low and RowKey lt @high",
                                                  parameters={"machine": vm.key, "low": history_key + "-p",
                                                              "high": history_key + "-q"}),
                      key=lambda e: e["RowKey"])
        return [json.loads(e["detail"]) for e in rows]
