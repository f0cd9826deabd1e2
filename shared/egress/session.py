"""The one requests session for event webhooks and hooks: addresses checked at connect time.

A hook URL names a host, and a host's addresses are whatever DNS answers at the moment of the call.
Checking them while validating the request (as PatchPilot once did) let DNS rebinding through
(public at validation, 127.0.0.1 a second later) and turned a DNS blip into a 400. Here the check is
inside the connection: `_GuardedConnection._new_conn` resolves the host, refuses the call when any
of its addresses is refused by policy.refusal (a name that answers [public, 127.0.0.1] is the
classic rebinding set-up, counting on the client to fall back to the second), connects to the
checked address itself and checks the socket's peer once more. urllib3 then wraps that socket in
TLS with SNI and certificate checks for the URL's hostname (the connection's `host` is unchanged),
and the Host header is the URL's. No proxies (trust_env off, and a proxy is refused), no redirects.

Each call has a deadline, connect + read seconds from its start: requests' read timeout is per
socket read, so a receiver dripping a byte at a time could otherwise hold a worker thread without
end. At the deadline a watchdog shuts the socket down, which ends a blocked read at once. The
response body is never read (nobody may see a hook's answer: a hook pointed at an internal page
would read it back), so every call ends its connection and each call's socket is its own.

Why not a library (surveyed Nov 2026): advocate 1.0.0 (2020) needs urllib3<2; requests-hardened
1.3.0 pins the first address at pool-key time but its policy is fixed in code (it passes
168.63.129.16 and `::a.b.c.d`) and cannot be widened without patching a module function;
microsoft-antissrf 1.0.0 (first release Oct 2026) has the right kind of range list but no `::/96`,
adds `X-Forwarded-For: true`, drops the port from Host and raises outside requests' exceptions.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family
from urllib3.util.timeout import _DEFAULT_TIMEOUT

from shared.egress.policy import Networks, refusal

log = logging.getLogger(__name__)
Resolver = Callable[..., list[tuple[Any, ...]]]  # socket.getaddrinfo's shape


class AddressRefusedError(Exception):
    """A host resolved to (or connected to) an address the policy refuses."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        super().__init__(f"{host} resolves to {address}, which is {reason}")
        self.host, self.address, self.reason = host, address, reason


class EgressRefusedError(NewConnectionError):
    """urllib3's face of AddressRefusedError; requests raises it as a ConnectionError."""

    def __init__(self, conn: HTTPConnection, refused: AddressRefusedError) -> None:
        super().__init__(conn, f"refused to connect: {refused}")
        self.refused = refused


@dataclass(frozen=True)
class Guard:
    """Resolves and connects for one session. `resolver` is socket.getaddrinfo but for tests."""

    allow_loopback: bool = False
    resolver: Resolver = socket.getaddrinfo
    allowed: Networks = ()  # private ranges opened for this session (health probes: HEALTH_PROBE_NETWORKS)

    def connect(self, host: str, port: int, timeout: Any, source_address: tuple[str, int] | None,
                socket_options: list[tuple[int, int, int | bytes]] | None) -> socket.socket:
        """urllib3.util.connection.create_connection, with every address checked before the first connect."""
        host = host.strip("[]")
        infos = self.resolver(host, port, allowed_gai_family(), socket.SOCK_STREAM)
        for info in infos:
            self._check(host, str(info[4][0]))
        error: OSError = OSError("getaddrinfo returned no address")
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                for option in socket_options or ():
                    sock.setsockopt(*option)
                limit = _within_deadline(None if timeout is _DEFAULT_TIMEOUT else timeout)
                if limit is not None:
                    sock.settimeout(limit)
                if source_address:
                    sock.bind(source_address)
                sock.connect(address)
                self._check(host, str(sock.getpeername()[0]))  # what the socket actually reached
                _watch(sock)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
            except AddressRefusedError:
                sock.close()
                raise
        raise error

    def _check(self, host: str, address: str) -> None:
        reason = refusal(ip_address(address.split("%", maxsplit=1)[0]), allow_loopback=self.allow_loopback,
                         allowed=self.allowed)
        if reason:
            log.warning("egress refused: %s resolves to %s (%s)", host, address, reason)
            raise AddressRefusedError(host, address, reason)


class _GuardedConnection(HTTPConnection):
    guard: Guard = Guard()

    def _new_conn(self) -> socket.socket:
        # The shape of urllib3 2.x HTTPConnection._new_conn, with Guard.connect for create_connection.
        try:
            sock = self.guard.connect(self._dns_host, self.port, self.timeout, self.source_address,
                                      self.socket_options)
        except AddressRefusedError as exc:
            raise EgressRefusedError(self, exc) from exc
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc
        sys.audit("http.client.connect", self, self.host, self.port)
        return sock


class GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections go through `guard`; it never uses a proxy."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        attrs = {"guard": self.guard}
        http = type("GuardedHTTPConnection", (_GuardedConnection,), attrs)
        https = type("GuardedHTTPSConnection", (_GuardedConnection, HTTPSConnection), attrs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
        }

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        raise requests.exceptions.InvalidProxyURL("event and hook calls never go through a proxy")


