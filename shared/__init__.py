"""PatchPilot's own library: everything the Functions in function_app.py call into.

Layout (one concern per module):
    functions/      thin Azure Functions triggers (HTTP, queue, timer), registered as blueprints
    runs/           patch runs: accepting a request, dispatching machines, the per-machine worker
    arm/            talking to Azure Resource Manager: client, credentials, long-running operations
    storage/        Azure Table storage and Queue storage access
    validation/     request parsing and Azure parameter validation (pure, no I/O)
    settings.py     app settings, read once per process
    errors.py       the error types and ARM's error shape
"""
