"""A local stand-in for Azure Resource Manager's Compute API (VMs, installPatches, assessPatches).

Usage::

    from tools.azure_simulator import Simulator, SimulatorConfig
    sim = Simulator(SimulatorConfig(vms=50, seed=1, time_scale=600.0)).start()
    sim.url, sim.vm_ids(), sim.calls(), sim.state(), sim.set_faults(error_rate=0.1)
    sim.stop()
"""

from __future__ import annotations

from tools.azure_simulator.config import FaultSettings, SimulatorConfig
from tools.azure_simulator.simulator import Simulator

__all__ = ["FaultSettings", "Simulator", "SimulatorConfig"]