class EgressSession(requests.Session):
    """requests.Session for events and hooks: guarded connections, no proxies, no redirects."""

    def __init__(self, *, allow_loopback: bool = False, resolver: Resolver = socket.getaddrinfo,
                 allowed: Networks = ()) -> None:
        super().__init__()
        self.trust_env = False  # no HTTPS_PROXY / NO_PROXY / .netrc from the environment
        adapter = GuardedAdapter(Guard(allow_loopback, resolver, allowed))
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        kwargs["allow_redirects"] = False  # a 3xx is an answer, never a second request somewhere else
        kwargs["proxies"] = {}
        return super().send(request, **kwargs)


@dataclass(frozen=True)
class Answer:
    """What a call to a webhook or hook came to: its HTTP status and how long it took.

    `error` (our own words, empty when there is a status) says why there is no status. The
    receiver's body is never part of it.
    """

    status: int | None
    latency_ms: int
    error: str = ""
    refused: bool = False  # the host's address was refused by policy (nothing was sent)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def post(session: requests.Session, url: str, body: bytes, headers: Mapping[str, str], *,
         connect_seconds: float, read_seconds: float) -> Answer:
    """POST `body` and wait at most `connect_seconds + read_seconds` in all for the status line.

    Never raises for the receiver's failures; only the status is read, never the body.
    """
    return _call(session, "POST", url, body, headers, connect_seconds=connect_seconds, read_seconds=read_seconds)


def get(session: requests.Session, url: str, headers: Mapping[str, str], *, connect_seconds: float,
        read_seconds: float) -> Answer:
    """GET `url` (a health probe) under the same rules as `post`: the status only, never the body."""
    return _call(session, "GET", url, None, headers, connect_seconds=connect_seconds, read_seconds=read_seconds)


def _call(session: requests.Session, method: str, url: str, body: bytes | None, headers: Mapping[str, str], *,
          connect_seconds: float, read_seconds: float) -> Answer:
    started = time.monotonic()
    deadline = _Deadline(started + connect_seconds + read_seconds)
    try:
        with _deadline_for_this_thread(deadline):
            resp = session.request(method, url, data=body, headers={**headers, "Connection": "close"},
                                   timeout=(connect_seconds, read_seconds), stream=True)
            resp.close()  # without reading the body
        if deadline.expired:  # cut mid-headers, http.client may still have made a response of what came
            raise requests.ReadTimeout("the call's deadline passed")
    except requests.RequestException as exc:
        elapsed = _ms(started)
        refused = _refused(exc)
        if refused is not None:
            # Not the reason nor the address: a caller could map internal names through the run view.
            return Answer(None, elapsed, "refused: the host's address is not a public one", refused=True)
        if deadline.expired:
            return Answer(None, elapsed, f"no answer within {connect_seconds + read_seconds:g} s")
        return Answer(None, elapsed, _describe(exc))
    finally:
        deadline.cancel()
    return Answer(resp.status_code, _ms(started))


def _describe(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.ConnectTimeout):
        return "could not connect in time"
    if isinstance(exc, requests.ReadTimeout):
        return "no answer in time"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS failed (certificate or handshake)"
    if isinstance(exc, requests.ConnectionError) and "NameResolution" in repr(exc):
        return "the host name does not resolve"
    return f"{exc.__class__.__name__}: could not call the receiver"


def _refused(exc: BaseException) -> AddressRefusedError | None:
    """The AddressRefusedError somewhere in requests' and urllib3's wrapping of `exc`, if any."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, AddressRefusedError):
            return item
        todo.extend([item.__cause__, item.__context__, getattr(item, "reason", None), *item.args])
    return None


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


class _Deadline:
    """When one call must be over; shuts down the sockets it watches when that time comes."""

    def __init__(self, at: float) -> None:
        self.at = at
        self.expired = False
        self._timers: list[threading.Timer] = []

    def watch(self, sock: socket.socket) -> None:
        timer = threading.Timer(max(0.0, self.at - time.monotonic()), self._cut, (sock,))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _cut(self, sock: socket.socket) -> None:
        self.expired = True
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # a blocked recv (plain or TLS) returns at once

    def cancel(self) -> None:
        for timer in self._timers:
            timer.cancel()


_local = threading.local()


@contextlib.contextmanager
def _deadline_for_this_thread(deadline: _Deadline) -> Iterator[None]:
    _local.deadline = deadline
    try:
        yield
    finally:
        _local.deadline = None


def _within_deadline(timeout: float | None) -> float | None:
    deadline: _Deadline | None = getattr(_local, "deadline", None)
    if deadline is None:
        return timeout
    left = max(0.001, deadline.at - time.monotonic())
    return left if timeout is None else min(timeout, left)


def _watch(sock: socket.socket) -> None:
    deadline: _Deadline | None = getattr(_local, "deadline", None)
    if deadline is not None:
        deadline.watch(sock)
