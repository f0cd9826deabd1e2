"""Table transactions through the serial multipart copies (shared/storage/serial_multipart.py), on Azurite: no
thread is started per transaction, and what the run store reads from a transaction, its results and a failed
operation's index and code, is what the SDK gives. The copies themselves: tests/unit/test_serial_multipart.py."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator

import pytest
from azure.data.tables import TableClient, TableServiceClient, TableTransactionError

from shared.storage import serial_multipart
from tools.azurite import Azurite


@pytest.fixture
def table(azurite: Azurite) -> Iterator[TableClient]:
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    name = f"multipart{secrets.token_hex(4)}"
    client = service.create_table(name)
    yield client
    service.delete_table(name)


@pytest.fixture
def thread_starts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    started: list[str] = []
    original = threading.Thread.start

    def counting(self: threading.Thread) -> None:
        started.append(self.name)
        original(self)

    monkeypatch.setattr(threading.Thread, "start", counting)
    return started


def test_a_transaction_starts_no_thread(table: TableClient, thread_starts: list[str]) -> None:
    assert serial_multipart.install()
    results = table.submit_transaction([
        ("create", {"PartitionKey": "p", "RowKey": "a", "n": 1}),
        ("upsert", {"PartitionKey": "p", "RowKey": "b", "n": 2}),
    ])

    assert thread_starts == []
    assert len(results) == 2 and all(r["etag"] for r in results)
    assert {e["RowKey"]: e["n"] for e in table.list_entities()} == {"a": 1, "b": 2}


def test_a_failed_operation_keeps_its_index_and_code_and_nothing_is_written(table: TableClient) -> None:
    assert serial_multipart.install()
    table.create_entity({"PartitionKey": "p", "RowKey": "taken", "n": 0})

    with pytest.raises(TableTransactionError) as failed:
        table.submit_transaction([
            ("create", {"PartitionKey": "p", "RowKey": "new", "n": 1}),
            ("create", {"PartitionKey": "p", "RowKey": "taken", "n": 2}),
        ])

    assert failed.value.index == 1
    assert failed.value.error_code == "EntityAlreadyExists"
    assert {e["RowKey"]: e["n"] for e in table.list_entities()} == {"taken": 0}
