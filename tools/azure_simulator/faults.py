"""Injected misbehaviour: dropped connections, latency, 5xx, spurious 409s and 429s, failing patches.

One seeded RNG, so a test that sets `seed` gets the same sequence of faults for the same sequence of
requests. Faults that stop a request (drop, 5xx, 429) are rolled before the request touches any state,
so a client may always retry them safely.
"""

from __future__ import annotations

import random
import threading
from typing import Any

from tools.azure_simulator.config import FaultSettings
from tools.azure_simulator.errors import ArmError


class FaultInjector:
    def __init__(self, settings: FaultSettings, default_seed: int) -> None:
        self._lock = threading.Lock()
        self._default_seed = default_seed
        self.settings = FaultSettings()
        self.configure(settings.as_dict())

    def configure(self, values: dict[str, Any]) -> FaultSettings:
        with self._lock:
            self.settings.update(values)
            if "seed" in values or not hasattr(self, "_rng"):
                seed = self.settings.seed if self.settings.seed is not None else self._default_seed
                self._rng = random.Random(f"faults:{seed}")
            return self.settings

    def reset(self) -> None:
        with self._lock:
            self.settings = FaultSettings()
            self._rng = random.Random(f"faults:{self._default_seed}")

    def roll(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._lock:
            return rate >= 1 or self._rng.random() < rate

    def rng(self) -> random.Random:
        """A child RNG (e.g. for per-patch failures), drawn from the fault stream under the lock."""
        with self._lock:
            return random.Random(self._rng.getrandbits(64))

    def should_drop(self) -> bool:
        return self.roll(self.settings.drop_rate)

    def latency_seconds(self) -> float:
        return self.settings.latency_ms / 1000.0

    def server_error(self) -> ArmError | None:
        """A random 500 or 503 in ARM's shape; 503s sometimes carry Retry-After, as ARM's do."""
        if not self.roll(self.settings.error_rate):
            return None
        with self._lock:
            unavailable = self._rng.random() < 0.5
            retry_after = self._rng.choice((None, 1, 2, 5)) if unavailable else None
        if unavailable:
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            return ArmError(
                503,
                "ServiceUnavailable",
                "The server (leader) is currently unavailable. Please try again later.",
                headers=headers,
            )
        return ArmError(
            500, "InternalServerError", "Encountered internal server error. Please try again later."
        )

    def throttled(self) -> bool:
        return self.roll(self.settings.throttle_rate)

    def conflict(self) -> bool:
        return self.roll(self.settings.conflict_rate)
