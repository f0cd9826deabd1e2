"""Fixtures for the simulator's own tests: a started simulator per test, torn down afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tools.azure_simulator import Simulator, SimulatorConfig

TOKEN = "simulator-test-token"
API = "api-version=2025-04-01"


@pytest.fixture
def make_sim() -> Iterator[Callable[..., Simulator]]:
    started: list[Simulator] = []

    def make(**overrides: Any) -> Simulator:
        settings: dict[str, Any] = {
            "vms": 8,
            "seed": 7,
            "time_scale": 36000.0,
            "retry_after_seconds": 0,
            "required_token": TOKEN,
        }
        settings.update(overrides)
        sim = Simulator(SimulatorConfig(**settings)).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim: Callable[..., Simulator]) -> Simulator:
    return make_sim()


@pytest.fixture
def arm() -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    return session
