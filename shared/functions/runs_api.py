"""HTTP API for patch runs: create (202 + Location), follow, list, and per-machine detail."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import azure.functions as func

from shared.composition import Components
from shared.core.clock import iso, parse_iso, utcnow
from shared.core.counters import RunCounters
from shared.core.errors import ApiError, ConflictError, ValidationError, quoted
from shared.core.records import MachineRecord, RunRecord
from shared.core.settings import Settings, is_local_development
from shared.core.states import MachineState, RunStatus
from shared.http.request_params import int_param
from shared.http.responses import absolute_url, accepted, api_errors, json_response, public_origin
from shared.rollouts.controller import advance, resume
from shared.runs.accept import accept_run, check_idempotency_key
from shared.runs.views import load_run_view, machine_view, machines_page, run_view
from shared.validation.resource_ids import vm_from_route
from shared.validation.run_request import parse_run_request

RUN_ID = re.compile(r"[0-9a-f]{11}-[0-9a-f]{8}")  # always fullmatch: `$` would also take "…\n"
# A machine's storage key (MachineRef.key): subscription|resource group|name, lower case, no / \\ # ?, and
# |hybridmachines after an Arc-enabled server's name. A resource group's 90 characters can lower-case to up to
# 180 code points (U+0130 İ becomes i and a combining dot), so its part may be that long.
MACHINE_KEY = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\|[^/\\#?|\x00-\x1f\x7f]{1,180}"
                         r"\|[a-z0-9_.-]{1,64}(?:\|hybridmachines)?")
STATES = [s.value for s in MachineState]
TIMELINE_BUCKETS = 60
MAX_PAGE = 100
UNFINISHED = (RunStatus.ACCEPTED.value, RunStatus.IN_PROGRESS.value)


def run_id_param(req: func.HttpRequest) -> str:
    run_id = str(req.route_params.get("runId", "")).lower()
    if not RUN_ID.fullmatch(run_id):
        raise ApiError(404, "RunNotFound", f"no run with id {quoted(run_id)}", target="runId")
    return run_id


def run_answer(req: func.HttpRequest, view: dict[str, object], settings: Settings,
               collection: str = "runs") -> func.HttpResponse:
    """202 + Location while the run is unfinished (Logic Apps keeps polling), 200 once it is done."""
    if view["status"] in UNFINISHED:
        location = absolute_url(req, f"/api/{collection}/{view['id']}")
        return accepted(view, location, settings.limits.run_retry_after_seconds)
    return json_response(view, 200)


def accepted_run(req: func.HttpRequest, run: RunRecord, settings: Settings,
                 collection: str = "runs") -> func.HttpResponse:
    """The answer to a request that started (or, replayed, found) a run: 202 + its Location."""
    view = run_view(run, None)
    view["status"] = view.get("status") or RunStatus.ACCEPTED.value
    location = absolute_url(req, f"/api/{collection}/{run.run_id}")
    return accepted(view, location, settings.limits.run_retry_after_seconds)


def run_summary(run: RunRecord, counters: RunCounters, rows: list[MachineRecord]) -> dict[str, object]:
    """`run_view` without machines, plus `states` (count per state, over all machines) and `waves` (per wave,
    count per state), both from the run's counters, and `timeline` from the machines' `rows` (their start
    and finish times): TIMELINE_BUCKETS intervals from the first start to the last finish (or now), each
    `{"at": ISO start, "started": n, "finished": n}`."""
    view = run_view(run, None)
    events: list[tuple[str, str]] = []
    for row in rows:
        if row.get("operationStartedAt"):
            events.append(("started", str(row["operationStartedAt"])))
        if row.get("completedAt"):
            events.append(("finished", str(row["completedAt"])))
    view["states"] = counters.states
    view["machineCount"] = counters.machine_count or view.get("machineCount")
    view["waves"] = {str(w): states for w, states in counters.waves().items()}
    view["timeline"] = _timeline(events)
    if view.get("status") is None:
        view["status"] = RunStatus.ACCEPTED.value
    return view


def _timeline(events: list[tuple[str, str]]) -> list[dict[str, object]]:
    if not events:
        return []
    times = [parse_iso(t) for _, t in events]
    first, last = min(times), max(times)
    width = max((last - first) / TIMELINE_BUCKETS, timedelta(seconds=1))
    counts = {"started": [0] * TIMELINE_BUCKETS, "finished": [0] * TIMELINE_BUCKETS}
    for (kind, _), when in zip(events, times, strict=True):
        counts[kind][min(int((when - first) / width), TIMELINE_BUCKETS - 1)] += 1
    return [{"at": iso(first + i * width), "started": counts["started"][i], "finished": counts["finished"][i]}
            for i in range(TIMELINE_BUCKETS)]


def blueprint(components: Callable[[], Components]) -> func.Blueprint:
    """This module's triggers, bound to the app's components (function_app.py calls this once)."""
    bp = func.Blueprint()

    @bp.route(route="runs", methods=["POST"])
    @api_errors
    def create_run(req: func.HttpRequest) -> func.HttpResponse:
        deps = components()
        public_origin(req)  # a misconfigured host name is a 500 before anything is written, not after
        key = check_idempotency_key(req.headers.get("Idempotency-Key"))
        request = parse_run_request(req.get_body(), allow_local_hooks=is_local_development(deps.settings),
                                    probe_networks=deps.settings.health.probe_networks,
                                    max_bytes=deps.settings.limits.max_request_bytes,
                                    max_machines=deps.settings.limits.max_machines_per_run)
        run, _created = accept_run(request, key, deps)
        return accepted_run(req, run, deps.settings)


    @bp.route(route="runs/{runId}", methods=["GET"])
    @api_errors
    def get_run(req: func.HttpRequest) -> func.HttpResponse:
        deps = components()
        run_id = run_id_param(req)
        run = deps.store.get_run(run_id)
        if run is None:
            raise ApiError(404, "RunNotFound", f"no run with id {run_id!r}", target="runId")
        view = load_run_view(run, deps)
        view["machinesLink"] = absolute_url(req, f"/api/runs/{run_id}/machines")
        return run_answer(req, view, deps.settings)


    @bp.route(route="runs", methods=["GET"])
    @api_errors
    def list_runs(req: func.HttpRequest) -> func.HttpResponse:
        """`?top=1..100&continuationToken=…`: the token is the id of the last run of the previous page (what
        `nextLink` carries); anything else is refused, so a forged or mangled token is a 400, not a page."""
        deps = components()
        top = int_param(req, "top", 20, MAX_PAGE)
        token = req.params.get("continuationToken")
        if token is not None and not RUN_ID.fullmatch(token):
            raise ValidationError(f"continuationToken {quoted(token)} is not one this API issued; follow nextLink",
                                  target="continuationToken")
        runs, next_token = deps.store.list_runs(top, token)
        body: dict[str, object] = {"value": [run_view(r, None) for r in runs]}
        if next_token:
            body["nextLink"] = absolute_url(req, "/api/runs", {"top": str(top), "continuationToken": next_token})
        return json_response(body)


    @bp.route(route="runs/{runId}/machines/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}"
                    "/providers/Microsoft.Compute/virtualMachines/{vmName}", methods=["GET"])
    @api_errors
    def get_run_machine(req: func.HttpRequest) -> func.HttpResponse:
        """One VM of a run, addressed by its own ARM resource id, with every PatchInstallationDetail."""
        return _run_machine(req)


    @bp.route(route="runs/{runId}/machines/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}"
                    "/providers/Microsoft.HybridCompute/machines/{machineName}", methods=["GET"])
    @api_errors
    def get_run_arc_machine(req: func.HttpRequest) -> func.HttpResponse:
        """One Arc-enabled server of a run, addressed by its own ARM resource id (HybridCompute's install result
        lists no patches, so `patches` is empty for an install)."""
        return _run_machine(req)


    def _run_machine(req: func.HttpRequest) -> func.HttpResponse:
        deps = components()
        run_id = run_id_param(req)
        vm = vm_from_route(req.route_params)
        target = deps.store.get_target(run_id, vm.key)
        if target is None:
            raise ApiError(404, "MachineNotFound", f"run {run_id} has no machine {vm.resource_id}", target="machine")
        view = machine_view(target)
        view["runId"] = run_id
        # An assessment's patches live in the machine's history (shared/assessments/results.py).
        history_key = target.get("historyKey")
        view["patches"] = (deps.fleet.history_patches(vm, history_key) if history_key
                           else deps.store.list_patches(run_id, vm.key))
        return json_response(view)


    @bp.route(route="runs/{runId}/machines", methods=["GET"])
    @api_errors
    def list_run_machines(req: func.HttpRequest) -> func.HttpResponse:
        """`?state=Failed&top=1..100&continuationToken=…`: a page of the run's machines in key order (what
        the dashboard shows at 10,000 machines); the token is the key of the previous page's last machine."""
        deps = components()
        run_id = run_id_param(req)
        run = deps.store.get_run(run_id)
        if run is None:
            raise ApiError(404, "RunNotFound", f"no run with id {run_id!r}", target="runId")
        top = int_param(req, "top", 50, MAX_PAGE)
        state = req.params.get("state") or None
        if state is not None and state not in STATES:
            raise ValidationError(f"state {quoted(state)} is not one of {', '.join(STATES)}", target="state")
        token = req.params.get("continuationToken")
        if token is not None and not MACHINE_KEY.fullmatch(token):
            raise ValidationError(f"continuationToken {quoted(token)} is not one this API issued; follow nextLink",
                                  target="continuationToken")
        machines, next_key = machines_page(run, deps, top, state, token)  # before dispatch: from the request
        body: dict[str, object] = {"value": machines}
        if next_key:
            query = {"top": str(top), "continuationToken": next_key, **({"state": state} if state else {})}
            body["nextLink"] = absolute_url(req, f"/api/runs/{run_id}/machines", query)
        return json_response(body)


    @bp.route(route="runs/{runId}/summary", methods=["GET"])
    @api_errors
    def get_run_summary(req: func.HttpRequest) -> func.HttpResponse:
        """The run without its machines, with counts per state and per wave (from its counters) and a timeline
        (machines started and finished per interval): two columns of each machine are read, none is sent."""
        deps = components()
        run_id = run_id_param(req)
        run = deps.store.get_run(run_id)
        if run is None:
            raise ApiError(404, "RunNotFound", f"no run with id {run_id!r}", target="runId")
        if not run.get("dispatchedAt"):
            return json_response(run_summary(run, RunCounters(), []))
        counters = deps.store.run_counters(run_id, counted=run.counted)
        # The timeline needs each machine's times: the one part of the summary that reads every machine.
        rows = deps.store.list_targets(run_id, select=["operationStartedAt", "completedAt"])
        return json_response(run_summary(run, counters, rows))


    def _rollout_run(req: func.HttpRequest) -> RunRecord:
        run_id = run_id_param(req)
        run = components().store.get_run(run_id)
        if run is None:
            raise ApiError(404, "RunNotFound", f"no run with id {run_id!r}", target="runId")
        if not run.get("rollout"):
            raise ApiError(409, "NotARollout", "only a run with a rollout can be canceled or resumed: a run "
                           "without one started every machine at once", target="runId")
        return run


    @bp.route(route="runs/{runId}/cancel", methods=["POST"])
    @api_errors
    def cancel_run(req: func.HttpRequest) -> func.HttpResponse:
        """Nothing new starts; machines already started are followed to their end; the run ends Canceled."""
        deps = components()
        run = _rollout_run(req)
        for _ in range(5):  # conditional on what was read: a run that finishes meanwhile is not marked canceled
            if run.get("completedAt"):
                raise ApiError(409, "RunFinished", "the run has already finished", target="runId")
            if run.get("canceledAt"):
                break
            try:
                deps.store.update_run(run.run_id, {"canceledAt": iso(utcnow())}, etag=run.etag)
                break
            except ConflictError:
                run = _rollout_run(req)
        else:
            raise ApiError(409, "RunBusy", "the run kept changing; send the cancel again", target="runId")
        advance(run.run_id, deps)
        return run_answer(req, load_run_view(deps.store.get_run(run.run_id) or run, deps), deps.settings)


    @bp.route(route="runs/{runId}/resume", methods=["POST"])
    @api_errors
    def resume_run(req: func.HttpRequest) -> func.HttpResponse:
        """A halted run goes on: the machines it did not start are queued again, and the error budget
        starts afresh from the failures seen so far."""
        deps = components()
        run = _rollout_run(req)
        if not run.get("haltedReason") or run.get("canceledAt"):
            raise ApiError(409, "RunNotHalted", "only a halted run can be resumed", target="runId")
        run_id = run.run_id
        if resume(run_id, deps) in ("busy", "retry"):
            raise ApiError(409, "RunBusy", "the rollout controller is deciding for this run right now; send the "
                           "resume again in a few seconds", target="runId")
        return run_answer(req, load_run_view(deps.store.get_run(run_id) or run, deps), deps.settings)

    return bp
