"""Budgets at scale: the budget clock, 429s counted by bucket, throttling headers on every response, and the
in-flight / start-rate metrics on /_sim/calls."""

from __future__ import annotations

from collections.abc import Callable

import requests

from tests.simulator.conftest import API
from tests.simulator.test_http import wait_done
from tests.simulator.test_throttling import FakeClock
from tests.support.bodies import INSTALL
from tools.azure_simulator import Simulator, SimulatorConfig
from tools.azure_simulator.throttling import BucketSet, PatchThrottle


def test_budget_scale_speeds_every_refill_and_keeps_bursts() -> None:
    clock = FakeClock()
    azure, fast = BucketSet(3, 0.5, clock), BucketSet(3, 0.5, clock, scale=4)
    for bucket in (azure, fast):
        assert all(bucket.get("s").try_take() for _ in range(3)) and not bucket.get("s").try_take()
    assert azure.get("s").retry_after() == 2 and fast.get("s").retry_after() == 1
    clock.now += 0.5
    assert not azure.get("s").try_take() and fast.get("s").try_take()  # 4 x 0.5/s: a token per 0.5 s
    clock.now += 100
    assert fast.get("s").remaining() == 3  # the burst is Azure's

    throttle = PatchThrottle(1, 2, 600, 200, clock, scale=60)  # per VM: 2/min x 60 = 2/s
    throttle.charge("vm", "sub")
    clock.now += 0.5
    assert throttle.per_vm.get("vm").remaining() == 1


def test_compressed_config_ties_durations_budgets_and_retry_after() -> None:
    config = SimulatorConfig.compressed(60, vms=3)
    assert (config.time_scale, config.budget_scale, config.retry_after_seconds) == (60, 60, 1)
    assert SimulatorConfig.compressed(10, azure_retry_after_seconds=30).retry_after_seconds == 3
    assert SimulatorConfig.compressed(10, retry_after_seconds=7).retry_after_seconds == 7


def test_retry_after_follows_the_budget_clock(make_sim: Callable[..., Simulator], arm: requests.Session) -> None:
    vm = None
    for scale, expected in ((1, "100"), (10, "10")):
        sim = make_sim(write_burst=1, write_rate=0.01, budget_scale=scale)  # Azure: a write token every 100 s
        vm = sim.vm_ids()[0]
        assert arm.post(f"{sim.url}{vm}/assessPatches?{API}").status_code == 202
        throttled = arm.post(f"{sim.url}{vm}/assessPatches?{API}")
        assert throttled.status_code == 429 and throttled.headers["Retry-After"] == expected
        assert throttled.headers["x-ms-ratelimit-remaining-subscription-writes"] == "0"
    assert vm is not None


def test_429s_are_counted_by_bucket(make_sim: Callable[..., Simulator], arm: requests.Session) -> None:
    sim = make_sim(vms=8, subscriptions=2, read_burst=3, read_rate=0.001, patch_ops_per_vm_burst=1,
                   patch_ops_per_vm_per_min=0.01, patch_ops_per_sub_burst=2, patch_ops_per_sub_per_min=0.01,
                   write_burst=6, write_rate=0.001)
    sub_a, sub_b = sim.subscriptions()
    in_a = [v for v in sim.vm_ids() if v.split("/")[2] == sub_a]
    in_b = [v for v in sim.vm_ids() if v.split("/")[2] == sub_b]
    # Compute, per VM: the VM's second operation (after the first ended) is refused.
    first = arm.post(f"{sim.url}{in_a[0]}/assessPatches?{API}")
    assert first.status_code == 202  # read bucket of sub A: 3 tokens; polls and the GETs below spend them
    assert arm.post(f"{sim.url}{in_a[0]}/assessPatches?{API}").status_code == 429
    # Compute, per subscription: a second VM empties sub A's 2 tokens, a third is refused.
    assert arm.post(f"{sim.url}{in_a[1]}/assessPatches?{API}").status_code == 202
    assert arm.post(f"{sim.url}{in_a[2]}/assessPatches?{API}").status_code == 429
    # ARM writes (sub B has 6; 2 spent here, 4 more below), ARM reads (sub B has 3).
    for vm in in_b[:2]:
        assert arm.post(f"{sim.url}{vm}/assessPatches?{API}").status_code == 202
    for _ in range(4):
        assert arm.put(f"{sim.url}{in_b[2]}?{API}", json={}).status_code == 405  # refused, still ARM writes
    assert arm.put(f"{sim.url}{in_b[2]}?{API}", json={}).status_code == 429
    reads = [arm.get(f"{sim.url}{in_b[0]}?{API}").status_code for _ in range(4)]
    assert reads == [200, 200, 200, 429]
    sim.set_faults(throttle_rate=1.0)
    assert arm.get(f"{sim.url}{in_b[0]}?{API}").status_code == 429

    calls = requests.get(f"{sim.url}/_sim/calls").json()
    assert calls["throttledByBucket"] == {
        "armReads": 1, "armWrites": 1, "computeGuestPatchSubscription": 1, "computeGuestPatchVm": 1, "injected": 1,
    }
    assert calls["throttledByBucketAndSubscription"] == {
        "armReads": {sub_b.lower(): 1},
        "armWrites": {sub_b.lower(): 1},
        "computeGuestPatchSubscription": {sub_a.lower(): 1},
        "computeGuestPatchVm": {sub_a.lower(): 1},
        "injected": {sub_b.lower(): 1},
    }
    assert calls["throttled"] == 5


