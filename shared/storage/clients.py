"""The storage account's Table and Queue clients, built from the settings they are given.

`AzureWebJobsStorage` is either a connection string (Azurite, or keys) or, in Azure, empty with
identity-based settings `AzureWebJobsStorage__queueServiceUri` / `__tableServiceUri` (+ `__clientId`),
the same convention the Functions host uses for its own bindings. One `StorageAccount` per process
(the composition root builds it): clients are reused across invocations, as the Functions docs advise.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from functools import cached_property, partial
from typing import Any, TypeVar

import requests
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient, TableServiceClient
from azure.storage.queue import (
    QueueClient,
    QueueServiceClient,
    TextBase64DecodePolicy,
    TextBase64EncodePolicy,
)

from shared.core.settings import SettingsError, StorageSettings

Client = TypeVar("Client", TableServiceClient, QueueServiceClient)

AZURITE_DEFAULT = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)
# Connections kept per storage host: one per invocation the worker runs at once (its sync thread pool is
# min(32, CPUs + 4) threads by default: shared/functions/event_workers.py), as the ARM session keeps
# (shared/arm/client.py new_session).
POOL_CONNECTIONS = 32


def pooled_transport(connections: int, **options: Any) -> Any:
    """azure-core's RequestsTransport as it sets itself up (its adapter: urllib3's retries off, larger reads),
    with each adapter's pool keeping `connections` connections a host instead of requests' 10. `options`: the
    transport's keyword arguments (`use_env_settings`, `connection_verify`, ...), which a client given its own
    transport no longer passes on to one it would build.

    Why: a client's pool keeps 10 connections; with more threads using it at once, each connection past the
    10th is closed after its request ("Connection pool is full, discarding connection") and the next one
    opened again, a TLS handshake each against Azure Storage. azure-core has no option for the pool's size,
    so its session's adapters are re-initialised (requests' HTTPAdapter.init_poolmanager)."""
    from azure.core.pipeline.transport import RequestsTransport
    from requests.adapters import DEFAULT_POOLBLOCK, DEFAULT_POOLSIZE

    transport = RequestsTransport(**options)
    transport.open()  # makes and mounts its session's adapters
    for adapter in {id(a): a for a in transport.session.adapters.values()}.values():
        adapter.init_poolmanager(DEFAULT_POOLSIZE, connections, block=DEFAULT_POOLBLOCK)
    return transport


def client_options_from_environment(endpoint: str) -> dict[str, Any]:
    """Client options (azure-core's `use_env_settings`, `proxies`, `connection_verify`) holding what `requests`
    would read from the environment on every request to `endpoint`, read once now by requests itself
    (`Session.merge_environment_settings`): the proxy for it (the `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY`
    variables, none when `NO_PROXY` covers its host) and the CA bundle (`REQUESTS_CA_BUNDLE`, then
    `CURL_CA_BUNDLE`). `.netrc` is not read: a storage request carries its own
    Authorization (SharedKey or a bearer token), which a `.netrc` entry for the host would replace.

    Why: with the environment trusted, each Table and queue request walks the whole environment twice and looks
    for `~/.netrc` (requests' `merge_environment_settings` and `get_netrc_auth`): 7.5 % of the host's GIL time
    in the four-subscription benchmark (docs/performance.md, session 26). The Functions host sets a worker's
    environment when it starts it and restarts it when app settings change, so reading it once per client
    loses only this: a request the SDK sends to another host (a secondary endpoint) gets the primary's proxy
    decision.

    `endpoint`: the client's URL as the SDK resolved it (`client.url`: scheme included, which the proxy choice
    and NO_PROXY need). Returns keyword arguments for an azure-data-tables or azure-storage-queue client."""
    with requests.Session() as session:  # requests' own reading of the environment, once
        found = session.merge_environment_settings(endpoint, {}, None, None, None)
    options: dict[str, Any] = {"use_env_settings": False}
    if found["proxies"]:
        options["proxies"] = found["proxies"]
    if found["verify"] is not True:  # a CA bundle's path
        options["connection_verify"] = found["verify"]
    return options


def _with_environment(build: Callable[..., Client]) -> Client:
    """The client `build(**options)` makes, with `client_options_from_environment` for the URL the SDK resolves
    (a connection string's endpoint; a service URI with https:// added when it has no scheme): built once without
    options to read that URL, which costs no request; and a transport keeping POOL_CONNECTIONS connections, built
    with the same options (a client given a transport applies only its pipeline's to it: `proxies`)."""
    options = client_options_from_environment(build().url)
    return build(**options, transport=pooled_transport(POOL_CONNECTIONS, **options))


class StorageAccount:
    """Table and queue clients of one storage account; tables and queues are created on first use."""

    def __init__(self, storage: StorageSettings) -> None:
        self._storage = storage
        self._created: set[str] = set()
        self._lock = threading.Lock()

    def _connection_string(self) -> str | None:
        raw = self._storage.connection
        if raw.replace(" ", "").lower() == "usedevelopmentstorage=true":
            return AZURITE_DEFAULT
        return raw or None

    def _identity_credential(self) -> Any:
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential(managed_identity_client_id=self._storage.client_id)

    @cached_property
    def table_service(self) -> TableServiceClient:
        conn = self._connection_string()
        if conn:
            return _with_environment(partial(TableServiceClient.from_connection_string, conn))
        if not self._storage.table_service_uri:
            raise SettingsError("set AzureWebJobsStorage or AzureWebJobsStorage__tableServiceUri")
        return _with_environment(partial(TableServiceClient, endpoint=self._storage.table_service_uri,
                                         credential=self._identity_credential()))

    @cached_property
    def queue_service(self) -> QueueServiceClient:
        conn = self._connection_string()
        if conn:
            return _with_environment(partial(QueueServiceClient.from_connection_string, conn))
        if not self._storage.queue_service_uri:
            raise SettingsError("set AzureWebJobsStorage or AzureWebJobsStorage__queueServiceUri")
        return _with_environment(partial(QueueServiceClient, account_url=self._storage.queue_service_uri,
                                         credential=self._identity_credential()))

    def table(self, name: str) -> TableClient:
        client = self.table_service.get_table_client(name)
        self._ensure(f"table:{name}", lambda: self.table_service.create_table(name))
        return client

    def queue(self, name: str) -> QueueClient:
        """Base64 encoding on the way out: the queue trigger's default `messageEncoding` expects it.

        The policies go on the QueueClient itself: QueueServiceClient.get_queue_client does not pass
        a service client's encode policy on, and a raw-text message would fail in the real host.
        """
        client = self.queue_service.get_queue_client(
            name, message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy()
        )
        self._ensure(f"queue:{name}", client.create_queue)
        return client

    def _ensure(self, key: str, create: Callable[[], object]) -> None:
        if key in self._created:
            return
        with self._lock:
            if key in self._created:
                return
            with contextlib.suppress(ResourceExistsError):
                create()
            self._created.add(key)
