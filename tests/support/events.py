"""A webhook receiver on loopback for events and hooks, and the check a receiver makes of a signature."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SIGNING_KEY = "test-signing-key"  # EVENT_SIGNING_KEY


class Receiver:
    """A webhook receiver on loopback: records every request; answers `status` after `fail_first` 500s."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_first = 0
        self.status = 200
        self.answer = b"ok"
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                failing = len(receiver.requests) <= receiver.fail_first
                self.send_response(500 if failing else receiver.status)
                self.send_header("Content-Length", str(len(receiver.answer)))
                self.end_headers()
                self.wfile.write(receiver.answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.requests if r["path"] == "/events"]


def webhook_settings(receiver: Receiver) -> dict[str, str]:
    """App settings that send the app's events, signed, to `receiver`."""
    return {"EVENT_WEBHOOKS": f"{receiver.url}/events", "EVENT_SIGNING_KEY": SIGNING_KEY}


def received(receiver: Receiver, event_type: str, timeout: float = 30) -> list[dict[str, Any]]:
    """The events of `event_type` the receiver has had, waiting up to `timeout` seconds for the first."""
    deadline = time.monotonic() + timeout
    while True:
        found = [json.loads(r["body"]) for r in receiver.requests if r["path"] == "/events"
                 and json.loads(r["body"])["type"] == event_type]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def signed(request: dict[str, Any]) -> bool:
    """What a receiver does: HMAC of "<timestamp>.<body>", and the timestamp recent (no replays)."""
    timestamp = request["headers"]["X-PatchPilot-Timestamp"]
    expected = "sha256=" + hmac.new(SIGNING_KEY.encode(), timestamp.encode() + b"." + request["body"],
                                    hashlib.sha256).hexdigest()
    return (hmac.compare_digest(request["headers"].get("X-PatchPilot-Signature", ""), expected)
            and abs(time.time() - int(timestamp)) < 300)
