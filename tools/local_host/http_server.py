"""The HTTP front end: function routes under the route prefix, and the admin endpoints Core Tools has.

Server: uvicorn with its h11 protocol, serving the small ASGI app below. We do not frame HTTP
ourselves: uvicorn is maintained (Encode), small (h11 and click are its only dependencies, both pure
Python), runs in a background thread of this process, and h11 parses strictly, answering 400 to a
malformed request line or header such as `Content-Length: -1` or `Content-Length: abc`, as Kestrel
does. Werkzeug's dev server would keep the standard library's http.server framing; over waitress, the
ASGI interface lets this app time out a stalled body itself and answer 408 as Kestrel does. The socket
listens with a backlog of 2048 (uvicorn's default; the OS may cap it), and the host's limits are applied here:
- a body larger than `FUNCTIONS_REQUEST_BODY_SIZE_LIMIT` bytes (default 104857600, the host's
  ScriptConstants.DefaultMaxRequestBodySize) is refused with 413, from Content-Length before reading
  when it is given, else as soon as the chunks pass it (the rest of the body is read and dropped, so
  the client gets the answer);
- a body that stops arriving (Content-Length larger than what is sent) is answered with 408 after
  `request_body_timeout` seconds without data (Kestrel: MinRequestBodyDataRate, 240 B/s after a 5 s
  grace period), and the connection is closed.
Function calls block, so each request's invocation is dispatched from a thread of `dispatch_threads`
(they only wait: the function itself runs on the worker's pool, see invoker.py).

Requests become `func.HttpRequest` with the absolute URL the client used (scheme, Host header, path
and query), headers (repeated headers joined with ", "), query parameters (repeated keys joined with
",", as the host's dictionary conversion does), route values and the raw body. The function's
`func.HttpResponse` is written back with its status, every header value, and its body; a `str`
return is a 200 text/plain response, `None` a 204. An exception or a timeout is a 500 with an empty body.

Keys: with `LOCAL_HOST_FUNCTION_KEYS` set (keys separated by commas), a route whose authLevel is
`function` needs one of them in the `x-functions-key` header or, when that header is absent, in the
`code` query parameter, as the host's AuthenticationLevelHandler reads them; otherwise 401 with an empty
body. Each key acts like an Azure host key (valid for every function). `anonymous` routes stay open;
`admin` routes need the master key, which the local host does not have, so they answer 401. Without the
setting nothing is enforced, like Core Tools.

Admin (no keys locally): `POST /admin/functions/{name}` with `{"input": "..."}` runs a non-HTTP function
once (202, like Core Tools), `GET /admin/host/status` reports the host as Running.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import json
import logging
import os
import socket
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import azure.functions as func
import uvicorn

if TYPE_CHECKING:
    from .host import LocalHost

log = logging.getLogger("tools.local_host")

DEFAULT_MAX_BODY = 104_857_600  # ScriptConstants.DefaultMaxRequestBodySize
BODY_SIZE_SETTING = "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"
KEYS_SETTING = "LOCAL_HOST_FUNCTION_KEYS"
BACKLOG = 2048
REQUEST_BODY_TIMEOUT = 5.0  # seconds without body data before a 408 (Kestrel's grace period)
DISPATCH_THREADS = 256  # requests waiting for their function at once; more wait for a dispatch thread

Headers = list[tuple[bytes, bytes]]


class _BodyError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def max_body_size(environ: Any = None) -> int:
    raw = (os.environ if environ is None else environ).get(BODY_SIZE_SETTING)
    try:
        return int(raw) if raw else DEFAULT_MAX_BODY
    except ValueError:
        log.warning("%s must be a number of bytes; using %d", BODY_SIZE_SETTING, DEFAULT_MAX_BODY)
        return DEFAULT_MAX_BODY


def function_keys(environ: Any = None) -> list[str]:
    raw = (os.environ if environ is None else environ).get(KEYS_SETTING) or ""
    return [k.strip() for k in raw.split(",") if k.strip()]


class FunctionsApp:
    """The ASGI application: reads the request, routes, authorizes, invokes, writes the response."""

    def __init__(self, host: LocalHost, request_body_timeout: float, dispatch_threads: int) -> None:
        self.host = host
        self.body_timeout = request_body_timeout
        self.max_body = max_body_size()
        self.keys = function_keys()
        self.dispatch = concurrent.futures.ThreadPoolExecutor(
            max_workers=dispatch_threads, thread_name_prefix="http-dispatch"
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        try:
            body = await self._read_body(scope, receive)
        except _BodyError as exc:
            # After a 413 the connection stays open and uvicorn discards the rest of the body: closing
            # with unread data would reset the connection and the client could lose the answer.
            await _send(send, method, exc.status, exc.text.encode(), close=exc.status != 413)
            return
        status, payload, headers = await self._handle(scope, body)
        await _send(send, method, status, payload, headers)

    async def _read_body(self, scope: dict[str, Any], receive: Any) -> bytes:
        declared = _header(scope["headers"], b"content-length")
        if declared is not None and int(declared) > self.max_body:  # h11 has checked it is digits
            raise _BodyError(413, "Request body too large")
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except TimeoutError:
                raise _BodyError(408, "Request body timed out") from None
            if message["type"] == "http.disconnect":
                raise _BodyError(400, "Client disconnected")
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_body:
                raise _BodyError(413, "Request body too large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _handle(self, scope: dict[str, Any], body: bytes) -> tuple[int, bytes, list[tuple[str, str]]]:
        host = self.host
        method: str = scope["method"]
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        query = scope["query_string"].decode("latin-1")
        lower = raw_path.lower().rstrip("/")
        if lower.startswith("/admin/"):
            return self._admin(method, lower, raw_path, body)
        if lower == "" and method in ("GET", "HEAD"):
            return 200, b"Your Functions host is up and running (tools.local_host)", []
        found = host.routes.find(method, raw_path)
        if found is None:
            return 404, b"", []
        route, values = found
        fn = route.target
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        params: dict[str, str] = {}
        for k, v in parse_qsl(query, keep_blank_values=True):
            params[k] = f"{params[k]},{v}" if k in params else v
        if not self._authorized(fn, scope["headers"], query):
            return 401, b"", []
        target = raw_path + (f"?{query}" if query else "")
        url = f"http://{headers.get('host') or host.authority}{target}"
        req = func.HttpRequest(method, url, headers=headers, params=params, route_params=values, body=body)
        loop = asyncio.get_running_loop()
        record = await loop.run_in_executor(
            self.dispatch,
            host.invoker.invoke,
            fn,
            req,
            "This function was programmatically called via the host APIs.",
        )
        if not record.succeeded:
            return 500, b"", []
        return _result(record.result)

    def _authorized(self, fn: Any, raw_headers: Headers, query: str) -> bool:
        """AuthenticationLevelHandler: the header first, else `?code=`; the first value counts."""
        level = str(fn.properties.get("authLevel") or "function").lower()
        if not self.keys or level == "anonymous":
            return True
        if level != "function":
            return False  # admin level needs the master key
        presented = _header(raw_headers, b"x-functions-key")
        if presented is None:
            codes = [v for k, v in parse_qsl(query, keep_blank_values=True) if k.lower() == "code"]
            presented = codes[0] if codes else None
        if not presented:
            return False
        given = presented.encode()
        return any(hmac.compare_digest(given, key.encode()) for key in self.keys)

    def _admin(self, method: str, lower: str, path: str, body: bytes) -> tuple[int, bytes, list[tuple[str, str]]]:
        host = self.host
        if lower == "/admin/host/status" and method == "GET":
            status = {
                "id": host.host_id,
                "state": "Running",
                "version": "local",
                "processUptime": int(host.uptime * 1000),
            }
            return 200, json.dumps(status).encode(), [("Content-Type", "application/json; charset=utf-8")]
        prefix = "/admin/functions/"
        if lower.startswith(prefix) and method == "POST":
            name = path.rstrip("/")[len(prefix) :]
            try:
                payload = json.loads(body or b"{}")
            except ValueError:
                return 400, b'Body must be JSON: {"input": "..."}', []
            try:
                host.invoke_async(name, (payload or {}).get("input") if isinstance(payload, dict) else None)
            except KeyError:
                return 404, b"", []
            except ValueError as exc:
                return 400, str(exc).encode(), []
            return 202, b"", []
        return 404, b"", []


def _header(headers: Headers, name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _result(result: Any) -> tuple[int, bytes, list[tuple[str, str]]]:
    if result is None:
        return 204, b"", []
    if isinstance(result, func.HttpResponse):
        headers = list(result.headers.items())
        if not any(k.lower() == "content-type" for k, _ in headers):
            ct = result.mimetype + (f"; charset={result.charset}" if result.mimetype.startswith("text/") else "")
            headers.append(("Content-Type", ct))
        return result.status_code, result.get_body(), headers
    if isinstance(result, str | bytes):
        return 200, result.encode() if isinstance(result, str) else result, []
    log.error("HTTP function returned %s; expected func.HttpResponse or str", type(result).__name__)
    return 500, b"", []


async def _send(
    send: Any,
    method: str,
    status: int,
    body: bytes,
    headers: list[tuple[str, str]] | None = None,
    *,
    close: bool = False,
) -> None:
    out: Headers = []
    names = set()
    for name, value in headers or []:
        if name.lower() in ("content-length", "transfer-encoding", "connection"):
            continue
        names.add(name.lower())
        out.append((name.encode("latin-1"), str(value).encode("latin-1")))
    if body and "content-type" not in names:
        out.append((b"content-type", b"text/plain; charset=utf-8"))
    out.append((b"content-length", str(len(body)).encode()))
    if close:
        out.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


class HttpServer:
    """Owns the listening socket and the uvicorn server thread."""

    def __init__(
        self,
        host: LocalHost,
        bind: str,
        port: int,
        *,
        request_body_timeout: float = REQUEST_BODY_TIMEOUT,
        dispatch_threads: int = DISPATCH_THREADS,
        shutdown_timeout: float = 30.0,
    ) -> None:
        self.app = FunctionsApp(host, request_body_timeout, dispatch_threads)
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((bind, port))
            self.socket.listen(BACKLOG)
        except OSError:
            self.socket.close()
            raise
        config = uvicorn.Config(
            self.app,
            http="h11",
            loop="asyncio",
            lifespan="off",
            log_config=None,
            access_log=False,
            backlog=BACKLOG,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=int(max(1, shutdown_timeout)),
            server_header=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, name="local-host-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    def start(self, timeout: float = 10.0) -> None:
        self.thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout / 0.01)):
            if self.server.started or not self.thread.is_alive():
                break
            deadline.wait(0.01)
        if not self.server.started:
            raise RuntimeError("the HTTP server did not start")

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.app.dispatch.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(OSError):
            self.socket.close()
