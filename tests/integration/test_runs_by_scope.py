"""POST /api/runs over scopes with a dynamic-scope filter: VMs are listed through ARM, and exactly those
that pass the filter are patched."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.composition import Components
from tests.integration.queue_pump import QueuePump
from tests.integration.test_machine_worker import finished, post_run, run_view
from tests.support.bodies import INSTALL
from tests.support.fleet import sim_config
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


@pytest.mark.parametrize("simulator_config", [sim_config(vms=14, seed=5, patch_ops_per_sub_burst=10,
                                                         patch_ops_per_sub_per_min=60)])
def test_a_scope_runs_starts_are_slotted_and_released_like_an_explicit_runs(services: Components,
                                                                             simulator: Simulator) -> None:
    """Each listed machine gets its guest-patch slot (10 at once, then 1 a second, as the simulator's budget), its
    start message is queued a horizon ahead by the release chain, and no start meets a 429 (#22)."""
    from tests.integration.test_machine_worker import reconfigure

    # PACING_LATE_SECONDS 2: the in-process pump delivers a due message up to about 2 s late (as test_pacing)
    svc = reconfigure(GUEST_PATCH_BURST="10", GUEST_PATCH_PER_MINUTE="60", PACING_LATE_SECONDS="2",
                      DISPATCH_HORIZON_SECONDS="4")
    (sub,) = simulator.subscriptions()
    status, body = post({"scopes": [f"/subscriptions/{sub}"]})
    assert status == 202, body
    pump = QueuePump(svc)
    pump.pump_once(only="discovery")  # the listing: one page
    run = svc.store.get_run(body["id"])
    assert run is not None and run["releasedThrough"] < run["lastSlotAt"]
    slots = sorted(t["nextActionAt"] for t in svc.store.list_targets(body["id"]))
    assert len(slots) == 14 and slots[-1] > run["releasedThrough"]  # later slots wait for their release
    queued = svc.account.queue(svc.settings.queues.operations).get_queue_properties().approximate_message_count
    assert queued == sum(1 for s in slots if s < run["releasedThrough"]) < 14
    pump.run_until(lambda: finished(body["id"]), timeout=90)
    calls = simulator.calls()
    assert calls["total"].get("installPatchesAccepted") == 14
    assert calls["throttled"] == 0, calls["throttledByBucket"]


@pytest.mark.parametrize("simulator_config", [sim_config(vms=20, seed=5, patch_ops_per_sub_burst=10,
                                                         patch_ops_per_sub_per_min=60)])
def test_a_page_delivered_again_after_dying_before_its_sends_starts_the_machines_from_their_stored_slots(
        services: Components, simulator: Simulator) -> None:
    """The first delivery wrote the rows with their slots and died before sending: the redelivery reserves later
    slots, but the rows keep the first ones, which the release chain has already passed. It must send from the
    stored slots, or those machines wait for the sweeper (about 11 minutes) and hold the run's releases back."""
    import time

    from shared.core.clock import parse_iso, utcnow
    from shared.core.messages import DiscoveryMessage
    from shared.runs.discovery import discover_page
    from tests.integration.test_machine_worker import reconfigure

    svc = reconfigure(GUEST_PATCH_BURST="10", GUEST_PATCH_PER_MINUTE="60", PACING_LATE_SECONDS="2",
                      DISPATCH_HORIZON_SECONDS="4")
    (sub,) = simulator.subscriptions()
    status, body = post({"scopes": [f"/subscriptions/{sub}"]})
    assert status == 202, body
    run_id = body["id"]

    class DiesOnSend:  # the host died after the rows were written, before any start message went
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def send_step(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("host died")

    class Dying:
        queues = DiesOnSend(svc.queues)

        def __getattr__(self, name: str) -> Any:
            return getattr(svc, name)

    message = DiscoveryMessage(run_id, 0, 0)
    with pytest.raises(RuntimeError):
        discover_page(message, Dying())  # type: ignore[arg-type]
    operations = svc.account.queue(svc.settings.queues.operations)
    assert operations.get_queue_properties().approximate_message_count == 0
    assert discover_page(message, svc) == "page"  # the redelivery (the Arc machines' page follows)
    run = svc.store.get_run(run_id)
    assert run is not None
    stored = {t.key: t["nextActionAt"] for t in svc.store.list_targets(run_id)}
    due = {key for key, slot in stored.items() if slot < run["releasedThrough"]}
    assert 10 <= len(due) < len(stored) == 20  # the first delivery's burst is due; the rest wait for their release
    assert operations.get_queue_properties().approximate_message_count == len(due)
    time.sleep(max(0.0, (parse_iso(run["releasedThrough"]) - utcnow()).total_seconds()) + 1.5)  # all visible now
    sent = [json.loads(m.content) for m in operations.peek_messages(max_messages=32)]
    assert sorted(m["machine"] for m in sent) == sorted(due)
