"""Token buckets and Compute's guest-patch policy, on a fake clock."""

from __future__ import annotations

import json

import pytest

from tools.azure_simulator.clock import AzureClock, azure_clock
from tools.azure_simulator.config import SimulatorConfig
from tools.azure_simulator.errors import ArmError
from tools.azure_simulator.simulator import Simulator
from tools.azure_simulator.throttling import PatchThrottle, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_burst_then_refill() -> None:
    clock = FakeClock()
    bucket = TokenBucket(3, 0.5, clock)
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    assert bucket.remaining() == 0 and bucket.retry_after() == 2
    clock.now += 1.0
    assert not bucket.try_take() and bucket.retry_after() == 1
    clock.now += 1.0
    assert bucket.try_take()
    clock.now += 1000
    assert bucket.remaining() == 3  # never above capacity


def test_give_back_restores_a_token() -> None:
    bucket = TokenBucket(1, 0.0, FakeClock())
    assert bucket.try_take() and not bucket.try_take()
    bucket.give_back()
    assert bucket.try_take()


def test_patch_policy_per_vm_then_per_subscription() -> None:
    clock = FakeClock()
    throttle = PatchThrottle(2, 60, 3, 60, clock)  # 1 token/s refill each
    assert throttle.charge("vm1", "sub") == (
        "Microsoft.Compute/VMGuestPatchOperationSubscriptionMaximum;2,Microsoft.Compute/VMGuestPatchOperationResource;1"
    )
    throttle.charge("vm1", "sub")
    with pytest.raises(ArmError) as vm_limit:
        throttle.charge("vm1", "sub")
    err = vm_limit.value
    assert err.status == 429 and err.code == "OperationNotAllowed" and err.headers["Retry-After"] == "1"
    detail = err.details[0] if err.details else {}
    assert detail["code"] == "TooManyRequests" and detail["target"] == "VMGuestPatchOperationResource"
    assert err.bucket == "computeGuestPatchVm"
    assert json.loads(detail["message"])["allowedRequestCount"] == 2
    throttle.charge("vm2", "sub")  # the subscription's third and last token
    with pytest.raises(ArmError) as sub_limit:
        throttle.charge("vm3", "sub")
    assert (
        sub_limit.value.details
        and sub_limit.value.details[0]["target"] == "VMGuestPatchOperationSubscriptionMaximum"
        and sub_limit.value.bucket == "computeGuestPatchSubscription"
    )
    assert throttle.per_vm.get("vm3").remaining() == 2  # no per-VM token spent on a refused request
    assert throttle.per_sub.get("sub").remaining() == 0  # the refused per-VM request gave its subscription token back


def test_patch_policy_can_be_disabled() -> None:
    throttle = PatchThrottle(None, None, None, None, FakeClock())
    for _ in range(100):
        assert throttle.charge("vm", "sub") == ""



def test_azures_clock_runs_on_through_a_pause_of_this_machine_and_through_a_step_back() -> None:
    """A paused VM stops CLOCK_MONOTONIC while the wall clock jumps ahead on resume (tools/azure_simulator/clock.py):
    Azure's buckets refill over that pause, as PatchPilot's pacing (on the wall clock) expects them to. A wall
    clock stepped back (NTP) neither runs the simulator backwards nor stops it."""
    wall, mono = [1_000_000.0], [5.0]
    clock = AzureClock(wall=lambda: wall[0], monotonic=lambda: mono[0])
    bucket = TokenBucket(2, 1.0, clock)
    assert clock() == 1_000_000.0
    assert [bucket.try_take() for _ in range(3)] == [True, True, False]
    wall[0] += 13.0  # resumed after 13 s: the wall clock moved on, the monotonic one did not
    assert clock() == 1_000_013.0 and bucket.remaining() == 2
    wall[0] -= 60.0  # stepped back
    assert clock() == 1_000_013.0
    mono[0] += 1.0  # and time goes on
    assert clock() == 1_000_014.0
    assert [bucket.try_take() for _ in range(3)] == [True, True, False]
    mono[0] += 1.0
    assert bucket.try_take()


def test_the_simulator_keeps_one_clock_azures() -> None:
    sim = Simulator(SimulatorConfig(vms=2))
    clocks = {id(sim.engine.clock), id(sim.arm_reads._clock), id(sim.arm_writes._clock),
              id(sim.patch_throttle.per_vm._clock), id(sim.patch_throttle.per_sub._clock),
              *(id(b._clock) for b in sim.compute_reads.values())}
    assert clocks == {id(azure_clock)}
