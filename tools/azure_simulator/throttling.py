"""Token buckets as ARM (since 2024) and Compute describe them: a burst capacity refilled at a steady rate.

ARM: per subscription, reads 250 tokens + 25/s, writes 200 + 10/s. Compute: per resource and per
subscription buckets per operation group, refilled per minute. Refill runs on real time (Azure's clock: clock.py)
multiplied by the simulator's `budget_scale` (1 = Azure's rates; see SimulatorConfig.budget_scale), never on the
simulated clock.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tools.azure_simulator.clock import azure_clock
from tools.azure_simulator.errors import ArmError


@dataclass
class TokenBucket:
    """`capacity` tokens, refilled at `rate` tokens per second; one request takes one token."""

    capacity: float
    rate: float
    clock: Callable[[], float] = azure_clock
    tokens: float = field(init=False)
    _stamp: float = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.tokens = float(self.capacity)
        self._stamp = self.clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(float(self.capacity), self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_take(self) -> bool:
        with self._lock:
            self._refill()
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            return False

    def give_back(self) -> None:
        """Undo a take when a later check rejects the request (ARM doesn't charge rejected requests)."""
        with self._lock:
            self.tokens = min(float(self.capacity), self.tokens + 1.0)

    def remaining(self) -> int:
        with self._lock:
            self._refill()
            return int(self.tokens)

    def retry_after(self) -> int:
        """Whole seconds until one token is back (at least 1, as ARM never says 0 on a 429)."""
        with self._lock:
            self._refill()
            missing = max(0.0, 1.0 - self.tokens)
            if self.rate <= 0:
                return 3600
            return max(1, math.ceil(missing / self.rate))


class BucketSet:
    """Lazily created buckets keyed by scope (subscription id, VM id), all with the same shape."""

    def __init__(
        self,
        capacity: float | None,
        rate_per_second: float | None,
        clock: Callable[[], float] = azure_clock,
        scale: float = 1.0,
    ) -> None:
        self.enabled = capacity is not None and rate_per_second is not None
        self._capacity = float(capacity or 0)
        self._rate = float(rate_per_second or 0) * scale
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> TokenBucket:
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(self._capacity, self._rate, self._clock)
            return bucket

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()


class PatchThrottle:
    """Compute's guest-patch policy for installPatches/assessPatches: a per-subscription and a per-VM bucket.

    Compute documents the mechanism (per-resource and per-subscription token buckets refilled per minute,
    429 OperationNotAllowed/TooManyRequests, `x-ms-ratelimit-remaining-resource: <RP>/<policy>;<count>`).
    The policy names and burst sizes are the ones a real installPatches 202 reported (Azure CLI's recorded test
    test_vm_install_patches.yaml, 2024-11: `Microsoft.Compute/VMGuestPatchOperationSubscriptionMaximum;599,
    Microsoft.Compute/VMGuestPatchOperationResource;5` after one call, so bursts of 600 and 6); the refill
    rates (200/min per subscription, 2/min per VM) are the simulator's assumption.
    """

    VM_POLICY = "VMGuestPatchOperationResource"
    SUB_POLICY = "VMGuestPatchOperationSubscriptionMaximum"
    # Names of the buckets in the simulator's 429 counts.
    BUCKET_NAMES = {VM_POLICY: "computeGuestPatchVm", SUB_POLICY: "computeGuestPatchSubscription"}

    def __init__(  # noqa: PLR0917 - mirrors the four config fields it is built from
        self,
        vm_burst: int | None,
        vm_per_min: float | None,
        sub_burst: int | None,
        sub_per_min: float | None,
        clock: Callable[[], float] = azure_clock,
        scale: float = 1.0,
    ) -> None:
        self.per_vm = BucketSet(vm_burst, None if vm_per_min is None else vm_per_min * scale / 60.0, clock)
        self.per_sub = BucketSet(sub_burst, None if sub_per_min is None else sub_per_min * scale / 60.0, clock)
        self._vm_burst = vm_burst
        self._sub_burst = sub_burst

    def charge(self, vm_key: str, sub_key: str) -> str:
        """Take one token from each enabled bucket; return the header value, or raise a Compute 429
        (its `bucket` names which one: computeGuestPatchSubscription or computeGuestPatchVm)."""
        taken: list[TokenBucket] = []
        for buckets, key, policy, burst in (
            (self.per_sub, sub_key, self.SUB_POLICY, self._sub_burst),
            (self.per_vm, vm_key, self.VM_POLICY, self._vm_burst),
        ):
            if not buckets.enabled:
                continue
            bucket = buckets.get(key)
            if bucket.try_take():
                taken.append(bucket)
                continue
            for earlier in taken:
                earlier.give_back()
            now = datetime.now(UTC)
            wait = bucket.retry_after()
            detail = json.dumps(
                {
                    "operationGroup": policy,
                    "startTime": now.isoformat(),
                    "endTime": (now + timedelta(seconds=wait)).isoformat(),
                    "allowedRequestCount": burst,
                    "measuredRequestCount": (burst or 0) + 1,
                }
            )
            raise ArmError(
                429,
                "OperationNotAllowed",
                THROTTLE_MESSAGE,
                details=[{"code": "TooManyRequests", "target": policy, "message": detail}],
                headers={
                    "Retry-After": str(wait),
                    "x-ms-ratelimit-remaining-resource": self.header(vm_key, sub_key),
                },
                bucket=self.BUCKET_NAMES[policy],
            )
        return self.header(vm_key, sub_key)

    def header(self, vm_key: str, sub_key: str) -> str:
        """`Microsoft.Compute/<policy>;<remaining>` pairs, subscription first (as Compute sends them)."""
        parts = []
        if self.per_sub.enabled:
            parts.append(f"Microsoft.Compute/{self.SUB_POLICY};{self.per_sub.get(sub_key).remaining()}")
        if self.per_vm.enabled:
            parts.append(f"Microsoft.Compute/{self.VM_POLICY};{self.per_vm.get(vm_key).remaining()}")
        return ",".join(parts)

    def reset(self) -> None:
        self.per_vm.reset()
        self.per_sub.reset()


THROTTLE_MESSAGE = (
    "The server rejected the request because too many requests have been received for this subscription."
)
