"""Maintenance configurations, assignments, window occurrences and per-VM leases in one table.

Layout (MAINTENANCE_TABLE; every read is a point read or one-partition query):
    PK "config",              RK name (lower)          the configuration as PUT (validated), its ETag
    PK "assign|<config>",     RK assignment (lower)    one assignment: a VM, or a scope with a filter
    PK "occ|<config>",        RK window start (UTC)    what became of a window: Started (runId) or Skipped (why)
    PK "lease|<subscription>", RK "rg|vm"              which window's run may patch this VM until when, so a VM
                                                       in two configurations' overlapping windows is patched once
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.core.clock import iso
from shared.core.errors import StorageContentionError
from shared.core.ids import MachineRef
from shared.core.settings import StorageSettings
from shared.core.telemetry import table_counter
from shared.storage.clients import StorageAccount
from shared.storage.run_store import batches

CONFIG = "config"


class MaintenanceStore:
    def __init__(self, storage: StorageSettings, account: StorageAccount) -> None:
        self.table: TableClient = account.table(storage.maintenance_table)
        self._count = table_counter("maintenance")  # Table round-trips, by operation (OpenTelemetry)

    # -- configurations ------------------------------------------------------------------------
    def put_config(self, name: str, body: dict[str, Any], now: datetime) -> bool:
        """Create or replace; True if it was created. A replaced schedule keeps its watermark."""
        self._count("putConfig")
        entity = {"PartitionKey": CONFIG, "RowKey": name.lower(), "name": name,
                  "body": json.dumps(body, separators=(",", ":")), "updatedAt": iso(now)}
        try:
            self.table.create_entity({**entity, "createdAt": iso(now), "checkedThrough": iso(now)})
            return True
        except ResourceExistsError:
            self.table.update_entity(entity, mode=UpdateMode.MERGE)
            return False

    def get_config(self, name: str) -> dict[str, Any] | None:
        self._count("getConfig")
        try:
            entity = self.table.get_entity(CONFIG, name.lower())
        except ResourceNotFoundError:
            return None
        return {**entity, "etag": entity.metadata["etag"]}

    def list_configs(self) -> list[dict[str, Any]]:
        self._count("listConfigs")
        return [{**e, "etag": e.metadata["etag"]} for e in self.table.query_entities(
            "PartitionKey eq @partition", parameters={"partition": CONFIG})]

    def advance_watermark(self, config: dict[str, Any], checked_through: datetime) -> None:
        """Windows starting before this have been opened or recorded; a lost race means another tick did it."""
        self._count("watermark")
        with contextlib.suppress(ResourceModifiedError):
            self.table.update_entity({"PartitionKey": CONFIG, "RowKey": config["RowKey"],
                                      "checkedThrough": iso(checked_through)}, mode=UpdateMode.MERGE,
                                     etag=config["etag"], match_condition=MatchConditions.IfNotModified)

    def delete_config(self, name: str) -> bool:
        """Deletes the configuration and its assignments; False if it did not exist (still a success)."""
        self._count("deleteConfig")
        keys = ({"PartitionKey": e["PartitionKey"], "RowKey": e["RowKey"]}
                for e in self.table.query_entities("PartitionKey eq @partition",
                                                   parameters={"partition": "assign|" + name.lower()},
                                                   select=["PartitionKey", "RowKey"]))
        for batch in batches(keys):
            self.table.submit_transaction([("delete", e) for e in batch])
        existed = self.get_config(name) is not None
        self.table.delete_entity(CONFIG, name.lower())  # succeeds when already gone
        return existed

    # -- assignments ---------------------------------------------------------------------------
    def put_assignment(self, config: str, name: str, body: dict[str, Any]) -> bool:
        self._count("putAssignment")
        entity = {"PartitionKey": f"assign|{config.lower()}", "RowKey": name.lower(), "name": name,
                  "body": json.dumps(body, separators=(",", ":"))}
        try:
            self.table.create_entity(entity)
            return True
        except ResourceExistsError:
            self.table.upsert_entity(entity, mode=UpdateMode.REPLACE)
            return False

    def get_assignment(self, config: str, name: str) -> dict[str, Any] | None:
        self._count("getAssignment")
        try:
            return dict(self.table.get_entity(f"assign|{config.lower()}", name.lower()))
        except ResourceNotFoundError:
            return None

    def list_assignments(self, config: str) -> list[dict[str, Any]]:
        self._count("listAssignments")
        return [dict(e) for e in self.table.query_entities("PartitionKey eq @partition",
                                                           parameters={"partition": "assign|" + config.lower()})]

    def delete_assignment(self, config: str, name: str) -> None:
        self._count("deleteAssignment")
        self.table.delete_entity(f"assign|{config.lower()}", name.lower())  # succeeds when already gone

    # -- occurrences ---------------------------------------------------------------------------
    def record_occurrence(self, config: str, start: datetime, fields: dict[str, Any]) -> bool:
        """Create the record of a window; False if one exists (the window was handled already)."""
        self._count("recordOccurrence")
        try:
            self.table.create_entity({"PartitionKey": f"occ|{config.lower()}", "RowKey": iso(start), **fields})
            return True
        except ResourceExistsError:
            return False

    def get_occurrence(self, config: str, start: datetime) -> dict[str, Any] | None:
        self._count("getOccurrence")
        try:
            return dict(self.table.get_entity(f"occ|{config.lower()}", iso(start)))
        except ResourceNotFoundError:
            return None

    def update_occurrence(self, config: str, start: datetime, fields: dict[str, Any]) -> None:
        self._count("updateOccurrence")
        self.table.upsert_entity({"PartitionKey": f"occ|{config.lower()}", "RowKey": iso(start), **fields},
                                 mode=UpdateMode.MERGE)

    def list_occurrences(self, config: str, since: datetime) -> list[dict[str, Any]]:
        self._count("listOccurrences")
        rows = self.table.query_entities("PartitionKey eq @partition and RowKey ge @since",
                                         parameters={"partition": "occ|" + config.lower(), "since": iso(since)})
        return sorted(({"start": e["RowKey"], **{k: v for k, v in e.items() if k not in ("PartitionKey", "RowKey")}}
                       for e in rows), key=lambda e: e["start"])

    # -- leases --------------------------------------------------------------------------------
    def lease(self, vm: MachineRef, *, run_id: str, configuration: str, until: datetime,
              now: datetime, take_over: str | None = None) -> dict[str, Any] | None:
        """Take the VM for this run until `until`; returns the holder instead if another run has it.
        `take_over` names a holder whose lease may be taken anyway (its run did not patch the VM)."""
        key = (f"lease|{vm.subscription_id}", f"{vm.resource_group}|{vm.name}".lower())
        mine = {"PartitionKey": key[0], "RowKey": key[1], "runId": run_id, "configuration": configuration,
                "until": iso(until)}
        for _ in range(5):
            self._count("lease")
            try:
                current = self.table.get_entity(*key)
            except ResourceNotFoundError:
                try:
                    self.table.create_entity(mine)
                    return None
                except ResourceExistsError:
                    continue
            if current["runId"] not in (run_id, take_over) and current["until"] > iso(now):
                return dict(current)
            try:
                self.table.update_entity(mine, mode=UpdateMode.REPLACE, etag=current.metadata["etag"],
                                         match_condition=MatchConditions.IfNotModified)
                return None
            except ResourceModifiedError:
                continue
        raise StorageContentionError(f"the lease of {vm.resource_id} kept changing; retrying the step")
