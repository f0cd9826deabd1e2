"""Plans before apply (#21), against Azurite and the ARM simulator, delivered in-process by the pump: a plan lists
exactly what the run then installs; patches published after the plan are not installed; a stale or outdated plan
is refused with nothing written; a window too short for a machine's predicted duration names it, and the run
skips it for that same reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from shared.composition import Components
from shared.core.clock import iso, utcnow
from shared.runs.predictions import Sample
from shared.validation.resource_ids import parse_machine_id
from tests.app import assessments_api, plans_api, runs_api
from tests.integration.queue_pump import QueuePump
from tests.support.bodies import INSTALL
from tests.support.fleet import sim_config
from tools.azure_simulator import Simulator, SimulatorConfig


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return sim_config(vms=6, seed=77, time_scale=36000.0)


def call(fn: Any, method: str, path: str, *, body: Any = None, route: dict[str, str] | None = None,
         params: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
    raw = json.dumps(body).encode() if body is not None else b""
    resp = fn(func.HttpRequest(method, f"http://127.0.0.1:7071{path}", body=raw, params=params or {},
                               route_params=route or {}, headers={"Content-Type": "application/json"}))
    text = resp.get_body()
    try:
        return resp.status_code, json.loads(text or b"{}"), dict(resp.headers)
    except ValueError:
        return resp.status_code, text.decode(), dict(resp.headers)


def assess(svc: Components, machines: list[str]) -> None:
    status, body, _ = call(assessments_api.create_assessment, "POST", "/api/assessments", body={"machines": machines})
    assert status == 202, body
    run_id = body["id"]

    def done() -> bool:
        _, view, _ = call(assessments_api.get_assessment, "GET", "/x", route={"runId": run_id})
        return view["status"] not in ("Accepted", "InProgress")
    QueuePump(svc).run_until(done, timeout=60)


def plan(svc: Components, body: dict[str, Any]) -> dict[str, Any]:
    status, view, headers = call(plans_api.create_plan, "POST", "/api/plans", body=body)
    assert status == 202, view
    assert headers["Location"].endswith(f"/api/plans/{view['id']}") and int(headers["Retry-After"]) >= 1
    plan_id = view["id"]
    QueuePump(svc).run_until(lambda: get_plan(plan_id)[0] == 200, timeout=60)
    return get_plan(plan_id)[1]


def get_plan(plan_id: str) -> tuple[int, dict[str, Any]]:
    status, view, _ = call(plans_api.get_plan, "GET", f"/api/plans/{plan_id}", route={"planId": plan_id})
    return status, view


def planned_machines(plan_id: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    token = None
    while True:
        params = {"top": "2", **({"continuationToken": token} if token else {})}
        status, page, _ = call(plans_api.list_plan_machines, "GET", "/x", route={"planId": plan_id}, params=params)
        assert status == 200, page
        out.update((m["resourceId"].lower(), m) for m in page["value"])
        if "nextLink" not in page:
            return out
        token = page["nextLink"].split("continuationToken=")[1].replace("%7C", "|")


def apply(plan_id: str) -> tuple[int, dict[str, Any]]:
    status, view, _ = call(plans_api.apply_plan_run, "POST", f"/api/plans/{plan_id}/apply", route={"planId": plan_id})
    return status, view


def run_view(run_id: str) -> dict[str, Any]:
    _, view, _ = call(runs_api.get_run, "GET", "/x", route={"runId": run_id})
    return view


def finish(svc: Components, run_id: str) -> dict[str, Any]:
    QueuePump(svc).run_until(lambda: run_view(run_id)["status"] not in ("Accepted", "InProgress"), timeout=120)
    return run_view(run_id)


def installed(svc: Components, run_id: str, machine: str) -> set[str]:
    key = parse_machine_id(machine, target="m").key
    return {p["name"] for p in svc.store.list_patches(run_id, key) if p.get("installationState") == "Installed"}


def vms(simulator: Simulator) -> list[str]:
    return [v for v in simulator.vm_ids() if "/Microsoft.Compute/" in v]


def test_a_plan_lists_exactly_what_its_run_installs_and_nothing_published_after_it(
        services: Components, simulator: Simulator) -> None:
    machines = vms(simulator)
    assess(services, machines)
    view = plan(services, {"machines": machines, "installPatches": INSTALL})
    assert view["status"] == "Succeeded" and view["summary"]["machineCount"] == len(machines)
    entries = planned_machines(view["id"])
    assert set(entries) == {m.lower() for m in machines}
    assert all(e["assessment"]["status"] == "Current" for e in entries.values())
    expected = {m: {p["name"] for p in e["patches"]} for m, e in entries.items()}
    assert sum(map(len, expected.values())) == view["summary"]["patchInstalls"] > 0
    # what the simulator says each VM misses in those classifications is what the plan lists
    for vm in simulator.state()["vms"]:
        wanted = {p["name"] for p in vm["pendingPatches"] if p["classification"] in ("Critical", "Security")}
        assert expected[vm["id"].lower()] == wanted, vm["id"]

    # published after the plan: never installed by it (the machines were not assessed again)
    fresh = {simulator.publish_patch("Windows", "Security")["name"],
             simulator.publish_patch("Linux", "Critical")["name"]}
    status, run = apply(view["id"])
    assert status == 202, run
    assert run["planId"] == view["id"]
    again_status, again = apply(view["id"])
    assert again_status == 202 and again["id"] == run["id"]  # a repeated apply answers the same run
    done = finish(services, run["id"])
    assert done["status"] == "Succeeded", done
    for machine, names in expected.items():
        assert installed(services, run["id"], machine) == names, machine
    still_missing = {p["name"] for vm in simulator.state()["vms"] for p in vm["pendingPatches"]}
    assert fresh <= still_missing
    _, after = get_plan(view["id"])
    assert after["appliedRunId"] == run["id"] and after["runLink"].endswith(f"/api/runs/{run['id']}")

    status, text, headers = call(plans_api.plan_csv, "GET", "/x", route={"planId": view["id"]})
    assert status == 200 and headers["Content-Disposition"].endswith(f'plan-{view["id"]}.csv"')
    lines = text.strip().splitlines()
    assert lines[0].startswith("resourceId,osType,wave,action") and len(lines) == 1 + view["summary"]["patchInstalls"]


def test_a_stale_plan_is_refused_and_nothing_is_written(services: Components, simulator: Simulator) -> None:
    machines = vms(simulator)[:2]
    assess(services, machines)
    view = plan(services, {"machines": machines, "installPatches": INSTALL})
    services.plans.update_plan(view["id"], {"plannedAt": iso(utcnow() - timedelta(hours=25))})
    runs_before = len(services.store.list_runs(100, None)[0])
    status, err = apply(view["id"])
    assert status == 409 and err["error"]["code"] == "PlanExpired" and err["error"]["target"] == "planId"
    assert "PLAN_MAX_AGE_HOURS" in err["error"]["message"]
    assert len(services.store.list_runs(100, None)[0]) == runs_before
    assert "appliedRunId" not in get_plan(view["id"])[1]


def test_a_plan_whose_machine_was_patched_and_assessed_since_is_refused(services: Components,
                                                                        simulator: Simulator) -> None:
    machines = vms(simulator)[:3]
    assess(services, machines)
    view = plan(services, {"machines": machines, "installPatches": INSTALL})
    patched = next(m for m, e in planned_machines(view["id"]).items() if e["patchCount"])
    status, run, _ = call(runs_api.create_run, "POST", "/api/runs", body={"machines": [patched],
                                                                           "installPatches": INSTALL})
    assert status == 202
    finish(services, run["id"])
    assess(services, machines)
    status, err = apply(view["id"])
    assert status == 409 and err["error"]["code"] == "PlanOutdated", err
    assert [d["target"].lower() for d in err["error"]["details"]] == [patched]
    assert all(d["code"] == "PlannedPatchesGone" for d in err["error"]["details"])


def test_a_window_too_short_names_the_machine_and_the_run_skips_it_for_that_reason(
        services: Components, simulator: Simulator) -> None:
    machines = vms(simulator)[:3]
    assess(services, machines)
    slow = parse_machine_id(machines[0], target="m")
    # its own history: two hours per installation (the others have none: DEFAULT_INSTALL_SECONDS, 20 min)
    services.durations.save(slow.subscription_id, [(slow, {"osType": "", "samples": [
        Sample(at=iso(utcnow() - timedelta(days=7)), seconds=7200, patches=0, rebooted=False).to_json()]})])
    start = datetime.now(UTC) - timedelta(minutes=5)
    view = plan(services, {"machines": machines, "installPatches": INSTALL,
                           "maintenanceWindow": {"startDateTime": iso(start), "duration": "PT1H30M"}})
    outside = view["summary"]["outsideWindow"]
    assert [(o["machine"].lower(), o["code"]) for o in outside] == [(slow.resource_id.lower(), "WouldNotFinish")]
    assert view["summary"]["window"]["fits"] is False and view["summary"]["window"]["wouldNotFinish"] == 1
    entry = planned_machines(view["id"])[slow.resource_id.lower()]
    assert entry["prediction"]["basis"] == "machine" and entry["prediction"]["seconds"] == 7200
    status, run = apply(view["id"])
    assert status == 202, run
    done = finish(services, run["id"])
    rows = {t["id"].lower(): t for t in done["machines"]}
    stored = {t.key: t for t in services.store.list_targets(run["id"])}
    assert stored[slow.key]["predictionBasis"] == "plan" and stored[slow.key]["predictedSeconds"] == 7200
    assert rows[slow.resource_id.lower()]["state"] == "Skipped"
    assert rows[slow.resource_id.lower()]["error"]["code"] == "WouldNotFinish"
    others = [m.lower() for m in machines[1:] if planned_machines(view["id"])[m.lower()]["action"] == "Install"]
    assert others and all(rows[m]["state"] == "Completed" for m in others)


@pytest.mark.parametrize(("body", "target"), [
    ({"machines": [], "installPatches": INSTALL, "maintenanceWindow": {"startDateTime": "2030-01-01T00:00:00Z",
                                                                        "duration": "PT30M"}},
     "maintenanceWindow.duration"),
    ({"installPatches": INSTALL, "maintenanceWindow": {"startDateTime": "2001-01-01T00:00:00Z", "duration": "PT2H"},
      "machines": ["/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/"
                   "Microsoft.Compute/virtualMachines/vm"]}, "maintenanceWindow.startDateTime"),
    ({"maintenanceConfiguration": "mc", "installPatches": INSTALL}, "installPatches"),
    ({"machines": ["/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/"
                   "Microsoft.Compute/virtualMachines/vm"], "installPatches": {**INSTALL, "rebootSetting": "Maybe"}},
     "installPatches.rebootSetting"),
    ({"scopes": ["/subscriptions/00000000-0000-0000-0000-000000000001"], "installPatches": INSTALL,
      "filter": {"tagSettings": {"tags": {"env": ["prod"]}, "filterOperator": "Any"}}}, "filter.tagSettings"),
    ({"machines": [], "installPatches": INSTALL, "surprise": 1}, "surprise"),
])
def test_bad_plan_requests_name_the_field_and_write_nothing(services: Components, body: dict[str, Any],
                                                            target: str) -> None:
    status, err, _ = call(plans_api.create_plan, "POST", "/api/plans", body=body)
    assert status == 400, err
    assert err["error"]["target"] == target, err
    assert not list(services.plans.table.query_entities("PartitionKey eq 'plan'"))


def test_apply_of_an_unknown_or_unfinished_plan(services: Components, simulator: Simulator) -> None:
    status, err = apply("0123456789a-0badf00d")
    assert status == 404 and err["error"]["code"] == "PlanNotFound"
    status, view, _ = call(plans_api.create_plan, "POST", "/api/plans",
                           body={"machines": vms(simulator)[:1], "installPatches": INSTALL})
    status, err = apply(view["id"])  # not pumped: still Planning
    assert status == 409 and err["error"]["code"] == "PlanNotReady"


def test_a_configurations_next_window_is_planned_and_its_applied_run_is_the_windows_run(
        services: Components, simulator: Simulator) -> None:
    from shared.maintenance.windows import open_due_windows
    from tests.integration.test_maintenance import assign, configuration, occurrences, put

    machines = vms(simulator)[:2]
    assess(services, machines)
    begin = (datetime.now(UTC) + timedelta(minutes=30)).replace(second=0, microsecond=0)
    put("nightly", configuration(begin))
    for i, machine in enumerate(machines):
        assign("nightly", f"vm{i}", {"resourceId": machine})
    view = plan(services, {"maintenanceConfiguration": "nightly"})
    assert view["maintenanceConfiguration"] == "nightly"
    assert view["maintenanceWindow"] == {"start": iso(begin), "end": iso(begin + timedelta(hours=3))}
    assert set(planned_machines(view["id"])) == {m.lower() for m in machines}
    assert view["installPatches"]["maximumDuration"] == "PT2H50M"  # the window less the reboot reserve
    status, run = apply(view["id"])
    assert status == 202, run
    assert run["maintenanceWindow"]["configuration"] == "nightly" and run["planId"] == view["id"]
    pump = QueuePump(services)
    while pump.pump_once():  # everything due now: its dispatch is not (it waits for the window)
        pass
    assert services.store.get_run(run["id"]).get("dispatchedAt") in (None, "")  # type: ignore[union-attr]
    # the window timer finds the plan's run instead of opening another
    open_due_windows(services, begin)
    window = occurrences("nightly", begin, 1)[0]
    assert window["state"] == "Started" and window["runId"] == run["id"]


@pytest.mark.parametrize("simulator_config", [sim_config(vms=2, seed=78, time_scale=36000.0, arc_machines=1,
                                                          arc_disconnected=0)])
def test_an_arc_machine_whose_assessment_only_counts_is_not_planned(services: Components,
                                                                    simulator: Simulator) -> None:
    arc = [m for m in simulator.machine_ids() if "/Microsoft.HybridCompute/" in m]
    assert arc
    assess(services, arc)
    view = plan(services, {"machines": arc, "installPatches": INSTALL})
    entry = planned_machines(view["id"])[arc[0].lower()]
    assert entry["action"] == "NoPatchList" and entry["assessment"]["status"] == "Current"
    status, err = apply(view["id"])
    assert status == 409 and err["error"]["code"] == "NothingToInstall"


def test_the_runs_canary_and_waves_are_the_plans(services: Components, simulator: Simulator) -> None:
    machines = vms(simulator)[:4]
    assess(services, machines[1:])  # the first machine is not assessed: the plan leaves it out of the run
    rollout = {"waves": [{"name": "canary", "size": 1}, {"size": "rest"}], "soakTime": "PT0S"}
    view = plan(services, {"machines": machines, "installPatches": INSTALL, "rollout": rollout})
    entries = planned_machines(view["id"])
    assert entries[machines[0].lower()]["action"] == "NotAssessed"
    installing = [m for m in machines if entries[m.lower()]["action"] == "Install"]
    canary = [m for m in installing if entries[m.lower()]["wave"] == 0]
    assert canary == installing[:1]  # the first machine with something to install, in request order
    status, run = apply(view["id"])
    assert status == 202, run
    assert [w.get("machines") for w in run["rollout"]["waves"]] == [
        [parse_machine_id(m, target="m").key for m in ms] for ms in (canary, installing[1:])]
    done = finish(services, run["id"])
    waves = {m["id"].lower(): m["wave"] for m in done["machines"]}
    assert {m.lower(): 0 for m in canary} == {m: w for m, w in waves.items() if w == 0}


def test_a_second_plan_of_the_same_window_is_refused_once_the_first_was_applied(services: Components,
                                                                                simulator: Simulator) -> None:
    from tests.integration.test_maintenance import assign, configuration, put

    machines = vms(simulator)[:2]
    assess(services, machines)
    begin = (datetime.now(UTC) + timedelta(minutes=30)).replace(second=0, microsecond=0)
    put("nightly", configuration(begin))
    for i, machine in enumerate(machines):
        assign("nightly", f"vm{i}", {"resourceId": machine})
    first, second = plan(services, {"maintenanceConfiguration": "nightly"}), plan(
        services, {"maintenanceConfiguration": "nightly"})
    status, run = apply(first["id"])
    assert status == 202 and run["planId"] == first["id"]
    status, err = apply(second["id"])
    assert status == 409 and err["error"]["code"] == "WindowAlreadyOpened", err
    assert run["id"] in err["error"]["message"] and first["id"] in err["error"]["message"]
    assert "appliedRunId" not in get_plan(second["id"])[1]
