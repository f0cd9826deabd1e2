"""A tiny v2-model app for the local host's tests: every trigger records what it saw as a JSON file."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
bp = func.Blueprint()


def record(kind: str, **data: object) -> None:
    folder = os.environ.get("SAMPLE_RECORD_DIR")
    if not folder:
        return
    data.update(kind=kind, pid=os.getpid(), thread=threading.get_ident(), at=time.time())
    tmp = os.path.join(folder, f".{uuid.uuid4().hex}")
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, os.path.join(folder, f"{kind}-{uuid.uuid4().hex}.json"))


@app.route(route="items/{id:int}", methods=["GET", "POST"])
def items(req: func.HttpRequest) -> func.HttpResponse:
    payload = {
        "id": req.route_params["id"],
        "method": req.method,
        "query": dict(req.params),
        "body": req.get_body().decode(),
        "url": req.url,
        "header": req.headers.get("x-test"),
    }
    return func.HttpResponse(
        json.dumps(payload),
        status_code=201 if req.method == "POST" else 200,
        mimetype="application/json",
        headers={"X-Item": req.route_params["id"]},
    )


@app.route(route="items/special", methods=["GET"])
def special(req: func.HttpRequest) -> str:
    return "literal route wins"


@app.route(route="files/{*path}")
def files(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.route_params.get("path", ""))


@app.route()
def greeting(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(os.environ.get("GREETING", "unset"))


@app.route(route="boom")
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("the function failed")


@app.route(route="async/{name}")
async def async_hello(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return func.HttpResponse(f"hello {req.route_params['name']} from {context.function_name}")


@bp.queue_trigger(arg_name="msg", queue_name="%WORK_QUEUE%", connection="AzureWebJobsStorage")
def work(msg: func.QueueMessage, context: func.Context) -> None:
    body = msg.get_body().decode()
    task = json.loads(body)
    started = time.time()
    if task.get("sleep"):
        time.sleep(task["sleep"])
    record(
        "work",
        body=body,
        tag=task.get("tag"),
        dequeue_count=msg.dequeue_count,
        id=msg.id,
        invocation_id=context.invocation_id,
        started=started,
        ended=time.time(),
    )
    if task.get("fail"):
        raise ValueError(f"asked to fail: {task.get('tag')}")


@bp.timer_trigger(arg_name="timer", schedule="%TICK_SCHEDULE%", run_on_startup=False)
def tick(timer: func.TimerRequest) -> None:
    record("tick", past_due=timer.past_due, status=timer.schedule_status)


app.register_functions(bp)
