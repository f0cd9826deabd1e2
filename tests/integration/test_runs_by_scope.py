"""POST /api/runs over scopes with a dynamic-scope filter: VMs are listed through ARM, and exactly those
that pass the filter are patched."""

from __future__ import annotations

import json
from typing import Any

from shared.composition import Components
from tests.integration.queue_pump import QueuePump
from tests.integration.test_machine_worker import finished, post_run, run_view
from tests.support.bodies import INSTALL
from tools.azure_simulator import Simulator


def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = post_run([], raw=json.dumps({"installPatches": INSTALL, **body}).encode())
    return resp.status_code, json.loads(resp.get_body())


def test_a_run_over_a_subscription_with_a_tag_filter_patches_exactly_the_matching_vms(
        services: Components, simulator: Simulator) -> None:
    (sub,) = simulator.subscriptions()
    vms = simulator.state()["vms"]
    wanted = {v["id"].lower() for v in vms if v["tags"].get("owner") in ("payments", "data")}
    assert 0 < len(wanted) < len(vms)  # the filter must choose
    status, body = post({"scopes": [f"/subscriptions/{sub}"],
                         "filter": {"tagSettings": {"tags": {"Owner": ["payments", "data"]}, "filterOperator": "Any"}}})
    assert status == 202, body
    QueuePump(services).run_until(lambda: finished(body["id"]), timeout=60)
    view = run_view(body["id"])
    assert {m["id"].lower() for m in view["machines"]} == wanted
    calls = simulator.calls()["byVm"]
    assert {vm for vm, c in calls.items() if c["installPatches"]} == wanted  # no other VM was touched
    assert all(calls[vm]["installPatchesAccepted"] == 1 for vm in wanted)


def test_scopes_and_machines_exclude_each_other_and_a_bad_filter_names_its_field(
        services: Components, simulator: Simulator) -> None:
    (sub,) = simulator.subscriptions()
    scope = f"/subscriptions/{sub}"
    for body, target in (({"scopes": [scope], "machines": simulator.vm_ids()[:1]}, "machines"),
                         ({"machines": simulator.vm_ids()[:1], "filter": {}}, "filter"),
                         ({"scopes": [scope], "filter": {"osTypes": ["Solaris"]}}, "filter.osTypes[0]"),
                         ({"scopes": [scope], "filter": {"tagSettings": {"filterOperator": "Some"}}},
                          "filter.tagSettings.filterOperator"),
                         ({"scopes": ["/subscriptions/not-a-guid"]}, "scopes[0]")):
        status, answer = post(body)
        assert status == 400 and answer["error"]["target"] == target, (body, answer)
    assert services.store.list_runs(10)[0] == []  # nothing written
