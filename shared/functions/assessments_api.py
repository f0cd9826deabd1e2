"""HTTP API for assessments: start one on demand (202 + Location), follow it, the compliance view,
and one machine's latest assessment with its history."""

from __future__ import annotations

from collections.abc import Callable

import azure.functions as func

from shared.assessments.compliance import MACHINE_KINDS, OS_TYPES, compliance_view
from shared.assessments.machine_view import machine_assessment
from shared.composition import Components
from shared.core.clock import utcnow
from shared.core.errors import ApiError, ValidationError, quoted
from shared.functions.runs_api import accepted_run, run_answer, run_id_param
from shared.http.request_params import int_param
from shared.http.responses import api_errors, json_response, public_origin
from shared.runs.accept import accept, check_idempotency_key
from shared.runs.views import load_run_view
from shared.validation.assessment_request import parse_assessment_request
from shared.validation.resource_ids import vm_from_route
from shared.validation.scopes import scope_from_query

MAX_TOP = 100
VM_ROUTE = ("subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}"
            "/providers/Microsoft.Compute/virtualMachines/{vmName}")
ARC_ROUTE = ("subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}"
             "/providers/Microsoft.HybridCompute/machines/{machineName}")


def blueprint(components: Callable[[], Components]) -> func.Blueprint:
    """This module's triggers, bound to the app's components (function_app.py calls this once)."""
    bp = func.Blueprint()

    @bp.route(route="assessments", methods=["POST"])
    @api_errors
    def create_assessment(req: func.HttpRequest) -> func.HttpResponse:
        deps = components()
        public_origin(req)  # a misconfigured host name is a 500 before anything is written, not after
        key = check_idempotency_key(req.headers.get("Idempotency-Key"))
        new = parse_assessment_request(req.get_body(), max_bytes=deps.settings.limits.max_request_bytes,
                                       max_machines=deps.settings.limits.max_machines_per_run)
        run, _created = accept(new, key, deps)
        return accepted_run(req, run, deps.settings, collection="assessments")


    @bp.route(route="assessments/{runId}", methods=["GET"])
    @api_errors
    def get_assessment(req: func.HttpRequest) -> func.HttpResponse:
        deps = components()
        run_id = run_id_param(req)
        run = deps.store.get_run(run_id)
        if run is None or run.get("operation") != "assessPatches":
            raise ApiError(404, "AssessmentNotFound", f"no assessment with id {run_id!r}", target="runId")
        return run_answer(req, load_run_view(run, deps), deps.settings, collection="assessments")


    @bp.route(route="compliance", methods=["GET"])
    @api_errors
    def get_compliance(req: func.HttpRequest) -> func.HttpResponse:
        deps = components()
        scope = scope_from_query(req.params.get("subscriptionId"), req.params.get("resourceGroup"))
        sub, rg = (scope.subscription_id, scope.resource_group) if scope else (None, None)
        raw_os = req.params.get("osType")
        os_type = OS_TYPES.get((raw_os or "").lower()) if raw_os else None
        if raw_os and os_type is None:
            raise ValidationError(f"osType must be Windows or Linux, got {quoted(raw_os)}", target="osType")
        raw_kind = req.params.get("machineKind")
        kind = MACHINE_KINDS.get((raw_kind or "").lower()) if raw_kind else None
        if raw_kind and kind is None:
            raise ValidationError(f"machineKind must be virtualMachines or hybridMachines, got {quoted(raw_kind)}",
                                  target="machineKind")
        top = int_param(req, "top", 10, MAX_TOP)
        report = compliance_view(deps.fleet, subscription_id=sub, resource_group=rg, os_type=os_type,
                                 machine_kind=kind, now=utcnow(),
                                 freshness_hours=deps.settings.assessments.freshness_hours, top=top)
        report["filter"] = {"subscriptionId": sub, "resourceGroup": rg, "osType": os_type, "machineKind": kind}
        return json_response(report)


    @bp.route(route=f"machines/{VM_ROUTE}/assessment", methods=["GET"])
    @api_errors
    def get_machine_assessment(req: func.HttpRequest) -> func.HttpResponse:
        return _machine_assessment(req)


    @bp.route(route=f"machines/{ARC_ROUTE}/assessment", methods=["GET"])
    @api_errors
    def get_arc_machine_assessment(req: func.HttpRequest) -> func.HttpResponse:
        """An Arc-enabled server's assessments: counts per classification (HybridCompute lists no patches)."""
        return _machine_assessment(req)


    def _machine_assessment(req: func.HttpRequest) -> func.HttpResponse:
        deps = components()
        vm = vm_from_route(req.route_params)
        view = machine_assessment(deps.fleet, vm, history=int_param(req, "history", 20, MAX_TOP))
        if view is None:
            raise ApiError(404, "MachineNotFound", f"PatchPilot has no record of {vm.resource_id}", target="machine")
        return json_response(view)

    return bp
