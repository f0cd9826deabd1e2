"""The composition root registers every trigger with its binding read from app settings."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def triggers() -> dict[str, dict[str, Any]]:
    # A private copy: FunctionApp.get_functions() may be called only once per app object.
    spec = importlib.util.spec_from_file_location("_function_app_for_registration", ROOT / "function_app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {f.get_function_name(): f.get_trigger().get_dict_repr() for f in module.app.get_functions()}


def test_assessment_triggers_read_their_settings() -> None:
    found = triggers()
    timer = found["periodic_assessment"]
    assert timer["type"] == "timerTrigger" and timer["schedule"] == "%ASSESSMENT_SCHEDULE%"
    assert not timer.get("runOnStartup")
    assert found["discovery_worker"]["queueName"] == "%DISCOVERY_QUEUE%"
    assert found["discovery_poison"]["queueName"] == "%DISCOVERY_QUEUE%-poison"
    for name in ("discovery_worker", "discovery_poison", "operation_worker", "dispatch_worker"):
        assert found[name]["connection"] == "AzureWebJobsStorage"
    routes = {found[n]["route"]: [str(getattr(m, "value", m)) for m in found[n]["methods"]]
              for n in found if found[n]["type"] == "httpTrigger"}
    assert routes["assessments"] == ["POST"] and routes["assessments/{runId}"] == ["GET"]
    assert routes["compliance"] == ["GET"]
    assert any(r.startswith("machines/subscriptions/") and r.endswith("/assessment") for r in routes)


def test_maintenance_triggers_read_their_settings() -> None:
    found = triggers()
    timer = found["maintenance_windows"]
    assert timer["type"] == "timerTrigger" and timer["schedule"] == "%MAINTENANCE_SCHEDULE%"
    assert not timer.get("runOnStartup")
    routes = {found[n]["route"]: sorted(str(getattr(m, "value", m)) for m in found[n]["methods"])
              for n in found if found[n]["type"] == "httpTrigger"}
    base = "maintenance-configurations"
    assert routes[base] == ["GET"] and routes[f"{base}/{{name}}/occurrences"] == ["GET"]
    assert routes[f"{base}/{{name}}/assignments"] == ["GET"]
    names = {n for n in found if found[n]["type"] == "httpTrigger" and found[n]["route"] in (
        f"{base}/{{name}}", f"{base}/{{name}}/assignments/{{assignmentName}}")}
    assert len(names) == 6  # PUT, GET and DELETE of each


def test_rollout_and_event_triggers() -> None:
    found = triggers()
    assert found["event_delivery"]["queueName"] == "%EVENTS_QUEUE%"
    assert found["event_delivery_poison"]["queueName"] == "%EVENTS_QUEUE%-poison"
    routes = {found[n]["route"] for n in found if found[n]["type"] == "httpTrigger"}
    assert {"runs/{runId}/cancel", "runs/{runId}/resume"} <= routes


def test_each_app_uses_the_services_it_was_built_with(monkeypatch: Any) -> None:
    """Wiring is explicit: two apps built against two ProcessComponents never share (or steal) components, so a
    second copy of the composition root (as these tests load) cannot redirect the first one's triggers."""
    import dataclasses
    import json

    import azure.functions as func

    from shared.composition import ProcessComponents
    from shared.core.settings import Settings
    from tests.app import function_app

    monkeypatch.setenv("WEBSITE_HOSTNAME", "127.0.0.1:7071")

    def app_with_body_limit(limit: int) -> Any:
        def settings() -> Settings:
            read = Settings.from_env()
            return dataclasses.replace(read, limits=dataclasses.replace(read.limits, max_request_bytes=limit))
        services = ProcessComponents(settings)
        functions = {f.get_function_name(): f.get_user_function()
                     for f in function_app.build_app(services).get_functions()}
        return functions["create_run"]

    def error_code(create_run: Any) -> str:
        body = b'{"machines": [' + b'"x",' * 400 + b'"x"]}'  # 1.6 KB: over one limit, under the other
        answer = create_run(func.HttpRequest("POST", "http://127.0.0.1/api/runs", body=body, headers={}))
        return str(json.loads(answer.get_body())["error"]["code"])

    assert error_code(app_with_body_limit(1024)) == "RequestBodyTooLarge"
    assert error_code(app_with_body_limit(1024 * 1024)) != "RequestBodyTooLarge"  # read, refused for content


def test_event_delivery_has_a_thread_for_every_invocation_and_ends_inside_function_timeout() -> None:
    """Slow receivers must not starve deliveries into functionTimeout (shared/functions/event_workers.py)."""
    import inspect
    import json
    from pathlib import Path

    import shared.functions.event_workers as delivery_module
    from shared.core.settings import MAX_EVENT_CONNECT_SECONDS, MAX_EVENT_READ_SECONDS
    from tests.app import triggers

    host = json.loads((Path(__file__).parents[2] / "host.json").read_text())
    queues = host["extensions"]["queues"]
    user_function = triggers.event_delivery
    assert inspect.iscoroutinefunction(user_function)  # holds none of the worker's threads
    assert queues["batchSize"] + queues["newBatchThreshold"] <= delivery_module.DELIVERY_THREADS
    hours, minutes, seconds = (int(p) for p in host["functionTimeout"].split(":"))
    slack = 30  # the delivery's own storage calls
    assert MAX_EVENT_CONNECT_SECONDS + MAX_EVENT_READ_SECONDS + slack < hours * 3600 + minutes * 60 + seconds


def test_the_dashboard_has_one_address_other_spellings_redirect_to_it() -> None:
    import azure.functions as func

    from tests.app import triggers as dashboard
    def get(url: str, asset: str | None = None) -> func.HttpResponse:
        req = func.HttpRequest("GET", url, body=b"", route_params={"asset": asset} if asset else {})
        fn = dashboard.get_dashboard_asset if asset else dashboard.get_dashboard
        return fn(req)  # type: ignore[no-any-return]
    page = get("http://host/api/dashboard?code=k")
    assert page.status_code == 200 and b"dashboard/app.js" in page.get_body()
    for url, asset in (("http://host/api/dashboard/?code=k", None), ("http://host/api/dashboard/index.html?code=k",
                                                                     "index.html")):
        moved = get(url, asset)  # relative asset paths would resolve one level too deep there
        assert moved.status_code == 301 and moved.headers["Location"] == "../dashboard?code=k"
    assert get("http://host/api/dashboard/app.js", "app.js").status_code == 200
