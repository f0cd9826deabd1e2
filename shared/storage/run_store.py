"""Runs, their machines ("targets") and per-patch results in Azure Table storage.

Layout (why: every read the API and workers make is a point read or one-partition query):
    RUNS_TABLE     PK "run",  RK runId          one entity per run (runIds sort newest first)
                   PK "idem", RK sha256(key)    Idempotency-Key claims → runId + request fingerprint
                   PK runId,  RK "machines-NNNN"    the request's machine ids, 100 per entity, written in
                                                    one transaction so accepting 1,000 machines is 1 round-trip
                   PK runId,  RK "scope-NNN" / "pins-NNNN" / "subs-NNNN"   discovery scopes, a rollout's pinned
                                                    Linux packages, its machines per subscription
                   PK runId,  RK "pollround|<sub>"  the run's chain of poll rounds for one subscription:
                                                    `seq`, `at`, `polling`, `wanted` ("pollround": a
                                                    whole-run chain of before; shared/runs/poll_rounds.py)
    TARGETS_TABLE  PK runId,  RK machine key    one entity per machine: state, seq, operation result
                   PK runId,  RK "~counts-NN"   the run's machine counts (shared.core.counters), in SHARDS
                                                rows: a machine is counted in shard sha256(key) mod SHARDS.
                                                "~" sorts after every machine key, so machine queries take
                                                `RowKey lt "~"` and the counters are one range query.
    PATCHES_TABLE  PK runId|machine key, RK patchId    PatchInstallationDetail rows

Writes of many entities go in transactions of ≤ 100 entities of one PartitionKey (< 4 MiB),
which is Azure's rule even though Azurite does not enforce the PartitionKey part.

Counters: a write that changes a machine's counted columns (shared.core.counters.COUNTED_COLUMNS: state,
status, wave, admitted...) is one entity-group transaction of the machine's row and its counter shard, both
ETag-conditional. So the counts are exact under at-least-once delivery: a duplicate step that loses the
machine's ETag changes neither, and no count is ever added twice or lost. The cost: such a transition reads
its shard (1 round-trip) and then writes both (1 transaction) where a plain merge took 1; a shard that
changed meanwhile (another machine of the same shard) is read again and the transaction retried. Writes
of other columns (polls, retries) stay one merge. Creating and planning many machines reads all shards once
and writes a transaction per ≤ 99 machines of one shard. Runs stored before counters (no `countersVersion`
on the run) are counted from their rows instead (`run_counters`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import secrets
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from shared.core.clock import iso, utcnow
from shared.core.counters import COUNTED_COLUMNS, RunCounters, count_rows, counts_delta, machine_counts
from shared.core.errors import ConflictError, StorageContentionError, TargetsChangedError
from shared.core.records import (
    THROTTLED_AT_COLUMN,
    HealthCheck,
    MachineRecord,
    PollRoundRow,
    RunRecord,
    RunSpec,
    ScopeListing,
)
from shared.core.settings import StorageSettings
from shared.core.states import TERMINAL_STATES
from shared.core.telemetry import table_counter
from shared.storage.clients import StorageAccount
from shared.storage.limits import check_entity

RUN_PARTITION = "run"
IDEMPOTENCY_PARTITION = "idem"
MAX_BATCH_ENTITIES = 100
CHUNK = 100  # machines per chunk entity: one chunk becomes one target transaction
MAX_BATCH_BYTES = 3 * 1024 * 1024  # margin under the 4 MiB transaction limit
SHARDS = 16  # counter rows per run: concurrent transitions of one run race on a 16th of them each
COUNTERS_PREFIX = "~counts-"
MACHINES_BELOW = "~"  # every machine key sorts below: MachineRef.key starts with the subscription id (hex digits)
COUNTERS_VERSION = 1  # on a run entity: its counter rows are maintained (runs before have none)
SHARD_ATTEMPTS = 10  # a transition re-reads its shard this often when other machines' writes won it
SHARD_CACHE_ENTRIES = 64 * SHARDS  # counter shards kept per process (RunStore._shards): 64 runs' worth
# A thread waits this long for its shard's turn (RunStore._shard_turn), then goes alone, ETag-fenced as before: a
# transaction takes about 0.1 s, but a holder's call can hang in the SDK's retries (minutes under throttling).
SHARD_LOCK_SECONDS = 2.0
PRECONDITION_FAILED = ("UpdateConditionNotSatisfied", "ConditionNotMet")
POLL_ROUND_KEY = "pollround"  # a run's round row; "pollround|<subscription>" per subscription (round_key)


def batches(entities: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Group entities into valid transactions: one PartitionKey, ≤ 100 entities, well under 4 MiB."""
    current: list[dict[str, Any]] = []
    size = 0
    partition: str | None = None
    for entity in entities:
        entity_size = len(json.dumps(entity, default=str))
        if current and (
            entity["PartitionKey"] != partition
            or len(current) == MAX_BATCH_ENTITIES
            or size + entity_size > MAX_BATCH_BYTES
        ):
            yield current
            current, size = [], 0
        current.append(entity)
        partition = entity["PartitionKey"]
        size += entity_size
    if current:
        yield current


def machine_chunk_entities(run_id: str, resource_ids: list[str]) -> list[dict[str, Any]]:
    """A run's machine list as entities of CHUNK ids each.

    ensure_ascii=False: a resource group name may be 90 non-ASCII letters, which escaped as \\uXXXX would
    take 6 characters each; kept as they are, 100 of the longest ids stay under a property's 64 KiB.
    """
    return [
        {"PartitionKey": run_id, "RowKey": f"machines-{i // CHUNK:04d}",
         "machines": json.dumps(resource_ids[i:i + CHUNK], separators=(",", ":"), ensure_ascii=False)}
        for i in range(0, len(resource_ids), CHUNK)
    ]


