"""A local stand-in for Azure Resource Manager's Compute API (VMs, installPatches, assessPatches), with RBAC,
Azure Arc-enabled servers (Microsoft.HybridCompute/machines) and ARM/Compute throttling budgets.

Usage::

    from tools.azure_simulator import Simulator, SimulatorConfig
    sim = Simulator(SimulatorConfig(vms=50, seed=1, time_scale=600.0)).start()
    sim.url, sim.vm_ids(), sim.calls(), sim.state(), sim.set_faults(error_rate=0.1)
    sim.set_role_assignments([{"scope": "/subscriptions/<id>", "actions": ["*"]}])
    Simulator(SimulatorConfig.compressed(60, vms=10_000, arc_machines=20)).start()  # one clock, 60x Azure
    sim.stop()
"""

from __future__ import annotations

from tools.azure_simulator.config import FaultSettings, SimulatorConfig
from tools.azure_simulator.simulator import Simulator

__all__ = ["FaultSettings", "Simulator", "SimulatorConfig"]
