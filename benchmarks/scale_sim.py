"""The ARM simulator for the fleet-scale benchmark: a compressed clock, and small adapters to its config and metrics.

Everything the benchmark knows about the simulator goes through the functions here, so when the simulator
grows a feature (a budget clock, 429s counted per bucket, peak in-flight) only these adapters change:

- `compressed_config(scale, ...)`: operation durations, every throttling budget and the 202's Retry-After on one
  clock `scale` times faster than Azure's. Uses `SimulatorConfig.compressed` when the simulator has it; otherwise
  multiplies the refill rates itself (bursts unchanged), which is the same thing for buckets refilled on real time.
- `budgets(config)`: the per-subscription buckets, in real seconds, for the makespan bound.
- `arm_summary(calls)`, `install_durations(state)`, `install_seconds_by_vm(state)`: what the bound and the table
  need from /_sim/calls and /_sim/vms.

`python -m benchmarks.scale_sim '<json>'` serves one simulator in its own process (so its HTTP threads do not
share a GIL with the harness), prints its URL on the first line, and stops when stdin closes.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

from benchmarks.scale_bound import Budgets
from tools.azure_simulator import Simulator, SimulatorConfig

AZURE_RETRY_AFTER_SECONDS = 60.0  # a 202's Retry-After in Azure's clock (the simulator's compressed() default)


def compressed_config(scale: float, **settings: Any) -> SimulatorConfig:
    """A SimulatorConfig whose durations, budgets and 202 Retry-After all run `scale` times faster than Azure."""
    compressed = getattr(SimulatorConfig, "compressed", None)
    if compressed is not None:
        return compressed(scale, azure_retry_after_seconds=AZURE_RETRY_AFTER_SECONDS, **settings)  # type: ignore[no-any-return]
    base = SimulatorConfig()
    settings.setdefault("retry_after_seconds", max(1, round(AZURE_RETRY_AFTER_SECONDS / scale)))
    return SimulatorConfig(
        time_scale=scale,
        read_rate=base.read_rate * scale,
        write_rate=base.write_rate * scale,
        patch_ops_per_vm_per_min=None if base.patch_ops_per_vm_per_min is None
        else base.patch_ops_per_vm_per_min * scale,
        patch_ops_per_sub_per_min=None if base.patch_ops_per_sub_per_min is None
        else base.patch_ops_per_sub_per_min * scale,
        **settings,
    )


def budgets(config: SimulatorConfig) -> Budgets:
    """The buckets one subscription (and one principal) has, with refill rates per real second."""
    k = float(getattr(config, "budget_scale", 1.0))
    return Budgets(
        read_burst=config.read_burst, read_rate=config.read_rate * k,
        write_burst=config.write_burst, write_rate=config.write_rate * k,
        patch_sub_burst=config.patch_ops_per_sub_burst,
        patch_sub_rate=None if config.patch_ops_per_sub_per_min is None
        else config.patch_ops_per_sub_per_min * k / 60.0,
    )


def arm_summary(calls: dict[str, Any]) -> dict[str, Any]:
    """From GET /_sim/calls: ARM calls by kind, responses by status, 429s (by bucket when the simulator says)."""
    statuses = {int(k): int(v) for k, v in calls.get("statuses", {}).items()}
    total = dict(calls.get("total", {}))
    peaks = calls.get("peakConcurrentBySubscription") or {}
    return {
        "byKind": {k: int(v) for k, v in total.items() if k != "installPatchesAccepted"},
        "accepted": int(total.get("installPatchesAccepted", 0)),
        "responses": sum(statuses.values()),
        "throttled": statuses.get(429, int(calls.get("throttled", 0))),
        "throttledByBucket": {k: v for k, v in (calls.get("throttledByBucket") or {}).items() if v},
        "peakInFlight": int(peaks.get("*", 0)) if isinstance(peaks, dict) else 0,
    }


def install_durations(state: dict[str, Any]) -> dict[str, list[float]]:
    """From GET /_sim/vms: real seconds of each VM's first installPatches operation, by subscription."""
    out: dict[str, list[float]] = {}
    for vm in state.get("vms", []):
        ops = [op for op in vm.get("operations", []) if op.get("kind") == "installPatches"]
        if ops:
            sub = vm["id"].split("/")[2].lower()
            out.setdefault(sub, []).append(float(ops[0]["realSeconds"]))
    return out


def install_seconds_by_vm(state: dict[str, Any]) -> dict[str, float]:
    """From GET /_sim/vms: real seconds of each VM's first installPatches operation, by its id in lower case."""
    out: dict[str, float] = {}
    for vm in state.get("vms", []):
        ops = [op for op in vm.get("operations", []) if op.get("kind") == "installPatches"]
        if ops:
            out[str(vm["id"]).lower()] = float(ops[0]["realSeconds"])
    return out


def config_fields(config: SimulatorConfig) -> dict[str, Any]:
    """The config as JSON-able keyword arguments (what the subprocess rebuilds it from)."""
    data = dataclasses.asdict(config)
    data["operation_seconds"] = list(data["operation_seconds"])
    return data


def main(argv: list[str]) -> int:
    data = json.loads(argv[0])
    data["operation_seconds"] = tuple(data["operation_seconds"])
    sim = Simulator(SimulatorConfig(**data)).start()
    print(sim.url, flush=True)
    sys.stdin.read()  # until the harness closes our stdin (or exits)
    sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