def merge_conditionally(client: TableClient, entity: dict[str, Any], etag: str) -> str:
    """Merge `entity` if the stored row's ETag is still `etag`; returns the new ETag.

    Raises ConflictError when another writer got there first (or the row is gone: If-Match on a deleted row
    is 404): the caller must stop, or read the row again."""
    try:
        meta = client.update_entity(entity, mode=UpdateMode.MERGE, etag=etag,
                                    match_condition=MatchConditions.IfNotModified)
    except (ResourceModifiedError, ResourceNotFoundError) as exc:
        raise ConflictError(f"{entity['PartitionKey']}/{entity['RowKey']} changed since it was read") from exc
    return str(meta["etag"])


def round_key(subscription: str) -> str:
    """The RowKey of a run's chain of poll rounds for `subscription` ("": the whole run, as before chains were
    per subscription)."""
    return f"{POLL_ROUND_KEY}|{subscription}" if subscription else POLL_ROUND_KEY


def _machines_of(subscription: str) -> tuple[str, str]:
    """The RowKey range of a run's machines in `subscription` (MachineRef.key starts with "sub|"); "": all."""
    return key_range(f"{subscription}|") if subscription else ("", MACHINES_BELOW)


def key_range(prefix: str) -> tuple[str, str]:
    """(low, high) so that `RowKey ge low and RowKey lt high` selects the keys starting with `prefix`."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def first_match(client: TableClient, query: str, parameters: dict[str, Any]) -> bool:
    """Does any entity match? Follows continuation tokens: Table storage may answer a filtered query with
    an empty page and a token (a partition scan that ran out of time), which is not "no match"."""
    for page in client.query_entities(query, parameters=parameters, results_per_page=1,
                                      select=["RowKey"]).by_page():
        if any(True for _ in page):
            return True
    return False


def counter_shard(key: str) -> str:
    """The RowKey of the counter row that counts the machine with MachineRef.key `key` ("~counts-00".."~counts-15").
    sha256, not hash(): the shard must be the same in every process."""
    return f"{COUNTERS_PREFIX}{int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], 'big') % SHARDS:02d}"


@dataclass
class Shard:
    """One counter row as read: its counts and ETag ("" while it is not stored yet)."""

    counts: Counter[str]
    etag: str = ""


def _shard(entity: Mapping[str, Any]) -> Shard:
    return Shard(Counter(json.loads(str(entity.get("counts") or "{}"))), _etag(entity))


def _columns(entity: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey")}


def _etag(entity: Any) -> str:
    metadata = getattr(entity, "metadata", None) or {}
    return str(metadata.get("etag") or "")


def to_machine(entity: Mapping[str, Any]) -> MachineRecord:
    return MachineRecord(etag=_etag(entity), columns=_columns(entity), run_id=str(entity["PartitionKey"]),
                         key=str(entity["RowKey"]))


def to_run(entity: Mapping[str, Any]) -> RunRecord:
    return RunRecord(etag=_etag(entity), columns=_columns(entity), run_id=str(entity["RowKey"]))


def to_scope(entity: Mapping[str, Any]) -> ScopeListing:
    return ScopeListing(etag=_etag(entity), columns=_columns(entity), run_id=str(entity["PartitionKey"]),
                        index=int(str(entity["RowKey"]).removeprefix("scope-")))


def machine_entity(record: MachineRecord, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"PartitionKey": record.run_id, "RowKey": record.key, **(record.columns if changes is None else changes)}


class RunStore:
    """All Table access for runs; `ops` counts round-trips so their cost is measurable."""

    def __init__(self, storage: StorageSettings, account: StorageAccount) -> None:
        self.runs: TableClient = account.table(storage.runs_table)
        self.targets: TableClient = account.table(storage.targets_table)
        self.patches: TableClient = account.table(storage.patches_table)
        self._count = table_counter("runs")  # Table round-trips, by operation (OpenTelemetry)
        # Counter shards as this process last wrote or read them: a transition starts from the cached shard, not a
        # read, and only a lost ETag race (another writer moved it) reads it again. Bounded: newest runs kept.
        self._shards: OrderedDict[tuple[str, str], Shard] = OrderedDict()
        self._shards_lock = threading.Lock()
        # Threads of this process take turns on a shard (_submit_counted), so only other processes make them lose
        # its ETag race. Bounded like the cache.
        self._shard_locks: OrderedDict[tuple[str, str], threading.Lock] = OrderedDict()

    # -- idempotency ---------------------------------------------------------------------------
    def claim_idempotency_key(self, key: str, fingerprint: str, run_id: str) -> dict[str, Any]:
        """Insert the key's claim, or return the existing one (whose runId/fingerprint then decide)."""
        entity = {
            "PartitionKey": IDEMPOTENCY_PARTITION,
            "RowKey": hashlib.sha256(key.encode()).hexdigest(),
            "runId": run_id,
            "fingerprint": fingerprint,
        }
        self._count("idempotency")
        try:
            self.runs.create_entity(entity)
            return entity
        except ResourceExistsError:
            self._count("idempotency")
            return dict(self.runs.get_entity(IDEMPOTENCY_PARTITION, entity["RowKey"]))

    def release_idempotency_claim(self, key: str, run_id: str) -> bool:
        """Delete the key's claim if it still names `run_id` (a request that failed before its run existed).
        True if this call deleted it."""
        self._count("idempotency")
        row_key = hashlib.sha256(key.encode()).hexdigest()
        try:
            claim = self.runs.get_entity(IDEMPOTENCY_PARTITION, row_key)
            if claim["runId"] == run_id:
                self.runs.delete_entity(IDEMPOTENCY_PARTITION, row_key, etag=claim.metadata["etag"],
                                        match_condition=MatchConditions.IfNotModified)
                return True
        except (ResourceNotFoundError, ResourceModifiedError):
            pass
        return False

    def delete_run_rows(self, run_id: str) -> None:
        """The machine-list chunks and scope rows of a run that was never created."""
        keys = [{"PartitionKey": e["PartitionKey"], "RowKey": e["RowKey"]}
                for e in self.runs.query_entities("PartitionKey eq @run", parameters={"run": run_id},
                                                  select=["PartitionKey", "RowKey"])]
        for batch in batches(keys):
            self._count("deleteRows")
            self.runs.submit_transaction([("delete", e) for e in batch])

    def find_idempotency_claim(self, key: str) -> dict[str, Any] | None:
        self._count("idempotency")
        try:
            return dict(self.runs.get_entity(IDEMPOTENCY_PARTITION, hashlib.sha256(key.encode()).hexdigest()))
        except ResourceNotFoundError:
            return None

    def dead_letter(self, record: dict[str, Any]) -> None:
        """An event or hook PatchPilot gave up delivering, kept for a person to look at."""
        self._count("deadLetter")
        now = utcnow()
        self.runs.create_entity({"PartitionKey": "deadletter",
                                 "RowKey": f"{10**13 - int(now.timestamp() * 1000):013d}-{secrets.token_hex(4)}",
                                 "at": iso(now), **record})

    # -- runs ----------------------------------------------------------------------------------
    def save_machine_chunks(self, run_id: str, resource_ids: list[str]) -> None:
        """The run's machine list, CHUNK ids per entity; upserts, so a retried request is harmless."""
        for batch in batches(machine_chunk_entities(run_id, resource_ids)):
            self._count("machineChunks")
            self.runs.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in batch])

    def machine_chunks(self, run_id: str) -> list[list[str]]:
        self._count("machineChunks")
        low, high = key_range("machines-")
        rows = self.runs.query_entities("PartitionKey eq @run and RowKey ge @low and RowKey lt @high",
                                        parameters={"run": run_id, "low": low, "high": high})
        return [json.loads(e["machines"]) for e in sorted(rows, key=lambda e: e["RowKey"])]

    def create_targets(self, records: list[MachineRecord]) -> bool:
        """Create these targets of one run, counted in its counter rows; False if some existed already
        (those are left as they are, and not counted again).

        Never an upsert: a second dispatch must not reset machines that already started. Machines are
        created per counter shard, ≤ 99 of them and their shard row per transaction (all or nothing), after
        one read of the run's shard rows. When a machine exists (an earlier attempt, or the same VM from a
        scope listing and a machine list), that batch's others are created one by one, each with its count.
        Raises StorageContentionError when a shard kept changing (SHARD_ATTEMPTS).
        """
        if not records:
            return True
        run_id = records[0].run_id
        shards = self._read_shards(run_id)
        by_shard: dict[str, list[MachineRecord]] = {}
        for record in records:
            by_shard.setdefault(counter_shard(record.key), []).append(record)
        all_new = True
        existing: set[str] | None = None  # the run's machine keys, listed once if some batch met one
        for shard_key, group in sorted(by_shard.items()):
            for start in range(0, len(group), MAX_BATCH_ENTITIES - 1):
                batch = group[start:start + MAX_BATCH_ENTITIES - 1]
                delta = count_rows(r.columns for r in batch)
                self._count("targetBatch")
                try:
                    shards[shard_key] = self._submit_counted(
                        run_id, shard_key, shards.get(shard_key, Shard(Counter())),
                        [("create", machine_entity(r)) for r in batch], delta)[1]
                    continue
                except TableTransactionError as exc:
                    if getattr(exc, "error_code", None) != "EntityAlreadyExists":
                        raise
                all_new = False
                if existing is None:
                    self._count("listTargets")
                    existing = {str(e["RowKey"]) for e in self.targets.query_entities(
                        "PartitionKey eq @run and RowKey lt @below",
                        parameters={"run": run_id, "below": MACHINES_BELOW}, select=["RowKey"])}
                shards[shard_key] = self._create_one_by_one(run_id, shard_key, shards.get(shard_key, Shard(Counter())),
                                                            [r for r in batch if r.key not in existing])
        return all_new

    def _create_one_by_one(self, run_id: str, shard_key: str, shard: Shard, batch: list[MachineRecord]) -> Shard:
        """Each machine with its count in a transaction of its own; one that exists is left (and not counted).
        `shard`: as last known (read again if it changed). Returns it as now known."""
        for record in batch:
            self._count("targetCreate")
            try:
                shard = self._submit_counted(run_id, shard_key, shard, [("create", machine_entity(record))],
                                             machine_counts(record.columns))[1]
            except TableTransactionError as exc:
                if getattr(exc, "error_code", None) != "EntityAlreadyExists":
                    raise
        return shard

    def check_storable_run(self, run_id: str, columns: Mapping[str, Any]) -> None:
        """ValidationError (400) naming the field if Table storage would refuse the run entity."""
        check_entity({"PartitionKey": RUN_PARTITION, "RowKey": run_id, **columns},
                     targets={"RowKey": "runId", "idempotencyKey": "Idempotency-Key",
                             "parameters": str(columns.get("operation") or "installPatches")})

    def create_run(self, run_id: str, columns: Mapping[str, Any]) -> bool:
        """False if the run already exists (a retried request that had got this far). The run is marked
        `countersVersion`: its machines are counted in counter rows (run_counters)."""
        self._count("createRun")
        try:
            self.runs.create_entity({"PartitionKey": RUN_PARTITION, "RowKey": run_id, **columns,
                                     "countersVersion": COUNTERS_VERSION})
            return True
        except ResourceExistsError:
            return False

    def get_run(self, run_id: str) -> RunRecord | None:
        self._count("getRun")
        try:
            entity = self.runs.get_entity(RUN_PARTITION, run_id)
        except ResourceNotFoundError:
            return None
        return to_run(entity)

    def get_run_spec(self, run_id: str) -> RunSpec | None:
        """The immutable part of a run, as a record (one read)."""
        run = self.get_run(run_id)
        if run is None:
            return None
        return RunSpec(run.get("operation") or "installPatches", run.parameters,
                       bool(run.get("scopeCount")), str(run.get("maintenanceConfiguration") or ""),
                       str(run.get("windowEnd") or ""), bool(run.get("rollout")), str(run.get("createdAt") or ""),
                       run.counted, HealthCheck.from_spec((run.rollout or {}).get("healthCheck")),
                       str(run.get("planId") or ""))

    def update_run(self, run_id: str, changes: dict[str, Any], etag: str | None = None) -> str | None:
        """Merge `changes`; with `etag`, only if the run is unchanged since read (else ConflictError).
        Returns the new ETag of a conditional merge."""
        self._count("updateRun")
        entity = {"PartitionKey": RUN_PARTITION, "RowKey": run_id, **changes}
        if etag:
            return merge_conditionally(self.runs, entity, etag)
        self.runs.update_entity(entity, mode=UpdateMode.MERGE)
        return None

    def list_runs(self, top: int, after: str | None = None) -> tuple[list[RunRecord], str | None]:
        """Runs newest first, `top` at a time, after the run id `after` (the last of the previous page).

        Returns the page and the `after` for the next one (None at the end). The cursor is a RowKey the
        caller saw, not the service's continuation headers: those are opaque and differ between Azure
        and Azurite, so a token passed through could not be checked; a run id can (runs_api).
        """
        query = "PartitionKey eq @partition" + (" and RowKey gt @after" if after else "")
        parameters = {"partition": RUN_PARTITION, "after": after or ""}
        self._count("listRuns")
        rows = [to_run(e) for e in itertools.islice(
            self.runs.query_entities(query, parameters=parameters, results_per_page=top + 1), top + 1)]
        more = len(rows) > top
        page = rows[:top]
        return page, (page[-1].run_id if more and page else None)

    # -- discovery (runs whose machines come from listing scopes) ------------------------------
    def create_scopes(self, run_id: str, scopes: list[tuple[str, dict[str, Any]]], now: str) -> None:
        """One row per scope (and its dynamic-scope filter): which page comes next, fenced by its ETag."""
        rows = [{"PartitionKey": run_id, "RowKey": f"scope-{i:03d}", "scope": scope, "page": 0, "nextLink": "",
                 "filter": json.dumps(flt, separators=(",", ":")) if flt else "",
                 "done": False, "listed": 0, "attempts": 0, "nextActionAt": now, "startedAt": now}
                for i, (scope, flt) in enumerate(scopes)]
        for batch in batches(rows):
            self._count("scopeBatch")
            self.runs.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in batch])

    def get_scope(self, run_id: str, index: int) -> ScopeListing | None:
        self._count("getScope")
        try:
            entity = self.runs.get_entity(run_id, f"scope-{index:03d}")
        except ResourceNotFoundError:
            return None
        return to_scope(entity)

    def update_scope(self, row: ScopeListing, changes: dict[str, Any]) -> ScopeListing:
        """Conditional on the ETag read: a duplicated page message loses here and stops (ConflictError)."""
        self._count("updateScope")
        entity = {"PartitionKey": row.run_id, "RowKey": f"scope-{row.index:03d}", **changes}
        return row.with_changes(changes, merge_conditionally(self.runs, entity, row.etag))

    def list_scopes(self, run_id: str, *, unfinished_due_before: str | None = None) -> list[ScopeListing]:
        """A run's scope rows; with `unfinished_due_before`, only those not done whose next page is overdue."""
        self._count("listScopes")
        low, high = key_range("scope-")
        query = "PartitionKey eq @run and RowKey ge @low and RowKey lt @high"
        parameters: dict[str, Any] = {"run": run_id, "low": low, "high": high}
        if unfinished_due_before is not None:
            query += " and done eq false and nextActionAt lt @due"
            parameters["due"] = unfinished_due_before
        return [to_scope(e) for e in self.runs.query_entities(query, parameters=parameters)]

    def list_active_runs(self) -> list[RunRecord]:
        """Runs not yet closed (the sweeper's work list)."""
        return [to_run(e) for e in self.runs.query_entities("PartitionKey eq @partition and active eq true",
                                                          parameters={"partition": RUN_PARTITION})]


    # -- targets -------------------------------------------------------------------------------
    def page_targets(self, run_id: str, top: int, *, state: str | None = None,
                     after: str | None = None) -> tuple[list[MachineRecord], str | None]:
        """One page of a run's machines in key order, `top` at a time, after the key `after` (the last of the
        previous page), optionally only those in `state`. Returns the page and the `after` for the next one
        (None at the end): a cursor the caller saw, as list_runs uses."""
        query = "PartitionKey eq @run and RowKey lt @below" + (" and RowKey gt @after" if after else "") + \
            (" and state eq @state" if state else "")
        parameters: dict[str, Any] = {"run": run_id, "below": MACHINES_BELOW, "after": after or "",
                                      "state": state or ""}
        self._count("pageTargets")
        rows = [to_machine(e) for e in itertools.islice(
            self.targets.query_entities(query, parameters=parameters, results_per_page=top + 1), top + 1)]
        more = len(rows) > top
        page = rows[:top]
        return page, (page[-1].key if more and page else None)

    def get_target(self, run_id: str, key: str) -> MachineRecord | None:
        """The machine with its ETag, for conditional updates."""
        self._count("getTarget")
        try:
            entity = self.targets.get_entity(run_id, key)
        except ResourceNotFoundError:
            return None
        return to_machine(entity)

    def list_targets(self, run_id: str, *, state: str | None = None, seq: int | None = None,
                     unfinished_due_before: str | None = None, admitted: bool | None = None,
                     wave: int | None = None, unfinished: bool = False, due_from: str | None = None,
                     due_before: str | None = None, throttled_since: str | None = None, select: list[str] | None = None,
                     top: int | None = None) -> list[MachineRecord]:
        """A run's targets in key order (iter_targets), at most `top` of them."""
        return list(itertools.islice(self.iter_targets(
            run_id, state=state, seq=seq, unfinished_due_before=unfinished_due_before, admitted=admitted,
            wave=wave, unfinished=unfinished, due_from=due_from, due_before=due_before, throttled_since=throttled_since,
            select=select, per_page=top), top))

    def iter_targets(self, run_id: str, *, state: str | None = None, seq: int | None = None,
                     unfinished_due_before: str | None = None, admitted: bool | None = None,
                     wave: int | None = None, unfinished: bool = False, due_from: str | None = None,
                     due_before: str | None = None, rank_from: int | None = None, rank_before: int | None = None,
                     throttled_since: str | None = None, select: list[str] | None = None,
                     per_page: int | None = None) -> Iterator[MachineRecord]:
        """A run's targets in key order, read page by page (≤ `per_page`, ≤ 1000) as the caller goes on:
        optionally only those in `state`, at `seq`, not in a terminal state (`unfinished`), unfinished with
        their next action due before an ISO time, (not) admitted by the rollout controller, in rollout
        `wave` (set on every machine when its rollout is planned), with `nextActionAt` in
        [due_from, due_before) (ISO times), with `startRank` (a rollout machine's place in its wave's start
        order, set with `wave`) in [rank_from, rank_before), or whose start was last refused with 429
        (`throttledAt`) at or after `throttled_since` (an ISO time).
        `select` keeps big columns (armCalls, error details) off the wire when a caller needs few; the counted
        columns (COUNTED_COLUMNS) always come, so a record read this way can be written back conditionally
        (update_target, merge_targets)."""
        query = "PartitionKey eq @run and RowKey lt @below"
        parameters: dict[str, Any] = {"run": run_id, "below": MACHINES_BELOW}
        if unfinished or unfinished_due_before is not None:
            query += "".join(f" and state ne @t{i}" for i in range(len(TERMINAL_STATES)))
            parameters.update({f"t{i}": s for i, s in enumerate(sorted(TERMINAL_STATES))})
        for clause, name, value in (("state eq @state", "state", state), ("seq eq @seq", "seq", seq),
                                    ("nextActionAt lt @due", "due", unfinished_due_before),
                                    ("admitted eq @admitted", "admitted", admitted),
                                    ("nextActionAt ge @dueFrom", "dueFrom", due_from),
                                    ("nextActionAt lt @dueBefore", "dueBefore", due_before),
                                    ("wave eq @wave", "wave", wave),
                                    ("startRank ge @rankFrom", "rankFrom", rank_from),
                                    ("startRank lt @rankBefore", "rankBefore", rank_before),
                                    (f"{THROTTLED_AT_COLUMN} ge @throttledSince", "throttledSince", throttled_since)):
            if value is not None:
                query += f" and {clause}"
                parameters[name] = value
        select = None if select is None else sorted({*select, *COUNTED_COLUMNS, "PartitionKey", "RowKey"})
        for page in self.targets.query_entities(query, parameters=parameters,
                                                results_per_page=min(per_page or 1000, 1000),
                                                select=select).by_page():
            self._count("listTargets")
            yield from (to_machine(e) for e in page)

    def merge_targets(self, changes: list[tuple[MachineRecord, dict[str, Any]]]) -> None:
        """Merges in transactions per counter shard (≤ 99 machines and their shard row), each conditional
        on the ETag of the record it was read as: if any machine changed since, its batch is refused and
        TargetsChangedError says to decide again (earlier batches stay written, counted). Changes that
        move no count are merged in plain transactions of ≤ 100. StorageContentionError: a shard kept
        changing."""
        if not changes:
            return
        run_id = changes[0][0].run_id
        counted = [(r, c, counts_delta(r.columns, {**r.columns, **c})) for r, c in changes]
        plain = [(r, c) for r, c, d in counted if not d]
        by_shard: dict[str, list[tuple[MachineRecord, dict[str, Any], dict[str, int]]]] = {}
        for item in (i for i in counted if i[2]):
            by_shard.setdefault(counter_shard(item[0].key), []).append(item)
        etags = {(r.run_id, r.key): r.etag for r, _ in changes}

        def update(entity: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
            etag = etags[(entity["PartitionKey"], entity["RowKey"])]
            return ("update", entity, {"mode": UpdateMode.MERGE, "etag": etag,
                                       "match_condition": MatchConditions.IfNotModified})
        try:
            for batch in batches(machine_entity(r, c) for r, c in plain):
                self._count("targetMerge")
                self.targets.submit_transaction([update(entity) for entity in batch])
            shards = self._read_shards(run_id) if by_shard else {}
            for shard_key, group in sorted(by_shard.items()):
                for start in range(0, len(group), MAX_BATCH_ENTITIES - 1):
                    batch_items = group[start:start + MAX_BATCH_ENTITIES - 1]
                    delta: Counter[str] = Counter()
                    for _, _, d in batch_items:
                        delta.update(d)
                    self._count("targetMerge")
                    shards[shard_key] = self._submit_counted(
                        run_id, shard_key, shards.get(shard_key, Shard(Counter())),
                        [update(machine_entity(r, c)) for r, c, _ in batch_items], delta)[1]
        except TableTransactionError as exc:
            if getattr(exc, "error_code", None) in PRECONDITION_FAILED:
                raise TargetsChangedError("a target changed while the rollout controller decided") from exc
            raise

    # -- poll rounds (shared/runs/poll_rounds.py) ---------------------------------------------------
    def get_round(self, run_id: str, subscription: str) -> PollRoundRow:
        """The poll-round row of the run's chain for `subscription` (lower case; "": the whole run);
        PollRoundRow(0, "", None) when it has none yet."""
        self._count("pollRound")
        try:
            entity = self.runs.get_entity(run_id, round_key(subscription))
        except ResourceNotFoundError:
            return PollRoundRow(0, "", None)
        return PollRoundRow(int(entity.get("seq") or 0), str(entity.get("at") or ""), _etag(entity),
                            entity.get("polling") is True, str(entity.get("wanted") or ""))

    def put_round(self, run_id: str, subscription: str, seq: int, at: str, etag: str | None, *,
                  polling: bool = False, wanted: str = "") -> str:
        """Store the chain's round row (PollRoundRow's fields) if it is still as read (`etag`; None: create it) and
        return its new ETag; ConflictError otherwise."""
        self._count("pollRound")
        entity = {"PartitionKey": run_id, "RowKey": round_key(subscription), "seq": seq, "at": at,
                  "polling": polling, "wanted": wanted}
        try:
            if etag is None:
                meta = self.runs.create_entity(entity)
            else:
                meta = self.runs.update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                               match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as exc:
            raise ConflictError(f"the poll rounds of {run_id} changed since read") from exc
        return str(meta.get("etag") or "")

    def due_polls(self, run_id: str, subscription: str, before: str, top: int) -> list[MachineRecord]:
        """Up to `top` Running machines of `subscription` ("": any) whose polls are left to the run's rounds
        (`pollRound`), due at or before `before` (ISO): whole rows, as a step reads them."""
        low, high = _machines_of(subscription)
        query = ("PartitionKey eq @run and RowKey ge @low and RowKey lt @high and state eq @state"
                 " and pollRound eq true and nextActionAt le @before")
        rows: list[MachineRecord] = []
        for page in self.targets.query_entities(query, parameters={"run": run_id, "low": low, "high": high,
                                                                   "state": "Running", "before": before},
                                                results_per_page=min(top, 1000)).by_page():
            self._count("duePolls")
            rows.extend(to_machine(e) for e in page)
            if len(rows) >= top:
                break
        return rows[:top]

    def next_poll_at(self, run_id: str, subscription: str, after: str) -> str | None:
        """The earliest `nextActionAt` after `after` (ISO) of the Running machines of `subscription` ("": any) left
        to the run's rounds, or None when there is none (a query of that one column)."""
        low, high = _machines_of(subscription)
        query = ("PartitionKey eq @run and RowKey ge @low and RowKey lt @high and state eq @state"
                 " and pollRound eq true and nextActionAt gt @after")
        earliest: str | None = None
        for page in self.targets.query_entities(query, parameters={"run": run_id, "low": low, "high": high,
                                                                   "state": "Running", "after": after},
                                                results_per_page=1000, select=["nextActionAt"]).by_page():
            self._count("nextPoll")
            for entity in page:
                due = str(entity.get("nextActionAt") or "")
                if due and (earliest is None or due < earliest):
                    earliest = due
        return earliest

    def merge_polled(self, changes: list[tuple[MachineRecord, dict[str, Any]]]) -> int:
        """Merge each machine's `changes` if its row is unchanged since read, in transactions of ≤ 100 (a round's
        polls of one run: one PartitionKey); changes that move a count go one by one (update_target). A
        transaction one row of which changed is refused whole: its rows are then merged one at a time, and those
        that changed are left as another writer made them. Returns how many were written."""
        written = 0
        plain: list[tuple[MachineRecord, dict[str, Any]]] = []
        single: list[tuple[MachineRecord, dict[str, Any]]] = []
        for record, change in changes:
            (single if counts_delta(record.columns, {**record.columns, **change}) else plain).append((record, change))
        by_key = {r.key: (r, c) for r, c in plain}
        for batch in batches(machine_entity(r, c) for r, c in plain):
            self._count("targetMerge")
            try:
                self.targets.submit_transaction([("update", e, {
                    "mode": UpdateMode.MERGE, "etag": by_key[e["RowKey"]][0].etag,
                    "match_condition": MatchConditions.IfNotModified}) for e in batch])
                written += len(batch)
            except TableTransactionError as exc:
                if getattr(exc, "error_code", None) not in (*PRECONDITION_FAILED, "ResourceNotFound"):
                    raise
                single.extend(by_key[e["RowKey"]] for e in batch)
        for record, change in single:
            try:
                self.update_target(record, change)
                written += 1
            except ConflictError:
                continue  # another delivery moved it first
        return written

    def save_pins(self, run_id: str, packages: list[str]) -> None:
        """The canary's Linux package versions, in rows of up to 500 (well under a property's 64 KiB)."""
        rows = [{"PartitionKey": run_id, "RowKey": f"pins-{i // 500:04d}",
                 "packages": json.dumps(packages[i:i + 500], separators=(",", ":"))}
                for i in range(0, len(packages), 500)]
        for batch in batches(rows):
            self._count("pins")
            self.runs.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in batch])

    def save_subscription_counts(self, run_id: str, counts: Mapping[str, int]) -> None:
        """A rollout's machines per subscription (fixed once planned), in rows of up to 500 subscriptions."""
        items = sorted(counts.items())
        rows = [{"PartitionKey": run_id, "RowKey": f"subs-{i // 500:04d}",
                 "counts": json.dumps(dict(items[i:i + 500]), separators=(",", ":"))}
                for i in range(0, len(items), 500)]
        for batch in batches(rows):
            self._count("subscriptionCounts")
            self.runs.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in batch])

    def subscription_counts(self, run_id: str) -> dict[str, int] | None:
        """What save_subscription_counts stored, or None (a rollout planned before they were saved)."""
        self._count("subscriptionCounts")
        low, high = key_range("subs-")
        rows = list(self.runs.query_entities("PartitionKey eq @run and RowKey ge @low and RowKey lt @high",
                                             parameters={"run": run_id, "low": low, "high": high}))
        if not rows:
            return None
        return {sub: int(n) for row in rows for sub, n in json.loads(row["counts"]).items()}

    def pins(self, run_id: str) -> list[str]:
        self._count("pins")
        low, high = key_range("pins-")
        rows = self.runs.query_entities("PartitionKey eq @run and RowKey ge @low and RowKey lt @high",
                                        parameters={"run": run_id, "low": low, "high": high})
        return [p for row in sorted(rows, key=lambda r: r["RowKey"]) for p in json.loads(row["packages"])]

    def update_target(self, target: MachineRecord, changes: dict[str, Any]) -> MachineRecord:
        """Merge `changes` if nobody changed the machine since it was read; returns it as now stored.

        Raises ConflictError when the ETag no longer matches: another delivery of the same message got
        there first, so the caller must stop (nothing written, nothing counted). A change of a counted
        column also moves the machine's counter shard in the same transaction (a shard read and one
        transaction; the shard alone having changed is read again and retried, then StorageContentionError).
        """
        delta = counts_delta(target.columns, {**target.columns, **changes})
        self._count("updateTarget")
        if not delta:  # no count moves (a poll, a retry): one merge
            return target.with_changes(changes, merge_conditionally(self.targets, machine_entity(target, changes),
                                                                    target.etag))
        op = ("update", machine_entity(target, changes), {"mode": UpdateMode.MERGE, "etag": target.etag,
                                                           "match_condition": MatchConditions.IfNotModified})
        try:
            results, _ = self._submit_counted(target.run_id, counter_shard(target.key), None, [op], delta)
        except TableTransactionError as exc:
            if getattr(exc, "error_code", None) in PRECONDITION_FAILED:
                raise ConflictError(f"{target.run_id}/{target.key} changed since it was read") from exc
            raise
        return target.with_changes(changes, str(results[0]["etag"]))

    def has_unfinished_targets(self, run_id: str) -> bool:
        """One small query: is any machine of the run not yet in a terminal state?"""
        query = "PartitionKey eq @run and RowKey lt @below" + "".join(
            f" and state ne @t{i}" for i in range(len(TERMINAL_STATES)))
        parameters = {"run": run_id, "below": MACHINES_BELOW,
                      **{f"t{i}": s for i, s in enumerate(sorted(TERMINAL_STATES))}}
        self._count("unfinishedCheck")
        return first_match(self.targets, query, parameters)

    # -- counters ------------------------------------------------------------------------------
    def run_counters(self, run_id: str, *, counted: bool) -> RunCounters:
        """The run's machine counts: one range query over its ≤ SHARDS counter rows, summed. A run stored
        before counters existed (`counted` False: RunRecord.counted, RunSpec.counted) is counted from its
        machines' rows instead (every machine read, as before counters)."""
        if not counted:
            return RunCounters(dict(count_rows(self.list_targets(run_id, select=list(COUNTED_COLUMNS)))))
        total: Counter[str] = Counter()
        for shard in self._read_shards(run_id).values():
            total.update(shard.counts)
        return RunCounters({k: n for k, n in total.items() if n})

    def _read_shards(self, run_id: str) -> dict[str, Shard]:
        """Every counter row of the run (one query; ≤ SHARDS rows), by RowKey."""
        self._count("readCounters")
        low, high = key_range(COUNTERS_PREFIX)
        rows = self.targets.query_entities("PartitionKey eq @run and RowKey ge @low and RowKey lt @high",
                                           parameters={"run": run_id, "low": low, "high": high})
        return {str(e["RowKey"]): _shard(e) for e in rows}

    def _read_shard(self, run_id: str, shard_key: str) -> Shard:
        self._count("readCounters")
        try:
            shard = _shard(self.targets.get_entity(run_id, shard_key))
        except ResourceNotFoundError:
            return Shard(Counter())
        self._remember_shard(run_id, shard_key, shard)
        return shard

    def _cached_shard(self, run_id: str, shard_key: str) -> Shard | None:
        with self._shards_lock:
            return self._shards.get((run_id, shard_key))

    def _remember_shard(self, run_id: str, shard_key: str, shard: Shard) -> None:
        with self._shards_lock:
            self._shards[(run_id, shard_key)] = shard
            self._shards.move_to_end((run_id, shard_key))
            while len(self._shards) > SHARD_CACHE_ENTRIES:
                self._shards.popitem(last=False)

    def _forget_shard(self, run_id: str, shard_key: str) -> None:
        with self._shards_lock:
            self._shards.pop((run_id, shard_key), None)

    def shard_unfinished(self, run_id: str, key: str) -> int | None:
        """Unfinished machines in the counter shard of machine `key`, as this process last committed or read it;
        None when it has no copy. Right after this process's own counted write of that machine the copy is exact
        (the write was conditional on the shard's ETag), so a positive count then means the run cannot have
        finished at that moment; whoever later finishes the shard's last machine sees 0 (complete_run_if_done)."""
        shard = self._cached_shard(run_id, counter_shard(key))
        return None if shard is None else RunCounters(dict(shard.counts)).unfinished

    @contextmanager
    def _shard_turn(self, run_id: str, shard_key: str) -> Iterator[None]:
        """This process's threads write a counter shard one at a time (the pacer's rows likewise,
        shared/runs/pacing.py): each starts from the shard the one before it wrote, so they stop losing its
        ETag race to each other, each loss a GET and a second transaction (about 0.9 Table round-trips per
        machine at 10,000 machines with 16 worker threads). A thread that waits SHARD_LOCK_SECONDS (a call
        hanging in the holder) goes ahead alone, fenced by the ETag as before. A caller that read its shard
        before its turn (create_targets, merge_targets) may still lose once to this process's own writes."""
        with self._shards_lock:
            lock = self._shard_locks.get((run_id, shard_key))
            if lock is None:
                lock = self._shard_locks[(run_id, shard_key)] = threading.Lock()
            self._shard_locks.move_to_end((run_id, shard_key))
            if len(self._shard_locks) > SHARD_CACHE_ENTRIES:  # the oldest free locks go; a held one stays
                for key in [k for k, held in self._shard_locks.items() if not held.locked()][
                        :len(self._shard_locks) - SHARD_CACHE_ENTRIES]:
                    del self._shard_locks[key]
        got = lock.acquire(timeout=SHARD_LOCK_SECONDS)
        try:
            yield
        finally:
            if got:
                lock.release()

    def _submit_counted(self, run_id: str, shard_key: str, shard: Shard | None, ops: list[Any],
                        delta: Mapping[str, int]) -> tuple[list[Mapping[str, Any]], Shard]:
        """Submit the machine operations `ops` and the shard's counts moved by `delta` as one transaction,
        the shard write conditional on its ETag as read (`shard`: one with no ETag is created; None: read
        it now, or take this process's copy); returns the transaction's results and the shard as now stored.
        Threads of one process take turns per shard (_shard_turn).

        When only the shard changed since read (the transaction's failed operation is the last), it is
        read again and the transaction retried, SHARD_ATTEMPTS times at most, then StorageContentionError.
        A failed machine operation raises the SDK's TableTransactionError for the caller to interpret."""
        with self._shard_turn(run_id, shard_key):
            return self._submit_counted_now(run_id, shard_key, shard, ops, delta)

    def _submit_counted_now(self, run_id: str, shard_key: str, shard: Shard | None, ops: list[Any],
                            delta: Mapping[str, int]) -> tuple[list[Mapping[str, Any]], Shard]:
        for _ in range(SHARD_ATTEMPTS):
            if shard is None:
                shard = self._cached_shard(run_id, shard_key) or self._read_shard(run_id, shard_key)
            counts = Counter(shard.counts)
            counts.update(delta)
            entity = {"PartitionKey": run_id, "RowKey": shard_key,
                      "counts": json.dumps({k: n for k, n in sorted(counts.items()) if n}, separators=(",", ":"))}
            shard_op = ("update", entity, {"mode": UpdateMode.REPLACE, "etag": shard.etag,
                                           "match_condition": MatchConditions.IfNotModified}) \
                if shard.etag else ("create", entity)
            try:
                results = self.targets.submit_transaction([*ops, shard_op])
            except TableTransactionError as exc:
                self._forget_shard(run_id, shard_key)  # whatever failed, the cached copy is no longer trusted
                if exc.index == len(ops) and getattr(exc, "error_code", None) in (
                        *PRECONDITION_FAILED, "EntityAlreadyExists", "ResourceNotFound"):
                    self._count("counterRetry")
                    shard = self._read_shard(run_id, shard_key)  # another writer counted first: read it again
                    continue
                raise
            written = Shard(counts, str(results[-1]["etag"]))
            self._remember_shard(run_id, shard_key, written)
            return results, written
        raise StorageContentionError(f"the counters {run_id}/{shard_key} kept changing; retrying the step")

    # -- patches -------------------------------------------------------------------------------
    def save_patches(self, run_id: str, key: str, patches: list[dict[str, Any]]) -> None:
        partition = f"{run_id}|{key}"
        entities = []
        for i, patch in enumerate(patches):
            patch_id = str(patch.get("patchId") or f"index-{i}")
            entities.append({
                "PartitionKey": partition,
                "RowKey": patch_id.replace("/", "_").replace("#", "_").replace("?", "_").replace("\\", "_"),
                "order": i,
                "detail": json.dumps(patch, separators=(",", ":")),
            })
        for batch in batches(entities):
            self._count("patchBatch")
            self.patches.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in batch])

    def list_patches(self, run_id: str, key: str) -> list[dict[str, Any]]:
        self._count("listPatches")
        rows = self.patches.query_entities("PartitionKey eq @partition", parameters={"partition": f"{run_id}|{key}"})
        ordered = sorted(rows, key=lambda e: e.get("order", 0))
        return [json.loads(e["detail"]) for e in ordered]
