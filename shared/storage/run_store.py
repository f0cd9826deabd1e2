"""Runs, their machines ("targets") and per-patch results in Azure Table storage.

Layout (why: every read the API and workers make is a point read or one-partition query):
    RUNS_TABLE     PK "run",  RK runId          one entity per run (runIds sort newest first)
                   PK "idem", RK sha256(key)    Idempotency-Key claims → runId + request fingerprint
                   PK runId,  RK "machines-NNNN"    the request's machine ids, 100 per entity, written in
                                                    one transaction so accepting 1,000 machines is 1 round-trip
    TARGETS_TABLE  PK runId,  RK machine key    one entity per machine: state, seq, operation result
    PATCHES_TABLE  PK runId|machine key, RK patchId    PatchInstallationDetail rows

Writes of many entities go in transactions of ≤ 100 entities of one PartitionKey (< 4 MiB),
which is Azure's rule even though Azurite does not enforce the PartitionKey part.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import secrets
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from shared.core.clock import iso, utcnow
from shared.core.errors import ConflictError, TargetsChangedError
from shared.core.records import MachineRecord, RunRecord, RunSpec, ScopeListing
from shared.core.settings import Settings
from shared.core.states import TERMINAL_STATES
from shared.storage.clients import StorageAccount
from shared.storage.limits import check_entity

RUN_PARTITION = "run"
IDEMPOTENCY_PARTITION = "idem"
MAX_BATCH_ENTITIES = 100
CHUNK = 100  # machines per chunk entity: one chunk becomes one target transaction
MAX_BATCH_BYTES = 3 * 1024 * 1024  # margin under the 4 MiB transaction limit


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

    Raises ConflictError when another writer got there first: the caller must stop."""
    try:
        meta = client.update_entity(entity, mode=UpdateMode.MERGE, etag=etag,
                                    match_condition=MatchConditions.IfNotModified)
    except ResourceModifiedError as exc:
        raise ConflictError(f"{entity['PartitionKey']}/{entity['RowKey']} changed since it was read") from exc
    return str(meta["etag"])


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

    def __init__(self, settings: Settings, account: StorageAccount) -> None:
        self.runs: TableClient = account.table(settings.runs_table)
        self.targets: TableClient = account.table(settings.targets_table)
        self.patches: TableClient = account.table(settings.patches_table)
        self.ops: Counter[str] = Counter()

    # -- idempotency ---------------------------------------------------------------------------
    def claim_idempotency_key(self, key: str, fingerprint: str, run_id: str) -> dict[str, Any]:
        """Insert the key's claim, or return the existing one (whose runId/fingerprint then decide)."""
        entity = {
            "PartitionKey": IDEMPOTENCY_PARTITION,
            "RowKey": hashlib.sha256(key.encode()).hexdigest(),
            "runId": run_id,
            "fingerprint": fingerprint,
        }
        self.ops["idempotency"] += 1
        try:
            self.runs.create_entity(entity)
            return entity
        except ResourceExistsError:
            self.ops["idempotency"] += 1
            return dict(self.runs.get_entity(IDEMPOTENCY_PARTITION, entity["RowKey"]))

    def release_idempotency_claim(self, key: str, run_id: str) -> bool:
        """Delete the key's claim if it still names `run_id` (a request that failed before its run existed).
        True if this call deleted it."""
        self.ops["idempotency"] += 1
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
            self.ops["deleteRows"] += 1
            self.runs.submit_transaction([("delete", e) for e in batch])

    def find_idempotency_claim(self, key: str) -> dict[str, Any] | None:
        self.ops["idempotency"] += 1
        try:
            return dict(self.runs.get_entity(IDEMPOTENCY_PARTITION, hashlib.sha256(key.encode()).hexdigest()))
        except ResourceNotFoundError:
            return None

    def dead_letter(self, record: dict[str, Any]) -> None:
        """An event or hook PatchPilot gave up delivering, kept for a person to look at."""
        self.ops["deadLetter"] += 1
        now = utcnow()
        self.runs.create_entity({"PartitionKey": "deadletter",
                                 "RowKey": f"{10**13 - int(now.timestamp() * 1000):013d}-{secrets.token_hex(4)}",
                                 "at": iso(now), **record})

    # -- runs ----------------------------------------------------------------------------------
    def save_machine_chunks(self, run_id: str, resource_ids: list[str]) -> None:
        """The run's machine list, CHUNK ids per entity; upserts, so a retried request is harmless."""
        for batch in batches(machine_chunk_entities(run_id, resource_ids)):
            self.ops["machineChunks"] += 1
            self.runs.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in batch])

    def machine_chunks(self, run_id: str) -> list[list[str]]:
        self.ops["machineChunks"] += 1
        low, high = key_range("machines-")
        rows = self.runs.query_entities("PartitionKey eq @run and RowKey ge @low and RowKey lt @high",
                                        parameters={"run": run_id, "low": low, "high": high})
        return [json.loads(e["machines"]) for e in sorted(rows, key=lambda e: e["RowKey"])]

    def create_targets(self, records: list[MachineRecord]) -> bool:
        """Create one batch of targets; False if some existed already (those are left as they are).

        Never an upsert: a second dispatch must not reset machines that already started. A
        transaction is all-or-nothing, so when one row exists (an earlier attempt, or the same VM
        from a scope listing and a machine list), the rest are created one by one.
        """
        entities = [machine_entity(r) for r in records]
        self.ops["targetBatch"] += 1
        try:
            self.targets.submit_transaction([("create", e) for e in entities])
            return True
        except TableTransactionError as exc:
            if getattr(exc, "error_code", None) != "EntityAlreadyExists":
                raise
        partition = entities[0]["PartitionKey"]
        self.ops["listTargets"] += 1
        existing = {e["RowKey"] for e in self.targets.query_entities(
            "PartitionKey eq @run", parameters={"run": partition}, select=["RowKey"])}
        for entity in (e for e in entities if e["RowKey"] not in existing):
            self.ops["targetCreate"] += 1
            with contextlib.suppress(ResourceExistsError):
                self.targets.create_entity(entity)
        return False

    def check_storable_run(self, run_id: str, columns: Mapping[str, Any]) -> None:
        """ValidationError (400) naming the field if Table storage would refuse the run entity."""
        check_entity({"PartitionKey": RUN_PARTITION, "RowKey": run_id, **columns},
                     targets={"RowKey": "runId", "idempotencyKey": "Idempotency-Key"})

    def create_run(self, run_id: str, columns: Mapping[str, Any]) -> bool:
        """False if the run already exists (a retried request that had got this far)."""
        self.ops["createRun"] += 1
        try:
            self.runs.create_entity({"PartitionKey": RUN_PARTITION, "RowKey": run_id, **columns})
            return True
        except ResourceExistsError:
            return False

    def get_run(self, run_id: str) -> RunRecord | None:
        self.ops["getRun"] += 1
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
        return RunSpec(run.get("operation") or "installPatches", json.loads(run.get("installPatches") or "{}"),
                       bool(run.get("scopeCount")), str(run.get("maintenanceConfiguration") or ""),
                       str(run.get("windowEnd") or ""), bool(run.get("rollout")), str(run.get("createdAt") or ""))

    def update_run(self, run_id: str, changes: dict[str, Any], etag: str | None = None) -> str | None:
        """Merge `changes`; with `etag`, only if the run is unchanged since read (else ConflictError).
        Returns the new ETag of a conditional merge."""
        self.ops["updateRun"] += 1
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
        self.ops["listRuns"] += 1
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
            self.ops["scopeBatch"] += 1
            self.runs.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in batch])

    def get_scope(self, run_id: str, index: int) -> ScopeListing | None:
        self.ops["getScope"] += 1
        try:
            entity = self.runs.get_entity(run_id, f"scope-{index:03d}")
        except ResourceNotFoundError:
            return None
        return to_scope(entity)

    def update_scope(self, row: ScopeListing, changes: dict[str, Any]) -> ScopeListing:
        """Conditional on the ETag read: a duplicated page message loses here and stops (ConflictError)."""
        self.ops["updateScope"] += 1
        entity = {"PartitionKey": row.run_id, "RowKey": f"scope-{row.index:03d}", **changes}
        return row.with_changes(changes, merge_conditionally(self.runs, entity, row.etag))

    def list_scopes(self, run_id: str, *, unfinished_due_before: str | None = None) -> list[ScopeListing]:
        """A run's scope rows; with `unfinished_due_before`, only those not done whose next page is overdue."""
        self.ops["listScopes"] += 1
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
        query = "PartitionKey eq @run" + (" and RowKey gt @after" if after else "") + \
            (" and state eq @state" if state else "")
        parameters: dict[str, Any] = {"run": run_id, "after": after or "", "state": state or ""}
        self.ops["pageTargets"] += 1
        rows = [to_machine(e) for e in itertools.islice(
            self.targets.query_entities(query, parameters=parameters, results_per_page=top + 1), top + 1)]
        more = len(rows) > top
        page = rows[:top]
        return page, (page[-1].key if more and page else None)

    def get_target(self, run_id: str, key: str) -> MachineRecord | None:
        """The machine with its ETag, for conditional updates."""
        self.ops["getTarget"] += 1
        try:
            entity = self.targets.get_entity(run_id, key)
        except ResourceNotFoundError:
            return None
        return to_machine(entity)

    def list_targets(self, run_id: str, *, state: str | None = None, seq: int | None = None,
                     unfinished_due_before: str | None = None, admitted: bool | None = None,
                     due_from: str | None = None, due_before: str | None = None,
                     select: list[str] | None = None) -> list[MachineRecord]:
        """A run's targets, optionally only those in `state`, at `seq`, unfinished with their next action
        due before an ISO time, (not) admitted by the rollout controller, or with `nextActionAt` in
        [due_from, due_before) (ISO times). `select` keeps big columns
        (armCalls, error details) off the wire when a caller needs few."""
        query = "PartitionKey eq @run"
        parameters: dict[str, Any] = {"run": run_id}
        if state is not None:
            query += " and state eq @state"
            parameters["state"] = state
        if seq is not None:
            query += " and seq eq @seq"
            parameters["seq"] = seq
        if unfinished_due_before is not None:
            query += "".join(f" and state ne @t{i}" for i in range(len(TERMINAL_STATES)))
            parameters.update({f"t{i}": s for i, s in enumerate(sorted(TERMINAL_STATES))})
            query += " and nextActionAt lt @due"
            parameters["due"] = unfinished_due_before
        if admitted is not None:
            query += " and admitted eq @admitted"
            parameters["admitted"] = admitted
        if due_from is not None:
            query += " and nextActionAt ge @dueFrom"
            parameters["dueFrom"] = due_from
        if due_before is not None:
            query += " and nextActionAt lt @dueBefore"
            parameters["dueBefore"] = due_before
        result: list[MachineRecord] = []
        select = None if select is None else sorted({*select, "PartitionKey", "RowKey"})
        for page in self.targets.query_entities(query, parameters=parameters, results_per_page=1000,
                                                select=select).by_page():
            self.ops["listTargets"] += 1
            result.extend(to_machine(e) for e in page)
        return result

    def merge_targets(self, changes: list[tuple[MachineRecord, dict[str, Any]]]) -> None:
        """Merges in transactions, each conditional on the ETag of the record it was read as: if any row
        changed since, the batch is refused and TargetsChangedError says to decide again."""
        etags = {(r.run_id, r.key): r.etag for r, _ in changes}
        for batch in batches(machine_entity(r, c) for r, c in changes):
            self.ops["targetMerge"] += 1
            ops = [("update", entity, {"mode": UpdateMode.MERGE,
                                       "etag": etags[(entity["PartitionKey"], entity["RowKey"])],
                                       "match_condition": MatchConditions.IfNotModified}) for entity in batch]
            try:
                self.targets.submit_transaction(ops)
            except TableTransactionError as exc:
                if getattr(exc, "error_code", None) in ("UpdateConditionNotSatisfied", "ConditionNotMet"):
                    raise TargetsChangedError("a target changed while the rollout controller decided") from exc
                raise

    def save_pins(self, run_id: str, packages: list[str]) -> None:
        """The canary's Linux package versions, in rows of up to 500 (well under a property's 64 KiB)."""
        rows = [{"PartitionKey": run_id, "RowKey": f"pins-{i // 500:04d}",
                 "packages": json.dumps(packages[i:i + 500], separators=(",", ":"))}
                for i in range(0, len(packages), 500)]
        for batch in batches(rows):
            self.ops["pins"] += 1
            self.runs.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in batch])

    def pins(self, run_id: str) -> list[str]:
        self.ops["pins"] += 1
        low, high = key_range("pins-")
        rows = self.runs.query_entities("PartitionKey eq @run and RowKey ge @low and RowKey lt @high",
                                        parameters={"run": run_id, "low": low, "high": high})
        return [p for row in sorted(rows, key=lambda r: r["RowKey"]) for p in json.loads(row["packages"])]

    def update_target(self, target: MachineRecord, changes: dict[str, Any]) -> MachineRecord:
        """Merge `changes` if nobody changed the machine since it was read; returns it as now stored.

        Raises ConflictError when the ETag no longer matches: another delivery of the same message got
        there first, so the caller must stop.
        """
        self.ops["updateTarget"] += 1
        return target.with_changes(changes, merge_conditionally(self.targets, machine_entity(target, changes),
                                                                target.etag))

    def has_unfinished_targets(self, run_id: str) -> bool:
        """One small query: is any machine of the run not yet in a terminal state?"""
        query = "PartitionKey eq @run" + "".join(f" and state ne @t{i}" for i in range(len(TERMINAL_STATES)))
        parameters = {"run": run_id, **{f"t{i}": s for i, s in enumerate(sorted(TERMINAL_STATES))}}
        self.ops["unfinishedCheck"] += 1
        return first_match(self.targets, query, parameters)

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
            self.ops["patchBatch"] += 1
            self.patches.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in batch])

    def list_patches(self, run_id: str, key: str) -> list[dict[str, Any]]:
        self.ops["listPatches"] += 1
        rows = self.patches.query_entities("PartitionKey eq @partition", parameters={"partition": f"{run_id}|{key}"})
        ordered = sorted(rows, key=lambda e: e.get("order", 0))
        return [json.loads(e["detail"]) for e in ordered]
