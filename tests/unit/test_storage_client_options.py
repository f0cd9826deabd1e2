"""What the storage clients take from the environment, read once (shared/storage/clients.py
`client_options_from_environment`): the proxy requests would pick for the endpoint, and its CA bundle."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from shared.core.settings import StorageSettings
from shared.storage import clients
from shared.storage.clients import StorageAccount, client_options_from_environment
from tests.support.environment import proxy_environment

TABLES = "https://acct.table.core.windows.net"


@pytest.fixture(autouse=True)
def _no_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


def test_nothing_set_trusts_nothing_and_adds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy_environment(monkeypatch)
    assert client_options_from_environment(TABLES) == {"use_env_settings": False}


@pytest.mark.parametrize(("variables", "expected"), [
    ({"HTTPS_PROXY": "http://proxy:3128"}, {"https": "http://proxy:3128"}),
    ({"https_proxy": "http://lower:3128"}, {"https": "http://lower:3128"}),
    ({"ALL_PROXY": "http://all:3128"}, {"all": "http://all:3128"}),
    ({"HTTPS_PROXY": "http://user:secret@proxy:3128"}, {"https": "http://user:secret@proxy:3128"}),
])
def test_the_proxies_requests_would_use(monkeypatch: pytest.MonkeyPatch, variables: dict[str, str],
                                        expected: dict[str, str]) -> None:
    proxy_environment(monkeypatch, **variables)
    assert client_options_from_environment(TABLES)["proxies"] == expected


@pytest.mark.parametrize("no_proxy", ["acct.table.core.windows.net", ".core.windows.net", "*"])
def test_no_proxy_covering_the_host_means_no_proxy(monkeypatch: pytest.MonkeyPatch, no_proxy: str) -> None:
    proxy_environment(monkeypatch, HTTPS_PROXY="http://proxy:3128", NO_PROXY=no_proxy)
    assert "proxies" not in client_options_from_environment(TABLES)


def test_no_proxy_for_another_host_keeps_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy_environment(monkeypatch, HTTPS_PROXY="http://proxy:3128", NO_PROXY="example.com,127.0.0.1")
    assert client_options_from_environment(TABLES)["proxies"]["https"] == "http://proxy:3128"


def test_the_ca_bundle_as_requests_picks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/curl.pem")
    assert client_options_from_environment(TABLES)["connection_verify"] == "/etc/curl.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "")  # empty: requests moves on to CURL_CA_BUNDLE too
    assert client_options_from_environment(TABLES)["connection_verify"] == "/etc/curl.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/requests.pem")
    assert client_options_from_environment(TABLES)["connection_verify"] == "/etc/requests.pem"


def test_identity_based_clients_choose_the_proxy_for_the_url_the_sdk_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDKs add https:// to a service URI without a scheme: the proxy is chosen for that URL, not the setting's
    bare host name (for which requests finds no proxy at all)."""
    asked: list[str] = []

    def recording(endpoint: str) -> dict[str, Any]:
        asked.append(endpoint)
        return client_options_from_environment(endpoint)

    monkeypatch.setattr(clients, "client_options_from_environment", recording)
    settings = dataclasses.replace(StorageSettings.from_env(), connection="",
                                   table_service_uri="acct.table.core.windows.net",
                                   queue_service_uri="https://acct.queue.core.windows.net")
    account = StorageAccount(settings)
    assert account.table_service and account.queue_service

    assert [e.rstrip("/") for e in asked] == [TABLES, "https://acct.queue.core.windows.net"]


def test_a_pooled_transport_keeps_its_connections_and_azure_cores_adapter() -> None:
    """requests keeps 10 connections a host and discards the rest after use ("Connection pool is full"): the
    transport keeps as many as asked, with azure-core's own adapter settings (urllib3 retries off: azure-core's
    retry policy retries)."""
    from requests.adapters import DEFAULT_POOLSIZE

    transport = clients.pooled_transport(34)
    adapter = transport.session.get_adapter("http://127.0.0.1:10001/devstoreaccount1/q")
    assert adapter.poolmanager.connection_pool_kw["maxsize"] == 34 > DEFAULT_POOLSIZE
    assert adapter.max_retries.total is False and adapter is transport.session.get_adapter("https://x/")
    assert type(adapter).__name__ == "BiggerBlockSizeHTTPAdapter"


def test_the_apps_table_and_queue_clients_keep_a_connection_per_worker_thread(tmp_path: Any,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker runs up to min(32, CPUs + 4) sync invocations at once, each with its Table and queue calls; the
    transport that keeps them still has the options read from the environment once (the environment not trusted
    per request, the CA bundle)."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    account = StorageAccount(dataclasses.replace(StorageSettings.from_env(), connection="UseDevelopmentStorage=true"))
    service = account.table_service
    for client in (service, service.get_table_client("t"), account.queue_service,
                   account.queue_service.get_queue_client("q")):
        transport = _transport_of(client)
        adapter = transport.session.get_adapter("http://127.0.0.1:10002/devstoreaccount1")
        assert adapter.poolmanager.connection_pool_kw["maxsize"] == clients.POOL_CONNECTIONS > 10
        assert transport.session.trust_env is False and transport.connection_config.verify == str(bundle)


def _transport_of(client: Any) -> Any:
    """The RequestsTransport under an SDK client (through its generated client and a shared transport's wrapper)."""
    while not hasattr(client, "_pipeline"):
        client = client._client
    transport = client._pipeline._transport
    while not hasattr(transport, "session"):
        transport = transport._transport
    return transport
