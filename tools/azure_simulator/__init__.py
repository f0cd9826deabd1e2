"""A local stand-in for Azure Resource Manager's Compute API (VMs, installPatches, assessPatches), with RBAC,
Azure Arc-enabled servers (Microsoft.HybridCompute/machines), ARM/Compute throttling budgets, and machine
health after patching (Resource Health, Azure Monitor alerts, vmHealth, a workload probe: health.py).

Usage::

    from tools.azure_simulator import Simulator, SimulatorConfig
    sim = Simulator(SimulatorConfig(vms=50, seed=1, time_scale=600.0)).start()
    sim.url, sim.vm_ids(), sim.calls(), sim.state(), sim.set_faults(error_rate=0.1)
    sim.set_role_assignments([{"scope": "/subscriptions/<id>", "actions": ["*"]}])
    sim.set_health(vm_id, vm_health="healthy", after_patch={"availabilityState": "Unavailable",
                                                            "recoverAfterSeconds": 30})
    sim.fire_alert(vm_id, "Sev1", "High CPU"), sim.health(vm_id), sim.alerts()
    Simulator(SimulatorConfig.compressed(60, vms=10_000, arc_machines=20)).start()  # one clock, 60x Azure
    sim.stop()
"""

from __future__ import annotations

from tools.azure_simulator.config import FaultSettings, SimulatorConfig
from tools.azure_simulator.simulator import Simulator

__all__ = ["FaultSettings", "Simulator", "SimulatorConfig"]
