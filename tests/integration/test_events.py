"""Events and hooks against a real local receiver: CloudEvents (and Event Grid's schema) delivered
through the queue with a valid HMAC signature, a retry after the receiver fails, a dead letter when
it never answers well, a pre-run hook that vetoes a run, and a post-run hook told the outcome."""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import timedelta
from typing import Any

import azure.functions as func

from shared.composition import Components
from tests.app import get_services, reset_services, runs_api
from tests.integration.queue_pump import QueuePump
from tests.support.bodies import INSTALL
from tests.support.events import Receiver, signed, webhook_settings
from tools.azure_simulator import Simulator


def configure(receiver: Receiver, **extra: str) -> Components:
    os.environ.update({**webhook_settings(receiver), **extra})
    reset_services()
    return get_services()


def start(machines: list[str], rollout: dict[str, Any] | None = None) -> str:
    body: dict[str, Any] = {"machines": machines, "installPatches": INSTALL}
    if rollout is not None:
        body["rollout"] = rollout
    resp = runs_api.create_run(func.HttpRequest("POST", "http://127.0.0.1/api/runs", body=json.dumps(body).encode()))
    assert resp.status_code == 202, resp.get_body()
    return json.loads(resp.get_body())["id"]


def view(run_id: str) -> dict[str, Any]:
    return json.loads(runs_api.get_run(func.HttpRequest("GET", "http://127.0.0.1/x", body=b"",
                                                        route_params={"runId": run_id})).get_body())


def test_cloudevents_are_signed_and_retried_after_a_failing_receiver(services: Components, simulator: Simulator,
                                                                     receiver: Receiver) -> None:
    svc = configure(receiver)
    receiver.fail_first = 1  # the first delivery fails; its retry must arrive
    run_id = start(simulator.vm_ids()[:3])
    pump = QueuePump(svc)
    def retried_and_done() -> bool:
        events = receiver.events()
        return (view(run_id)["status"] == "Succeeded" and len(events) > 1 and any(
            e["type"] == "patchpilot.run.completed" for e in events)
            and [e["id"] for e in events].count(events[0]["id"]) == 2)  # the failed first one came again

    pump.run_until(retried_and_done, timeout=60)
    assert all(signed(r) for r in receiver.requests)
    tampered = {**receiver.requests[0], "body": receiver.requests[0]["body"] + b" "}
    assert not signed(tampered)
    assert all(r["headers"]["Content-Type"] == "application/cloudevents+json" for r in receiver.requests)
    events = receiver.events()
    types = [e["type"] for e in events]
    assert types.count("patchpilot.machine.completed") >= 3 and "patchpilot.run.started" in types
    first = events[0]
    assert first["specversion"] == "1.0" and first["source"] == "/patchpilot" and first["subject"] == f"/runs/{run_id}"
    assert [e["id"] for e in events].count(first["id"]) == 2  # failed once, delivered on the retry
    completed = next(e for e in events if e["type"] == "patchpilot.run.completed")
    assert completed["data"]["status"] == "Succeeded" and completed["data"]["machineCount"] == 3


def test_a_receiver_that_never_answers_well_gets_a_dead_letter(services: Components, simulator: Simulator,
                                                               receiver: Receiver) -> None:
    svc = configure(receiver, EVENT_MAX_ATTEMPTS="2", EVENT_SCHEMA="EventGrid")
    receiver.status = 503
    run_id = start(simulator.vm_ids()[:1])
    QueuePump(svc).run_until(lambda: len(list(svc.store.runs.query_entities("PartitionKey eq 'deadletter'"))) >= 3,
                             timeout=60)
    letters = list(svc.store.runs.query_entities("PartitionKey eq 'deadletter'"))
    assert all(letter["attempts"] == 2 and letter["lastStatus"] == 503 for letter in letters)
    body = json.loads(receiver.requests[0]["body"])
    assert isinstance(body, list) and body[0]["eventType"].startswith("patchpilot.")  # Event Grid's schema
    assert body[0]["subject"] == f"/runs/{run_id}" and body[0]["dataVersion"] == "1.0"


def test_a_pre_run_hook_veto_cancels_the_run_and_its_body_is_never_shown(services: Components, simulator: Simulator,
                                                                        receiver: Receiver) -> None:
    """Only the hook's status (and latency) is kept: a hook aimed at an internal page must not read it back."""
    svc = configure(receiver)
    receiver.status, receiver.answer = 409, b"change freeze; internal secret: hunter2"
    run_id = start(simulator.vm_ids()[:4], {"preHook": {"url": f"{receiver.url}/pre", "timeoutSeconds": 5},
                                            "postHook": {"url": f"{receiver.url}/post"}})
    pump = QueuePump(svc)
    pump.run_until(lambda: view(run_id)["status"] == "Canceled"
                   and any(e["type"] == "patchpilot.run.canceled" for e in receiver.events()), timeout=30)
    run = view(run_id)
    assert run["rollout"]["preHook"]["status"] == 409 and run["rollout"]["preHook"]["latencyMs"] >= 0
    assert run["rollout"]["canceledReason"] == "the pre-run hook answered HTTP 409"
    assert "hunter2" not in json.dumps(run) and "hunter2" not in json.dumps(svc.store.get_run(run_id), default=str)
    assert not any(b"hunter2" in r["body"] for r in receiver.requests)  # nor in events or the post-run hook
    assert sum(c["installPatches"] for c in simulator.calls()["byVm"].values()) == 0
    pre = [r for r in receiver.requests if r["path"] == "/pre"]
    assert len(pre) == 1 and signed(pre[0]) and json.loads(pre[0]["body"])["runId"] == run_id


