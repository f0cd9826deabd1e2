"""ARM_ENDPOINT rules and the guarantee that a token never leaves the configured endpoint."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.arm.client import ArmClient
from shared.arm.credentials import StaticTokenCredential
from shared.errors import UntrustedEndpointError
from shared.settings import SettingsError, normalise_arm_endpoint


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
    assert client.poll(f"http://127.0.0.1:{port}/ok").status == 200
    assert _Recorder.seen == ["Bearer secret"]
    # Same host, other port; other host; other scheme: all refused before anything is sent.
    for url in (f"http://127.0.0.1:{port + 1}/x", f"http://localhost:{port}/x", f"https://127.0.0.1:{port}/x",
                "https://evil.example/subscriptions"):
        with pytest.raises(UntrustedEndpointError):
            client.poll(url)
    assert _Recorder.seen == ["Bearer secret"]


def test_the_compressed_schedule_clock_is_for_the_simulator_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime

    from shared.scheduling.clock import schedule_now
    from shared.settings import Settings, SettingsError

    monkeypatch.setenv("SCHEDULE_CLOCK_ORIGIN", "2026-01-01T00:00:00Z")
    monkeypatch.setenv("SCHEDULE_CLOCK_SCALE", "60")
    monkeypatch.setenv("ARM_ENDPOINT", "http://127.0.0.1:8090")
    settings = Settings.from_env()
    assert schedule_now(settings, datetime(2026, 1, 1, 0, 1, tzinfo=UTC)) == datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    monkeypatch.setenv("ARM_ENDPOINT", "https://management.azure.com")
    with pytest.raises(SettingsError):
        Settings.from_env()
    monkeypatch.delenv("SCHEDULE_CLOCK_ORIGIN")
    monkeypatch.delenv("SCHEDULE_CLOCK_SCALE")
    assert Settings.from_env().schedule_clock_origin is None
