"""PatchPilot: the Azure Functions composition root. Nothing but registration lives here."""

import azure.functions as func

from shared.functions import (
    assessment_workers,
    assessments_api,
    event_workers,
    maintenance_api,
    maintenance_timers,
    run_workers,
    runs_api,
)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(runs_api.bp)
app.register_functions(run_workers.bp)
app.register_functions(maintenance_timers.bp)
app.register_functions(assessments_api.bp)
app.register_functions(assessment_workers.bp)
app.register_functions(maintenance_api.bp)
app.register_functions(event_workers.bp)
