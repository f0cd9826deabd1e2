"""The shared ARM call budget's rows in Table storage: one entity per (subscription, bucket).

Layout: RUNS_TABLE, PK "budget|<subscription id>", RK "<bucket>", column `tat` (a double, epoch seconds;
see shared/runs/budget.py). A partition per subscription: each takes Table storage's per-partition
throughput (about 2,000 entities/s) for itself, and a call's buckets are in one partition, so one
transaction. Every Function instance reads and writes the same rows, so a reservation is
ETag-conditional: all of a call's buckets (e.g. guestPatch and writes for a POST) are written in ONE
transaction (same PartitionKey), each row conditional on the ETag it was read with (or created if it was
absent); a conflict means another instance reserved first, and the caller recomputes from fresh rows.

Cost: `read` is one query (the subscription's rows); `write` is one transaction. The last rows seen are
kept per process, so an instance that is alone on a bucket pays one round-trip per reservation and reads
only after losing a race.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from azure.core import MatchConditions
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from shared.core.errors import ConflictError
from shared.core.settings import StorageSettings
from shared.core.telemetry import table_counter
from shared.storage.clients import StorageAccount

BUDGET_PARTITION = "budget"
_CONFLICT_CODES = ("UpdateConditionNotSatisfied", "ConditionNotMet", "EntityAlreadyExists")


@dataclass(frozen=True)
class BudgetRow:
    tat: float
    etag: str | None  # None: not stored yet (created on write)


class BudgetStore:
    """Rows of the shared budget; `ops` counts Table round-trips (reads, writes, conflicts)."""

    def __init__(self, storage: StorageSettings, account: StorageAccount) -> None:
        self.table: TableClient = account.table(storage.runs_table)
        self._count = table_counter("budget")  # Table round-trips, by operation (OpenTelemetry)
        self._seen: dict[str, BudgetRow] = {}
        self._lock = threading.Lock()

    @staticmethod
    def row_key(subscription: str, bucket: str) -> str:
        """The process cache's key (the row is PartitionKey `partition(subscription)`, RowKey `bucket`)."""
        return f"{subscription.lower()}|{bucket}"

    @staticmethod
    def partition(subscription: str) -> str:
        return f"{BUDGET_PARTITION}|{subscription.lower()}"

    def cached(self, subscription: str, buckets: list[str]) -> dict[str, BudgetRow] | None:
        """The rows as this process last saw them, if it has seen them all."""
        with self._lock:
            rows = {b: self._seen.get(self.row_key(subscription, b)) for b in buckets}
        return None if any(r is None for r in rows.values()) else {b: r for b, r in rows.items() if r}

    def read(self, subscription: str, buckets: list[str]) -> dict[str, BudgetRow]:
        """The subscription's rows (one query); a bucket never written reads as tat 0 (full)."""
        self._count("budgetRead")
        entities = self.table.query_entities("PartitionKey eq @pk", parameters={"pk": self.partition(subscription)},
                                             select=["RowKey", "tat"])
        found = {str(e["RowKey"]): BudgetRow(float(e["tat"]), str(e.metadata["etag"])) for e in entities}
        rows = {b: found.get(b, BudgetRow(0.0, None)) for b in buckets}
        self._remember(subscription, rows)
        return rows

    def write(self, subscription: str, new: dict[str, float], read_as: dict[str, BudgetRow]) -> None:
        """Store the new `tat` of each bucket if no one changed it since `read_as` (one transaction);
        ConflictError otherwise (the cache is then dropped, so the next try reads)."""
        operations: list[tuple[str, dict[str, object], dict[str, object]]] = []
        for bucket, tat in new.items():
            entity = {"PartitionKey": self.partition(subscription), "RowKey": bucket, "tat": tat}
            etag = read_as[bucket].etag
            if etag is None:
                operations.append(("create", entity, {}))
            else:
                operations.append(("update", entity, {"mode": UpdateMode.REPLACE, "etag": etag,
                                                      "match_condition": MatchConditions.IfNotModified}))
        self._count("budgetWrite")
        try:
            results = self.table.submit_transaction(operations)
        except TableTransactionError as exc:
            self._forget(subscription, list(new))
            if getattr(exc, "error_code", None) in _CONFLICT_CODES:
                self._count("budgetConflict")
                raise ConflictError(f"budget of {subscription} changed since it was read") from exc
            raise
        self._remember(subscription, {b: BudgetRow(tat, str(meta.get("etag") or ""))
                                      for (b, tat), meta in zip(new.items(), results, strict=True)})

    def _remember(self, subscription: str, rows: dict[str, BudgetRow]) -> None:
        with self._lock:
            for bucket, row in rows.items():
                self._seen[self.row_key(subscription, bucket)] = row

    def _forget(self, subscription: str, buckets: list[str]) -> None:
        with self._lock:
            for bucket in buckets:
                self._seen.pop(self.row_key(subscription, bucket), None)
