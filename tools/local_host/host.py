"""LocalHost: index a v2-model function app and run its HTTP, queue and timer triggers.

Startup follows Core Tools: settings (environment first, then local.settings.json), host.json,
import of the app's script file (`function_app.py`, or PYTHON_SCRIPT_FILE_NAME) with the script root
on sys.path, indexing via `app.get_functions()`, `%NAME%` resolution in every binding property (a
missing setting stops startup with its name), then listeners and the HTTP server.

Settings go into this process's `os.environ` (that is where the app reads them), so two in-process
hosts share one environment: run a second host as a subprocess when its settings must differ.
"""

from __future__ import annotations

import contextlib
import enum
import importlib.util
import inspect
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func
from azure.functions.queue import QueueMessage

from .host_config import HostConfig, load_host_config
from .http_server import HttpServer
from .invoker import FunctionInfo, InvocationRecord, Invoker, sync_pool_size
from .queue_listener import QueueListener
from .routes import RouteTable, reserved_route, routes_conflict
from .settings import SettingsError, apply_local_settings, read_local_settings, resolve_properties
from .settings import storage_connection_string as _conn
from .timers import TimerListener

log = logging.getLogger("tools.local_host")

SUPPORTED_TRIGGERS = ("httpTrigger", "queueTrigger", "timerTrigger")


class HostStartupError(Exception):
    """The app cannot be indexed or a trigger cannot be set up; the message says what to fix."""


