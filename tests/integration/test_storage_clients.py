"""The storage account's clients (shared/storage/clients.py) read the environment's proxy and CA settings once,
when they are built, not on every request, and still go through the proxy the environment names, on Azurite.
The options themselves, case by case: tests/unit/test_storage_client_options.py."""

from __future__ import annotations

import dataclasses
import http.client
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests.sessions

from shared.core.settings import StorageSettings
from shared.storage.clients import StorageAccount
from tests.support.environment import proxy_environment
from tools.azurite import Azurite


class ForwardingProxy:
    """A plain-HTTP forward proxy on 127.0.0.1: forwards each request to the absolute URL it names and records
    the URLs."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def forward(self) -> None:
                proxy.urls.append(self.path)
                target = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upstream = http.client.HTTPConnection(target.hostname or "", target.port, timeout=10)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "host")}
                upstream.request(self.command, target.path + (f"?{target.query}" if target.query else ""),
                                 body=body, headers={**headers, "Host": target.netloc})
                answer = upstream.getresponse()
                content = answer.read()
                self.send_response(answer.status, answer.reason)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)
                upstream.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_MERGE = do_HEAD = forward  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy() -> Iterator[ForwardingProxy]:
    running = ForwardingProxy()
    yield running
    running.close()


def _account(azurite: Azurite) -> StorageAccount:
    settings = dataclasses.replace(StorageSettings.from_env(), connection=azurite.connection_string)
    return StorageAccount(settings)


def _use_storage(account: StorageAccount) -> None:
    """A Table write, a transaction and a read; a queue send and receive."""
    name = f"clients{secrets.token_hex(4)}"
    table = account.table(name)
    table.upsert_entity({"PartitionKey": "p", "RowKey": "a", "n": 1})
    table.submit_transaction([("upsert", {"PartitionKey": "p", "RowKey": "b", "n": 2}),
                              ("upsert", {"PartitionKey": "p", "RowKey": "c", "n": 3})])
    assert table.get_entity("p", "c")["n"] == 3
    queue = account.queue(name)
    queue.send_message("hello")
    assert [m.content for m in queue.receive_messages()] == ["hello"]


def test_no_request_reads_the_environment(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    """requests looks the proxies up and reads ~/.netrc per request when it trusts the environment."""
    account = _account(azurite)
    assert account.table_service and account.queue_service  # built: the environment read once, here
    lookups: list[str] = []
    azurite_ports = {azurite.table_port, azurite.queue_port}
    for name in ("get_environ_proxies", "get_netrc_auth"):
        original = getattr(requests.sessions, name)

        def counting(url: str, *args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            if urlsplit(url).port in azurite_ports:  # this test's requests, not another thread's
                lookups.append(_name)
            return _original(url, *args, **kwargs)

        monkeypatch.setattr(requests.sessions, name, counting)

    _use_storage(account)

    assert lookups == []


def test_the_environments_proxy_is_used(azurite: Azurite, proxy: ForwardingProxy,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    proxy_environment(monkeypatch, HTTP_PROXY=proxy.url)

    _use_storage(_account(azurite))

    ports = {urlsplit(url).port for url in proxy.urls}
    assert ports == {azurite.table_port, azurite.queue_port}
    assert any("$batch" in url for url in proxy.urls)


def test_no_proxy_still_bypasses_it(azurite: Azurite, proxy: ForwardingProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy_environment(monkeypatch, HTTP_PROXY=proxy.url, NO_PROXY="127.0.0.1")

    _use_storage(_account(azurite))

    assert proxy.urls == []
