"""Who called what: every ARM request is counted, including the ones rejected with 4xx/5xx or dropped, and
every 429 by the bucket that refused it.

Tests assert on these counts (e.g. "exactly one installPatches per VM despite duplicate messages"), so a
request is counted as soon as its route is known, before any fault or check can reject it.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

# The throttling buckets whose 429s are counted (always reported, zero included).
BUCKETS = ("armReads", "armWrites", "computeGuestPatchSubscription", "computeGuestPatchVm", "injected")
PER_VM_KINDS = (
    "installPatches",
    "installPatchesAccepted",
    "assessPatches",
    "assessPatchesAccepted",
    "get",
    "instanceView",
    "poll",
    "resourceHealth",  # GET {id}/providers/Microsoft.ResourceHealth/availabilityStatuses/current
)


class CallLog:
    def __init__(self, vm_keys: list[str]) -> None:
        self._lock = threading.Lock()
        self._vm_keys = list(vm_keys)
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._by_vm: dict[str, Counter[str]] = {key: Counter() for key in self._vm_keys}
            self._total: Counter[str] = Counter()
            self._throttled = 0
            self._faults: Counter[str] = Counter()
            self._statuses: Counter[int] = Counter()
            self._throttled_by: Counter[tuple[str, str]] = Counter()  # (bucket, subscription) -> 429s

    def record(self, kind: str, vm_key: str | None = None) -> None:
        with self._lock:
            self._total[kind] += 1
            if vm_key is not None:
                self._by_vm.setdefault(vm_key, Counter())[kind] += 1

    def ensure(self, vm_key: str) -> None:
        """A VM added at run time is counted like the generated ones (and survives reset())."""
        with self._lock:
            if vm_key not in self._vm_keys:
                self._vm_keys.append(vm_key)
            self._by_vm.setdefault(vm_key, Counter())

    def status(self, code: int) -> None:
        with self._lock:
            self._statuses[code] += 1
            if code == 429:
                self._throttled += 1

    def throttle(self, bucket: str, subscription: str | None) -> None:
        """A 429 from `bucket`: armReads, armWrites, computeGuestPatchSubscription, computeGuestPatchVm, injected."""
        with self._lock:
            self._throttled_by[bucket, (subscription or "").lower()] += 1

    def fault(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            by_bucket: Counter[str] = Counter(dict.fromkeys(BUCKETS, 0))
            for (bucket, _), n in self._throttled_by.items():
                by_bucket[bucket] += n
            return {
                "byVm": {
                    key: {k: counts.get(k, 0) for k in PER_VM_KINDS} for key, counts in self._by_vm.items()
                },
                "total": {**{k: 0 for k in (*PER_VM_KINDS, "list", "alerts")}, **dict(self._total)},
                "throttled": self._throttled,
                "faults": sum(self._faults.values()),
                "faultsByKind": dict(self._faults),
                "statuses": {str(k): v for k, v in sorted(self._statuses.items())},
                "throttledByBucket": dict(by_bucket),
                "throttledByBucketAndSubscription": _nested(self._throttled_by),
            }


def _nested(counts: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (bucket, sub), n in sorted(counts.items()):
        out.setdefault(bucket, {})[sub] = n
    return out
