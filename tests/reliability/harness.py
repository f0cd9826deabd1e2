"""The reliability harness: every HTTP endpoint of the app, called in-process with a time bound, and a
probe that proves a refused request wrote nothing. Shared by tests/reliability (the fast subset in
`make test`) and benchmarks/chaos.py (the full run, `make chaos`).

Endpoints are the app's own trigger functions (shared/functions/*_api.py), called with
`azure.functions.HttpRequest` exactly as the Python worker builds it. An unhandled exception becomes a
500 in `shared.http.responses.api_errors`, which logs it; the harness captures that log record so a 5xx
is reported with its exception type and the app frame that raised it (its *signature*). Known app bugs
would be listed in KNOWN_BUGS by signature while a fix is pending (none is now: the seven found are fixed and
kept as regression tests in test_known_bugs.py); any other 5xx fails.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import azure.functions as func
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from tests.app import assessments_api, maintenance_api, runs_api

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_ROOT = REPO_ROOT / "shared"
REQUEST_TIMEOUT = 10.0  # seconds: a request still running after this is a hang

VM_ROUTE = "subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}" \
           "/providers/Microsoft.Compute/virtualMachines/{vmName}"
MC = "maintenance-configurations"


@dataclass(frozen=True)
class Endpoint:
    """One HTTP trigger: method, route template (under /api) and the function the host invokes."""

    name: str
    method: str
    route: str
    fn: Callable[[func.HttpRequest], func.HttpResponse]
    body: str | None = None  # which request shape it takes: run, assessment, configuration, assignment
    params: tuple[str, ...] = ()  # query parameters it reads

    @property
    def route_params(self) -> tuple[str, ...]:
        return tuple(part[1:-1] for part in self.route.split("/") if part.startswith("{"))


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("create_run", "POST", "runs", runs_api.create_run, body="run"),
    Endpoint("list_runs", "GET", "runs", runs_api.list_runs, params=("top", "continuationToken")),
    Endpoint("get_run", "GET", "runs/{runId}", runs_api.get_run),
    Endpoint("get_run_machine", "GET", "runs/{runId}/machines/" + VM_ROUTE, runs_api.get_run_machine),
    Endpoint("cancel_run", "POST", "runs/{runId}/cancel", runs_api.cancel_run),
    Endpoint("resume_run", "POST", "runs/{runId}/resume", runs_api.resume_run),
    Endpoint("create_assessment", "POST", "assessments", assessments_api.create_assessment, body="assessment"),
    Endpoint("get_assessment", "GET", "assessments/{runId}", assessments_api.get_assessment),
    Endpoint("get_compliance", "GET", "compliance", assessments_api.get_compliance,
             params=("subscriptionId", "resourceGroup", "osType", "top")),
    Endpoint("get_machine_assessment", "GET", f"machines/{VM_ROUTE}/assessment",
             assessments_api.get_machine_assessment, params=("history",)),
    Endpoint("put_configuration", "PUT", MC + "/{name}", maintenance_api.put_configuration, body="configuration"),
    Endpoint("get_configuration", "GET", MC + "/{name}", maintenance_api.get_configuration),
    Endpoint("list_configurations", "GET", MC, maintenance_api.list_configurations),
    Endpoint("delete_configuration", "DELETE", MC + "/{name}", maintenance_api.delete_configuration),
    Endpoint("list_occurrences", "GET", MC + "/{name}/occurrences", maintenance_api.list_occurrences,
             params=("from", "count")),
    Endpoint("put_assignment", "PUT", MC + "/{name}/assignments/{assignmentName}", maintenance_api.put_assignment,
             body="assignment"),
    Endpoint("get_assignment", "GET", MC + "/{name}/assignments/{assignmentName}", maintenance_api.get_assignment),
    Endpoint("list_assignments", "GET", MC + "/{name}/assignments", maintenance_api.list_assignments),
    Endpoint("delete_assignment", "DELETE", MC + "/{name}/assignments/{assignmentName}",
             maintenance_api.delete_assignment),
)
BY_NAME = {e.name: e for e in ENDPOINTS}


@dataclass(frozen=True)
class Request:
    """One request to one endpoint; `body` is the raw bytes sent (so it can be invalid JSON)."""

    endpoint: str
    route: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    note: str = ""  # how it was made (valid, or which mutation): printed with a failure

    def describe(self, limit: int = 600) -> str:
        body = self.body if len(self.body) <= limit else self.body[:limit] + b"...(%d bytes)" % len(self.body)
        return (f"{BY_NAME[self.endpoint].method} {self.endpoint} route={self.route!r} params={self.params!r} "
                f"headers={self.headers!r} note={self.note!r} body={body!r}")


@dataclass
class Outcome:
    status: int | None  # None: no answer within the timeout (a hang)
    body: Any
    seconds: float
    signature: str | None = None  # for an unhandled exception: "ExcType at shared/x.py:function"
    trace: str = ""
    routed: bool = True  # False: over HTTP the host answered itself (no route matched; a request it cannot parse)

    @property
    def hung(self) -> bool:
        return self.status is None


class _Captured(logging.Handler):
    """Collects the exception that api_errors logs, for the calling thread only."""

    def __init__(self, thread_id: int) -> None:
        super().__init__(logging.ERROR)
        self.thread_id = thread_id
        self.exc_info: Any = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread_id and record.exc_info and self.exc_info is None:
            self.exc_info = record.exc_info


def signature(exc_info: Any) -> tuple[str, str]:
    """(`ExcType at shared/pkg/file.py:function`, formatted trace): the innermost app frame."""
    exc_type, exc, tb = exc_info
    where = "?"
    for frame in traceback.extract_tb(tb):
        path = Path(frame.filename).resolve()
        if path.is_relative_to(APP_ROOT):
            where = f"{path.relative_to(REPO_ROOT).as_posix()}:{frame.name}"
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    return f"{exc_type.__name__} at {where}", text[-3000:]


def build_path(endpoint: Endpoint, route: dict[str, str]) -> str:
    path = endpoint.route
    for name, value in route.items():
        path = path.replace("{" + name + "}", quote(value, safe=""))
    return "/api/" + path


def call(request: Request, timeout: float = REQUEST_TIMEOUT) -> Outcome:
    """Invoke the endpoint's function in a thread of this process; give up waiting after `timeout`."""
    endpoint = BY_NAME[request.endpoint]
    http = func.HttpRequest(endpoint.method, "http://127.0.0.1:7071" + build_path(endpoint, request.route),
                            body=request.body, params=dict(request.params), route_params=dict(request.route),
                            headers={"Content-Type": "application/json", **request.headers})
    result: dict[str, Any] = {}

    def run() -> None:
        handler = _Captured(threading.get_ident())
        logger = logging.getLogger("shared.http.responses")
        logger.addHandler(handler)
        try:
            result["response"] = endpoint.fn(http)
        except BaseException as exc:
            result["escaped"] = (type(exc), exc, exc.__traceback__)
        finally:
            logger.removeHandler(handler)
            result["exc_info"] = handler.exc_info

    started = time.monotonic()
    worker = threading.Thread(target=run, name=f"reliability-{request.endpoint}", daemon=True)
    worker.start()
    worker.join(timeout)
    seconds = time.monotonic() - started
    if worker.is_alive():
        return Outcome(None, None, seconds, signature=f"hang over {timeout:g}s")
    if "escaped" in result:
        sig, trace = signature(result["escaped"])
        return Outcome(599, None, seconds, signature="escaped " + sig, trace=trace)
    response: func.HttpResponse = result["response"]
    raw = response.get_body() or b""
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = raw[:200]
    sig, trace = signature(result["exc_info"]) if result.get("exc_info") else (None, "")
    return Outcome(response.status_code, body, seconds, signature=sig, trace=trace)


