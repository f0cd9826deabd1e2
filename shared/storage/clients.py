"""Table and queue clients, one per name per process, created on first use.

`AzureWebJobsStorage` is either a connection string (Azurite, or keys) or, in Azure, empty with
identity-based settings `AzureWebJobsStorage__queueServiceUri` / `__tableServiceUri` (+ `__clientId`),
the same convention the Functions host uses for its own bindings.
"""

from __future__ import annotations

import contextlib
import os
import threading
from functools import lru_cache

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient, TableServiceClient
from azure.storage.queue import (
    QueueClient,
    QueueServiceClient,
    TextBase64DecodePolicy,
    TextBase64EncodePolicy,
)

from shared.core.settings import SettingsError, get_settings

AZURITE_DEFAULT = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)
_created: set[str] = set()
_lock = threading.Lock()


def _connection_string() -> str | None:
    raw = get_settings().storage_connection
    if raw.replace(" ", "").lower() == "usedevelopmentstorage=true":
        return AZURITE_DEFAULT
    return raw or None


def _identity_credential():  # type: ignore[no-untyped-def]
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=os.environ.get("AzureWebJobsStorage__clientId"))


@lru_cache(maxsize=1)
def table_service() -> TableServiceClient:
    conn = _connection_string()
    if conn:
        return TableServiceClient.from_connection_string(conn)
    uri = os.environ.get("AzureWebJobsStorage__tableServiceUri")
    if not uri:
        raise SettingsError("set AzureWebJobsStorage or AzureWebJobsStorage__tableServiceUri")
    return TableServiceClient(endpoint=uri, credential=_identity_credential())


@lru_cache(maxsize=1)
def queue_service() -> QueueServiceClient:
    conn = _connection_string()
    if conn:
        return QueueServiceClient.from_connection_string(conn)
    uri = os.environ.get("AzureWebJobsStorage__queueServiceUri")
    if not uri:
        raise SettingsError("set AzureWebJobsStorage or AzureWebJobsStorage__queueServiceUri")
    return QueueServiceClient(account_url=uri, credential=_identity_credential())


def table(name: str) -> TableClient:
    client = table_service().get_table_client(name)
    _ensure(f"table:{name}", lambda: table_service().create_table(name))
    return client


def queue(name: str) -> QueueClient:
    """Base64 encoding on the way out: the queue trigger's default `messageEncoding` expects it.

    The policies go on the QueueClient itself: QueueServiceClient.get_queue_client does not pass
    a service client's encode policy on, and a raw-text message would fail in the real host.
    """
    client = queue_service().get_queue_client(
        name, message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy()
    )
    _ensure(f"queue:{name}", client.create_queue)
    return client


def _ensure(key: str, create: object) -> None:
    if key in _created:
        return
    with _lock:
        if key in _created:
            return
        with contextlib.suppress(ResourceExistsError):
            create()  # type: ignore[operator]
        _created.add(key)


def reset_clients() -> None:
    """Forget cached clients (tests that switch storage accounts between cases)."""
    table_service.cache_clear()
    queue_service.cache_clear()
    _created.clear()
