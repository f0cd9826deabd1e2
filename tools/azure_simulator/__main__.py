"""`python -m tools.azure_simulator`: run the ARM simulator in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from tools.azure_simulator import Simulator, SimulatorConfig
from tools.azure_simulator.config import FaultSettings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.azure_simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--vms", type=int, default=20)
    parser.add_argument("--subscriptions", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-scale", type=float, default=600.0, help="simulated seconds per real second")
    parser.add_argument("--budget-scale", type=float, default=1.0,
                        help="throttling buckets refill this many times faster than Azure's (see SimulatorConfig)")
    parser.add_argument("--windows-ratio", type=float, default=0.5)
    parser.add_argument("--stopped-ratio", type=float, default=0.0)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--upcoming-patches", type=int, default=0,
                        help="updates per OS type published during the run (over --upcoming-within-hours, simulated)")
    parser.add_argument("--upcoming-within-hours", type=float, default=72.0)
    parser.add_argument("--arc-machines", type=int, default=0, help="Azure Arc-enabled servers (HybridCompute)")
    parser.add_argument("--arc-disconnected", type=int, default=1, help="of them, how many have a Disconnected agent")
    parser.add_argument("--location", default="westus")
    parser.add_argument("--token", default=None, help="require this bearer token (default: any)")
    parser.add_argument("--retry-after", type=int, default=5, help="Retry-After seconds on 202s")
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--drop-rate", type=float, default=0.0)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--conflict-rate", type=float, default=0.0)
    parser.add_argument("--throttle-rate", type=float, default=0.0)
    parser.add_argument("--patch-failure-rate", type=float, default=0.0)
    parser.add_argument("--unhealthy-after-patch-rate", type=float, default=0.0,
                        help="share of installations after which the machine comes back down for good")
    parser.add_argument("--role-assignments", type=json.loads, default=None,
                        help='JSON list of {"scope": "/subscriptions/<id>[/resourceGroups/<rg>]", "actions": [...]}; '
                        "default: everything allowed")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    faults = FaultSettings(
        error_rate=args.error_rate,
        drop_rate=args.drop_rate,
        latency_ms=args.latency_ms,
        conflict_rate=args.conflict_rate,
        throttle_rate=args.throttle_rate,
        patch_failure_rate=args.patch_failure_rate,
        unhealthy_after_patch_rate=args.unhealthy_after_patch_rate,
    )
    config = SimulatorConfig(
        vms=args.vms,
        subscriptions=args.subscriptions,
        seed=args.seed,
        time_scale=args.time_scale,
        budget_scale=args.budget_scale,
        windows_ratio=args.windows_ratio,
        stopped_ratio=args.stopped_ratio,
        upcoming_patches=args.upcoming_patches,
        upcoming_within_hours=args.upcoming_within_hours,
        page_size=args.page_size,
        location=args.location,
        host=args.host,
        port=args.port,
        required_token=args.token,
        retry_after_seconds=args.retry_after,
        faults=faults,
        role_assignments=args.role_assignments,
        arc_machines=args.arc_machines,
        arc_disconnected=args.arc_disconnected,
    )
    # Handlers first: a caller may read the URL, use it and send SIGTERM before the prints below return.
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    sim = Simulator(config).start()
    ids = sim.vm_ids()
    print(f"ARM simulator listening on {sim.url} ({len(ids)} VMs)", flush=True)
    for vm_id in ids[:3]:
        print(f"  {vm_id}", flush=True)
    print(f"  state: {sim.url}/_sim/vms   calls: {sim.url}/_sim/calls", flush=True)
    try:
        stop.wait()
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
