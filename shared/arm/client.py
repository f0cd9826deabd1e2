"""The ARM client: azure-core's `PipelineClient` with the policies PatchPilot needs, and nothing that
retries or redirects.

Pipeline, in order (one concern per policy, as azure-core and httpx send in layers):
    SameOriginPolicy          refuse any URL not on ARM_ENDPOINT, before a token is attached
    HeadersPolicy             Accept: application/json
    RequestIdPolicy           x-ms-client-request-id on every request (ARM echoes it; support asks for it)
    UserAgentPolicy           patchpilot/<version> azsdk-python-core/... Python/...
    BearerTokenCredentialPolicy  the managed identity's token, cached and refreshed by azure-core
    DistributedTracingPolicy  a dependency span per call when a tracer is configured
    ArmTelemetryPolicy        x-ms-request-id and throttling headers on that span; counts 429s
    RequestsTransport         one pooled session per process, proxies and .netrc ignored

It never retries by itself (no RetryPolicy): a retry is a delayed queue message decided by the
caller, so no function sleeps. It never follows redirects (no RedirectPolicy). Microsoft's SDK follows
a `Location` on any host and sends the bearer token there; this client refuses such a URL.

A URL is checked exactly as it will be sent: it must contain no userinfo, backslash, control character,
whitespace or non-ASCII character in its authority, and both the standard library's parser and
urllib3's (which `requests` uses to open the connection) must read the same scheme, host and port as
ARM_ENDPOINT's. `http://other:9\\@arm-host/...` is refused: the two parsers disagree about its host.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from azure.core import PipelineClient
from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, ClientAuthenticationError
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import (
    BearerTokenCredentialPolicy,
    DistributedTracingPolicy,
    HeadersPolicy,
    RequestIdPolicy,
    RetryPolicy,
    SansIOHTTPPolicy,
    UserAgentPolicy,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest
from requests.adapters import HTTPAdapter
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from shared.arm.calls import LIST_MACHINES, ArmCall
from shared.arm.errors import answer_error, operation_error, result_error
from shared.core.errors import ArmAuthenticationError, ArmConnectionError, UntrustedEndpointError
from shared.core.ids import HYBRID_MACHINES, RESOURCE_TYPES, VIRTUAL_MACHINES, MachineKind, MachineRef, ScopeRef
from shared.core.telemetry import arm_calls, arm_throttled

log = logging.getLogger(__name__)

USER_AGENT = "patchpilot/1.0"
DEFAULT_PORTS = {"https": 443, "http": 80}
_FORBIDDEN_ANYWHERE = frozenset("\\") | {chr(c) for c in range(0x21)} | {"\x7f"}


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) as the standard library reads them, lower-cased, default ports filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(scheme, 0)


def check_same_origin(url: str, endpoint: str) -> str:
    """`url` unchanged if it is safe to send a bearer token to; else `UntrustedEndpointError`.

    Same origin as `endpoint` (scheme, host, port), read by both parsers that matter, with nothing in
    the URL on which they could disagree (userinfo, backslashes, control characters, whitespace)."""
    if not isinstance(url, str) or any(c in _FORBIDDEN_ANYWHERE for c in url):
        raise UntrustedEndpointError(url, endpoint=endpoint)
    try:
        std = urlsplit(url)
        ours = origin(url)
        sent = parse_url(url)  # what requests/urllib3 will connect to
    except (ValueError, LocationParseError):
        raise UntrustedEndpointError(url, endpoint=endpoint) from None
    if "@" in std.netloc or sent.auth is not None or not std.netloc.isascii():
        raise UntrustedEndpointError(url, endpoint=endpoint)
    scheme = (sent.scheme or "").lower()
    sent_origin = (scheme, (sent.host or "").lower(), sent.port or DEFAULT_PORTS.get(scheme, 0))
    if ours != origin(endpoint) or sent_origin != ours:
        raise UntrustedEndpointError(url, endpoint=endpoint)
    return url


class SameOriginPolicy(SansIOHTTPPolicy[Any, Any]):
    """Refuses, before the bearer-token policy runs, any request whose URL is not on ARM_ENDPOINT."""

    def __init__(self, endpoint: str) -> None:
        self._endpoint = endpoint

    def on_request(self, request: PipelineRequest[Any]) -> None:
        check_same_origin(request.http_request.url, self._endpoint)


RATE_LIMIT_PREFIX = "x-ms-ratelimit-remaining-"


class ArmTelemetryPolicy(SansIOHTTPPolicy[Any, Any]):
    """Adds ARM's `x-ms-request-id` (`az.service_request_id`, what support asks for), the throttling headers
    (`x-ms-ratelimit-remaining-*`, e.g. Compute's `Microsoft.Compute/HighCostGet3Min;107`) and `Retry-After`
    to the dependency span DistributedTracingPolicy opened, and counts 429s. Placed after that policy, so
    its on_response runs while the span is still open."""

    def on_response(self, request: PipelineRequest[Any], response: Any) -> None:
        headers = response.http_response.headers
        if response.http_response.status_code == 429:
            arm_throttled.add(1, {"http.request.method": request.http_request.method})
        span = request.context.get(DistributedTracingPolicy.TRACING_CONTEXT)
        if span is None:
            return
        attributes = {f"patchpilot.arm.ratelimit.{name[len(RATE_LIMIT_PREFIX):]}": value
                      for name, value in headers.items() if name.lower().startswith(RATE_LIMIT_PREFIX)}
        if headers.get("x-ms-request-id"):
            attributes["az.service_request_id"] = headers["x-ms-request-id"]
        if headers.get("Retry-After"):
            attributes["patchpilot.arm.retry_after"] = headers["Retry-After"]
        for name, value in attributes.items():  # an OpenTelemetry span, or azure-core-tracing's wrapper
            (span.set_attribute if hasattr(span, "set_attribute") else span.add_attribute)(name, value)


@dataclass(frozen=True)
class ArmResponse:
    status: int
    headers: Mapping[str, str]  # case-insensitive, as the transport returns them
    body: Any
    url: str

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-ms-request-id")

    def retry_after(self, default: int) -> int:
        """Whole seconds to wait; ARM's contract says 60 s when the header is absent."""
        return parse_retry_after(self.headers.get("Retry-After"), default)

    def error(self) -> tuple[str, str]:
        """(code, message) of ARM's error, whatever its shape (shared.arm.errors.answer_error): what Azure said is
        kept, never replaced by a guess."""
        error = self._error()
        return error["code"], error["message"]

    def error_detail(self) -> dict[str, Any] | None:
        """ARM's whole error (details, innererror) in ARM's shape, bounded for storage; None for an answer that is
        not an error (a 2xx, or an operation status without one)."""
        if self.status < 400:
            return operation_error(result_error(self.body))
        return operation_error(self._error())

    def _error(self) -> dict[str, Any]:
        return answer_error(self.body, self.status, self.headers.get("x-ms-failure-cause"))


_RETRY_AFTER = RetryPolicy()  # used only for its Retry-After parser (seconds or an HTTP-date)


def parse_retry_after(value: str | None, default: int) -> int:
    """Retry-After in whole seconds (rounded up), parsed by azure-core; `default` when absent or unreadable."""
    if value is None or not value.strip():
        return default
    try:
        seconds = _RETRY_AFTER.parse_retry_after(value.strip())
    except (TypeError, ValueError, OverflowError):
        return default
    if not math.isfinite(seconds):
        return default
    return max(0, math.ceil(seconds))


def new_session() -> requests.Session:
    """One pooled session per process: connections to ARM are reused across invocations."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.trust_env = False  # never pick up proxy settings or .netrc credentials implicitly
    return session


def build_pipeline(endpoint: str, credential: TokenCredential, timeout: float) -> PipelineClient[Any, Any]:
    transport = RequestsTransport(session=new_session(), session_owner=False, connection_timeout=timeout,
                                  read_timeout=timeout)
    policies: list[Any] = [
        SameOriginPolicy(endpoint),
        HeadersPolicy({"Accept": "application/json"}),
        RequestIdPolicy(),
        UserAgentPolicy(base_user_agent=USER_AGENT),
        BearerTokenCredentialPolicy(credential, f"{endpoint}/.default"),
        DistributedTracingPolicy(),
        ArmTelemetryPolicy(),
    ]
    return PipelineClient(base_url=endpoint, policies=policies, transport=transport)


@dataclass
class ArmClient:
    """Calls ARM at one endpoint with one credential (counted by call in the `patchpilot.arm.calls` metric).

    Raises `UntrustedEndpointError` for a URL off the endpoint (nothing sent) and `ArmConnectionError`
    when no HTTP answer came back (connection refused or dropped, timeout)."""

    endpoint: str
    credential: TokenCredential
    api_version: str  # Microsoft.Compute (COMPUTE_API_VERSION)
    timeout: float = 30.0
    hybridcompute_api_version: str = "2024-07-10"  # Microsoft.HybridCompute (HYBRIDCOMPUTE_API_VERSION)
    _pipeline: PipelineClient[Any, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._pipeline = build_pipeline(self.endpoint, self.credential, self.timeout)
        # TLS is required by azure-core's bearer policy; settings allow plain http only on loopback (simulator).
        self._enforce_https = urlsplit(self.endpoint).scheme.lower() == "https"

    def api_version_for(self, kind: MachineKind) -> str:
        """Each resource provider has its own api-version: Compute for VMs, HybridCompute for Arc machines."""
        return self.hybridcompute_api_version if kind == HYBRID_MACHINES else self.api_version

    def url_for(self, call: ArmCall, machine: MachineRef, **query: str) -> str:
        """`call`'s URL for `machine` (an Azure VM or an Arc machine, by `machine.kind`), with its provider's
        api-version (or the call's own): the call's path shape with `{machine}` (or the machine's
        `{subscription}`) filled in, and `query` added."""
        if "{machine}" not in call.path and "{subscription}" not in call.path:
            raise ValueError(f"{call.name} is not a call on a machine (its path is {call.path})")
        path = call.path.replace("{machine}", machine.resource_id).replace(
            "{subscription}", f"/subscriptions/{machine.subscription_id}")
        version = call.api_version or self.api_version_for(machine.kind)
        return f"{self.endpoint}{path}?{urlencode({'api-version': version, **query})}"

    def list_url(self, scope: ScopeRef, kind: MachineKind = VIRTUAL_MACHINES) -> str:
        """LIST_MACHINES' first page: the VMs (or, for kind hybridMachines, the Arc machines:
        Machines_ListBySubscription / Machines_ListByResourceGroup) in a subscription or resource group
        (models: OS type, location, tags, an Arc machine's agent status), so discovery needs no per-machine
        GET. Later pages come from `nextLink`. No `$expand=instanceView`: Azure accepts it on lists only
        together with a `$filter`; a stopped VM shows itself instead by ARM's 409 when its operation is posted."""
        query = urlencode({"api-version": self.api_version_for(kind)})
        path = LIST_MACHINES.path.replace("{scope}", scope.resource_id).replace("{type}", RESOURCE_TYPES[kind])
        return f"{self.endpoint}{path}?{query}"

    def ensure_trusted(self, url: str) -> str:
        """The token only ever goes to ARM_ENDPOINT's exact origin (scheme, host, port)."""
        return check_same_origin(url, self.endpoint)

    def send(self, call: ArmCall, target: MachineRef | str, body: Any = None) -> ArmResponse:
        """Make one `call`: on a machine (its URL from the call's path shape), or at a URL ARM handed back
        (a `Location` to poll, a `nextLink`), which is checked against ARM_ENDPOINT first."""
        url = target if isinstance(target, str) else self.url_for(call, target)
        return self.request(call.method, url, json=body if call.is_write else None, kind=call.name)

    def request(self, method: str, url: str, *, json: Any = None, kind: str | None = None) -> ArmResponse:
        self.ensure_trusted(url)
        assert self._pipeline is not None
        arm_calls.add(1, {"patchpilot.arm.call": kind or method})
        request = HttpRequest(method, url, json=json)
        try:
            resp = self._pipeline.send_request(request, enforce_https=self._enforce_https)
            content = resp.read()
        except UntrustedEndpointError:
            raise
        except ClientAuthenticationError as exc:  # from the credential, before anything was sent
            raise ArmAuthenticationError(f"no ARM token: {exc.__class__.__name__}: {exc}") from exc
        except AzureError as exc:
            raise ArmConnectionError(f"{method} {url}: {exc.__class__.__name__}: {exc}") from exc
        try:
            body = resp.json() if content else None
        except ValueError:
            body = None
        log.debug("arm %s %s -> %s request-id=%s", method, url, resp.status_code, resp.headers.get("x-ms-request-id"))
        return ArmResponse(resp.status_code, resp.headers, body, url)
