"""Simulator configurations: the fleet a test runs against, in the shape every integration test uses."""

from __future__ import annotations

from typing import Any

from tools.azure_simulator import SimulatorConfig

DEV_TOKEN = "integration-test-token"  # the bearer token the app sends (ARM_DEV_TOKEN) and the simulator demands


def sim_config(*, vms: int, seed: int, subscriptions: int = 1, time_scale: float = 3600.0,
               **shape: Any) -> SimulatorConfig:
    """A simulated fleet that demands the app's token and answers Retry-After: 1; `shape` is any other
    SimulatorConfig field (page_size, stopped_ratio, arc_machines, budgets...)."""
    return SimulatorConfig(vms=vms, subscriptions=subscriptions, seed=seed, time_scale=time_scale,
                           required_token=DEV_TOKEN, retry_after_seconds=1, **shape)