class HttpSender:
    """Send requests to a running host over HTTP (the local Functions host process). A 5xx is replayed
    in-process (`call`) to learn its signature, so known bugs are recognised over HTTP too."""

    def __init__(self, base_url: str) -> None:
        import requests

        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.requests = requests

    def __call__(self, request: Request, timeout: float = REQUEST_TIMEOUT) -> Outcome | None:
        endpoint = BY_NAME[request.endpoint]
        started = time.monotonic()
        try:
            resp = self.session.request(endpoint.method, self.base_url + build_path(endpoint, request.route),
                                        params=request.params, data=request.body, timeout=timeout,
                                        headers={"Content-Type": "application/json", **request.headers})
        except (self.requests.exceptions.InvalidHeader, ValueError, UnicodeError):
            return None  # e.g. a NUL or non-Latin-1 character in a header value: no client sends it
        except self.requests.Timeout:
            return Outcome(None, None, time.monotonic() - started, signature=f"hang over {timeout:g}s (HTTP)")
        except self.requests.ConnectionError as exc:
            return Outcome(599, None, time.monotonic() - started, signature=f"connection error: {exc}"[:300])
        try:
            body = resp.json() if resp.content else None
        except ValueError:
            body = resp.content[:200]
        # Not the app's answer: the host's own empty 404 for an unmatched route, and the HTTP front's own 400
        # for a request it cannot parse (a NUL in a header value; Kestrel answers such a request itself too).
        front = (resp.status_code == 404 and not resp.content) or (
            resp.status_code == 400 and resp.content == b"Invalid HTTP request received.")
        outcome = Outcome(resp.status_code, body, time.monotonic() - started, routed=not front)
        if resp.status_code >= 500:
            replay = call(request, timeout)
            outcome.signature = replay.signature if replay.status and replay.status >= 500 else \
                f"HTTP {resp.status_code} not reproduced in-process ({replay.status})"
            outcome.trace = replay.trace
        return outcome


