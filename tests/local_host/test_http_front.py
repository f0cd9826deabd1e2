"""The HTTP front at socket level: many clients at once, malformed framing, body limits; then route
order and function keys through real requests. Every socket read has a timeout, so a server that
does not answer fails the test instead of hanging it."""

from __future__ import annotations

import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tools.local_host import LocalHost

READ_TIMEOUT = 10.0  # a bound for "answered", far above the time an answer takes


def _connect(host: LocalHost) -> socket.socket:
    sock = socket.create_connection((host.bind, host.port), timeout=READ_TIMEOUT)
    sock.settimeout(READ_TIMEOUT)
    return sock


def _status_of(sock: socket.socket) -> int:
    """Read until the status line is complete; raises socket.timeout if the server stays silent."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"connection closed without an answer (got {data!r})")
        data += chunk
    return int(data.split(b" ", 2)[1])


def _raw(host: LocalHost, head: str, body: bytes = b"") -> int:
    with _connect(host) as sock:
        sock.sendall(head.encode() + body)
        return _status_of(sock)


def test_fifty_clients_at_once_are_all_answered(start_host) -> None:
    host = start_host()
    barrier = threading.Barrier(50)

    def client(i: int) -> int:
        barrier.wait()
        # With a listen backlog that overflows, the kernel drops SYNs and the client only retries after
        # 1 s (Linux's initial retransmission timeout), or the connection is reset: a connect bound below
        # that second catches both. With room in the backlog the kernel completes the handshake at once.
        with socket.create_connection((host.bind, host.port), timeout=0.9) as sock:
            sock.settimeout(READ_TIMEOUT)
            sock.sendall(f"GET /api/items/{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            return _status_of(sock)

    with ThreadPoolExecutor(50) as pool:
        assert list(pool.map(client, range(50))) == [200] * 50


def test_malformed_content_length_is_a_400(start_host) -> None:
    host = start_host()
    for value in ("-1", "abc", "1, 2"):
        head = f"POST /api/items/1 HTTP/1.1\r\nHost: x\r\nContent-Length: {value}\r\n\r\n"
        assert _raw(host, head, b"x") == 400, value


def test_body_shorter_than_content_length_is_a_408_not_a_hang(start_host) -> None:
    host = start_host(request_body_timeout=0.5)
    head = "POST /api/items/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    assert _raw(host, head, b"only ten b") == 408
    # the function never ran
    assert not [i for i in host.invocations if i.function == "items"]


def test_large_body_accepted_and_limit_enforced(start_host, monkeypatch) -> None:
    monkeypatch.setenv("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", str(5 * 1024 * 1024))
    host = start_host()
    body = b"a" * (4 * 1024 * 1024)  # a 10,000-machine run is about 1.3 MB
    r = requests.post(f"{host.base_url}/api/items/1", data=body, timeout=30)
    assert r.status_code == 201
    assert len(r.json()["body"]) == len(body)
    too_big = b"a" * (5 * 1024 * 1024 + 1)
    assert requests.post(f"{host.base_url}/api/items/1", data=too_big, timeout=30).status_code == 413
    # chunked: no Content-Length to refuse up front, so it is counted as it arrives
    chunks = (too_big[i : i + 65536] for i in range(0, len(too_big), 65536))
    assert requests.post(f"{host.base_url}/api/items/1", data=chunks, timeout=30).status_code == 413
    small = (b"abc", b"def")
    r = requests.post(f"{host.base_url}/api/items/1", data=iter(small), timeout=30)
    assert r.status_code == 201 and r.json()["body"] == "abcdef"


def test_routes_are_tried_in_function_name_order(start_host) -> None:
    host = start_host()
    # echo_hello ("echo/hello") is registered first and is more specific, but echo_any ("echo/{word}")
    # sorts first by name, and the host's route collection stops at the first match
    assert requests.get(f"{host.base_url}/api/echo/hello", timeout=5).text == "any:hello"
    assert requests.get(f"{host.base_url}/api/echo/other", timeout=5).text == "any:other"


def test_conflicting_route_puts_the_later_function_in_error(start_host, tmp_path: Path, settings, caplog) -> None:
    root = tmp_path / "conflict"
    root.mkdir()
    (root / "host.json").write_text(json.dumps({"version": "2.0"}))
    (root / "function_app.py").write_text(
        "import azure.functions as func\n"
        "app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)\n"
        "@app.route(route='same', methods=['GET'])\n"
        "def zulu(req): return 'zulu'\n"
        "@app.route(route='Same/', methods=['GET', 'POST'])\n"
        "def alpha(req): return 'alpha'\n"
        "@app.route(route='admin/x')\n"
        "def reserved(req): return 'reserved'\n"
    )
    host = start_host(root=root)
    assert requests.get(f"{host.base_url}/api/same", timeout=5).text == "alpha"
    assert set(host.functions) == {"alpha"}
    assert "conflicts with the route defined by function 'alpha'" in caplog.text
    assert "conflicts with one or more built in routes" in caplog.text


def test_function_keys_from_the_setting_are_enforced(start_host, monkeypatch) -> None:
    monkeypatch.setenv("LOCAL_HOST_FUNCTION_KEYS", "key-one, key-two")
    host = start_host()
    url = f"{host.base_url}/api/items/1"
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, headers={"x-functions-key": "nope"}, timeout=5).status_code == 401
    assert requests.get(url, headers={"x-functions-key": "key-two"}, timeout=5).status_code == 200
    assert requests.get(url, params={"code": "key-one"}, timeout=5).status_code == 200
    # the header wins over the query, as in the host's AuthenticationLevelHandler
    r = requests.get(url, params={"code": "key-one"}, headers={"x-functions-key": "nope"}, timeout=5)
    assert r.status_code == 401 and r.content == b""
    # anonymous routes and the admin API stay open; unknown paths are still 404
    assert requests.get(f"{host.base_url}/api/open", timeout=5).text == "open"
    assert requests.get(f"{host.base_url}/admin/host/status", timeout=5).status_code == 200
    assert requests.get(f"{host.base_url}/api/nothing", timeout=5).status_code == 404


def test_without_keys_function_routes_are_open(start_host, monkeypatch) -> None:
    monkeypatch.delenv("LOCAL_HOST_FUNCTION_KEYS", raising=False)
    host = start_host()
    assert requests.get(f"{host.base_url}/api/items/1", timeout=5).status_code == 200
