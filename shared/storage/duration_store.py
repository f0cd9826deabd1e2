"""Installation durations per machine (shared/runs/predictions.py reads them), in MACHINES_TABLE.

    PK "~durations|<subscriptionId>", RK fleet_store.machine_row_key(vm)   osType, samples (JSON, newest first)
One partition per subscription: a dispatch or a plan reads a subscription's histories in one query.
"""

from __future__ import annotations

from typing import Any

from azure.data.tables import TableClient, UpdateMode

from shared.core.clock import iso, utcnow
from shared.core.ids import MachineRef
from shared.core.settings import StorageSettings
from shared.core.telemetry import table_counter
from shared.storage.clients import StorageAccount
from shared.storage.fleet_store import machine_row_key
from shared.storage.run_store import batches

PREFIX = "~durations|"


class DurationStore:
    def __init__(self, storage: StorageSettings, account: StorageAccount) -> None:
        self.table: TableClient = account.table(storage.machines_table)
        self._count = table_counter("durations")

    def histories(self, subscription_id: str) -> dict[str, dict[str, Any]]:
        """{machine key: {"osType", "samples"}} for every machine of the subscription with a history."""
        sub = subscription_id.lower()
        out: dict[str, dict[str, Any]] = {}
        for page in self.table.query_entities("PartitionKey eq @p", parameters={"p": PREFIX + sub},
                                              results_per_page=1000).by_page():
            self._count("histories")
            out.update((f"{sub}|{e['RowKey']}", dict(e)) for e in page)
        return out

    def save(self, subscription_id: str, rows: list[tuple[MachineRef, dict[str, Any]]]) -> None:
        entities = [{"PartitionKey": PREFIX + subscription_id.lower(), "RowKey": machine_row_key(vm),
                     "updatedAt": iso(utcnow()), **columns} for vm, columns in rows]
        for batch in batches(entities):
            self._count("saveHistories")
            self.table.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in batch])
