"""PatchPilot: the Azure Functions composition root. Nothing but wiring and registration lives here.

`services` is the app's one set of clients and stores, built on first use from the app settings, with
every feature's hooks registered (shared/composition.py); each blueprint is built against it."""

import azure.functions as func

from shared.composition import AppServices
from shared.core.telemetry import configure_telemetry
from shared.functions import (
    assessment_workers,
    assessments_api,
    dashboard,
    event_workers,
    maintenance_api,
    maintenance_timers,
    openapi,
    run_workers,
    runs_api,
)


def build_app(services: AppServices) -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    for module in (runs_api, run_workers, maintenance_timers, assessments_api, assessment_workers, maintenance_api,
                   event_workers, openapi, dashboard):
        app.register_functions(module.blueprint(services))
    return app


configure_telemetry()  # Azure Monitor when APPLICATIONINSIGHTS_CONNECTION_STRING is set; otherwise off
services = AppServices()
app = build_app(services)
