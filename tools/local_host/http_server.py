"""The HTTP front end: function routes under the route prefix, and the admin endpoints Core Tools has.

Requests become `func.HttpRequest` with the absolute URL the client used (scheme, Host header, path
and query), headers (repeated headers joined with ", "), query parameters (repeated keys joined with
",", as the host's dictionary conversion does), route values and the raw body. The function's
`func.HttpResponse` is written back with its status, every header value, and its body; a `str`
return is a 200 text/plain response, `None` a 204. An exception is a 500 with an empty body.
authLevel is not enforced, like Core Tools. Bodies over 100 MB are refused with 413, as the host does.

Admin (no keys locally): `POST /admin/functions/{name}` with `{"input": "..."}` runs a non-HTTP function
once (202, like Core Tools), `GET /admin/host/status` reports the host as Running.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

if TYPE_CHECKING:
    from .host import LocalHost

log = logging.getLogger("tools.local_host")

MAX_BODY = 100 * 1024 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    host: LocalHost


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "LocalFunctionsHost"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET  # noqa: N815

    # -- plumbing --------------------------------------------------------------------------------------
    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return None
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: list[tuple[str, str]] | None = None) -> None:
        self.send_response(status)
        names = set()
        for name, value in headers or []:
            if name.lower() in ("content-length", "transfer-encoding", "connection"):
                continue
            names.add(name.lower())
            self.send_header(name, value)
        if body and "content-type" not in names:
            self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(
            status, json.dumps(payload).encode(), [("Content-Type", "application/json; charset=utf-8")]
        )

    def _dispatch(self) -> None:
        host = self.server.host
        split = urlsplit(self.path)
        body = self._read_body()
        if body is None:
            self.close_connection = True
            self._send(413, b"Request body too large")
            return
        path = split.path or "/"
        lower = path.lower().rstrip("/")
        if lower.startswith("/admin/"):
            self._admin(lower, path, body)
            return
        if lower == "" and self.command in ("GET", "HEAD"):
            self._send(200, b"Your Functions host is up and running (tools.local_host)")
            return
        found = host.routes.find(self.command, path)
        if found is None:
            self._send(404)
            return
        route, values = found
        fn = route.target
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        params: dict[str, str] = {}
        for k, v in parse_qsl(split.query, keep_blank_values=True):
            params[k] = f"{params[k]},{v}" if k in params else v
        url = f"http://{self.headers.get('Host') or host.authority}{self.path}"
        req = func.HttpRequest(
            self.command, url, headers=headers, params=params, route_params=values, body=body
        )
        record = host.invoker.invoke(fn, req, "This function was programmatically called via the host APIs.")
        if not record.succeeded:
            self._send(500)
            return
        self._write_result(record.result)

    def _write_result(self, result: Any) -> None:
        if result is None:
            self._send(204)
        elif isinstance(result, func.HttpResponse):
            headers = list(result.headers.items())
            if not any(k.lower() == "content-type" for k, _ in headers):
                ct = result.mimetype + (
                    f"; charset={result.charset}" if result.mimetype.startswith("text/") else ""
                )
                headers.append(("Content-Type", ct))
            self._send(result.status_code, result.get_body(), headers)
        elif isinstance(result, str | bytes):
            self._send(200, result.encode() if isinstance(result, str) else result)
        else:
            log.error("HTTP function returned %s; expected func.HttpResponse or str", type(result).__name__)
            self._send(500)

    def _admin(self, lower: str, path: str, body: bytes) -> None:
        host = self.server.host
        if lower == "/admin/host/status" and self.command == "GET":
            self._json(
                200,
                {
                    "id": host.host_id,
                    "state": "Running",
                    "version": "local",
                    "processUptime": int(host.uptime * 1000),
                },
            )
            return
        prefix = "/admin/functions/"
        if lower.startswith(prefix) and self.command == "POST":
            name = path.rstrip("/")[len(prefix) :]
            try:
                payload = json.loads(body or b"{}")
            except ValueError:
                self._send(400, b'Body must be JSON: {"input": "..."}')
                return
            try:
                host.invoke_async(name, (payload or {}).get("input") if isinstance(payload, dict) else None)
            except KeyError:
                self._send(404)
                return
            except ValueError as exc:
                self._send(400, str(exc).encode())
                return
            self._send(202)
            return
        self._send(404)


class HttpServer:
    """Owns the listening socket and its serving thread."""

    def __init__(self, host: LocalHost, bind: str, port: int) -> None:
        self.server = _Server((bind, port), _Handler)
        self.server.host = host
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="local-host-http",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