def stable_hash(text: str) -> int:
    """The host's Utility.GetStableHash (32-bit, wrapping), used to derive the local host id."""
    h = 23
    for ch in text:
        h = (h * 31 + ord(ch)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def default_host_id(script_root: Path) -> str:
    """AzureFunctionsWebHost__hostid if set, else `<machine>-<hash of script root>` (at most 32 chars).

    Hosts started from the same folder on the same machine share the id, so they share timer locks
    and schedule status, exactly like two Core Tools hosts would.
    """
    explicit = os.environ.get("AzureFunctionsWebHost__hostid") or os.environ.get(
        "AzureFunctionsWebHost:hostid"
    )
    if explicit:
        return explicit.lower()
    raw = f"{socket.gethostname()}-{abs(stable_hash(str(script_root)))}".lower()
    return re.sub(r"[^a-z0-9-]", "", raw)[:32].rstrip("-")


class _IgnoredOut(func.Out):  # type: ignore[type-arg]
    """Stand-in for output bindings the local host does not implement: values are logged and dropped."""

    def __init__(self, function: str, binding: str) -> None:
        self._value: Any = None
        self._where = f"{function}.{binding}"

    def set(self, val: Any) -> None:
        log.warning("Output binding %s is not supported by the local host; value dropped", self._where)
        self._value = val

    def get(self) -> Any:
        return self._value


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class LocalHost:
    """A local Functions host. `start()` returns self; `stop()` shuts down gracefully; usable as a context."""

    def __init__(
        self,
        script_root: str | os.PathLike[str] = ".",
        *,
        port: int = 7071,
        host: str = "127.0.0.1",
        env_overrides: dict[str, str] | None = None,
        shutdown_timeout: float = 30.0,
        host_id: str | None = None,
        request_body_timeout: float | None = None,
    ) -> None:
        self.script_root = Path(script_root).resolve()
        self.bind = host
        self.requested_port = port
        self.env_overrides = dict(env_overrides or {})
        self.shutdown_timeout = shutdown_timeout
        self.host_id = host_id or ""
        self.request_body_timeout = request_body_timeout
        self.config = HostConfig()
        self.functions: dict[str, FunctionInfo] = {}
        self.invoker = Invoker()
        self.routes = RouteTable("api")
        self.queue_listeners: dict[str, QueueListener] = {}
        self.timer_listeners: dict[str, TimerListener] = {}
        self.app_module: ModuleType | None = None
        self._http: HttpServer | None = None
        self._started_at = 0.0
        self._stopped = threading.Event()
        self._admin_threads: list[threading.Thread] = []

    # -- properties ------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._http.port if self._http else self.requested_port

    @property
    def authority(self) -> str:
        return f"{self.bind}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.authority}"

    @property
    def uptime(self) -> float:
        return time.monotonic() - self._started_at

    @property
    def invocations(self) -> list[InvocationRecord]:
        """Recent invocations (oldest first): function, id, reason, succeeded, duration, error."""
        return list(self.invoker.records)

    # -- startup ---------------------------------------------------------------------------------------
    def start(self) -> LocalHost:
        """Load settings and the app, start listeners and the HTTP server. Raises on any startup error."""
        self._started_at = time.monotonic()
        os.environ.update(self.env_overrides)
        apply_local_settings(read_local_settings(self.script_root).get("Values") or {})
        self.config = load_host_config(self.script_root)
        self.host_id = self.host_id or default_host_id(self.script_root)
        self.routes = RouteTable(self.config.route_prefix)
        self._index(self._import_app())
        # the worker starts after the settings are applied: it reads PYTHON_THREADPOOL_THREAD_COUNT from them
        self.invoker.start(self.config.function_timeout, sync_pool_size())
        try:
            self._start_listeners()
            http_options: dict[str, Any] = {"shutdown_timeout": self.shutdown_timeout}
            if self.request_body_timeout is not None:
                http_options["request_body_timeout"] = self.request_body_timeout
            self._http = HttpServer(self, self.bind, self.requested_port, **http_options)
        except BaseException:
            self.stop()
            raise
        # Core Tools sets WEBSITE_HOSTNAME to the address it listens on, unless the environment already
        # has one (App Service sets it in Azure); apps build absolute URLs from it, never from Host.
        listening = "localhost" if self.bind in ("", "0.0.0.0", "::") else self.bind
        listening = f"[{listening}]" if ":" in listening else listening
        os.environ.setdefault("WEBSITE_HOSTNAME", f"{listening}:{self.port}")
        self._http.start()
        self._print_functions()
        log.info("Host started (id=%s); listening on %s", self.host_id, self.base_url)
        return self

    def _import_app(self) -> Any:
        file_name = os.environ.get("PYTHON_SCRIPT_FILE_NAME") or "function_app.py"
        path = self.script_root / file_name
        if not path.exists():
            raise HostStartupError(
                f"{path} not found: the v2 programming model needs {file_name} in the script root"
            )
        if str(self.script_root) not in sys.path:
            sys.path.insert(0, str(self.script_root))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        self.app_module = module
        apps = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
        if not apps:
            raise HostStartupError(f"{path} defines no FunctionApp (e.g. `app = func.FunctionApp()`)")
        return apps[0]

    def _index(self, app: Any) -> None:
        for fn in app.get_functions():
            trigger = fn.get_trigger()
            name = fn.get_function_name()
            if trigger is None:
                log.warning("Function '%s' has no trigger; skipped", name)
                continue
            props = {k: _plain(v) for k, v in trigger.get_dict_repr().items()}
            ttype = props.pop("type")
            arg = props.pop("name")
            for key in ("direction", "dataType"):
                props.pop(key, None)
            if ttype not in SUPPORTED_TRIGGERS:
                log.warning(
                    "Function '%s': trigger type '%s' is not supported by the local host; skipped",
                    name,
                    ttype,
                )
                continue
            try:
                props = resolve_properties(props)
            except SettingsError as exc:
                raise HostStartupError(f"Error indexing method 'Functions.{name}': {exc}") from None
            user_func = fn.get_user_function()
            info = FunctionInfo(
                name,
                ttype,
                arg,
                props,
                user_func,
                str(self.script_root),
                list(inspect.signature(user_func).parameters),
            )
            self._bind_outputs(info, fn)
            self.functions[name] = info

    def _bind_outputs(self, info: FunctionInfo, fn: Any) -> None:
        extra = [b.get_dict_repr() for b in fn.get_bindings() if b is not fn.get_trigger()]
        extra = [b for b in extra if b.get("name") != "$return"]
        if not extra:
            return
        original = info.func
        for b in extra:
            log.warning(
                "Function '%s': binding '%s' (%s) is not supported by the local host",
                info.name,
                b.get("name"),
                b.get("type"),
            )

        def with_outputs(**kwargs: Any) -> Any:
            for b in extra:
                kwargs.setdefault(str(b["name"]), _IgnoredOut(info.name, str(b["name"])))
            return original(**kwargs)

        if inspect.iscoroutinefunction(original):

            async def async_with_outputs(**kwargs: Any) -> Any:
                return await with_outputs(**kwargs)

            info.func = async_with_outputs
        else:
            info.func = with_outputs

    def _start_listeners(self) -> None:
        from azure.core.exceptions import HttpResponseError
        from azure.storage.blob import BlobServiceClient
        from azure.storage.queue import QueueServiceClient

        from shared.storage.clients import pooled_transport  # imported once the app's settings are applied

        self._add_routes()
        for info in self.functions.values():
            if info.trigger_type == "queueTrigger":
                try:
                    conn = _conn(info.properties.get("connection"))
                except SettingsError as exc:
                    raise HostStartupError(f"Function '{info.name}': {exc}") from None
                # A client of its own per listener, a connection for each message in flight plus its receive
                # loop and visibility renewer (requests keeps 10 a host and discards the rest after use)
                service = QueueServiceClient.from_connection_string(
                    conn, transport=pooled_transport(self.config.queues.max_in_flight + 2))
                listener = QueueListener(info, self.invoker, service, self.config.queues)
                try:
                    listener.start()
                except HttpResponseError as exc:
                    reason = str(exc.message or exc).splitlines()[0]
                    raise HostStartupError(
                        f"Function '{info.name}': queue '{listener.queue_name}' cannot be used: {reason}"
                    ) from None
                self.queue_listeners[info.name] = listener
            elif info.trigger_type == "timerTrigger":
                try:
                    blobs = BlobServiceClient.from_connection_string(_conn(None))
                    listener_t = TimerListener(info, self.invoker, blobs, self.host_id, self.config.singleton)
                except (SettingsError, ValueError) as exc:
                    raise HostStartupError(f"Function '{info.name}': {exc}") from None
                self.timer_listeners[info.name] = listener_t
                listener_t.start()

    def _add_routes(self) -> None:
        """Map HTTP functions in name order, refusing what ScriptHost.ValidateFunction refuses.

        A function whose route starts with `admin`/`runtime`, or repeats an earlier (by name) function's
        route with a method in common, is in error: logged and not served, the others still are.
        """
        accepted: dict[str, tuple[str, frozenset[str] | None]] = {}
        http = [f for f in self.functions.values() if f.trigger_type == "httpTrigger"]
        for info in sorted(http, key=lambda f: f.name.upper()):
            raw_methods = info.properties.get("methods")
            methods = frozenset(str(m).upper() for m in raw_methods) if raw_methods else None
            route = info.properties.get("route") or info.name
            problem = None
            if reserved_route(route):
                problem = "The specified route conflicts with one or more built in routes."
            for other, (other_route, other_methods) in accepted.items():
                if problem is None and routes_conflict(route, methods, other_route, other_methods):
                    problem = f"The route specified conflicts with the route defined by function '{other}'."
            if problem:
                log.error("The 'Functions.%s' function is in error: %s", info.name, problem)
                del self.functions[info.name]
                continue
            accepted[info.name] = (route, methods)
            self.routes.add(route, info, methods, info.name)

    def _print_functions(self) -> None:
        lines = ["", "Functions:", ""]
        for info in self.functions.values():
            if info.trigger_type == "httpTrigger":
                methods = ",".join(info.properties.get("methods") or []) or "ALL"
                prefix = f"/{self.config.route_prefix}" if self.config.route_prefix else ""
                route = info.properties.get("route") or info.name
                lines.append(f"\t{info.name}: [{methods}] {self.base_url}{prefix}/{route}")
            else:
                lines.append(f"\t{info.name}: {info.trigger_type}")
            lines.append("")
        log.info("\n".join(lines))

    # -- test hooks and admin --------------------------------------------------------------------------
    def trigger_timer(self, name: str, past_due: bool = False) -> InvocationRecord:
        """Run a timer function now, in this thread, as the listener would (does not move its schedule)."""
        listener = self.timer_listeners.get(name)
        if listener is None:
            raise KeyError(f"no timer function named '{name}'")
        return listener.fire(past_due=past_due)

    def invoke(self, name: str, input: Any = None) -> InvocationRecord:
        """What `POST /admin/functions/{name}` runs: a non-HTTP function with `input` as its trigger data."""
        info = self.functions.get(name)
        if info is None:
            raise KeyError(name)
        if info.trigger_type == "timerTrigger":
            return self.trigger_timer(name)
        if info.trigger_type == "queueTrigger":
            body = input if isinstance(input, str) else ("" if input is None else str(input))
            msg = QueueMessage(id=str(uuid.uuid4()), body=body.encode(), pop_receipt=None, dequeue_count=1)
            return self.invoker.invoke(
                info, msg, "This function was programmatically called via the host APIs."
            )
        raise ValueError(f"'{name}' is an HTTP function: call its route instead")

    def invoke_async(self, name: str, input: Any = None) -> None:
        """Validate now, run in the background (the admin API answers 202 before the function ends)."""
        info = self.functions.get(name)
        if info is None:
            raise KeyError(name)
        if info.trigger_type == "httpTrigger":
            raise ValueError(f"'{name}' is an HTTP function: call its route instead")
        t = threading.Thread(target=self.invoke, args=(name, input), name=f"admin-{name}", daemon=True)
        self._admin_threads.append(t)
        t.start()

    # -- shutdown --------------------------------------------------------------------------------------
    def stop(self, timeout: float | None = None) -> None:
        """Stop HTTP and fetching; let running invocations finish (bounded); give timer locks back."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        timeout = self.shutdown_timeout if timeout is None else timeout
        if self._http:
            self._http.stop(timeout)
        stoppers = [
            threading.Thread(target=lst.stop, args=(timeout,), daemon=True)
            for lst in [*self.queue_listeners.values(), *self.timer_listeners.values()]
        ]
        for t in stoppers:
            t.start()
        for t in [*stoppers, *self._admin_threads]:
            t.join(timeout)
        self.invoker.stop()
        log.info("Host stopped")

    def serve_forever(self) -> None:
        """Run until SIGINT/SIGTERM (CLI use), then stop gracefully."""
        done = threading.Event()

        def _signal(signum: int, _frame: Any) -> None:
            log.info("Received %s; shutting down", signal.Signals(signum).name)
            done.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):
                signal.signal(sig, _signal)
        while not done.wait(0.5):
            pass
        self.stop()

    def __enter__(self) -> LocalHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
