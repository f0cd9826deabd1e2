"""The dashboard's reads: a run's machines page by page (filtered by state, the cursor checked), and the run's
summary (counts per state and wave, a timeline) without its machines. In-process, against Azurite and the
simulator."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
import pytest

from shared.composition import Components
from tests.app import runs_api
from tests.integration.queue_pump import QueuePump
from tests.integration.test_machine_worker import finished, run_view, start
from tests.support.fleet import sim_config
from tools.azure_simulator import Simulator


def get(fn: Any, run_id: str, **params: str) -> tuple[int, dict[str, Any]]:
    req = func.HttpRequest("GET", "http://127.0.0.1:7071/api/runs/x", body=b"", params=params,
                           route_params={"runId": run_id})
    resp = fn(req)
    return resp.status_code, json.loads(resp.get_body())


def test_machines_page_by_page_and_summary(services: Components, simulator: Simulator) -> None:
    vms = simulator.vm_ids()[:7]
    simulator.set_power(vms[0], "deallocated")
    simulator.set_power(vms[1], "deallocated")
    run_id = start(vms)
    QueuePump(services).run_until(lambda: finished(run_id), timeout=60)
    whole = run_view(run_id)

    seen = every_page(run_id, 3)
    assert sorted(seen) == sorted(m["id"] for m in whole["machines"])  # every machine once

    status, failed = get(runs_api.list_run_machines, run_id, state="Failed")
    assert status == 200
    assert {m["id"].lower() for m in failed["value"]} == {vms[0].lower(), vms[1].lower()}
    assert all(m["error"]["code"] for m in failed["value"])

    status, summary = get(runs_api.get_run_summary, run_id)
    assert status == 200 and "machines" not in summary
    assert summary["status"] == whole["status"] and summary["states"] == whole["states"]
    assert summary["waves"] == {"0": whole["states"]}
    assert sum(b["started"] for b in summary["timeline"]) == 5  # the two deallocated VMs never started
    assert sum(b["finished"] for b in summary["timeline"]) == 7


def every_page(run_id: str, top: int) -> list[str]:
    """The ids of a run's machines, following nextLink from the first page of `top`."""
    seen: list[str] = []
    params = {"top": str(top)}
    while True:
        status, page = get(runs_api.list_run_machines, run_id, **params)
        assert status == 200 and len(page["value"]) <= top, page
        seen += [m["id"] for m in page["value"]]
        if "nextLink" not in page:
            return seen
        params = {k: v[0] for k, v in parse_qs(urlsplit(page["nextLink"]).query).items()}


@pytest.mark.parametrize("simulator_config", [sim_config(vms=2, seed=78, time_scale=36000.0, arc_machines=2,
                                                          arc_disconnected=0)])
def test_a_page_that_ends_on_an_arc_enabled_server_is_followed(services: Components, simulator: Simulator) -> None:
    """An Arc-enabled server's key has a fourth part (MachineRef.key): as a page's last machine it is the token
    of the next page's link, which must be taken back."""
    machines = simulator.vm_ids() + [m for m in simulator.machine_ids() if "/Microsoft.HybridCompute/" in m]
    assert len(machines) == 4
    run_id = start(machines)
    QueuePump(services).run_until(lambda: finished(run_id), timeout=60)
    assert sorted(m.lower() for m in every_page(run_id, 1)) == sorted(m.lower() for m in machines)


def test_bad_paging_parameters_are_400s(services: Components, simulator: Simulator) -> None:
    run_id = start(simulator.vm_ids()[:1])
    for params in ({"state": "Exploded"}, {"top": "0"}, {"top": "101"},
                   {"continuationToken": "x' or PartitionKey ne '"}, {"continuationToken": "a|b|c\n"}):
        status, body = get(runs_api.list_run_machines, run_id, **params)
        assert status == 400, params
        assert body["error"]["target"] in params
    status, _ = get(runs_api.list_run_machines, "00000000000-00000000")
    assert status == 404
