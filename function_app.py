"""PatchPilot: the Azure Functions composition root. Nothing but wiring and registration lives here.

`components` is the app's one object graph (clients, stores, queues, every feature's hooks), built on first use
from the app settings (shared/composition.py); each blueprint is built against it."""

from collections.abc import Callable

import azure.functions as func

from shared.composition import Components, ProcessComponents
from shared.core.telemetry import configure_telemetry
from shared.functions import (
    assessment_workers,
    assessments_api,
    dashboard,
    event_workers,
    maintenance_api,
    maintenance_timers,
    openapi,
    plans_api,
    run_workers,
    runs_api,
)


def build_app(components: Callable[[], Components]) -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    for module in (runs_api, run_workers, maintenance_timers, assessments_api, assessment_workers, maintenance_api,
                   event_workers, openapi, dashboard, plans_api):
        app.register_functions(module.blueprint(components))
    return app


configure_telemetry()  # Azure Monitor when APPLICATIONINSIGHTS_CONNECTION_STRING is set; otherwise off
components = ProcessComponents()
app = build_app(components)
