"""Rollouts against Azurite and the ARM simulator: a failing canary halts the run before anything else
starts, concurrency limits hold (measured on the simulator's side), a cancel starts nothing new, a
halted run resumes, and later waves get the canary's patch set."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from shared.composition import Components
from tests.app import runs_api
from tests.integration.queue_pump import QueuePump
from tests.support.bodies import INSTALL_LINUX_OTHER
from tests.support.events import Receiver
from tests.support.fleet import sim_config
from tools.azure_simulator import Simulator, SimulatorConfig


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    # Operations of 1-4 simulated hours take 0.1-0.4 s here.
    return sim_config(vms=30, subscriptions=2, seed=12, time_scale=36000.0)


def post(machines: list[str], rollout: dict[str, Any], install: dict[str, Any] | None = None) -> str:
    body = json.dumps({"machines": machines, "installPatches": install or INSTALL_LINUX_OTHER,
                       "rollout": rollout}).encode()
    resp = runs_api.create_run(func.HttpRequest("POST", "http://127.0.0.1:7071/api/runs", body=body))
    assert resp.status_code == 202, resp.get_body()
    return json.loads(resp.get_body())["id"]


def view(run_id: str) -> dict[str, Any]:
    resp = runs_api.get_run(func.HttpRequest("GET", "http://127.0.0.1/api/runs/x", body=b"",
                                             route_params={"runId": run_id}))
    return json.loads(resp.get_body())


def action(fn: Any, run_id: str) -> tuple[int, dict[str, Any]]:
    resp = fn(func.HttpRequest("POST", "http://127.0.0.1/api/runs/x/y", body=b"", route_params={"runId": run_id}))
    return resp.status_code, json.loads(resp.get_body())


def finished(run_id: str) -> bool:
    return view(run_id)["status"] not in ("Accepted", "InProgress")


def installs(sim: Simulator) -> dict[str, int]:
    return {vm: c["installPatchesAccepted"] for vm, c in sim.calls()["byVm"].items()}


@pytest.mark.parametrize("simulator_config", [sim_config(vms=100, subscriptions=2, seed=14, time_scale=36000.0)])
def test_a_failing_canary_halts_a_100_vm_run_and_resume_goes_on(services: Components, simulator: Simulator) -> None:
    vms = simulator.vm_ids()
    canary = vms[0]
    simulator.set_power(canary, "deallocated")  # installPatches on it fails: the canary fails
    run_id = post(vms, {"waves": [{"name": "canary", "machines": [canary]}, {"size": "rest"}], "maxFailures": 1,
                        "maxConcurrency": 20})
    QueuePump(services).run_until(lambda: finished(run_id), timeout=60)
    run = view(run_id)
    assert run["status"] == "Halted", run["states"]
    assert run["rollout"]["halted"]["machines"] == [canary] and "maxFailures is 1" in run["rollout"]["halted"]["reason"]
    assert sum(installs(simulator).values()) == 0
    assert sum(c["installPatches"] for c in simulator.calls()["byVm"].values()) == 1  # the canary's refused POST
    skipped = [m for m in run["machines"] if m["state"] == "Skipped"]
    assert len(skipped) == 99 and {m["error"]["code"] for m in skipped} == {"RunHalted"}

    status, _ = action(runs_api.resume_run, run_id)
    assert status in (200, 202)
    QueuePump(services).run_until(lambda: finished(run_id), timeout=90)
    run = view(run_id)
    assert run["status"] == "Failed"  # the canary still failed; the other 99 went on
    assert sum(installs(simulator).values()) == 99
    assert sorted(m["state"] for m in run["machines"]).count("Completed") == 99


@pytest.mark.parametrize("simulator_config",  # operations of 1.5-6 s: they overlap under load
                         [sim_config(vms=12, subscriptions=2, seed=12, time_scale=2400.0)])
def test_concurrency_limits_hold_per_run_and_per_subscription(services: Components, simulator: Simulator) -> None:
    run_id = post(simulator.vm_ids(), {"maxConcurrency": 3, "maxConcurrencyPerSubscription": 2})
    QueuePump(services).run_until(lambda: finished(run_id), timeout=120)
    assert view(run_id)["status"] in ("Succeeded", "CompletedWithWarnings")
    peaks = simulator.calls()["peakConcurrentBySubscription"]
    assert peaks["*"] == 3  # the limit was used, and never passed
    assert all(n <= 2 for sub, n in peaks.items() if sub != "*") and max(peaks.values()) >= 2
    assert set(installs(simulator).values()) == {1}


def test_a_canceled_run_starts_nothing_new(services: Components, simulator: Simulator) -> None:
    run_id = post(simulator.vm_ids()[:10], {"maxConcurrency": 2})
    pump = QueuePump(services)
    pump.run_until(lambda: sum(installs(simulator).values()) >= 2, timeout=30)
    status, body = action(runs_api.cancel_run, run_id)
    assert status in (200, 202) and body["rollout"]["canceledAt"]
    started = sum(installs(simulator).values())
    pump.run_until(lambda: finished(run_id), timeout=60)
    run = view(run_id)
    assert run["status"] == "Canceled"
    assert sum(installs(simulator).values()) == started  # nothing new after the cancel
    assert len([m for m in run["machines"] if m["state"] == "Completed"]) == started
    assert {m["error"]["code"] for m in run["machines"] if m["state"] == "Skipped"} == {"RunCanceled"}
    assert action(runs_api.cancel_run, run_id)[0] == 409  # finished


def test_later_waves_install_the_canary_patch_set(services: Components, simulator: Simulator) -> None:
    state = simulator.state()["vms"]
    linux = [v["id"] for v in state if v["osType"] == "Linux"]
    windows = [v["id"] for v in state if v["osType"] == "Windows"]
    machines = linux[:4] + windows[:3]
    before = datetime.now(UTC)
    run_id = post(machines, {"waves": [{"name": "canary", "machines": [linux[0]]}, {"size": "rest"}],
                             "soakTime": "PT1S", "approveAfterDays": 7})
    QueuePump(services).run_until(lambda: finished(run_id), timeout=60)
    run = view(run_id)
    assert run["status"] in ("Succeeded", "CompletedWithWarnings")
    canary_op = next(v for v in simulator.state()["vms"] if v["id"] == linux[0])["operations"][0]
    installed = sorted(f"{p['name']}_{p['version']}" for p in canary_op["result"]["patches"]
                       if p["installationState"] == "Installed")
    assert installed and run["rollout"]["pinnedLinuxPackages"] == len(installed)
    ops = {v["id"]: v["operations"] for v in simulator.state()["vms"]}
    for vm in linux[1:4]:  # exactly the canary's versions, and nothing chosen by classification
        sent = ops[vm][0]["request"]["linuxParameters"]
        assert sent["packageNameMasksToInclude"] == installed and "classificationsToInclude" not in sent
    cutoff = (before - timedelta(days=7)).strftime("%Y-%m-%d")
    for vm in [linux[0], *windows[:3]]:
        sent = ops[vm][0]["request"]
        if vm in windows:  # pinned when the run was accepted: 7 days before its start
            assert sent["windowsParameters"]["maxPatchPublishDate"].startswith(cutoff)
    waves = {m["id"]: m["wave"] for m in run["machines"]}
    assert waves[linux[0]] == 0 and {waves[m] for m in machines[1:]} == {1}


@pytest.mark.parametrize(("rollout", "target"), [
    ({"waves": [{"size": "rest"}, {"size": 1}]}, "rollout.waves[0].size"),
    ({"waves": [{"size": "110%"}]}, "rollout.waves[0].size"),
    ({"waves": [{"size": 1, "machines": []}]}, "rollout.waves[0]"),
    ({"maxConcurrency": 0}, "rollout.maxConcurrency"),
    ({"maxFailures": "-1"}, "rollout.maxFailures"),
    ({"failureOn": ["Sometimes"]}, "rollout.failureOn[0]"),
    ({"soakTime": "tomorrow"}, "rollout.soakTime"),
    ({"waves": [{"machines": ["/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/"
                              "Microsoft.Compute/virtualMachines/elsewhere"]}]}, "rollout.waves[0].machines[0]"),
    ({"speed": "fast"}, "rollout.speed"),
])
def test_bad_rollouts_are_400_and_write_nothing(services: Components, simulator: Simulator, rollout: dict[str, Any],
                                               target: str) -> None:
    body = json.dumps({"machines": simulator.vm_ids()[:3], "installPatches": INSTALL_LINUX_OTHER,
                       "rollout": rollout}).encode()
    resp = runs_api.create_run(func.HttpRequest("POST", "http://127.0.0.1/api/runs", body=body))
    assert resp.status_code == 400 and json.loads(resp.get_body())["error"]["target"] == target
    assert services.store.list_runs(5, None)[0] == []


def test_a_poisoned_advance_fails_nothing(services: Components, simulator: Simulator) -> None:
    from tests.app import run_workers

    run_id = post(simulator.vm_ids()[:4], {"maxConcurrency": 1})
    body = json.dumps({"runId": run_id, "advance": True}).encode()
    run_workers.dispatch_poison(func.QueueMessage(id="m", body=body))  # only a nudge: dropped
    QueuePump(services).run_until(lambda: finished(run_id), timeout=60)
    assert view(run_id)["status"] in ("Succeeded", "CompletedWithWarnings")
    assert set(installs(simulator)[v.lower()] for v in simulator.vm_ids()[:4]) == {1}


def test_a_duplicated_pre_hook_message_calls_the_hook_once(services: Components, simulator: Simulator) -> None:
    """The copy that arrives while the first is still waiting for the hook finds its fresh claim and stops."""
    import http.server
    import threading
    import time

    from shared.rollouts.prehook import pre_hook

    hits: list[float] = []

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hits.append(time.monotonic())
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(1.0)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        run_id = post(simulator.vm_ids()[:2], {"preHook": {"url": url, "timeoutSeconds": 10}})
        message = {"kind": "prehook", "runId": run_id}
        results: list[str] = []
        first = threading.Thread(target=lambda: results.append(pre_hook(message, services)))
        first.start()
        time.sleep(0.4)  # the duplicate is delivered after the first wrote its claim, before the hook answered
        results.append(pre_hook(message, services))
        first.join()
    finally:
        server.shutdown()
    assert len(hits) == 1 and sorted(results) == ["claimed-elsewhere", "passed"]


def test_a_resume_that_meets_a_busy_controller_says_so(services: Components, simulator: Simulator) -> None:
    from shared.core.clock import iso, utcnow

    vms = simulator.vm_ids()[:4]
    simulator.set_power(vms[0], "deallocated")
    run_id = post(vms, {"waves": [{"machines": [vms[0]]}, {"size": "rest"}], "maxFailures": 1})
    QueuePump(services).run_until(lambda: finished(run_id), timeout=60)
    assert view(run_id)["status"] == "Halted"
    # another decision (a finishing machine, the sweeper, a duplicated message) holds the lock right now
    services.store.update_run(run_id, {"controllerLock": "other",
                                       "controllerLockUntil": iso(utcnow() + timedelta(seconds=30))})
    status, body = action(runs_api.resume_run, run_id)
    assert status == 409 and body["error"]["code"] == "RunBusy"  # not a 200 for a resume that did not happen
    services.store.update_run(run_id, {"controllerLockUntil": ""})
    status, _ = action(runs_api.resume_run, run_id)
    assert status in (200, 202) and view(run_id)["status"] != "Halted"


def test_a_write_between_the_lock_release_read_and_its_write_does_not_leave_the_lock_held(
        services: Components, simulator: Simulator) -> None:
    """The pre-run hook's worker claims the hook (an ETag-conditional write on the run) right after the decision that
    asked for it: when that write lands between the decision's release read and its release write, the lock was
    kept for six minutes and a vetoed run sat with its machines Queued (a flaky local-host test showed it)."""
    from types import SimpleNamespace

    from shared.core.clock import iso, utcnow
    from shared.rollouts.controller import locked

    run_id = post(simulator.vm_ids()[:2], {"maxConcurrency": 1})
    store = services.store
    released: list[bool] = []

    class InterleavedStore:  # the real store; one other writer slips in after the release's read
        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def get_run(self, rid: str) -> Any:
            run = store.get_run(rid)
            if released == [True]:
                released.append(True)
                store.update_run(rid, {"preHookCalledAt": iso(utcnow())}, etag=run.etag)
            return run

    def act(run: Any, now: Any) -> str:
        released.append(True)  # the decision is done; the next read is the release's
        return "decided"

    assert locked(run_id, SimpleNamespace(store=InterleavedStore(), queues=services.queues), act) == "decided"
    assert len(released) == 2  # the other write did land between the read and the write
    assert str(store.get_run(run_id).get("controllerLockUntil") or "") <= iso(utcnow())


def test_the_pre_run_hook_is_called_when_the_controller_gives_its_lock_back_between_the_claims_read_and_write(
        services: Components, simulator: Simulator, receiver: Receiver) -> None:
    """The controller queues the hook's message holding its lock and gives the lock back right after: that write
    changes the run's ETag under the hook's claim. The claim must read again, not take the conflict for another
    copy's claim (which left the hook uncalled, and the run waiting, for the hook's timeout + 5 minutes)."""
    from shared.rollouts.prehook import pre_hook

    receiver.status = 503
    store = services.store
    reads: list[str] = []

    class ReleaseInBetween:  # the real store; the controller's lock release lands after the claim's first read
        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def get_run(self, rid: str) -> Any:
            run = store.get_run(rid)
            reads.append(rid)
            if len(reads) == 1:
                store.update_run(rid, {"controllerLockUntil": ""})
            return run

    class Deps:
        def __getattr__(self, name: str) -> Any:
            return ReleaseInBetween() if name == "store" else getattr(services, name)

    run_id = post(simulator.vm_ids()[:2], {"preHook": {"url": f"{receiver.url}/hook", "timeoutSeconds": 10}})
    assert pre_hook({"kind": "prehook", "runId": run_id}, Deps()) == "vetoed"  # type: ignore[arg-type]
    assert len(receiver.requests) == 1
    run = store.get_run(run_id)
    assert run is not None and run.get("canceledReason") == "the pre-run hook answered HTTP 503"
