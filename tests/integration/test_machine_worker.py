"""The run machinery against Azurite and the ARM simulator over real HTTP, delivered in-process.

These tests call the app's own trigger functions (HTTP and queue) directly, so they can control
delivery: duplicates, poison, deadlines. tests/integration/test_local_host_runs.py runs the same
app through the local Functions host.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

import azure.functions as func

from shared.arm.patch_results import normalise_patch
from shared.composition import Components
from shared.core.clock import iso, utcnow
from tests.app import get_services, reset_services, run_workers, runs_api
from tests.integration.queue_pump import QueuePump
from tests.support.bodies import INSTALL
from tools.azure_simulator import Simulator


def post_run(machines: list[str], install: dict[str, Any] | None = None, key: str | None = None,
             raw: bytes | None = None) -> func.HttpResponse:
    headers = {"Content-Type": "application/json", **({"Idempotency-Key": key} if key else {})}
    body = raw if raw is not None else json.dumps({"machines": machines, "installPatches": install or INSTALL}).encode()
    return runs_api.create_run(func.HttpRequest("POST", "http://127.0.0.1:7071/api/runs?code=k1", headers=headers,
                                                body=body))


def get_run(run_id: str) -> func.HttpResponse:
    return runs_api.get_run(func.HttpRequest("GET", f"http://127.0.0.1:7071/api/runs/{run_id}", body=b"",
                                             route_params={"runId": run_id}))


def run_view(run_id: str) -> dict[str, Any]:
    return json.loads(get_run(run_id).get_body())


def start(machines: list[str], **kw: Any) -> str:
    resp = post_run(machines, **kw)
    assert resp.status_code == 202, resp.get_body()
    return json.loads(resp.get_body())["id"]


def finished(run_id: str) -> bool:
    return get_run(run_id).status_code == 200


def machine(view: dict[str, Any], vm_id: str) -> dict[str, Any]:
    return next(m for m in view["machines"] if m["id"].lower() == vm_id.lower())


def run_alone(services: Components, vm: str) -> tuple[str, dict[str, Any]]:
    """A run of `vm` alone, its messages delivered until it ends: the run's id and the machine's view."""
    run_id = start([vm])
    QueuePump(services).run_until(lambda: finished(run_id), timeout=30)
    return run_id, machine(run_view(run_id), vm)


def by_vm(sim: Simulator) -> dict[str, dict[str, int]]:
    return sim.calls()["byVm"]


def test_accepts_with_location_retry_after_and_function_key(services: Components, simulator: Simulator) -> None:
    resp = post_run(simulator.vm_ids()[:2])
    assert resp.status_code == 202
    body = json.loads(resp.get_body())
    assert resp.headers["Location"] == f"http://127.0.0.1:7071/api/runs/{body['id']}?code=k1"
    assert resp.headers["Retry-After"] == "1"
    assert body["status"] == "Accepted" and body["machineCount"] == 2
    assert get_run(body["id"]).status_code == 202
    stored = services.store.get_run(body["id"])
    assert stored is not None and stored.parameters == INSTALL
    # ... also under the old column for one release: an instance of the previous version reads only that one
    assert json.loads(stored["installPatches"]) == INSTALL


def test_every_message_delivered_twice_still_one_install_per_machine(services: Components,
                                                                     simulator: Simulator) -> None:
    vms = simulator.vm_ids()
    run_id = start(vms)
    pump = QueuePump(services, duplicate=True)
    pump.run_until(lambda: finished(run_id), timeout=90)
    calls = by_vm(simulator)
    for vm in vms:
        assert calls[vm.lower()]["installPatches"] == 1, vm
    view = run_view(run_id)
    assert view["status"] in ("Succeeded", "CompletedWithWarnings", "Failed")
    assert all(m["state"] == "Completed" for m in view["machines"])
    assert pump.delivered[services.settings.queues.operations] >= 2 * 2 * len(vms)  # start + ≥1 poll, twice


def test_a_start_acts_on_the_row_its_release_listed_without_reading_it(services: Components,
                                                                        simulator: Simulator) -> None:
    """The dispatch's start messages carry each Queued row as listed (ETag and columns): a start claims it If-Match,
    one Table read less per machine; and every machine still starts once."""
    import base64

    from azure.storage.queue import QueueClient

    from shared.core.messages import parse_step
    from tools import metrics

    vms = simulator.vm_ids()[:3]
    run_id = start(vms)
    pump = QueuePump(services)
    pump.pump_once(only="dispatch")
    raw = QueueClient.from_connection_string(services.settings.storage.connection, services.settings.queues.operations)
    sent = [parse_step(base64.b64decode(m.content).decode()) for m in raw.peek_messages(max_messages=32)]
    stored = {t.key: t for t in services.store.list_targets(run_id)}
    assert len(sent) == len(vms) and all(m.row is not None for m in sent)
    for message in sent:
        assert message.row is not None and message.row.etag == stored[message.machine].etag
        assert message.row.columns["state"] == "Queued" and message.row.columns["resourceId"] in vms
    metrics.install()
    before = metrics.table_operations("runs")
    pump.pump_once(only="operations")
    assert (metrics.table_operations("runs") - before)["getTarget"] == 0
    assert {t["state"] for t in services.store.list_targets(run_id)} <= {"Running", "Completed"}
    pump.run_until(lambda: finished(run_id), timeout=30)
    assert all(by_vm(simulator)[vm.lower()]["installPatches"] == 1 for vm in vms)


def test_results_in_table_storage_equal_what_the_simulator_did(services: Components, simulator: Simulator) -> None:
    vms = simulator.vm_ids()[:6]
    run_id = start(vms)
    QueuePump(services).run_until(lambda: finished(run_id), timeout=60)
    state = {v["id"].lower(): v for v in simulator.state()["vms"]}
    view = run_view(run_id)
    for vm in vms:
        ops = [op for op in state[vm.lower()]["operations"] if op["kind"] == "installPatches"]
        assert len(ops) == 1
        result = ops[0]["result"]
        mine = machine(view, vm)
        for field in ("status", "installationActivityId", "rebootStatus", "maintenanceWindowExceeded",
                      "installedPatchCount", "failedPatchCount", "pendingPatchCount", "excludedPatchCount",
                      "notSelectedPatchCount"):
            assert mine.get(field) == result.get(field), (vm, field)
        detail = runs_api.get_run_machine(func.HttpRequest(
            "GET", "http://x/api", body=b"", route_params={"runId": run_id, **_route(vm)}))
        assert detail.status_code == 200
        # Azure's patches, classifications by the API's names ("Definition Updates" is Definition: #23)
        assert json.loads(detail.get_body())["patches"] == [normalise_patch(p) for p in result["patches"]]


def _route(vm_id: str) -> dict[str, str]:
    parts = vm_id.split("/")
    return {"subscriptionId": parts[2], "resourceGroupName": parts[4], "vmName": parts[8]}


def test_bad_request_writes_nothing(services: Components, simulator: Simulator) -> None:
    resp = post_run(simulator.vm_ids()[:1], install={**INSTALL, "rebootSetting": "Sometimes"})
    assert resp.status_code == 400
    error = json.loads(resp.get_body())["error"]
    assert error["target"] == "installPatches.rebootSetting" and error["code"] == "InvalidParameter"
    assert list(services.store.targets.list_entities()) == []
    assert list(services.store.runs.list_entities()) == []
    assert services.account.queue(services.settings.queues.dispatch).peek_messages() == []


def test_idempotency_key(services: Components, simulator: Simulator) -> None:
    vms = simulator.vm_ids()[:2]
    first = start(vms, key="abc")
    again = post_run(list(reversed(vms)), key="abc", install={**INSTALL, "rebootSetting": "ifrequired"})
    assert again.status_code == 202 and json.loads(again.get_body())["id"] == first
    other = post_run(vms[:1], key="abc")
    assert other.status_code == 409
    assert json.loads(other.get_body())["error"]["code"] == "IdempotencyKeyReused"
    runs = [e for e in services.store.runs.list_entities() if e["PartitionKey"] == "run"]
    assert [r["RowKey"] for r in runs] == [first]


def reconfigure(**env: str) -> Components:
    """Change settings mid-test, as a redeploy with new app settings would."""
    os.environ.update(env)
    reset_services()
    return get_services()


def test_conflict_retries_are_bounded(services: Components, simulator: Simulator) -> None:
    services = reconfigure(MAX_CONFLICT_RETRIES="2")
    simulator.set_faults(conflict_rate=1.0)
    vm = simulator.vm_ids()[0]
    _, mine = run_alone(services, vm)
    assert mine["state"] == "Failed"
    assert "conflict" in mine["error"]["message"]
    assert by_vm(simulator)[vm.lower()]["installPatches"] == 3  # first try + 2 retries
    assert by_vm(simulator)[vm.lower()].get("installPatchesAccepted", 0) == 0


def test_throttling_waits_exactly_retry_after(services: Components, simulator: Simulator) -> None:
    simulator.set_faults(throttle_rate=1.0, throttle_retry_after=7)
    vm = simulator.vm_ids()[0]
    run_id = start([vm])
    pump = QueuePump(services)
    pump.pump_once(only="dispatch")
    pump.pump_once(only="operations")  # the first step meets 429
    target = services.store.get_target(run_id, _key(vm))
    assert target is not None and target["throttles"] == 1 and target["state"] == "Queued"
    waited = _seconds_between(target["updatedAt"], target["nextActionAt"])
    assert 6.5 <= waited <= 7.5
    simulator.set_faults(throttle_rate=0.0)
    pump.run_until(lambda: finished(run_id), timeout=30)
    assert machine(run_view(run_id), vm)["state"] == "Completed"


def test_server_errors_back_off_then_fail(services: Components, simulator: Simulator) -> None:
    services = reconfigure(MAX_TRANSIENT_RETRIES="2")
    simulator.set_faults(error_rate=1.0)
    vm = simulator.vm_ids()[0]
    _, mine = run_alone(services, vm)
    assert mine["state"] == "Failed" and "transient" in mine["error"]["message"]
    assert len(mine["armCalls"]) == 3 and all(c["status"] >= 500 for c in mine["armCalls"])


def test_unknown_vm_fails_with_arms_error(services: Components, simulator: Simulator) -> None:
    ghost = simulator.vm_ids()[0].rsplit("/", 1)[0] + "/does-not-exist"
    _, mine = run_alone(services, ghost)
    assert mine["state"] == "Failed" and mine["error"]["code"] == "ResourceNotFound"


def test_vm_without_parameters_for_its_os_fails_clearly(services: Components, simulator: Simulator) -> None:
    linux = [v["id"] for v in simulator.state()["vms"] if v["osType"] == "Linux"][:1]
    windows_only = {k: v for k, v in INSTALL.items() if k != "linuxParameters"}
    run_id = start(linux, install=windows_only)
    QueuePump(services).run_until(lambda: finished(run_id), timeout=30)
    mine = machine(run_view(run_id), linux[0])
    assert mine["error"]["code"] == "NoParametersForOsType"
    assert by_vm(simulator)[linux[0].lower()].get("installPatches", 0) == 0


def test_poll_past_deadline_times_out(services: Components, simulator: Simulator) -> None:
    vm = simulator.vm_ids()[0]
    run_id = start([vm])
    pump = QueuePump(services)
    pump.pump_once(only="dispatch")
    pump.pump_once(only="operations")  # started: Running with a deadline
    target = services.store.get_target(run_id, _key(vm))
    assert target is not None and target["state"] == "Running"
    services.store.update_target(target, {"deadline": iso(utcnow() - timedelta(seconds=1))})
    pump.run_until(lambda: finished(run_id), timeout=30)
    assert machine(run_view(run_id), vm)["state"] == "TimedOut"
    assert run_view(run_id)["status"] == "Failed"


def test_poisoned_step_fails_the_machine_and_the_run_finishes(services: Components, simulator: Simulator) -> None:
    vms = simulator.vm_ids()[:2]
    run_id = start(vms)
    pump = QueuePump(services)
    pump.pump_once(only="dispatch")  # two step messages queued
    client = pump.routes[1][0]
    msgs = list(client.receive_messages(max_messages=2, visibility_timeout=60))
    assert len(msgs) == 2
    for m in msgs:  # as if each had failed maxDequeueCount times and moved to the poison queue
        run_workers.operation_poison(func.QueueMessage(id=m.id, body=m.content.encode()))
        client.delete_message(m)
    view = run_view(run_id)
    assert view["status"] == "Failed"
    assert {m["error"]["code"] for m in view["machines"]} == {"PoisonMessage"}
    run = services.store.get_run(run_id)
    assert run is not None and run["active"] is False and run["completedAt"]


def _key(vm_id: str) -> str:
    parts = vm_id.split("/")
    return f"{parts[2]}|{parts[4]}|{parts[8]}".lower()


def _seconds_between(a: str, b: str) -> float:
    from shared.core.clock import parse_iso

    return (parse_iso(b) - parse_iso(a)).total_seconds()


def test_sweeper_requeues_a_machine_whose_message_was_lost(services: Components, simulator: Simulator) -> None:
    from shared.runs.sweeper import sweep

    vm = simulator.vm_ids()[0]
    run_id = start([vm])
    pump = QueuePump(services)
    pump.pump_once(only="dispatch")
    pump.pump_once(only="operations")  # started; the run's poll round is queued
    for queue in (services.settings.queues.operations, services.settings.queues.polls):
        services.account.queue(queue).clear_messages()  # the worker "died" before queuing it
    target = services.store.get_target(run_id, _key(vm))
    assert target is not None and target["state"] == "Running" and target["pollRound"] is True
    assert sweep(services, utcnow())["rounds"] == 0  # not overdue yet: no duplicate work
    long_ago = iso(utcnow() - timedelta(minutes=20))  # twenty minutes on, the poll and its round are overdue
    services.store.update_target(target, {"nextActionAt": long_ago})
    sub = _key(vm).split("|", 1)[0]
    chain = services.store.get_round(run_id, sub)
    services.store.put_round(run_id, sub, chain.seq, long_ago, chain.etag)
    assert sweep(services, utcnow())["rounds"] == 1  # the run gets its round again (shared/runs/poll_rounds.py)
    pump.run_until(lambda: finished(run_id), timeout=30)
    assert machine(run_view(run_id), vm)["state"] == "Completed"
    assert by_vm(simulator)[vm.lower()]["installPatchesAccepted"] == 1
    assert sweep(services, utcnow())["runs"] == 0  # the run is closed


def test_sweeper_copies_no_overdue_step_while_its_queue_has_a_backlog(services: Components,
                                                                      simulator: Simulator) -> None:
    """A visible message in the step's queue means the consumers are behind, not that messages were lost: a copy
    would only deepen the backlog (issue #22). With nothing visible, the overdue step's message is gone: copied."""
    from shared.runs.sweeper import BACKLOG_GRACE, sweep

    vm = simulator.vm_ids()[0]
    run_id = start([vm])
    pump = QueuePump(services)
    pump.pump_once(only="dispatch")  # the start message is queued, due now, and nobody has taken it
    target = services.store.get_target(run_id, _key(vm))
    assert target is not None and target["state"] == "Queued"
    overdue = timedelta(seconds=services.settings.retries.stall_after_seconds + 60)
    services.store.update_target(target, {"nextActionAt": iso(utcnow() - overdue)})
    services.store.update_run(run_id, {"releasedAt": iso(utcnow() - overdue)})  # its message went out then
    counts = sweep(services, utcnow())
    assert (counts["requeued"], counts["behind"]) == (0, 1)
    # ... but not for ever: overdue past the host's lease, no backlog explains it (its message may be lost)
    assert sweep(services, utcnow() + BACKLOG_GRACE)["requeued"] == 1
    services.account.queue(services.settings.queues.operations).clear_messages()  # now nothing is waiting
    counts = sweep(services, utcnow())
    assert (counts["requeued"], counts["behind"]) == (1, 0)
    pump.run_until(lambda: finished(run_id), timeout=30)
    assert by_vm(simulator)[vm.lower()]["installPatchesAccepted"] == 1


def test_queue_messages_are_base64_on_the_wire(services: Components, simulator: Simulator) -> None:
    """The queue trigger's default messageEncoding is base64; raw text would fail in the real host."""
    import base64

    from azure.storage.queue import QueueClient

    run_id = start(simulator.vm_ids()[:1])
    raw = QueueClient.from_connection_string(services.settings.storage.connection,
                                             services.settings.queues.dispatch)
    [msg] = list(raw.peek_messages())
    assert json.loads(base64.b64decode(msg.content, validate=True)) == {"runId": run_id}


def test_synchronous_200_is_stored_without_polling(services: Components, simulator: Simulator) -> None:
    simulator.set_faults(sync_rate=1.0)
    vm = simulator.vm_ids()[0]
    _, mine = run_alone(services, vm)
    assert mine["state"] == "Completed" and mine["status"] in ("Succeeded", "Failed")
    assert [c["op"] for c in mine["armCalls"]] == ["getVm", "instanceView", "installPatches"]
    assert by_vm(simulator)[vm.lower()]["poll"] == 0
    [op] = [o for v in simulator.state()["vms"] if v["id"] == vm for o in v["operations"]]
    assert mine["installedPatchCount"] == op["result"]["installedPatchCount"]


def test_location_on_another_host_is_refused_and_never_called(services: Components, simulator: Simulator) -> None:
    simulator.set_faults(foreign_location_rate=1.0)
    vm = simulator.vm_ids()[0]
    run_id, mine = run_alone(services, vm)
    assert mine["state"] == "Failed" and mine["error"]["code"] == "UntrustedPollingUrl"
    assert "127.0.0.2:9" in mine["error"]["message"]
    # no poll was sent anywhere
    assert [c["op"] for c in mine["armCalls"]] == ["getVm", "instanceView", "installPatches"]
    target = services.store.get_target(run_id, _key(vm))
    assert target is not None and not target.get("pollUrl")


def test_list_runs_pages_newest_first(services: Components, simulator: Simulator) -> None:
    from urllib.parse import parse_qs, urlsplit

    ids = [start(simulator.vm_ids()[i:i + 1]) for i in range(3)]

    def page(params: dict[str, str]) -> dict[str, Any]:
        resp = runs_api.list_runs(func.HttpRequest("GET", "http://127.0.0.1:7071/api/runs", body=b"", params=params))
        assert resp.status_code == 200
        return json.loads(resp.get_body())

    first = page({"top": "2"})
    assert [r["id"] for r in first["value"]] == ids[::-1][:2]
    query = {k: v[0] for k, v in parse_qs(urlsplit(first["nextLink"]).query).items()}
    second = page(query)
    assert [r["id"] for r in second["value"]] == [ids[0]] and "nextLink" not in second
    bad = runs_api.list_runs(func.HttpRequest("GET", "http://x/api/runs", body=b"", params={"top": "0"}))
    assert bad.status_code == 400 and json.loads(bad.get_body())["error"]["target"] == "top"


def test_dropped_connections_back_off_then_fail(services: Components, simulator: Simulator) -> None:
    services = reconfigure(MAX_TRANSIENT_RETRIES="1")
    simulator.set_faults(drop_rate=1.0)
    vm = simulator.vm_ids()[0]
    _, mine = run_alone(services, vm)
    assert mine["state"] == "Failed" and mine["error"]["code"] == "ConnectionError"
    assert [c["status"] for c in mine["armCalls"]] == [None, None]  # no answer, twice
    assert simulator.calls()["byVm"][vm.lower()].get("installPatchesAccepted", 0) == 0
