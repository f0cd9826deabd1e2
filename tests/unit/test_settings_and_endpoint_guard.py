"""ARM_ENDPOINT rules and the guarantee that a token never leaves the configured endpoint."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.arm.calls import POLL_OPERATION
from shared.arm.client import ArmClient
from shared.arm.credentials import StaticTokenCredential
from shared.core.errors import UntrustedEndpointError
from shared.core.settings import SettingsError, normalise_arm_endpoint


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("https://management.azure.com/", "https://management.azure.com"),
     ("http://127.0.0.1:8090", "http://127.0.0.1:8090"), ("http://localhost:1", "http://localhost:1"),
     ("https://Management.USGovCloudAPI.net", "https://management.usgovcloudapi.net")],
)
def test_valid_endpoints(raw: str, expected: str) -> None:
    assert normalise_arm_endpoint(raw) == expected


@pytest.mark.parametrize("raw", ["http://management.azure.com", "ftp://x", "https://h/path", "management.azure.com"])
def test_invalid_endpoints(raw: str) -> None:
    with pytest.raises(SettingsError):
        normalise_arm_endpoint(raw)


class _Recorder(BaseHTTPRequestHandler):
    seen: list[str | None] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder():  # type: ignore[no-untyped-def]
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def test_token_goes_to_the_endpoint_and_nowhere_else(recorder: ThreadingHTTPServer) -> None:
    port = recorder.server_address[1]
    client = ArmClient(f"http://127.0.0.1:{port}", StaticTokenCredential("secret"), api_version="2025-04-01")
    assert client.send(POLL_OPERATION, f"http://127.0.0.1:{port}/ok").status == 200
    assert _Recorder.seen == ["Bearer secret"]
    # Same host, other port; other host; other scheme: all refused before anything is sent.
    for url in (f"http://127.0.0.1:{port + 1}/x", f"http://localhost:{port}/x", f"https://127.0.0.1:{port}/x",
                "https://evil.example/subscriptions"):
        with pytest.raises(UntrustedEndpointError):
            client.send(POLL_OPERATION, url)
    assert _Recorder.seen == ["Bearer secret"]


def test_the_compressed_schedule_clock_is_for_the_simulator_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime

    from shared.core.clock import schedule_now
    from shared.core.settings import Settings, SettingsError

    monkeypatch.setenv("SCHEDULE_CLOCK_ORIGIN", "2026-01-01T00:00:00Z")
    monkeypatch.setenv("SCHEDULE_CLOCK_SCALE", "60")
    monkeypatch.setenv("ARM_ENDPOINT", "http://127.0.0.1:8090")
    local = Settings.from_env().local
    assert schedule_now(local, datetime(2026, 1, 1, 0, 1, tzinfo=UTC)) == datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    monkeypatch.setenv("ARM_ENDPOINT", "https://management.azure.com")
    with pytest.raises(SettingsError):
        Settings.from_env()
    monkeypatch.delenv("SCHEDULE_CLOCK_ORIGIN")
    monkeypatch.delenv("SCHEDULE_CLOCK_SCALE")
    assert Settings.from_env().local.schedule_clock_origin is None


def _server(headers: list[dict[str, str]] | None = None) -> tuple[ThreadingHTTPServer, list[str | None]]:
    """A loopback server answering `{}`; returns it and the Authorization headers it saw (all headers too,
    into `headers`, when given)."""
    seen: list[str | None] = []

    class Handler(_Recorder):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            if headers is not None:
                headers.append(dict(self.headers))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def test_a_location_that_parsers_read_differently_never_gets_the_token() -> None:
    arm, arm_seen = _server()
    other, other_seen = _server()
    try:
        port, lure_port = arm.server_address[1], other.server_address[1]
        client = ArmClient(f"http://127.0.0.1:{port}", StaticTokenCredential("secret"), api_version="2025-04-01")
        lures = [
            # urlsplit reads 127.0.0.1:port here; requests connects to localhost:lure_port.
            f"http://localhost:{lure_port}\\@127.0.0.1:{port}/subscriptions/s/operations/1",
            f"http://user@127.0.0.1:{port}/subscriptions",           # userinfo, even on the right host
            f"http://127.0.0.1:{port}@localhost:{lure_port}/x",        # userinfo naming ARM, host elsewhere
            f"http://127.0.0.1:{port}/x\\y",                             # backslash anywhere
            f"http://127.0.0.1:{port}/x\ty", f"http://127.0.0.1:{port}/x y", f"http://127.0.0.1:{port}\n/x",
            f"http://127.0.0.1:{port}:{lure_port}/x", "", "not a url",
        ]
        for url in lures:
            with pytest.raises(UntrustedEndpointError):
                client.send(POLL_OPERATION, url)
        assert other_seen == [] and arm_seen == []
        # The same-origin URL ARM really sends still works, with its query intact.
        assert client.send(POLL_OPERATION, f"http://127.0.0.1:{port}/subscriptions/s/operations/1?api-version=2025-04-01&p=a@b"
                           ).status == 200
        assert arm_seen == ["Bearer secret"]
    finally:
        arm.shutdown()
        other.shutdown()


def test_the_first_lure_did_reach_the_other_host_through_requests() -> None:
    """Why both parsers are consulted: the standard library and requests read that URL differently."""
    import requests

    from shared.arm.client import origin

    other, other_seen = _server()
    try:
        lure = f"http://localhost:{other.server_address[1]}\\@127.0.0.1:1/x"
        assert origin(lure) == ("http", "127.0.0.1", 1)
        requests.get(lure, headers={"Authorization": "Bearer probe"}, timeout=5)
        assert other_seen == ["Bearer probe"]
    finally:
        other.shutdown()


def test_every_arm_request_carries_a_client_request_id_and_user_agent() -> None:
    headers: list[dict[str, str]] = []
    server, _ = _server(headers)
    try:
        client = ArmClient(f"http://127.0.0.1:{server.server_address[1]}", StaticTokenCredential("t"),
                           api_version="2025-04-01")
        client.send(POLL_OPERATION, f"http://127.0.0.1:{server.server_address[1]}/a")
        client.send(POLL_OPERATION, f"http://127.0.0.1:{server.server_address[1]}/b")
    finally:
        server.shutdown()
    ids = [h["x-ms-client-request-id"] for h in headers]
    assert len(set(ids)) == 2
    assert all(h["User-Agent"].startswith("patchpilot/") and h["Authorization"] == "Bearer t" for h in headers)


@pytest.mark.parametrize(("value", "expected"), [
    (None, 60), ("", 60), ("7", 7), (" 12 ", 12), ("0", 0), ("soon", 60), ("1.5", 2),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0),  # an HTTP-date in the past: go now
])
def test_retry_after_is_whole_seconds_with_arms_60_second_default(value: str | None, expected: int) -> None:
    from shared.arm.client import parse_retry_after

    assert parse_retry_after(value, 60) == expected
