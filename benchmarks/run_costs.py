"""What one machine costs: ARM calls, Table round-trips and queue messages, for a whole run.

Runs a 100-VM install against the ARM simulator and Azurite, delivering queue messages in-process,
with polls every simulated Retry-After (1 s real; operations take 1-4 simulated hours at 3600x).
Prints a table; run with `make bench`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import azure.functions as func

from shared.composition import Components
from tests.app import get_services, reset_services, runs_api
from tests.integration.conftest import DEV_TOKEN, unique_settings
from tests.integration.queue_pump import QueuePump
from tools import metrics
from tools.azure_simulator import Simulator, SimulatorConfig
from tools.azurite import Azurite

VMS = 100
INSTALL = {"maximumDuration": "PT4H", "rebootSetting": "IfRequired",
           "windowsParameters": {"classificationsToInclude": ["Critical", "Security", "UpdateRollUp"]},
           "linuxParameters": {"classificationsToInclude": ["Critical", "Security", "Other"]}}


ROLLOUT = {"waves": [{"name": "canary", "size": 1}, {"size": "10%"}, {"size": "rest"}], "maxConcurrency": 20,
           "maxFailures": "10%"}


@contextmanager
def stack(vms: int) -> Iterator[tuple[Components, Simulator]]:
    """Azurite, a simulator of `vms` VMs (1-4 h operations at 3600x, Retry-After 1 s) and the app wired to them,
    its OpenTelemetry counters read by tools/metrics.py."""
    with Azurite() as azurite, Simulator(SimulatorConfig(vms=vms, seed=2, time_scale=3600.0,
                                                         required_token=DEV_TOKEN, retry_after_seconds=1)) as sim:
        os.environ.update({**unique_settings(azurite, sim.url), "WEBSITE_HOSTNAME": "127.0.0.1:7071"})
        reset_services()
        metrics.install()
        yield get_services(), sim


def run_to_end(svc: Components, request: dict[str, object], timeout: float) -> tuple[str, float]:
    """POST `request` as a run and deliver queue messages in-process until it completes: (run id, seconds)."""
    started = time.perf_counter()
    resp = runs_api.create_run(func.HttpRequest("POST", "http://127.0.0.1/api/runs",
                                                body=json.dumps(request).encode()))
    run_id = str(json.loads(resp.get_body())["id"])

    def done() -> bool:
        run = svc.store.get_run(run_id)
        return bool(run and run.get("completedAt"))

    QueuePump(svc).run_until(done, timeout=timeout)
    return run_id, time.perf_counter() - started


def measure(rollout: dict[str, object] | None) -> None:
    label = "with a rollout (3 waves, maxConcurrency 20)" if rollout else "all at once"
    with stack(VMS) as (svc, sim):
        calls_before, sent_before = metrics.arm_calls(), metrics.queue_messages()
        table_before = metrics.table_operations("runs")
        request: dict[str, object] = {"machines": sim.vm_ids(), "installPatches": INSTALL}
        if rollout:
            request["rollout"] = rollout
        _, elapsed = run_to_end(svc, request, timeout=600)
        arm_calls = metrics.arm_calls() - calls_before
        arm = sum(arm_calls.values())
        table_ops = metrics.table_operations("runs") - table_before
        table = sum(v for k, v in table_ops.items() if k != "getRun")
        print(f"100-VM run, {label}: finished in {elapsed:.1f} s real; simulator saw {sim.calls()['total']}")
        print()
        print("| cost per machine | value |")
        print("| --- | ---: |")
        print(f"| ARM calls (all) | {arm / VMS:.2f} |")
        for kind in sorted(arm_calls):
            print(f"| ARM `{kind}` | {arm_calls[kind] / VMS:.2f} |")
        print(f"| polls per machine (Retry-After 1 s, 1-4 h ops at 3600x) | {arm_calls['poll'] / VMS:.2f} |")
        print(f"| Table round-trips (workers + accept) | {table / VMS:.2f} |")
        for kind in sorted(table_ops):
            print(f"| Table `{kind}` | {table_ops[kind] / VMS:.2f} |")
        print(f"| Queue messages sent | {sum((metrics.queue_messages() - sent_before).values()) / VMS:.2f} |")
        print()


def main() -> int:
    measure(None)
    measure(ROLLOUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
