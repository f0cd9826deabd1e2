"""A small, session-reusing client for the ARM calls PatchPilot makes.

It never retries by itself: a retry is a delayed queue message decided by the caller, so no
function sleeps. It never follows redirects, and it refuses any URL whose origin differs from
ARM_ENDPOINT before sending: Microsoft's own SDK follows a `Location` on any host and sends the
bearer token there; we don't.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from azure.core.credentials import AccessToken, TokenCredential
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from shared.errors import ArmConnectionError, UntrustedEndpointError
from shared.validation.resource_ids import VmRef
from shared.validation.scopes import ScopeRef

log = logging.getLogger(__name__)

_DEFAULT_PORTS = {"https": 443, "http": 80}


def origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme, 0)


@dataclass
class ArmResponse:
    status: int
    headers: CaseInsensitiveDict[str]
    body: Any
    url: str

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-ms-request-id")

    def retry_after(self, default: int) -> int:
        """Whole seconds to wait; ARM's contract says 60 s when the header is absent."""
        return parse_retry_after(self.headers.get("Retry-After"), default)

    def error(self) -> tuple[str, str]:
        """(code, message) from ARM's error shape, with a fallback for non-ARM bodies."""
        err = self.body.get("error") if isinstance(self.body, dict) else None
        if isinstance(err, dict):
            return str(err.get("code") or f"Http{self.status}"), str(err.get("message") or "")
        return f"Http{self.status}", f"ARM answered {self.status} with no error body"

    def error_detail(self) -> dict[str, Any] | None:
        """ARM's whole `error` (details, innererror), bounded for storage; None without one."""
        from shared.arm.errors import operation_error

        return operation_error(self.body.get("error") if isinstance(self.body, dict) else None)


def parse_retry_after(value: str | None, default: int) -> int:
    if value is None or not value.strip():
        return default
    text = value.strip()
    if text.isdigit():
        return int(text)
    try:  # RFC 9110 also allows an HTTP-date; ARM sends seconds, but be liberal in what we accept.
        when = parsedate_to_datetime(text)
        return max(0, int(when.timestamp() - time.time() + 0.999))
    except (TypeError, ValueError):
        return default


def new_session() -> requests.Session:
    """One pooled session per process: connections to ARM are reused across invocations."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.trust_env = False  # never pick up proxy settings or .netrc credentials implicitly
    return session


@dataclass
class ArmClient:
    """Calls ARM at one endpoint with one credential; `calls` counts requests by kind (for metrics)."""

    endpoint: str
    credential: TokenCredential
    api_version: str
    timeout: float = 30.0
    session: requests.Session = field(default_factory=new_session)
    calls: Counter[str] = field(default_factory=Counter)
    _token: AccessToken | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def vm_url(self, vm: VmRef, action: str | None = None, **query: str) -> str:
        path = vm.resource_id + (f"/{action}" if action else "")
        return f"{self.endpoint}{path}?{urlencode({'api-version': self.api_version, **query})}"

    def ensure_trusted(self, url: str) -> str:
        """The token only ever goes to ARM_ENDPOINT's exact origin (scheme, host, port)."""
        if origin(url) != origin(self.endpoint):
            raise UntrustedEndpointError(url, endpoint=self.endpoint)
        return url

    def _bearer(self) -> str:
        with self._lock:
            if self._token is None or self._token.expires_on - 300 < time.time():
                self._token = self.credential.get_token(f"{self.endpoint}/.default")
            return self._token.token

    def request(self, method: str, url: str, *, json: Any = None, kind: str | None = None) -> ArmResponse:
        self.ensure_trusted(url)
        headers = {"Authorization": f"Bearer {self._bearer()}", "Accept": "application/json"}
        self.calls[kind or method] += 1
        try:
            resp = self.session.request(
                method, url, json=json, headers=headers, timeout=self.timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            raise ArmConnectionError(f"{method} {url}: {exc.__class__.__name__}: {exc}") from exc
        try:
            body = resp.json() if resp.content else None
        except ValueError:
            body = None
        log.debug("arm %s %s -> %s request-id=%s", method, url, resp.status_code,
                  resp.headers.get("x-ms-request-id"))
        return ArmResponse(resp.status_code, resp.headers, body, url)

    def get_vm(self, vm: VmRef) -> ArmResponse:
        return self.request("GET", self.vm_url(vm), kind="getVm")

    def post_action(self, vm: VmRef, action: str, body: dict[str, Any] | None) -> ArmResponse:
        return self.request("POST", self.vm_url(vm, action), json=body, kind=action)

    def poll(self, url: str) -> ArmResponse:
        return self.request("GET", url, kind="poll")

    def list_vms_url(self, scope: ScopeRef) -> str:
        """First page of the VMs in a subscription or resource group (models: OS type, location, tags),
        so discovery needs no per-VM GET. Later pages come from `nextLink`. No `$expand=instanceView`:
        Azure accepts it on lists only together with a `$filter`; a stopped VM shows itself instead by
        ARM's 409 when its operation is posted."""
        query = urlencode({"api-version": self.api_version})
        return f"{self.endpoint}{scope.resource_id}/providers/Microsoft.Compute/virtualMachines?{query}"

    def list_page(self, url: str) -> ArmResponse:
        """One page of a list; a `nextLink` is checked against ARM_ENDPOINT like any other URL."""
        return self.request("GET", url, kind="listVms")
