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


# Tests hold functions here (in-process hosts reach it as host.app_module.GATE) to fill the worker's pool.
GATE = threading.Event()


def record(kind: str, **data: object) -> None:
    folder = os.environ.get("SAMPLE_RECORD_DIR")
    if not folder:
        return
    data.update(kind=kind, pid=os.getpid(), thread=threading.get_ident(), at=time.time())
    tmp = os.path.join(folder, f".{uuid.uuid4().hex}")
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, os.path.join(folder, f"{kind}-{uuid.uuid4().hex}.json"))


def hold(kind: str, tag: object) -> None:
    """Wait for GATE, recording the start, and what stopped the wait if something else did."""
    record(f"{kind}_start", tag=tag)
    try:
        GATE.wait(30)
    except BaseException as exc:  # the local host's worker restart raises WorkerProcessExit here
        record(f"{kind}_stopped", tag=tag, error=type(exc).__name__)
        raise
    record(f"{kind}_end", tag=tag)


@app.route(route="hold/{tag}", methods=["GET"])
def hold_http(req: func.HttpRequest) -> func.HttpResponse:
    if req.params.get("sleep"):
        time.sleep(float(req.params["sleep"]))
        record("hold_end", tag=req.route_params["tag"])
    else:
        hold("hold", req.route_params["tag"])
    return func.HttpResponse(str(threading.get_ident()))


# Route order: the host tries routes by function name, so echo_any ("echo/{word}") comes before
# echo_hello ("echo/hello") although echo_hello is registered first and is the more specific route.
@app.route(route="echo/hello", methods=["GET"])
def echo_hello(req: func.HttpRequest) -> str:
    return "hello route"


@app.route(route="echo/{word}", methods=["GET"])
def echo_any(req: func.HttpRequest) -> str:
    return f"any:{req.route_params['word']}"


@app.route(route="open", auth_level=func.AuthLevel.ANONYMOUS)
def open_route(req: func.HttpRequest) -> str:
    return "open"


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
    if task.get("hold"):
        hold("work", task.get("tag"))
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
