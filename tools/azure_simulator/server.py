"""HTTP handling: ARM's Compute surface for VMs and patch operations, HybridCompute's for Arc machines,
Resource Health's availability status and Alerts Management's alert list for both (health.py), plus the /_sim
admin API and the /_probe workload probe (outside ARM: no auth, no throttling, not counted).

The pipeline for every ARM request mirrors where real Azure rejects things: count the call, roll network
faults (drop, latency), authenticate, check api-version, roll injected 5xx/429, charge ARM's subscription
read/write bucket, authorise (RBAC: rbac.py), then route to Compute (which has its own guest-patch throttling,
validation and conflict checks) or HybridCompute (arc.py). Every response, error or not, carries ARM's
request-id headers, and every response to a subscription's URL its remaining read or write budget.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from tools.azure_simulator import arc, health
from tools.azure_simulator.errors import ArmError, render_error
from tools.azure_simulator.fleet import VirtualMachine
from tools.azure_simulator.operations import Operation, iso_offset
from tools.azure_simulator.patching import result_view, validate_install

if TYPE_CHECKING:
    from tools.azure_simulator.simulator import Simulator

_SUB = r"/subscriptions/(?P<sub>[^/]+)"
_RG = r"/resourcegroups/(?P<rg>[^/]+)"
_CP = r"/providers/microsoft\.compute"
_HC = r"/providers/microsoft\.hybridcompute"
_MACHINE = (
    r"/providers/(?P<provider>microsoft\.compute/virtualmachines|microsoft\.hybridcompute/machines)/(?P<name>[^/]+)"
)
_RH = r"/providers/microsoft\.resourcehealth/availabilitystatuses/current"
_AM = r"/providers/microsoft\.alertsmanagement/alerts"
ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("resourceHealth", re.compile(f"^{_SUB}{_RG}{_MACHINE}{_RH}/?$", re.I)),
    ("alerts", re.compile(f"^{_SUB}{_AM}/?$", re.I)),
    ("arcListAll", re.compile(f"^{_SUB}{_HC}/machines/?$", re.I)),
    ("arcListRg", re.compile(f"^{_SUB}{_RG}{_HC}/machines/?$", re.I)),
    (
        "arcOperation",
        re.compile(f"^{_SUB}{_HC}/locations/(?P<loc>[^/]+)/updatecenteroperationresults/(?P<op>[^/]+)/?$", re.I),
    ),
    (
        "arcOperationStatus",
        re.compile(f"^{_SUB}{_HC}/locations/(?P<loc>[^/]+)/operationstatus/(?P<op>[^/]+)/?$", re.I),
    ),
    (
        "arcOperationResult",
        re.compile(f"^{_SUB}{_HC}/locations/(?P<loc>[^/]+)/operationresults/(?P<op>[^/]+)/?$", re.I),
    ),
    (
        "arc",
        re.compile(
            f"^{_SUB}{_RG}{_HC}/machines/(?P<machine>[^/]+)(?:/(?P<action>installpatches|assesspatches))?/?$", re.I
        ),
    ),
    ("listAll", re.compile(f"^{_SUB}{_CP}/virtualmachines/?$", re.I)),
    ("listRg", re.compile(f"^{_SUB}{_RG}{_CP}/virtualmachines/?$", re.I)),
    ("listLocation", re.compile(f"^{_SUB}{_CP}/locations/(?P<loc>[^/]+)/virtualmachines/?$", re.I)),
    ("operation", re.compile(f"^{_SUB}{_CP}/locations/(?P<loc>[^/]+)/operations/(?P<op>[^/]+)/?$", re.I)),
    (
        "vm",
        re.compile(
            f"^{_SUB}{_RG}{_CP}/virtualmachines/(?P<vm>[^/]+)"
            r"(?:/(?P<action>instanceview|installpatches|assesspatches))?/?$",
            re.I,
        ),
    ),
)
# The ARM resource type each resource route's RBAC actions are named after.
PROVIDERS = {
    "listAll": "Microsoft.Compute/virtualMachines",
    "listRg": "Microsoft.Compute/virtualMachines",
    "listLocation": "Microsoft.Compute/virtualMachines",
    "vm": "Microsoft.Compute/virtualMachines",
    "arcListAll": "Microsoft.HybridCompute/machines",
    "arcListRg": "Microsoft.HybridCompute/machines",
    "arc": "Microsoft.HybridCompute/machines",
}
# Operation-status routes and the action reading them needs (at the subscription: see rbac.py).
OPERATION_ROUTES = {
    "operation": "Microsoft.Compute/locations/operations/read",
    "arcOperation": "Microsoft.HybridCompute/locations/updateCenterOperationResults/read",
    # arc_lro_style "async": the Azure-AsyncOperation and Location of HybridCompute's ARM-RPC operations.
    "arcOperationStatus": "Microsoft.HybridCompute/locations/operationstatus/read",
    "arcOperationResult": "Microsoft.HybridCompute/locations/operationresults/read",
}
# Health routes (health.py) and the action reading them needs: Resource Health at the machine (any assignment
# covering the machine's id), alerts at the subscription.
HEALTH_ROUTES = {
    "resourceHealth": "Microsoft.ResourceHealth/availabilityStatuses/read",
    "alerts": "Microsoft.AlertsManagement/alerts/read",
}
ACTIONS = {
    "instanceview": "instanceView",
    "installpatches": "installPatches",
    "assesspatches": "assessPatches",
}
# Compute's read policies in x-ms-ratelimit-remaining-resource (names as real responses carry them).
LOW_COST_GET = ("LowCostGet3Min", "LowCostGet30Min")
HIGH_COST_GET = ("HighCostGet3Min", "HighCostGet30Min")
GET_OPERATION = ("GetOperationResource", "GetOperationSubscriptionMaximum")
API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(?:-(?:preview|privatepreview|beta|alpha))?$", re.I)
FOREIGN_BASE = "http://127.0.0.2:9"  # loopback, but not the simulator: nothing listens there
SUPPORTED_VERSIONS = "2025-04-01, 2024-11-01, 2024-07-01, 2024-03-01, 2023-09-01, 2023-07-01, 2023-03-01"
THROTTLE_MESSAGE = (
    "The server rejected the request because too many requests have been received for this subscription."
)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-serialisable, or None for an empty body
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body).encode()


DROP = Response(0)  # sentinel: close the connection without answering
_IDS = random.Random()  # request ids need uniqueness, not secrecy: uuid4() reads os.urandom, 40 us a call


def _request_id() -> str:
    return str(uuid.UUID(int=_IDS.getrandbits(128), version=4))


def _error(err: ArmError) -> Response:
    return Response(err.status, err.body(), dict(err.headers))


def host_update_conflict(action: str) -> ArmError:
    """Compute's 409 while the platform updates the VM's host (a maintenance event, not a patch operation)."""
    return ArmError(
        409,
        "OperationNotAllowed",
        f"The operation '{action}' is not allowed since the VM is waiting for an ongoing update to complete the "
        "resource.",
    )


class ArmApi:
    """Turns a parsed Request into a Response; all state lives on the Simulator."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    # ----------------------------------------------------------------------------------- entry point
    def handle(self, req: Request) -> Response:
        if req.path.lower().startswith("/_sim"):
            try:
                return self.sim.admin.handle(req)
            except ArmError as err:
                return _error(err)
            except ValueError as err:
                return Response(400, {"error": {"code": "InvalidRequest", "message": str(err)}})
        if req.path.lower().startswith("/_probe/"):
            return self._probe(req)
        route, match = self._route(req.path)
        kind, vm_key = self._kind(req.method, route, match)
        sim = self.sim
        sim.call_log.record(kind, vm_key)
        if sim.faults.should_drop():
            sim.call_log.fault("drop")
            return DROP
        if sim.faults.latency_seconds():
            time.sleep(sim.faults.latency_seconds())
        write = req.method not in ("GET", "HEAD")
        extra: dict[str, str] = {}
        try:
            self._authenticate(req)
            api_version = self._api_version(req)
            if (server_error := sim.faults.server_error()) is not None:
                sim.call_log.fault(f"http{server_error.status}")
                raise server_error
            if sim.faults.throttled():
                sim.call_log.fault("throttle")
                throttle = self._arm_throttle_error(
                    "write" if write else "read", match, sim.faults.settings.throttle_retry_after
                )
                throttle.bucket = "injected"
                if not write and sim.faults.settings.throttle_remaining_reads is not None:
                    # ARM's counter need not agree with the Retry-After (azure-rest-api-specs#270)
                    throttle.headers["x-ms-ratelimit-remaining-subscription-reads"] = str(
                        sim.faults.settings.throttle_remaining_reads
                    )
                raise throttle
            if match is not None:
                extra.update(self._charge_arm(req, match["sub"], write))
                self._authorize(req, route, match)
            response = self._dispatch(req, route, match, api_version)
        except ArmError as err:
            settings = sim.faults.settings
            body, headers = render_error(err, settings.error_shape, failure_cause=settings.failure_cause_header)
            response = Response(err.status, body, headers)
            if err.status == 429:
                sim.call_log.throttle(err.bucket or "other", match["sub"] if match else None)
        for name, value in extra.items():
            response.headers.setdefault(name, value)
        if match is not None:
            # ARM reports the subscription's remaining budget on every response, errors included.
            op = "writes" if write else "reads"
            name = f"x-ms-ratelimit-remaining-subscription-{op}"
            if name not in response.headers:
                buckets = sim.arm_writes if write else sim.arm_reads
                response.headers[name] = str(buckets.get(match["sub"].lower()).remaining())
        return response

    # ----------------------------------------------------------------------------------- routing
    @staticmethod
    def _route(path: str) -> tuple[str | None, dict[str, str] | None]:
        decoded = unquote(path)
        for name, pattern in ROUTES:
            m = pattern.match(decoded)
            if m:
                return name, {k: v for k, v in m.groupdict().items() if v is not None}
        return None, None

    def _kind(self, method: str, route: str | None, match: dict[str, str] | None) -> tuple[str, str | None]:
        if route is None or match is None:
            return "other", None
        if route.startswith(("list", "arcList")):
            return "list", None
        if route in OPERATION_ROUTES:
            op = self.sim.engine.operations.get(match["op"].lower())
            return "poll", op.vm.key if op is not None else None
        if route == "alerts":
            return "alerts", None
        if route == "resourceHealth":
            key = (
                f"/subscriptions/{match['sub']}/resourcegroups/{match['rg']}/providers/{match['provider']}/"
                f"{match['name']}"
            ).lower()
            return "resourceHealth", key
        kind = "microsoft.hybridcompute/machines" if route == "arc" else "microsoft.compute/virtualmachines"
        key = (
            f"/subscriptions/{match['sub']}/resourcegroups/{match['rg']}"
            f"/providers/{kind}/{match.get('machine') or match['vm']}"
        ).lower()
        action = match.get("action")
        if action is None:
            return ("get" if method == "GET" else method.lower()), key
        return ACTIONS[action.lower()], key

    def _dispatch(
        self, req: Request, route: str | None, match: dict[str, str] | None, api_version: str
    ) -> Response:
        if route is None or match is None:
            raise ArmError(404, "NotFound", f"The requested resource '{req.path}' was not found.")
        action = ACTIONS.get((match.get("action") or "").lower())
        want = "POST" if action in ("installPatches", "assessPatches") else "GET"
        if req.method != want:
            raise ArmError(
                405,
                "MethodNotAllowed",
                f"The requested resource does not support http method '{req.method}'.",
            )
        if route == "resourceHealth":
            return Response(200, self.sim.engine.health.availability_status(self._health_target(match)))
        if route == "alerts":
            return self._alerts(req, match, api_version)
        if route.startswith("list"):
            return self._list(req, route, match, api_version)
        if route == "operation":
            return self._poll(req, match, api_version)
        if route.startswith("arcList"):
            return self._list_arc(req, route, match, api_version)
        if route == "arcOperation":
            return self._poll_arc(match, api_version)
        if route == "arcOperationStatus":
            return self._arc_operation_status(match)
        if route == "arcOperationResult":
            return self._arc_operation_result(match, api_version)
        if route == "arc":
            machine = self.sim.engine.fleet.machine(match["sub"], match["rg"], match["machine"])
            if action is None:
                return Response(200, arc.machine_model(machine))
            return self._start(req, machine, action, api_version)
        vm = self.sim.engine.fleet.vm(match["sub"], match["rg"], match["vm"])
        if action is None:
            return self._get_vm(req, vm)
        if action == "instanceView":
            return Response(
                200, self.sim.engine.instance_view(vm), self._compute_read_headers(LOW_COST_GET, vm.subscription_id)
            )
        return self._start(req, vm, action, api_version)

    # ----------------------------------------------------------------------------------- checks
    def _authenticate(self, req: Request) -> None:
        header = req.headers.get("authorization")
        realm = 'Bearer authorization_uri="https://login.microsoftonline.com/common", error="invalid_token"'
        if not header:
            raise ArmError(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
                headers={
                    "WWW-Authenticate": realm + ', error_description="The authentication failed '
                    "because of missing 'Authorization' header.\""
                },
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ArmError(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is provided in an invalid format.",
                headers={
                    "WWW-Authenticate": realm + ', error_description="The authentication failed '
                    "because of an invalid 'Authorization' header.\""
                },
            )
        required = self.sim.config.required_token
        if required is not None and token.strip() != required:
            raise ArmError(
                401,
                "InvalidAuthenticationToken",
                "The access token is invalid.",
                headers={"WWW-Authenticate": realm + ', error_description="The access token is invalid."'},
            )

    @staticmethod
    def _api_version(req: Request) -> str:
        version = req.query.get("api-version")
        if not version:
            raise ArmError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if not API_VERSION.match(version):
            raise ArmError(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{version}' is invalid. The supported versions are '{SUPPORTED_VERSIONS}'.",
            )
        return version

    def _authorize(self, req: Request, route: str | None, match: dict[str, str]) -> None:
        """ARM's RBAC check, before the request reaches Compute (so a VM that does not exist in a resource group
        the caller may not read answers 403, as in Azure). Only a subscription that does not exist answers 404
        first, as ARM resolves the subscription before authorising."""
        authorizer = self.sim.authorizer
        if not authorizer.enforcing or route is None:
            return
        self.sim.engine.fleet.subscription(match["sub"])
        required = self._required_permission(req, route, match)
        if required is None:
            return  # a method the route does not serve: dispatch answers 405
        action, scope = required
        client_id, object_id = self._principal(req)
        authorizer.check(action, scope, client_id, object_id)

    @staticmethod
    def _required_permission(req: Request, route: str, match: dict[str, str]) -> tuple[str, str] | None:
        """(action, scope) ARM authorises for this request; the scope echoes the request path as ARM does."""
        path = unquote(req.path).rstrip("/")
        if route.startswith(("list", "arcList")):
            return (f"{PROVIDERS[route]}/read", path.split("/providers/", 1)[0]) if req.method == "GET" else None
        if route in OPERATION_ROUTES:
            return (OPERATION_ROUTES[route], path) if req.method == "GET" else None
        if route == "alerts":
            return (HEALTH_ROUTES[route], path.split("/providers/", 1)[0]) if req.method == "GET" else None
        if route == "resourceHealth":
            return (HEALTH_ROUTES[route], path) if req.method == "GET" else None
        action = (match.get("action") or "").lower()
        resource = PROVIDERS[route]
        if not action:
            verbs = {"GET": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}
            return (f"{resource}/{verbs[req.method]}", path) if req.method in verbs else None
        scope = path.rsplit("/", 1)[0]
        if action == "instanceview":
            return (f"{resource}/instanceView/read", scope) if req.method == "GET" else None
        return (f"{resource}/{ACTIONS[action]}/action", scope) if req.method == "POST" else None

    def _principal(self, req: Request) -> tuple[str, str]:
        config = self.sim.config
        token = req.headers.get("authorization", "").partition(" ")[2].strip()
        client_id = config.principal_client_id or str(uuid.uuid5(uuid.NAMESPACE_OID, f"client:{token}"))
        return client_id, config.principal_object_id or self._actor(req)

    def _actor(self, req: Request) -> str:
        token = req.headers.get("authorization", "").partition(" ")[2]
        return str(uuid.uuid5(uuid.NAMESPACE_OID, token))

    def _arm_throttle_error(
        self, op: str, match: dict[str, str] | None, retry_after: int, actor: str | None = None
    ) -> ArmError:
        sub = match["sub"] if match else "00000000-0000-0000-0000-000000000000"
        actor = actor or str(uuid.uuid4())
        return ArmError(
            429,
            "SubscriptionRequestsThrottled",
            f"Number of '{op}' requests for subscription '{sub}' actor '{actor}' exceeded. "
            f"Please try again after '{retry_after}' seconds after additional tokens are available. "
            "Refer to https://aka.ms/arm-throttling",
            headers={"Retry-After": str(retry_after)},
        )

    def _charge_arm(self, req: Request, sub: str, write: bool) -> dict[str, str]:
        buckets = self.sim.arm_writes if write else self.sim.arm_reads
        op = "writes" if write else "reads"
        bucket = buckets.get(sub.lower())
        if not bucket.try_take():
            err = self._arm_throttle_error(op[:-1], {"sub": sub}, bucket.retry_after(), self._actor(req))
            err.headers[f"x-ms-ratelimit-remaining-subscription-{op}"] = "0"
            err.bucket = f"arm{op.capitalize()}"
            raise err
        return {f"x-ms-ratelimit-remaining-subscription-{op}": str(bucket.remaining())}

    def _compute_read_headers(self, policies: tuple[str, ...], sub: str, vm_key: str = "") -> dict[str, str]:
        """Compute's informational read counters (reported, not enforced: ARM's buckets bind first). A policy
        ending in `Resource` counts per VM, the others per subscription."""
        values = []
        for policy in policies:
            bucket = self.sim.compute_reads[policy].get(vm_key if policy.endswith("Resource") else sub.lower())
            bucket.try_take()
            values.append(f"Microsoft.Compute/{policy};{bucket.remaining()}")
        return {"x-ms-ratelimit-remaining-resource": ",".join(values)}

    # ----------------------------------------------------------------------------------- reads
    def _list(self, req: Request, route: str, match: dict[str, str], api_version: str) -> Response:
        fleet = self.sim.engine.fleet
        if route == "listRg":
            vms = fleet.in_resource_group(match["sub"], match["rg"])
        else:
            vms = fleet.in_subscription(match["sub"])
        if route == "listLocation":
            vms = [vm for vm in vms if vm.location.lower() == match["loc"].lower()]
        start, page = self._page(req, vms)
        # statusOnly=true adds the instance view; $expand=instanceView does too, but Azure documents it on
        # lists as valid "only if a valid $filter option is specified", so without one it is refused.
        expand = req.query.get("$expand", "")
        if expand and (expand.lower() != "instanceview" or not req.query.get("$filter")):
            raise ArmError(400, "InvalidParameter", f"The value '{expand}' of query parameter '$expand' is not "
                           "allowed here: 'instanceView' can only be specified with a valid $filter.",
                           target="$expand")
        status_only = req.query.get("statusOnly", "").lower() == "true" or bool(expand)
        value = []
        for vm in page:
            model = vm.model()
            if status_only:
                model["properties"]["instanceView"] = self.sim.engine.instance_view(vm)
            value.append(model)
        return Response(
            200,
            self._page_body(req, value, start, len(vms), api_version),
            self._compute_read_headers(HIGH_COST_GET, match["sub"]),
        )

    def _health_target(self, match: dict[str, str]) -> VirtualMachine:
        """The machine a Resource Health URL names, or ARM's 404 for it."""
        fleet = self.sim.engine.fleet
        if match["provider"].lower().startswith("microsoft.hybridcompute"):
            return fleet.machine(match["sub"], match["rg"], match["name"])
        return fleet.vm(match["sub"], match["rg"], match["name"])

    def _alerts(self, req: Request, match: dict[str, str], api_version: str) -> Response:
        """Alerts_GetAll: the subscription's alerts, filtered and sorted (health.py), paged by nextLink."""
        self.sim.engine.fleet.subscription(match["sub"])
        size = health.page_count(req.query.get("pageCount"))
        alerts = self.sim.engine.health.query(match["sub"], req.query)
        start, page = self._page(req, alerts, size)
        return Response(200, self._page_body(req, page, start, len(alerts), api_version))

    def _probe(self, req: Request) -> Response:
        """GET /_probe/{machine name or id}: the workload's health endpoint, as the machine's model says."""
        if req.method != "GET":
            return Response(405, {"status": "method not allowed"})
        target = unquote(req.path)[len("/_probe/"):].strip("/")
        fleet = self.sim.engine.fleet
        vm = fleet.by_key.get("/" + target.lower()) if "/" in target else next(
            (m for m in (*fleet.vms, *fleet.machines) if m.name.lower() == target.lower()), None
        )
        if vm is None:
            return Response(404, {"status": "unknown machine", "machine": target})
        status = self.sim.engine.health.probe(vm)
        if status == 0:
            return DROP
        return Response(status, {"status": "ok" if 200 <= status < 300 else "unhealthy"})

    def _page(self, req: Request, items: list[Any], size: int | None = None) -> tuple[int, list[Any]]:
        token = req.query.get("$skiptoken", "0")
        try:
            start = int(token)
        except ValueError:
            raise ArmError(
                400, "InvalidParameter", f"The $skiptoken '{token}' is invalid.", target="$skiptoken"
            ) from None
        return start, items[start : start + (size or self.sim.config.page_size)]

    def _page_body(
        self, req: Request, value: list[Any], start: int, total: int, api_version: str
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"value": value}
        if start + len(value) < total:
            query = {k: v for k, v in req.query.items() if k != "$skiptoken"}
            query["api-version"] = api_version
            query["$skiptoken"] = str(start + len(value))
            body["nextLink"] = f"{self.sim.url}{req.path}?{urlencode(query)}"
        return body

    def _list_arc(self, req: Request, route: str, match: dict[str, str], api_version: str) -> Response:
        fleet = self.sim.engine.fleet
        machines = fleet.machines_in_subscription(match["sub"])
        if route == "arcListRg":
            rg = fleet.resource_group(match["sub"], match["rg"]).lower()
            machines = [m for m in machines if m.resource_group.lower() == rg]
        start, page = self._page(req, machines)
        value = [arc.machine_model(m) for m in page]
        return Response(200, self._page_body(req, value, start, len(machines), api_version))

    def _arc_op(self, match: dict[str, str]) -> Operation:
        """The Arc operation an operation URL names, or the 404 for an id, subscription or location it is not."""
        op = self.sim.engine.get(match["op"])
        if (
            op is None
            or not op.vm.arc
            or op.vm.subscription_id.lower() != match["sub"].lower()
            or op.vm.location.lower() != match["loc"].lower()
        ):
            raise ArmError(404, "NotFound", "The entity was not found in this Azure location.")
        return op

    def _arc_operation_status(self, match: dict[str, str]) -> Response:
        """arc_lro_style "async": ARM's operation-status resource, 200 always; no result in it (no
        properties.output). A finished operation whose result says Failed is Failed, with the result's error."""
        op = self._arc_op(match)
        body: dict[str, Any] = {
            "id": self._arc_path(op, "operationstatus"),
            "name": op.op_id,
            "status": "InProgress",
            "startTime": iso_offset(op.started),
        }
        if op.done(self.sim.engine.clock()):
            failed = op.result.get("status") == "Failed"
            body["status"] = "Failed" if failed else "Succeeded"
            body["endTime"] = iso_offset(op.end_time())
            if failed:
                error = op.result.get("error") or {}
                body["error"] = {
                    "code": error.get("code") or "OperationFailed",
                    "message": error.get("message") or f"The {op.kind} operation failed.",
                }
        return Response(200, body)

    def _arc_operation_result(self, match: dict[str, str], api_version: str) -> Response:
        """arc_lro_style "async": 202 with a Location to itself (no Retry-After) while running, then 200 with
        the result the updateCenterOperationResults URL answers."""
        op = self._arc_op(match)
        if not op.done(self.sim.engine.clock()):
            return Response(202, None, {"Location": self.arc_async_url(op, "operationresults", api_version)})
        return Response(200, arc.result(op.vm, op.kind, op.result, op.end_time()))

    def _poll_arc(self, match: dict[str, str], api_version: str) -> Response:
        """HybridCompute's Location: 202 (+ Location, Retry-After) while running, then 200 with the result."""
        op = self._arc_op(match)
        if not op.done(self.sim.engine.clock()):
            return Response(
                202,
                None,
                {
                    "Location": self.operation_url(op, api_version),
                    "Retry-After": str(self.sim.config.retry_after_seconds),
                },
            )
        return Response(200, arc.result(op.vm, op.kind, op.result, op.end_time()))

    def _get_vm(self, req: Request, vm: VirtualMachine) -> Response:
        model = vm.model()
        if "instanceview" in req.query.get("$expand", "").lower():
            model["properties"]["instanceView"] = self.sim.engine.instance_view(vm)
        return Response(200, model, self._compute_read_headers(LOW_COST_GET, vm.subscription_id))

    def _poll(self, req: Request, match: dict[str, str], api_version: str) -> Response:
        op = self.sim.engine.get(match["op"])
        if (
            op is None
            or op.vm.subscription_id.lower() != match["sub"].lower()
            or op.vm.location.lower() != match["loc"].lower()
        ):
            raise ArmError(404, "NotFound", "The entity was not found in this Azure location.")
        now = self.sim.engine.clock()
        headers = self._compute_read_headers(GET_OPERATION, op.vm.subscription_id, op.vm.key)
        if req.query.get("monitor", "").lower() == "true":
            if not op.done(now):
                headers.update(
                    {
                        "Location": self.operation_url(op, api_version, monitor=True),
                        "Retry-After": str(self.sim.config.retry_after_seconds),
                    }
                )
                return Response(202, None, headers)
            return Response(200, self._result(op), headers)
        if not op.done(now):
            headers["Retry-After"] = str(self.sim.config.retry_after_seconds)
        body = op.async_body(now)
        if "properties" in body:
            body["properties"] = {"output": self._result(op)}
        return Response(200, body, headers)

    def _result(self, op: Operation) -> dict[str, Any]:
        """A Compute operation's result as answered: per the POST's api-version and classification_style."""
        return result_view(op.result, op.kind, op.vm.os_type, op.api_version,
                           self.sim.faults.settings.classification_style)

    # ----------------------------------------------------------------------------------- writes
    @staticmethod
    def _arc_path(op: Operation, kind: str) -> str:
        return (
            f"/subscriptions/{op.vm.subscription_id}/providers/Microsoft.HybridCompute/locations/{op.vm.location}/"
            f"{kind}/{op.op_id}"
        )

    def arc_async_url(self, op: Operation, kind: str, api_version: str) -> str:
        """arc_lro_style "async": .../locations/{loc}/operationstatus/{id} or .../operationresults/{id}."""
        return f"{self.sim.url}{self._arc_path(op, kind)}?{urlencode({'api-version': api_version})}"

    def operation_url(self, op: Operation, api_version: str, *, monitor: bool = False) -> str:
        if op.vm.arc:
            return (
                f"{self.sim.url}/subscriptions/{op.vm.subscription_id}/providers/Microsoft.HybridCompute/locations/"
                f"{op.vm.location}/updateCenterOperationResults/{op.op_id}?{urlencode({'api-version': api_version})}"
            )
        base = (
            f"{self.sim.url}/subscriptions/{op.vm.subscription_id}/providers/Microsoft.Compute/locations/"
            f"{op.vm.location}/operations/{op.op_id}"
        )
        query = {
            "p": self.sim.partition_id,
            **({"monitor": "true"} if monitor else {}),
            "api-version": api_version,
        }
        return f"{base}?{urlencode(query)}"

    def _start(self, req: Request, vm: VirtualMachine, action: str, api_version: str) -> Response:
        sim = self.sim
        body: Any = None
        if req.body.strip():
            try:
                body = json.loads(req.body)
            except ValueError:
                raise ArmError(
                    400,
                    "InvalidRequestContent",
                    "The request content was invalid and could not be deserialized.",
                ) from None
        # Compute's guest-patch throttling policy; HybridCompute documents none, so Arc machines have only ARM's.
        remaining = "" if vm.arc else sim.patch_throttle.charge(vm.key, vm.subscription_id.lower())
        try:
            op = self._admit(vm, action, body, api_version)
        except ArmError as err:
            if remaining:  # Compute reports its guest-patch budget on its refusals too
                err.headers.setdefault("x-ms-ratelimit-remaining-resource", remaining)
            raise
        headers = {
            "Location": self.operation_url(op, api_version, monitor=True),
            "Azure-AsyncOperation": self.operation_url(op, api_version, monitor=False),
            "Retry-After": str(sim.config.retry_after_seconds),
            "x-ms-request-id": op.op_id,
        }
        if vm.arc and sim.faults.settings.arc_lro_style == "async":
            # ARM's async-operation pattern: both URLs, and no Retry-After (the client picks its interval).
            headers["Azure-AsyncOperation"] = self.arc_async_url(op, "operationstatus", api_version)
            headers["Location"] = self.arc_async_url(op, "operationresults", api_version)
            del headers["Retry-After"]
        elif vm.arc:  # HybridCompute's 202 names only a Location (Machine_InstallPatches.json)
            del headers["Azure-AsyncOperation"]
        if remaining:
            headers["x-ms-ratelimit-remaining-resource"] = remaining
        if sim.faults.roll(sim.faults.settings.sync_rate):
            # ARM may answer a POST with the final 200 at once; the operation is then already over.
            sim.engine.finish_now(op)
            sim.call_log.fault("sync")
            final = arc.result(vm, op.kind, op.result, op.end_time()) if vm.arc else self._result(op)
            return Response(200, final, {"x-ms-request-id": op.op_id})
        if sim.faults.roll(sim.faults.settings.foreign_location_rate):
            # A Location on a host that is not ARM: a client must not send its token there.
            for name in ("Location", "Azure-AsyncOperation"):
                if name in headers:
                    headers[name] = headers[name].replace(sim.url, FOREIGN_BASE, 1)
            sim.call_log.fault("foreignLocation")
        return Response(202, None, headers)

    def _admit(self, vm: VirtualMachine, action: str, body: Any, api_version: str) -> Operation:
        """Validate and start the operation, or raise the 400/409 Compute (or HybridCompute) answers."""
        sim = self.sim
        with sim.engine.lock:
            params = (
                validate_install(body, vm.os_type, require_maximum_duration=vm.arc)
                if action == "installPatches"
                else None
            )
            if vm.arc and vm.agent_status != "Connected":
                raise arc.not_connected(vm, action)
            if vm.power_state == "deallocated":
                raise ArmError(
                    409,
                    "OperationNotAllowed",
                    f"Operation '{action}' is not allowed on VM '{vm.name}' since the VM is either "
                    "deallocated or marked to be deallocated.",
                )
            if vm.power_state != "running":
                raise ArmError(
                    409, "OperationNotAllowed", "The operation requires the VM to be running (or set to run)."
                )
            running = sim.engine.running(vm)
            if running is None and sim.host_updating(vm):
                sim.call_log.fault("hostUpdate")
                raise host_update_conflict(action)
            spurious = running is None and sim.faults.conflict()
            if spurious and sim.faults.settings.conflict_style == "hostupdate":
                sim.call_log.fault("conflict")
                raise host_update_conflict(action)
            if running is not None or spurious:
                if spurious:
                    sim.call_log.fault("conflict")
                other = (
                    running.kind
                    if running is not None
                    else ("installPatches" if action == "assessPatches" else "assessPatches")
                )
                detail = {
                    "code": "OperationInProgress",
                    "target": other,
                    "message": f"Operation '{other}'"
                    + (
                        f" ({running.op_id}) started at {running.started.isoformat()}"
                        if running is not None
                        else ""
                    )
                    + f" is in progress on this {'machine' if vm.arc else 'virtual machine'}.",
                }
                raise ArmError(
                    409,
                    "OperationNotAllowed",
                    f"Operation '{action}' is not allowed on {'machine' if vm.arc else 'VM'} '{vm.name}' since "
                    "another operation "
                    f"is in progress.",
                    details=[detail],
                )
            if params is not None:
                op = sim.engine.start_install(vm, params, body, api_version)
            else:
                op = sim.engine.start_assess(vm, body, api_version)
            sim.call_log.record(f"{action}Accepted", vm.key)
        return op


class Handler(BaseHTTPRequestHandler):
    """http.server glue: parse, call ArmApi, write the response with ARM's standard headers."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle's algorithm on, each keep-alive response waited
    # for the client's delayed ACK (about 40 ms), capping a client at ~25 requests/s per connection. A write
    # buffer also sends each response in one segment (handle_one_request flushes it).
    disable_nagle_algorithm = True
    wbufsize = 1 << 16
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    api: ArmApi  # set on a per-server subclass

    def log_message(self, format: str, *args: Any) -> None:
        return  # keep test output clean; /_sim/calls is the log

    def version_string(self) -> str:
        return self.server_version

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = Request(self.command, parts.path, query, headers, body)
        response = self.api.handle(req)
        if response is DROP:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        payload = response.encoded()
        correlation = headers.get("x-ms-correlation-request-id") or _request_id()
        out = {
            "Cache-Control": "no-cache",
            "Pragma": "no-cache",
            "Expires": "-1",
            "x-ms-request-id": _request_id(),
            "x-ms-correlation-request-id": correlation,
            "x-ms-routing-request-id": f"{self.api.sim.config.location.upper()}:"
            f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}:{correlation}",
            "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
            "X-Content-Type-Options": "nosniff",
        }
        if "x-ms-client-request-id" in headers:
            out["x-ms-client-request-id"] = headers["x-ms-client-request-id"]
        if payload:
            out["Content-Type"] = "application/json; charset=utf-8"
        out.update(response.headers)
        if not req.path.startswith(("/_sim", "/_probe")):
            self.api.sim.call_log.status(response.status)
        self.send_response(response.status)
        for name, value in out.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve  # noqa: N815


def make_server(api: ArmApi, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"api": api})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
