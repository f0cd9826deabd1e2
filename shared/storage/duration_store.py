"""Each machine's past installation durations, from which a run predicts how long it will take
(shared/runs/install_history.py records and reads them; shared/runs/predictions.py learns from them).

Layout:
    MACHINES_TABLE  PK "~durations|<subscriptionId>", RK "rg|vm" (fleet_store.machine_row_key; an Arc machine's
                    "rg|name|hybridmachines"), one row per machine that has had an installation:
                    osType      "Windows" | "Linux" | "" (as the machine's last run saw it)
                    samples     JSON list of at most 8 {at, seconds, patches, rebooted, predicted?}, newest first
                                (shared.runs.predictions.Sample.to_json)
                    updatedAt   ISO time of the last write

Why this partition: a run is dispatched per subscription's budget, and its machines' histories are read all at
once, so a subscription's histories are one partition: one query (pages of 1,000) per subscription per dispatch,
and a run's close writes them in transactions of ≤ 100. Not the snapshot's partition (PK subscriptionId): the
compliance view, discovery and the rollups query PK = subscriptionId exactly, so they never see these rows, and a
history write never touches the snapshot's rollup shards. The "~" prefix keeps it apart from any subscription id
(a GUID) and from the "~subscriptions" partition.

Rows are upserted (REPLACE): the runs layer reads, merges a sample in (deduplicated by its start) and writes the
whole row back. Two runs closing at the same instant over the same machine could lose one of their samples; a
machine is in one run at a time in practice (maintenance leases), and a lost sample only makes a prediction older.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from azure.data.tables import TableClient, UpdateMode

from shared.core.clock import iso, utcnow
from shared.core.ids import MachineRef
from shared.core.settings import StorageSettings
from shared.core.telemetry import table_counter
from shared.storage.clients import StorageAccount
from shared.storage.fleet_store import machine_row_key
from shared.storage.run_store import batches

log = logging.getLogger(__name__)

DURATIONS_PREFIX = "~durations|"
COLUMNS = ["RowKey", "osType", "samples", "updatedAt"]


def partition(subscription_id: str) -> str:
    return f"{DURATIONS_PREFIX}{subscription_id.lower()}"


class DurationStore:
    """Table access for installation histories; Table round-trips are counted as store "durations"."""

    def __init__(self, storage: StorageSettings, account: StorageAccount) -> None:
        self.table: TableClient = account.table(storage.machines_table)
        self._count = table_counter("durations")  # Table round-trips, by operation (OpenTelemetry)

    def histories(self, subscription_id: str) -> dict[str, dict[str, Any]]:
        """Every history of the subscription, by machine key (MachineRef.key: "sub|rg|vm", Arc "...|hybridmachines"):
        {"osType": str, "samples": [Sample JSON, newest first], "updatedAt": ISO str}. One partition query, read
        page by page (1,000 rows a round-trip). A row whose samples do not parse is left out (logged)."""
        sub = subscription_id.lower()
        found: dict[str, dict[str, Any]] = {}
        pages = self.table.query_entities("PartitionKey eq @partition", parameters={"partition": partition(sub)},
                                          select=COLUMNS, results_per_page=1000).by_page()
        for page in pages:
            self._count("queryDurations")
            for entity in page:
                try:
                    samples = json.loads(str(entity.get("samples") or "[]"))
                except ValueError:
                    log.warning("durations: the history of %s|%s does not parse; ignored", sub, entity["RowKey"])
                    continue
                if not isinstance(samples, list):
                    continue
                found[f"{sub}|{entity['RowKey']}"] = {"osType": str(entity.get("osType") or ""),
                                                      "samples": [s for s in samples if isinstance(s, dict)],
                                                      "updatedAt": str(entity.get("updatedAt") or "")}
        return found

    def save(self, subscription_id: str, rows: Iterable[tuple[MachineRef, dict[str, Any]]]) -> int:
        """Write these machines' histories ({"osType": str, "samples": [Sample JSON]}), replacing what was
        stored: transactions of ≤ 100 rows (one partition). Every machine must be of `subscription_id`
        (ValueError). Returns the number of rows written."""
        sub = subscription_id.lower()
        now = iso(utcnow())
        entities: dict[str, dict[str, Any]] = {}  # by RowKey: a transaction may not name a row twice
        for vm, row in rows:
            if vm.subscription_id.lower() != sub:
                raise ValueError(f"{vm.resource_id} is not of subscription {subscription_id}")
            key = machine_row_key(vm)
            entities[key] = {"PartitionKey": partition(sub), "RowKey": key, "osType": str(row.get("osType") or ""),
                             "samples": json.dumps(list(row.get("samples") or []), separators=(",", ":")),
                             "updatedAt": now}
        for batch in batches(entities[k] for k in sorted(entities)):
            self._count("durationBatch")
            self.table.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in batch])
        return len(entities)
