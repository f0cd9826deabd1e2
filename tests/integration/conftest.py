"""Integration fixtures: real Azurite, the ARM simulator over HTTP, the app's settings, the local Functions host
as its own process, and a webhook receiver.

Each test gets its own queue and table names, so tests share one Azurite without seeing each
other's data.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.composition import Components
from tests.app import get_services, reset_services
from tests.integration.local_host_process import HostProcess
from tests.support.events import Receiver
from tests.support.fleet import DEV_TOKEN, sim_config
from tools.azure_simulator import Simulator, SimulatorConfig
from tools.azurite import Azurite

# Fast retry settings: the semantics are the same as production, only the waits are short.
FAST = {
    "POLL_MIN_SECONDS": "0",
    "RETRY_BASE_SECONDS": "1",
    "RETRY_MAX_SECONDS": "2",
    "CONFLICT_RETRY_SECONDS": "1",
    "DEFAULT_RETRY_AFTER_SECONDS": "1",
    "POLL_ROUND_SECONDS": "1",
    "MAX_TRANSIENT_RETRIES": "30",
    "MAX_CONFLICT_RETRIES": "30",
    "RUN_RETRY_AFTER_SECONDS": "1",
}


def unique_settings(azurite: Azurite, arm_url: str) -> dict[str, str]:
    tag = secrets.token_hex(4)
    return {
        "AzureWebJobsStorage": azurite.connection_string,
        "ARM_ENDPOINT": arm_url,
        "ARM_DEV_TOKEN": DEV_TOKEN,
        "DISPATCH_QUEUE": f"dispatch-{tag}",
        "OPERATIONS_QUEUE": f"operations-{tag}",
        "POLLS_QUEUE": f"polls-{tag}",
        "RUNS_TABLE": f"runs{tag}",
        "TARGETS_TABLE": f"targets{tag}",
        "PATCHES_TABLE": f"patches{tag}",
        "SWEEP_SCHEDULE": "0 */5 * * * *",
        "DISCOVERY_QUEUE": f"discovery-{tag}",
        "MACHINES_TABLE": f"machines{tag}",
        "ASSESSMENTS_TABLE": f"assessments{tag}",
        "ASSESSMENT_SCHEDULE": "0 0 3 1 1 *",  # never during a test; tests call the timer themselves
        "MAINTENANCE_TABLE": f"maintenance{tag}",
        "MAINTENANCE_SCHEDULE": "0 0 3 1 1 *",
        "EVENTS_QUEUE": f"events-{tag}",
        **FAST,
    }


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    """Override in a test module to shape the fleet."""
    return sim_config(vms=12, seed=3)


@pytest.fixture
def simulator(simulator_config: SimulatorConfig) -> Iterator[Simulator]:
    sim = Simulator(simulator_config).start()
    yield sim
    sim.stop()


@pytest.fixture
def app_settings(azurite: Azurite, simulator: Simulator) -> dict[str, str]:
    return unique_settings(azurite, simulator.url)


@pytest.fixture
def services(app_settings: dict[str, str]) -> Iterator[Components]:
    """The app's own Components, configured for this test (in-process use of shared/)."""
    os.environ.update({**app_settings, "WEBSITE_HOSTNAME": "127.0.0.1:7071"})  # as Core Tools sets it
    reset_services()
    yield get_services()
    reset_services()


@pytest.fixture
def host_settings(app_settings: dict[str, str]) -> dict[str, str]:
    """The local host's settings; override in a test module to add some (keys, webhooks, scopes)."""
    return app_settings


@pytest.fixture
def host(host_settings: dict[str, str], tmp_path: Path) -> Iterator[HostProcess]:
    """The local Functions host running function_app.py in its own process, as `make run` starts it."""
    proc = HostProcess(host_settings, tmp_path / "host.log").wait_ready()
    yield proc
    proc.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on loopback (tests.support.events.webhook_settings points the app at it)."""
    r = Receiver()
    yield r
    r.server.shutdown()
