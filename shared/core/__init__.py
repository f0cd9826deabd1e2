"""The bottom layer: what every other package uses and nothing of PatchPilot's own below it.

    clock     UTC now, fixed-width ISO timestamps, the schedule clock (compressed against the simulator)
    ids       MachineRef (MachineRef: an Azure VM or an Arc-enabled server) and ScopeRef: Azure resource ids as values
    states    machine and run states, and how a run's status follows from its machines
    records   typed records (NewRun, RunSpec, RunRecord, MachineRecord, ScopeListing)
    messages  every queue message contract: dataclass, encode, parse
    errors    the exception hierarchy (one base: PatchPilotError)
    settings  app settings, read from the environment (Azure's app settings, or local.settings.json)
    retry     exponential backoff with jitter
"""
