"""HTTP API for maintenance configurations (Azure's InGuestPatch shape), their assignments, and the
windows a schedule will open, so a user can check a schedule before trusting it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

import azure.functions as func

from shared.composition import Components
from shared.core.clock import iso, schedule_now
from shared.core.errors import ApiError, ValidationError
from shared.core.settings import is_local_development
from shared.http.request_params import int_param
from shared.http.responses import api_errors, json_response
from shared.maintenance.configuration import (
    check_name,
    configuration_from_stored,
    parse_assignment,
    parse_configuration,
)
from shared.maintenance.windows import occurrence_view
from shared.storage.limits import check_json_property
from shared.validation.install_parameters import parse_datetime
from shared.validation.request_body import parse_json_body

BASE = "maintenance-configurations"
MAX_OCCURRENCES = 100


def _name(req: func.HttpRequest, key: str = "name") -> str:
    return check_name(req.route_params.get(key, ""), key)


def _config(deps: Components, name: str) -> dict[str, object]:
    stored = deps.maintenance.get_config(name)
    if stored is None:
        raise ApiError(404, "ResourceNotFound", f"no maintenance configuration {name!r}", target="name")
    return stored


def _body(req: func.HttpRequest, deps: Components) -> object:
    return parse_json_body(req.get_body(), max_bytes=deps.settings.limits.max_request_bytes)


def blueprint(components: Callable[[], Components]) -> func.Blueprint:
    """This module's triggers, bound to the app's components (function_app.py calls this once)."""
    bp = func.Blueprint()

    @bp.route(route=BASE + "/{name}", methods=["PUT"])
    @api_errors
    def put_configuration(req: func.HttpRequest) -> func.HttpResponse:
        deps = components()
        name = _name(req)
        body = _body(req, components())
        config = parse_configuration(name, body,  # validates everything before anything is written
                                     allow_local_hooks=is_local_development(deps.settings),
                                     probe_networks=deps.settings.health.probe_networks)
        stored = config.to_stored()
        check_json_property(stored, target="")  # stored normalised: it must fit one Table property
        created = deps.maintenance.put_config(name, stored, schedule_now(deps.settings.local))
        return json_response(config.resource(), 201 if created else 200)


    @bp.route(route=BASE + "/{name}", methods=["GET"])
    @api_errors
    def get_configuration(req: func.HttpRequest) -> func.HttpResponse:
        name = _name(req)
        stored = _config(components(), name)
        return json_response(configuration_from_stored(str(stored["name"]), stored).resource())


    @bp.route(route=BASE, methods=["GET"])
    @api_errors
    def list_configurations(req: func.HttpRequest) -> func.HttpResponse:
        stored = components().maintenance.list_configs()
        return json_response({"value": [configuration_from_stored(s["name"], s).resource() for s in stored]})


    @bp.route(route=BASE + "/{name}", methods=["DELETE"])
    @api_errors
    def delete_configuration(req: func.HttpRequest) -> func.HttpResponse:
        existed = components().maintenance.delete_config(_name(req))
        return func.HttpResponse(status_code=200 if existed else 204)


    @bp.route(route=BASE + "/{name}/occurrences", methods=["GET"])
    @api_errors
    def list_occurrences(req: func.HttpRequest) -> func.HttpResponse:
        deps = components()
        name = _name(req)
        stored = _config(components(), name)
        config = configuration_from_stored(str(stored["name"]), stored)
        start: datetime = (parse_datetime(req.params["from"], "from") if req.params.get("from")
                           else schedule_now(deps.settings.local))
        if not 1971 <= start.year <= 9000:
            raise ValidationError("from must be a date-time between the years 1971 and 9000", target="from")
        count = int_param(req, "count", 10, MAX_OCCURRENCES)
        windows = config.schedule.next_windows(start, count)
        recorded = {r["start"]: r for r in deps.maintenance.list_occurrences(name, start)} if windows else {}
        return json_response({"value": [occurrence_view(config, b, e, recorded.get(iso(b))) for b, e in windows]})


    @bp.route(route=BASE + "/{name}/assignments/{assignmentName}", methods=["PUT"])
    @api_errors
    def put_assignment(req: func.HttpRequest) -> func.HttpResponse:
        name, assignment_name = _name(req), _name(req, "assignmentName")
        body = _body(req, components())
        assignment = parse_assignment(assignment_name, body, configuration=name)
        check_json_property(body, target="")  # stored as given: it must fit one Table property
        _config(components(), name)
        created = components().maintenance.put_assignment(name, assignment_name, body)  # type: ignore[arg-type]
        return json_response(assignment.resource(name), 201 if created else 200)


    @bp.route(route=BASE + "/{name}/assignments/{assignmentName}", methods=["GET"])
    @api_errors
    def get_assignment(req: func.HttpRequest) -> func.HttpResponse:
        name, assignment_name = _name(req), _name(req, "assignmentName")
        stored = components().maintenance.get_assignment(name, assignment_name)
        if stored is None:
            raise ApiError(404, "ResourceNotFound", f"no assignment {assignment_name!r} of {name!r}",
                           target="assignmentName")
        return json_response(parse_assignment(stored["name"], json.loads(stored["body"])).resource(name))


    @bp.route(route=BASE + "/{name}/assignments", methods=["GET"])
    @api_errors
    def list_assignments(req: func.HttpRequest) -> func.HttpResponse:
        name = _name(req)
        _config(components(), name)
        rows = components().maintenance.list_assignments(name)
        return json_response({"value": [parse_assignment(r["name"], json.loads(r["body"])).resource(name)
                                        for r in rows]})


    @bp.route(route=BASE + "/{name}/assignments/{assignmentName}", methods=["DELETE"])
    @api_errors
    def delete_assignment(req: func.HttpRequest) -> func.HttpResponse:
        name, assignment_name = _name(req), _name(req, "assignmentName")
        existed = components().maintenance.get_assignment(name, assignment_name) is not None
        components().maintenance.delete_assignment(name, assignment_name)
        return func.HttpResponse(status_code=200 if existed else 204)

    return bp
