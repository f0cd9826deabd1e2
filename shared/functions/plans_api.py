"""HTTP API for plans (issue #21): plan before apply, then apply exactly that plan.

    POST /api/plans                      what POST /api/runs takes (+ maintenanceWindow), or a maintenanceConfiguration
                                         -> 202 + Location /api/plans/{id} + Retry-After (shared/plans/request.py)
    GET  /api/plans/{id}                 202 while Planning; 200 with the plan: summary, totals, waves, window fit
    GET  /api/plans/{id}/machines        a page of planned machines with their patches (?top, ?continuationToken)
    GET  /api/plans/{id}/csv             one line per machine and patch, for a change ticket (text/csv)
    POST /api/plans/{id}/apply           202 + Location /api/runs/{runId}: the run that installs this plan
                                         (shared/plans/apply.py says when it is refused)
The plan itself is made by the dispatch queue's worker (shared/plans/build.py), off the HTTP path.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import azure.functions as func

from shared.composition import Components
from shared.core.clock import iso, parse_iso, utcnow
from shared.core.errors import ApiError, ValidationError, quoted
from shared.core.records import PlanRecord
from shared.core.settings import is_local_development
from shared.functions.runs_api import MACHINE_KEY, RUN_ID, accepted_run
from shared.http.request_params import int_param
from shared.http.responses import absolute_url, accepted, api_errors, json_response, public_origin
from shared.plans.accept import accept_plan
from shared.plans.apply import apply_plan
from shared.plans.build import PLANNING
from shared.plans.request import parse_plan_request

MAX_PAGE = 100
STUCK_SECONDS = 300  # planning 10,000 machines takes under a minute; five means its message is gone
CSV_COLUMNS = ("resourceId", "osType", "wave", "action", "assessment", "assessedAt", "patch", "name", "version",
               "classification", "rebootBehavior", "publishedDate", "rebootExpected", "predictedSeconds",
               "predictionBasis", "predictedStart", "predictedFinish", "outsideWindow")


def plan_id_param(req: func.HttpRequest) -> str:
    plan_id = str(req.route_params.get("planId", "")).lower()
    if not RUN_ID.fullmatch(plan_id):
        raise ApiError(404, "PlanNotFound", f"no plan with id {quoted(plan_id)}", target="planId")
    return plan_id


def plan_view(req: func.HttpRequest, plan: PlanRecord) -> dict[str, Any]:
    """The plan as the API shows it (OpenAPI `Plan`)."""
    base = f"/api/plans/{plan.plan_id}"
    view: dict[str, Any] = {
        "id": plan.plan_id, "status": plan.get("status"), "createdAt": plan.get("createdAt"),
        "plannedAt": plan.get("plannedAt"), "machineCount": plan.get("machineCount"),
        "installPatches": plan.json_column("parameters"), "rollout": plan.json_column("rollout"),
        "maintenanceWindow": plan.json_column("window"),
        "maintenanceConfiguration": plan.get("maintenanceConfiguration") or None,
        "machinesLink": absolute_url(req, f"{base}/machines"), "csvLink": absolute_url(req, f"{base}/csv"),
        "applyLink": absolute_url(req, f"{base}/apply"),
    }
    if plan.get("status") == "Failed":
        view["error"] = {"code": plan.get("errorCode"), "message": plan.get("errorMessage")}
    summary = plan.json_column("summary")
    if summary:
        view["summary"] = summary
    if plan.get("appliedRunId"):
        view["appliedRunId"] = plan["appliedRunId"]
        view["appliedAt"] = plan.get("appliedAt")
        view["runLink"] = absolute_url(req, f"/api/runs/{plan['appliedRunId']}")
    return view


def requeue_if_stuck(plan: PlanRecord, deps: Components) -> None:
    """A plan Planning for STUCK_SECONDS lost its message (its send failed after the plan was stored, or it went
    to the poison queue unanswered): the caller polling it queues it again, at most once per STUCK_SECONDS. Planning
    twice is harmless (shared/plans/build.py)."""
    since = str(plan.get("requeuedAt") or plan.get("createdAt") or "")
    if since and utcnow() - parse_iso(since) > timedelta(seconds=STUCK_SECONDS):
        deps.plans.update_plan(plan.plan_id, {"requeuedAt": iso(utcnow())})
        deps.queues.send_plan(plan.plan_id)


def machine_view(entry: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    return {**entry, "patches": patches}


def _csv(rows: Any) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    writer.writerow(CSV_COLUMNS)
    for _, entry, patches in rows:
        prediction = entry.get("prediction") or {}
        common = [entry["resourceId"], entry.get("osType", ""), entry.get("wave", 0), entry.get("action", ""),
                  entry["assessment"].get("status", ""), entry["assessment"].get("assessedAt", "")]
        tail = [entry.get("rebootExpected", False), prediction.get("seconds", ""), prediction.get("basis", ""),
                entry.get("predictedStart", ""), entry.get("predictedFinish", ""),
                (entry.get("outside") or {}).get("code", "")]
        for patch in patches or [{}]:
            key = f"KB{patch['kbId']}" if patch.get("kbId") and not str(patch["kbId"]).upper().startswith("KB") \
                else patch.get("kbId") or patch.get("name", "")
            writer.writerow([*common, key, patch.get("name", ""), patch.get("version", ""),
                             patch.get("classification", ""), patch.get("rebootBehavior", ""),
                             patch.get("publishedDate", ""), *tail])
    return out.getvalue()


def blueprint(components: Callable[[], Components]) -> func.Blueprint:
    """This module's triggers, bound to the app's components (function_app.py calls this once)."""
    bp = func.Blueprint()

    @bp.route(route="plans", methods=["POST"])
    @api_errors
    def create_plan(req: func.HttpRequest) -> func.HttpResponse:
        deps = components()
        public_origin(req)
        request = parse_plan_request(req.get_body(), now=utcnow(),
                                     allow_local_hooks=is_local_development(deps.settings),
                                     probe_networks=deps.settings.health.probe_networks,
                                     max_bytes=deps.settings.limits.max_request_bytes,
                                     max_machines=deps.settings.limits.max_machines_per_run)
        plan = accept_plan(request, deps)
        return accepted(plan_view(req, plan), absolute_url(req, f"/api/plans/{plan.plan_id}"),
                        deps.settings.limits.run_retry_after_seconds)

    def _plan(req: func.HttpRequest, deps: Components) -> PlanRecord:
        plan_id = plan_id_param(req)
        plan = deps.plans.get_plan(plan_id)
        if plan is None:
            raise ApiError(404, "PlanNotFound", f"no plan with id {plan_id!r}", target="planId")
        return plan

    @bp.route(route="plans/{planId}", methods=["GET"])
    @api_errors
    def get_plan(req: func.HttpRequest) -> func.HttpResponse:
        deps = components()
        plan = _plan(req, deps)
        view = plan_view(req, plan)
        if plan.get("status") == PLANNING:
            requeue_if_stuck(plan, deps)
            return accepted(view, absolute_url(req, f"/api/plans/{plan.plan_id}"),
                            deps.settings.limits.run_retry_after_seconds)
        return json_response(view)

    @bp.route(route="plans/{planId}/machines", methods=["GET"])
    @api_errors
    def list_plan_machines(req: func.HttpRequest) -> func.HttpResponse:
        """`?top=1..100&continuationToken=…`: planned machines in key order, each with its patches."""
        deps = components()
        plan = _plan(req, deps)
        top = int_param(req, "top", 50, MAX_PAGE)
        token = req.params.get("continuationToken")
        if token is not None and not MACHINE_KEY.fullmatch(token):
            raise ValidationError(f"continuationToken {quoted(token)} is not one this API issued; follow nextLink",
                                  target="continuationToken")
        page, next_key = deps.plans.page_machines(plan.plan_id, top, token)
        body: dict[str, Any] = {"value": [machine_view(entry, patches) for _, entry, patches in page]}
        if next_key:
            body["nextLink"] = absolute_url(req, f"/api/plans/{plan.plan_id}/machines",
                                            {"top": str(top), "continuationToken": next_key})
        return json_response(body)

    @bp.route(route="plans/{planId}/csv", methods=["GET"])
    @api_errors
    def plan_csv(req: func.HttpRequest) -> func.HttpResponse:
        deps = components()
        plan = _plan(req, deps)
        if plan.get("status") == PLANNING:
            raise ApiError(409, "PlanNotReady", "the plan is still Planning; its CSV exists once it has Succeeded",
                           target="planId")
        return func.HttpResponse(_csv(deps.plans.iter_machines(plan.plan_id)), status_code=200,
                                 mimetype="text/csv", charset="utf-8",
                                 headers={"Content-Disposition": f'attachment; filename="plan-{plan.plan_id}.csv"'})

    @bp.route(route="plans/{planId}/apply", methods=["POST"])
    @api_errors
    def apply_plan_run(req: func.HttpRequest) -> func.HttpResponse:
        deps = components()
        public_origin(req)
        run, _created = apply_plan(plan_id_param(req), deps)
        return accepted_run(req, run, deps.settings)

    return bp
