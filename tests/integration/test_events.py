"""Events and hooks against a real local receiver: CloudEvents (and Event Grid's schema) delivered
through the queue with a valid HMAC signature, a retry after the receiver fails, a dead letter when
it never answers well, a pre-run hook that vetoes a run, and a post-run hook told the outcome."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import azure.functions as func
import pytest

from shared.functions import runs_api
from shared.runs.services import Services, get_services, reset_services
from tests.integration.queue_pump import QueuePump
from tools.azure_simulator import Simulator

KEY = "test-signing-key"
INSTALL = {"maximumDuration": "PT2H", "rebootSetting": "IfRequired",
           "windowsParameters": {"classificationsToInclude": ["Critical", "Security"]},
           "linuxParameters": {"classificationsToInclude": ["Critical", "Security"]}}


class Receiver:
    """A webhook receiver on loopback: records every request; answers `status` after `fail_first` 500s."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_first = 0
        self.status = 200
        self.answer = b"ok"
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                failing = len(receiver.requests) <= receiver.fail_first
                self.send_response(500 if failing else receiver.status)
                self.send_header("Content-Length", str(len(receiver.answer)))
                self.end_headers()
                self.wfile.write(receiver.answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.requests if r["path"] == "/events"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def configure(receiver: Receiver, **extra: str) -> Services:
    os.environ.update({"EVENT_WEBHOOKS": f"{receiver.url}/events", "EVENT_SIGNING_KEY": KEY, **extra})
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


def signed(request: dict[str, Any]) -> bool:
    expected = "sha256=" + hmac.new(KEY.encode(), request["body"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(request["headers"].get("X-PatchPilot-Signature", ""), expected)


def test_cloudevents_are_signed_and_retried_after_a_failing_receiver(services: Services, simulator: Simulator,
                                                                     receiver: Receiver) -> None:
    svc = configure(receiver)
    receiver.fail_first = 1  # the first delivery fails; its retry must arrive
    run_id = start(simulator.vm_ids()[:3])
    pump = QueuePump(svc)
    pump.run_until(lambda: view(run_id)["status"] == "Succeeded"
                   and any(e["type"] == "patchpilot.run.completed" for e in receiver.events()), timeout=60)
    assert all(signed(r) for r in receiver.requests)
    assert all(r["headers"]["Content-Type"] == "application/cloudevents+json" for r in receiver.requests)
    events = receiver.events()
    types = [e["type"] for e in events]
    assert types.count("patchpilot.machine.completed") >= 3 and "patchpilot.run.started" in types
    first = events[0]
    assert first["specversion"] == "1.0" and first["source"] == "/patchpilot" and first["subject"] == f"/runs/{run_id}"
    assert [e["id"] for e in events].count(first["id"]) == 2  # failed once, delivered on the retry
    completed = next(e for e in events if e["type"] == "patchpilot.run.completed")
    assert completed["data"]["status"] == "Succeeded" and completed["data"]["machineCount"] == 3


def test_a_receiver_that_never_answers_well_gets_a_dead_letter(services: Services, simulator: Simulator,
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


def test_a_pre_run_hook_veto_cancels_the_run_before_anything_starts(services: Services, simulator: Simulator,
                                                                   receiver: Receiver) -> None:
    svc = configure(receiver)
    receiver.status, receiver.answer = 409, b"change freeze until Monday"
    run_id = start(simulator.vm_ids()[:4], {"preHook": {"url": f"{receiver.url}/pre", "timeoutSeconds": 5},
                                            "postHook": {"url": f"{receiver.url}/post"}})
    QueuePump(svc).run_until(lambda: view(run_id)["status"] == "Canceled", timeout=30)
    run = view(run_id)
    assert run["rollout"]["preHook"]["status"] == 409
    assert "change freeze until Monday" in run["rollout"]["canceledReason"]
    assert sum(c["installPatches"] for c in simulator.calls()["byVm"].values()) == 0
    pre = [r for r in receiver.requests if r["path"] == "/pre"]
    assert len(pre) == 1 and signed(pre[0]) and json.loads(pre[0]["body"])["runId"] == run_id


def test_a_passing_pre_hook_lets_the_run_start_and_the_post_hook_hears_the_outcome(
        services: Services, simulator: Simulator, receiver: Receiver) -> None:
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
