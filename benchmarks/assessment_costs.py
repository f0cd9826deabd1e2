"""What assessing one machine costs, and how long the compliance view takes for 10,000 machines.

Part 1 runs a periodic sweep of 200 VMs in 2 subscriptions (10% stopped, pages of 50) against the
ARM simulator and Azurite, delivering queue messages in-process, and counts ARM calls, Table
round-trips and queue messages per listed machine. Part 2 writes 10,000 machines' latest results
(4 subscriptions, realistic patch lists) and times `GET /api/compliance` in-process, fleet-wide and
for one subscription. Prints tables; run with `make bench`.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

import azure.functions as func

from shared.assessments.periodic import start_periodic_sweep
from shared.assessments.results import patch_facts
from shared.core.clock import iso, utcnow
from shared.core.ids import MachineRef
from tests.app import assessments_api, get_services, reset_services
from tests.integration.conftest import DEV_TOKEN, unique_settings
from tests.integration.queue_pump import QueuePump
from tools import metrics
from tools.azure_simulator import Simulator, SimulatorConfig
from tools.azurite import Azurite

VMS = 200
FLEET = 10_000
SUBSCRIPTIONS = [f"00000000-0000-0000-0000-{i:012d}" for i in range(1, 5)]


def sweep_costs(azurite: Azurite) -> None:
    config = SimulatorConfig(vms=VMS, subscriptions=2, seed=4, stopped_ratio=0.1, page_size=50, time_scale=3600.0,
                             required_token=DEV_TOKEN, retry_after_seconds=1)
    with Simulator(config) as sim:
        os.environ.update({**unique_settings(azurite, sim.url), "WEBSITE_HOSTNAME": "127.0.0.1:7071",
                           "ASSESSMENT_SCHEDULE": "0 0 3 * * *",
                           "ASSESSMENT_SCOPES": ",".join(f"/subscriptions/{s}" for s in sim.subscriptions())})
        reset_services()
        svc = get_services()
        metrics.install()
        calls_before, sent_before = metrics.arm_calls(), metrics.queue_messages()
        runs_before, fleet_before = metrics.table_operations("runs"), metrics.table_operations("fleet")
        started = time.perf_counter()
        run_id, _ = start_periodic_sweep(svc, utcnow())
        assert run_id

        def done() -> bool:
            run = svc.store.get_run(run_id)
            return bool(run and run.get("completedAt"))

        QueuePump(svc).run_until(done, timeout=600)
        elapsed = time.perf_counter() - started
        assessed = sum(1 for v in sim.state()["vms"] if v["powerState"] == "running")
        runs_ops = metrics.table_operations("runs") - runs_before
        fleet_ops = metrics.table_operations("fleet") - fleet_before
        table = {**{f"runs `{k}`": v for k, v in runs_ops.items() if k != "getRun"},
                 **{f"fleet `{k}`": v for k, v in fleet_ops.items()}}
        print(f"Sweep of {VMS} VMs ({assessed} running) in 2 subscriptions finished in {elapsed:.1f} s real")
        print()
        print("| cost per listed machine | value |")
        print("| --- | ---: |")
        arm_calls = metrics.arm_calls() - calls_before
        print(f"| ARM calls (all) | {sum(arm_calls.values()) / VMS:.2f} |")
        for kind in sorted(arm_calls):
            print(f"| ARM `{kind}` | {arm_calls[kind] / VMS:.2f} |")
        print(f"| Table round-trips (all) | {sum(table.values()) / VMS:.2f} |")
        for kind in sorted(table):
            print(f"| Table {kind} | {table[kind] / VMS:.2f} |")
        print(f"| Queue messages sent | {sum((metrics.queue_messages() - sent_before).values()) / VMS:.2f} |")
        print()


def seed_fleet(rng: random.Random) -> None:
    svc = get_services()
    catalog = [{"kbId": str(5030000 + i), "classifications": [rng.choice(["Critical", "Security", "Other"])]}
               for i in range(60)] + [{"name": f"pkg{i}", "classifications": [rng.choice(["Security", "Other"])]}
                                      for i in range(60)]
    now = datetime.now(UTC)
    rows = []
    for i in range(FLEET):
        windows = (i // 4) % 2 == 0  # independent of the subscription (i % 4)
        missing = rng.sample(catalog[:60] if windows else catalog[60:], rng.randint(0, 25))
        critical = sum(1 for p in missing if p["classifications"][0] in ("Critical", "Security"))
        vm = MachineRef(SUBSCRIPTIONS[i % 4], f"rg-{i % 9}", f"vm-{i:05d}")
        rows.append((vm, {"resourceId": vm.resource_id,
                     "osType": "Windows" if windows else "Linux", "powerState": "running",
                     "assessedAt": iso(now - timedelta(hours=rng.randint(0, 60))), "assessmentStatus": "Succeeded",
                     "lastAttemptState": "Completed", "rebootPending": rng.random() < 0.1,
                     "criticalAndSecurityPatchCount": critical, "otherPatchCount": len(missing) - critical,
                     **patch_facts(missing)}))
    svc.fleet.upsert_machines(rows)
    svc.fleet.note_subscriptions(SUBSCRIPTIONS)


def compliance_time(azurite: Azurite) -> None:
    os.environ.update({**unique_settings(azurite, "http://127.0.0.1:1"), "WEBSITE_HOSTNAME": "127.0.0.1:7071"})
    reset_services()
    seed_fleet(random.Random(5))
    get_services()
    metrics.install()
    print(f"| GET /api/compliance over {FLEET:,} machines | p50 (ms) | max (ms) | Table round-trips | machines |")
    print("| --- | ---: | ---: | ---: | ---: |")
    cases = (("fleet-wide (4 subscriptions)", {}), ("one subscription", {"subscriptionId": SUBSCRIPTIONS[0]}),
             ("one subscription, Linux only", {"subscriptionId": SUBSCRIPTIONS[0], "osType": "Linux"}))
    for label, params in cases:
        times, machines = [], 0
        before = metrics.table_operations("fleet")
        for _ in range(5):
            started = time.perf_counter()
            resp = assessments_api.get_compliance(func.HttpRequest("GET", "http://127.0.0.1/api/compliance",
                                                                   body=b"", params=params))
            times.append((time.perf_counter() - started) * 1000)
            machines = json.loads(resp.get_body())["machines"]
        trips = sum((metrics.table_operations("fleet") - before).values()) / 5
        print(f"| {label} | {statistics.median(times):.0f} | {max(times):.0f} | {trips:.0f} | {machines:,} |")


def main() -> int:
    with Azurite() as azurite:
        sweep_costs(azurite)
        compliance_time(azurite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