def test_a_pre_run_hook_whose_name_resolves_inwards_is_refused_when_called(services: Components, simulator: Simulator,
                                                                          receiver: Receiver) -> None:
    """The request passes validation (a name, checked on its face); the call connects nowhere."""
    from shared.egress import EgressSession

    svc = configure(receiver)
    lookups: list[str] = []

    def resolver(host: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
        if host != "metadata.example.com":
            return socket.getaddrinfo(host, port, *args)  # the receiver of events, on loopback
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]

    svc.hooks_session = EgressSession(allow_loopback=True, resolver=resolver)
    run_id = start(simulator.vm_ids()[:2], {"preHook": {"url": "https://metadata.example.com/pre"}})
    assert lookups == []  # validation did not look the name up
    QueuePump(svc).run_until(lambda: view(run_id)["status"] == "Canceled", timeout=30)
    run = view(run_id)
    assert lookups == ["metadata.example.com"] and run["rollout"]["preHook"]["status"] == 0
    assert run["rollout"]["canceledReason"] == (
        "the pre-run hook was not reached: refused: the host's address is not a public one")
    assert sum(c["installPatches"] for c in simulator.calls()["byVm"].values()) == 0


def test_a_passing_pre_hook_lets_the_run_start_and_the_post_hook_hears_the_outcome(
        services: Components, simulator: Simulator, receiver: Receiver) -> None:
    svc = configure(receiver)
    run_id = start(simulator.vm_ids()[:2], {"preHook": {"url": f"{receiver.url}/pre"},
                                            "postHook": {"url": f"{receiver.url}/post"}})
    QueuePump(svc).run_until(lambda: any(r["path"] == "/post" for r in receiver.requests), timeout=60)
    post = next(r for r in receiver.requests if r["path"] == "/post")
    assert signed(post) and json.loads(post["body"]) | {"outcomes": None} == {
        "runId": run_id, "status": "Succeeded", "machineCount": 2, "outcomes": None}
    pre_at = next(i for i, r in enumerate(receiver.requests) if r["path"] == "/pre")
    assert all(r["path"] != "/post" for r in receiver.requests[:pre_at])
    assert sum(c["installPatchesAccepted"] for c in simulator.calls()["byVm"].values()) == 2


def test_a_lost_pre_hook_request_is_sent_again_and_a_poisoned_one_cancels_the_run(
        services: Components, simulator: Simulator, receiver: Receiver) -> None:
    from shared.core.clock import iso, utcnow
    from shared.rollouts.controller import advance
    from tests.app import event_workers

    svc = configure(receiver)
    run_id = start(simulator.vm_ids()[:2], {"preHook": {"url": f"{receiver.url}/pre", "timeoutSeconds": 5}})
    pump = QueuePump(svc)
    pump.run_until(lambda: bool((svc.store.get_run(run_id) or {}).get("preHookRequestedAt")), timeout=30)
    svc.account.queue(svc.settings.queues.events).clear_messages()  # the request was lost
    svc.store.update_run(run_id, {"preHookRequestedAt": iso(utcnow() - timedelta(minutes=10))})
    advance(run_id, svc)  # as the sweeper does
    pump.run_until(lambda: view(run_id)["status"] == "Succeeded", timeout=60)
    assert len([r for r in receiver.requests if r["path"] == "/pre"]) == 1

    second = start(simulator.vm_ids()[2:4], {"preHook": {"url": f"{receiver.url}/pre"}})
    for _ in range(100):  # only the dispatch queue: the hook's own message stays undelivered
        pump.pump_once(only="dispatch")
        if (svc.store.get_run(second) or {}).get("preHookRequestedAt"):
            break
        time.sleep(0.1)
    message = json.dumps({"kind": "prehook", "runId": second}).encode()
    svc.account.queue(svc.settings.queues.events).clear_messages()
    event_workers.event_delivery_poison(func.QueueMessage(id="m", body=message))  # it failed maxDequeueCount times
    pump.run_until(lambda: view(second)["status"] == "Canceled", timeout=30)
    assert "poison" in view(second)["rollout"]["canceledReason"]
    assert sum(simulator.calls()["byVm"][v.lower()]["installPatches"] for v in simulator.vm_ids()[2:4]) == 0
