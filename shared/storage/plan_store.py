"""Plans (`POST /api/plans`) in Azure Table storage, beside the runs.

Layout (RUNS_TABLE; every read is a point read or one-partition query):
    PK "plan",        RK planId            the plan: request (parameters, rollout, window, machine count), status
                                           (Planning | Succeeded | Failed), summary and totals once planned, the
                                           run that applied it (`appliedRunId`)
    PK "plan|planId", RK "machines-NNNN"   the request's machine ids, 100 per entity (as a run's)
    PK "plan|planId", RK "m|<key>"         one planned machine: `entry` (JSON: assessment, prediction, predicted
                                           start and finish, window fit) and its patches in `patches`,
                                           `patches1`, ... (JSON split in 30,000-character parts: a property holds
                                           64 KiB of UTF-16)
Machine rows are written in transactions of ≤ 100 (one partition), by upsert: planning again (a redelivered
message) rewrites the same rows. The plan row is written last, so a plan is `Succeeded` only when every machine
row is there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.core.errors import ConflictError
from shared.core.records import PlanRecord
from shared.core.settings import StorageSettings
from shared.core.telemetry import table_counter
from shared.storage.clients import StorageAccount
from shared.storage.limits import check_entity
from shared.storage.run_store import batches, key_range, machine_chunk_entities

PLAN_PARTITION = "plan"
PART_CHARS = 30_000
MAX_PARTS = 15  # 15 x 60 KB stays inside an entity's 1 MiB
MACHINE_PREFIX = "m|"


def machines_partition(plan_id: str) -> str:
    return f"plan|{plan_id}"


def split_column(name: str, text: str) -> dict[str, str]:
    """A long JSON text as properties `name`, `name1`, ... of PART_CHARS characters (PlanRecord.json_column and
    `joined` put them back together)."""
    parts = [text[i:i + PART_CHARS] for i in range(0, len(text), PART_CHARS)] or [""]
    if len(parts) > MAX_PARTS:
        raise ValueError(f"{name} is {len(text)} characters; at most {MAX_PARTS * PART_CHARS} are kept")
    parts += [""] * (MAX_PARTS - len(parts))  # a merge must blank what a longer earlier value left behind
    return {(name if i == 0 else f"{name}{i}"): part for i, part in enumerate(parts)}


def joined(entity: Mapping[str, Any], name: str) -> str:
    return "".join(str(entity.get(name if i == 0 else f"{name}{i}") or "") for i in range(MAX_PARTS))


class PlanStore:
    """Table access for plans; `_count` counts round-trips (OpenTelemetry, as the other stores)."""

    def __init__(self, storage: StorageSettings, account: StorageAccount) -> None:
        self.table: TableClient = account.table(storage.runs_table)
        self._count = table_counter("plans")

    def create_plan(self, plan_id: str, columns: Mapping[str, Any], machine_ids: list[str]) -> None:
        """The machine list first, then the plan row (what makes it visible). Raises ValidationError (via
        check_entity) before anything is written when the plan row cannot be stored."""
        entity = {"PartitionKey": PLAN_PARTITION, "RowKey": plan_id, **columns}
        check_entity(entity)
        for batch in batches([{**e, "PartitionKey": machines_partition(plan_id)}
                              for e in machine_chunk_entities(plan_id, machine_ids)]):
            self._count("machineChunks")
            self.table.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in batch])
        self._count("createPlan")
        try:
            self.table.create_entity(entity)
        except ResourceExistsError:
            raise ConflictError(f"plan {plan_id} exists") from None

    def get_plan(self, plan_id: str) -> PlanRecord | None:
        self._count("getPlan")
        try:
            entity = self.table.get_entity(PLAN_PARTITION, plan_id)
        except ResourceNotFoundError:
            return None
        columns = {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey")}
        return PlanRecord(etag=str(entity.metadata.get("etag") or ""), columns=columns, plan_id=plan_id)

    def update_plan(self, plan_id: str, changes: Mapping[str, Any], etag: str | None = None) -> None:
        """Merge `changes` (a dict or list value is stored as JSON, split over `name`, `name1`, ... when long);
        with `etag`, only if the plan has not changed since (ConflictError otherwise)."""
        columns: dict[str, Any] = {}
        for name, value in changes.items():
            if isinstance(value, dict | list):
                columns.update(split_column(name, json.dumps(value, separators=(",", ":"))))
            else:
                columns[name] = value
        entity = {"PartitionKey": PLAN_PARTITION, "RowKey": plan_id, **columns}
        check_entity(entity)
        self._count("updatePlan")
        try:
            if etag:
                self.table.update_entity(entity, mode=UpdateMode.MERGE, etag=etag,
                                         match_condition=MatchConditions.IfNotModified)
            else:
                self.table.update_entity(entity, mode=UpdateMode.MERGE)
        except ResourceModifiedError:
            raise ConflictError(f"plan {plan_id} changed") from None

    def machine_ids(self, plan_id: str) -> list[str]:
        self._count("machineChunks")
        low, high = key_range("machines-")
        rows = self.table.query_entities("PartitionKey eq @p and RowKey ge @low and RowKey lt @high",
                                         parameters={"p": machines_partition(plan_id), "low": low, "high": high})
        return [rid for e in sorted(rows, key=lambda e: e["RowKey"]) for rid in json.loads(e["machines"])]

    def save_machines(self, plan_id: str, machines: Iterable[tuple[str, dict[str, Any], list[dict[str, Any]]]]) -> None:
        """(machine key, entry, patches) per machine, upserted in transactions of ≤ 100."""
        entities = []
        for key, entry, patches in machines:
            entity = {"PartitionKey": machines_partition(plan_id), "RowKey": MACHINE_PREFIX + key,
                      "entry": json.dumps(entry, separators=(",", ":")),
                      **split_column("patches", json.dumps(patches, separators=(",", ":")))}
            check_entity(entity)
            entities.append(entity)
        for batch in batches(entities):
            self._count("saveMachines")
            self.table.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in batch])

    def iter_machines(self, plan_id: str, *, patches: bool = True) -> Iterator[tuple[str, dict[str, Any],
                                                                                     list[dict[str, Any]]]]:
        """Every planned machine, in key order: (key, entry, patches); `patches=False` skips reading them."""
        low, high = key_range(MACHINE_PREFIX)
        select = None if patches else ["RowKey", "entry"]
        self._count("listMachines")
        for entity in self.table.query_entities("PartitionKey eq @p and RowKey ge @low and RowKey lt @high",
                                                parameters={"p": machines_partition(plan_id), "low": low,
                                                            "high": high}, select=select):
            yield (str(entity["RowKey"])[len(MACHINE_PREFIX):], json.loads(entity["entry"]),
                   json.loads(joined(entity, "patches")) if patches else [])

    def page_machines(self, plan_id: str, top: int, after: str | None = None
                      ) -> tuple[list[tuple[str, dict[str, Any], list[dict[str, Any]]]], str | None]:
        """`top` planned machines in key order after the key `after`; and the key to continue after (None: end)."""
        low, high = key_range(MACHINE_PREFIX)
        self._count("pageMachines")
        rows = self.table.query_entities("PartitionKey eq @p and RowKey gt @low and RowKey lt @high",
                                         parameters={"p": machines_partition(plan_id),
                                                     "low": MACHINE_PREFIX + after if after else low, "high": high},
                                         results_per_page=top + 1)
        page = []
        for entity in rows:
            page.append((str(entity["RowKey"])[len(MACHINE_PREFIX):], json.loads(entity["entry"]),
                         json.loads(joined(entity, "patches"))))
            if len(page) > top:
                break
        more = len(page) > top
        page = page[:top]
        return page, (page[-1][0] if more and page else None)

    def get_machine(self, plan_id: str, key: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        self._count("getMachine")
        try:
            entity = self.table.get_entity(machines_partition(plan_id), MACHINE_PREFIX + key)
        except ResourceNotFoundError:
            return None
        return json.loads(entity["entry"]), json.loads(joined(entity, "patches"))
