"""What the dashboard's reads of one 10,000-machine run cost: a page of 50 machines (first, later, one state)
and the run summary. Real Azurite, functions called in-process; prints a table (`make bench`)."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Any
from urllib.parse import unquote

import azure.functions as func

from shared.runs.dispatch import create_targets
from tests.app import get_services, reset_services, runs_api
from tools.azurite import Azurite

SUB = "00000000-0000-0000-0000-0000000000b1"
MACHINES = 10_000
INSTALL = {"maximumDuration": "PT2H", "rebootSetting": "IfRequired",
           "windowsParameters": {"classificationsToInclude": ["Critical", "Security"]}}


def call(fn: Any, run_id: str, **params: str) -> tuple[float, dict[str, Any]]:
    req = func.HttpRequest("GET", "http://127.0.0.1:7071/api/runs/x", body=b"", params=params,
                           route_params={"runId": run_id})
    start = time.perf_counter()
    resp = fn(req)
    elapsed = (time.perf_counter() - start) * 1000
    assert resp.status_code == 200, resp.get_body()
    return elapsed, json.loads(resp.get_body())


def main() -> int:
    with Azurite() as azurite:
        os.environ.update({"AzureWebJobsStorage": azurite.connection_string, "ARM_ENDPOINT": "http://127.0.0.1:9",
                           "DISPATCH_QUEUE": "bench-dispatch", "OPERATIONS_QUEUE": "bench-operations",
                           "MAX_MACHINES_PER_RUN": str(MACHINES), "WEBSITE_HOSTNAME": "127.0.0.1:7071",
                           "MAX_REQUEST_BYTES": str(4 * 1024 * 1024)})
        reset_services()
        machines = [f"/subscriptions/{SUB}/resourceGroups/rg-{i % 7}/providers/Microsoft.Compute/virtualMachines/"
                    f"vm-{i:05d}" for i in range(MACHINES)]
        body = json.dumps({"machines": machines, "installPatches": INSTALL}).encode()
        resp = runs_api.create_run(func.HttpRequest("POST", "http://127.0.0.1:7071/api/runs", body=body, headers={}))
        assert resp.status_code == 202, resp.get_body()[:500]
        run_id = json.loads(resp.get_body())["id"]
        svc = get_services()
        create_targets(run_id, svc)
        svc.store.update_run(run_id, {"dispatchedAt": "2026-01-01T00:00:00Z"})
        _, first = call(runs_api.list_run_machines, run_id, top="50")
        token = first["nextLink"].split("continuationToken=")[1].split("&")[0]
        cases = [("first page of 50", runs_api.list_run_machines, {"top": "50"}),
                 ("a later page of 50", runs_api.list_run_machines, {"top": "50", "continuationToken": token}),
                 ("page of 50 in state Queued", runs_api.list_run_machines, {"top": "50", "state": "Queued"}),
                 ("page in state Failed (none: scans the run)", runs_api.list_run_machines, {"top": "50",
                                                                                              "state": "Failed"}),
                 ("summary (counts, waves, timeline)", runs_api.get_run_summary, {})]
        print(f"| read of a {MACHINES:,}-machine run | p50 (ms) | max (ms) | response bytes |")
        print("| --- | ---: | ---: | ---: |")
        for name, fn, raw in cases:
            params = {k: unquote(v) for k, v in raw.items()}  # the token as nextLink carries it, decoded
            samples = [call(fn, run_id, **params) for _ in range(5)]
            times = [s[0] for s in samples]
            size = len(json.dumps(samples[0][1]))
            print(f"| {name} | {statistics.median(times):.0f} | {max(times):.0f} | {size:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