def is_arm_error(body: Any) -> bool:
    """ARM's error shape: {"error": {"code": str, "message": str, "target"?: str}}."""
    error = body.get("error") if isinstance(body, dict) else None
    return (isinstance(error, dict) and isinstance(error.get("code"), str) and bool(error["code"])
            and isinstance(error.get("message"), str) and bool(error["message"])
            and (error.get("target") is None or isinstance(error["target"], str)))


# -- storage --------------------------------------------------------------------------------------------
TABLE_SETTINGS = ("RUNS_TABLE", "TARGETS_TABLE", "PATCHES_TABLE", "MACHINES_TABLE", "ASSESSMENTS_TABLE",
                  "MAINTENANCE_TABLE")
QUEUE_SETTINGS = ("DISPATCH_QUEUE", "OPERATIONS_QUEUE", "POLLS_QUEUE", "DISCOVERY_QUEUE", "EVENTS_QUEUE")


class StorageProbe:
    """What the app's tables and queues hold: every entity's (PartitionKey, RowKey, ETag) and each queue's
    message count (visible or not). Two equal snapshots mean nothing was created, changed, deleted or
    queued in between."""

    def __init__(self, settings: dict[str, str]) -> None:
        conn = settings["AzureWebJobsStorage"]
        self.tables = TableServiceClient.from_connection_string(conn)
        self.queues = QueueServiceClient.from_connection_string(conn)
        self.table_names = [settings[s] for s in TABLE_SETTINGS if settings.get(s)]
        self.queue_names = [settings[s] for s in QUEUE_SETTINGS if settings.get(s)]
        self._pool = ThreadPoolExecutor(max_workers=len(self.table_names) + len(self.queue_names))
        # The state after the last request that cannot have written (a 4xx): the next request's "before",
        # valid because nothing else writes while the fuzzer runs in-process (no host, no timers).
        self.last: dict[str, Any] | None = None

    def _table(self, name: str) -> tuple[str, Any]:
        try:
            rows = self.tables.get_table_client(name).list_entities(select=["PartitionKey", "RowKey"])
            return f"table {name}", frozenset((e["PartitionKey"], e["RowKey"], e.metadata.get("etag")) for e in rows)
        except ResourceNotFoundError:
            return f"table {name}", frozenset()

    def _queue(self, name: str) -> tuple[str, Any]:
        try:
            return f"queue {name}", self.queues.get_queue_client(name).get_queue_properties().approximate_message_count
        except ResourceNotFoundError:
            return f"queue {name}", 0

    def snapshot(self) -> dict[str, Any]:
        futures = [self._pool.submit(self._table, n) for n in self.table_names]
        futures += [self._pool.submit(self._queue, n) for n in self.queue_names]
        return dict(f.result() for f in futures)

    @staticmethod
    def changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
        out = []
        for key, old in before.items():
            new = after[key]
            if old != new:
                if isinstance(old, frozenset):
                    out.append(f"{key}: +{sorted(new - old)[:3]} -{sorted(old - new)[:3]}")
                else:
                    out.append(f"{key}: {old} -> {new} messages")
        return out