def test_throttling_headers_on_every_response(sim: Simulator, arm: requests.Session) -> None:
    vm = sim.vm_ids()[0]
    missing = arm.get(f"{sim.url}{vm}-gone?{API}")
    assert missing.status_code == 404 and int(missing.headers["x-ms-ratelimit-remaining-subscription-reads"]) > 0
    bad = arm.post(f"{sim.url}{vm}/installPatches?{API}", json={"rebootSetting": "Sometimes"})
    assert bad.status_code == 400 and int(bad.headers["x-ms-ratelimit-remaining-subscription-writes"]) > 0
    assert bad.headers["x-ms-ratelimit-remaining-resource"].startswith(
        "Microsoft.Compute/VMGuestPatchOperationSubscriptionMaximum;"
    )
    unauthenticated = requests.get(f"{sim.url}{vm}?{API}")
    assert unauthenticated.status_code == 401
    assert "x-ms-ratelimit-remaining-subscription-reads" in unauthenticated.headers

    started = arm.post(f"{sim.url}{vm}/assessPatches?{API}")
    polled = arm.get(started.headers["Location"])
    # What a real first poll reported (Azure CLI's recorded test_vm_install_patches, 2024-11).
    assert polled.headers["x-ms-ratelimit-remaining-resource"] == (
        "Microsoft.Compute/GetOperationResource;44,Microsoft.Compute/GetOperationSubscriptionMaximum;14999"
    )
    got = arm.get(f"{sim.url}{vm}?{API}")
    assert got.headers["x-ms-ratelimit-remaining-resource"].startswith("Microsoft.Compute/LowCostGet3Min;")
    wait_done(arm, started.headers["Location"])


def test_in_flight_peak_and_start_rate(make_sim: Callable[..., Simulator], arm: requests.Session) -> None:
    sim = make_sim(vms=6, subscriptions=2, time_scale=1.0)  # operations last minutes: all stay in flight
    sub_a, sub_b = (s.lower() for s in sim.subscriptions())
    for vm in sim.vm_ids()[:5]:
        assert arm.post(f"{sim.url}{vm}/installPatches?{API}", json=INSTALL).status_code == 202
    calls = sim.calls()
    assert calls["inFlightBySubscription"] == {sub_a: 3, sub_b: 2, "*": 5}
    assert calls["peakConcurrentBySubscription"] == {sub_a: 3, sub_b: 2, "*": 5}
    starts = calls["operationStartsPerSecond"]
    assert sum(n for _, n in starts[sub_a]) == 3 and sum(n for _, n in starts[sub_b]) == 2
    assert all(second >= 0 for pairs in starts.values() for second, _ in pairs)
    assert calls["budgetScale"] == 1.0 and calls["timeScale"] == 1.0
