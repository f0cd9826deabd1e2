"""Reliability fixtures: the app configured in-process against Azurite (fresh tables and queues per test)
and the ARM simulator, with one maintenance configuration and one run already stored, so reads and
assignments reach their found-paths too."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.app import reset_services
from tests.integration.conftest import DEV_TOKEN, unique_settings
from tests.reliability.harness import Request, StorageProbe, call
from tools.azure_simulator import Simulator, SimulatorConfig
from tools.azurite import Azurite

CONFIG_NAME = "fuzz-config"
SEEDED_VM = ("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg"
             "/providers/Microsoft.Compute/virtualMachines/vm1")
SEEDED_CONFIG = {"location": "westeurope", "properties": {
    "maintenanceScope": "InGuestPatch",
    "maintenanceWindow": {"startDateTime": "2026-01-01 22:00", "duration": "03:00", "timeZone": "UTC",
                          "recurEvery": "Day"},
    "installPatches": {"linuxParameters": {"classificationsToInclude": ["Critical"]}}}}
SEEDED_RUN = {"machines": [SEEDED_VM], "installPatches": {
    "maximumDuration": "PT2H", "rebootSetting": "IfRequired",
    "linuxParameters": {"classificationsToInclude": ["Security"]}},
    "rollout": {"waves": [{"size": 1}]}}


@dataclass
class FuzzApp:
    settings: dict[str, str]
    probe: StorageProbe
    known: dict[str, list[str]]


def seed_app() -> dict[str, list[str]]:
    """Store a configuration, an assignment and a run through the API; return route values that exist."""
    put = call(Request("put_configuration", {"name": CONFIG_NAME}, body=json.dumps(SEEDED_CONFIG).encode()))
    assert put.status == 201, put.body
    assigned = call(Request("put_assignment", {"name": CONFIG_NAME, "assignmentName": "a1"},
                            body=json.dumps({"properties": {"resourceId": SEEDED_VM}}).encode()))
    assert assigned.status == 201, assigned.body
    run = call(Request("create_run", body=json.dumps(SEEDED_RUN).encode()))
    assert run.status == 202, run.body
    return {"runId": [run.body["id"]], "name": [CONFIG_NAME], "assignmentName": ["a1"],
            "subscriptionId": ["00000000-0000-0000-0000-000000000001"], "resourceGroupName": ["rg"],
            "vmName": ["vm1"]}


@pytest.fixture
def fuzz_app(azurite: Azurite) -> Iterator[FuzzApp]:
    sim = Simulator(SimulatorConfig(vms=2, seed=5, required_token=DEV_TOKEN)).start()
    settings = unique_settings(azurite, sim.url)
    os.environ.update({**settings, "WEBSITE_HOSTNAME": "127.0.0.1:7071"})  # as Core Tools sets it
    reset_services()
    try:
        yield FuzzApp(settings, StorageProbe(settings), seed_app())
    finally:
        reset_services()
        sim.stop()