# -- known app bugs: none. The fuzzer found seven (see test_known_bugs.py, kept as regression tests); all are
# fixed, so any 5xx is a new bug. A signature listed here would let that 5xx pass while a fix is pending.
KNOWN_BUGS: dict[str, str] = {}


@dataclass
class Tally:
    """Figures for the chaos table, and the first few reproducers of each problem."""

    tried: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    server_errors: int = 0
    known: dict[str, int] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    wrote_on_refusal: list[str] = field(default_factory=list)
    bad_error_shape: list[str] = field(default_factory=list)
    valid_refused: list[str] = field(default_factory=list)
    slowest: float = 0.0
    unsendable: int = 0

    def problems(self) -> list[str]:
        return [*self.unknown, *self.hangs, *self.wrote_on_refusal, *self.bad_error_shape, *self.valid_refused]


Sender = Callable[[Request, float], "Outcome | None"]


def check(request: Request, probe: StorageProbe | None, tally: Tally, *, valid: bool,
          timeout: float = REQUEST_TIMEOUT, send: Sender = call) -> Outcome | None:
    """Send one request and judge it: no hang; no 5xx unless a known bug; a 4xx in ARM's error shape that
    wrote nothing; a request valid by construction accepted. Problems are added to `tally`. A sender may
    answer None for a request it cannot send (HTTP: a header value no client can put on the wire)."""
    before = (probe.last or probe.snapshot()) if probe else None
    if probe:
        probe.last = None  # until this request is known to have written nothing
    outcome = send(request, timeout)
    if outcome is None:
        tally.unsendable += 1
        return None
    tally.tried += 1
    tally.slowest = max(tally.slowest, outcome.seconds)
    key = "hang" if outcome.hung else str(outcome.status)
    tally.by_status[key] = tally.by_status.get(key, 0) + 1
    if outcome.hung:
        tally.hangs.append(f"HANG {request.describe()}")
        return outcome
    status = outcome.status or 0
    if status >= 500:
        tally.server_errors += 1
        if outcome.signature in KNOWN_BUGS:
            tally.known[outcome.signature] = tally.known.get(outcome.signature, 0) + 1
        else:
            tally.unknown.append(f"{status} {outcome.signature}\n  {request.describe()}\n{outcome.trace}")
        return outcome
    if 400 <= status < 500:
        if outcome.routed and not is_arm_error(outcome.body):
            tally.bad_error_shape.append(f"{status} body={outcome.body!r}\n  {request.describe()}")
        if before is not None and probe is not None:
            after = probe.snapshot()
            changed = probe.changes(before, after)
            probe.last = after
            if changed:
                tally.wrote_on_refusal.append(f"{status} {outcome.body!r} wrote {changed}\n  {request.describe()}")
        if valid and status not in (404, 409):  # a valid body for a missing configuration, a reused key
            tally.valid_refused.append(f"{status} {outcome.body!r}\n  {request.describe()}")
    return outcome
