"""The two contract variations the app must cope with: a synchronous 200, and a foreign Location."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.support.bodies import install
from tools.azure_simulator import Simulator, SimulatorConfig

TOKEN = {"Authorization": "Bearer t"}
BODY = install(reboot="Never")


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig(vms=2, seed=1)) as running:
        yield running


def install_on_first_vm(sim: Simulator, **faults: float) -> requests.Response:
    sim.set_faults(**faults)
    vm = sim.vm_ids()[0]
    return requests.post(f"{sim.url}{vm}/installPatches?api-version=2025-04-01", json=BODY, headers=TOKEN, timeout=5)


def test_sync_rate_answers_200_with_the_final_result(sim: Simulator) -> None:
    resp = install_on_first_vm(sim, sync_rate=1.0)
    assert resp.status_code == 200 and "Location" not in resp.headers
    assert resp.json()["status"] in ("Succeeded", "Failed")
    assert resp.json()["installedPatchCount"] + resp.json()["failedPatchCount"] >= 0
    assert sim.state()["vms"][0]["operations"] or sim.state()["vms"][1]["operations"]


def test_foreign_location_points_outside_the_simulator(sim: Simulator) -> None:
    resp = install_on_first_vm(sim, foreign_location_rate=1.0)
    assert resp.status_code == 202
    assert resp.headers["Location"].startswith("http://127.0.0.2:9/subscriptions/")
    assert resp.headers["Azure-AsyncOperation"].startswith("http://127.0.0.2:9/subscriptions/")
