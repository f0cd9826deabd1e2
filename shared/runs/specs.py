"""A run's spec (operation, parameters, rollout, window) per process: it never changes once accepted."""

from __future__ import annotations

import threading
from typing import Protocol

from shared.core.records import RunSpec

MAX_CACHED_SPECS = 4096


class SpecSource(Protocol):
    def get_run_spec(self, run_id: str) -> RunSpec | None: ...


class RunSpecCache:
    """One Table read per run per process; the oldest of MAX_CACHED_SPECS is dropped first."""

    def __init__(self, source: SpecSource) -> None:
        self._source = source
        self._specs: dict[str, RunSpec] = {}
        self._lock = threading.Lock()

    def run_spec(self, run_id: str) -> RunSpec | None:
        spec = self._specs.get(run_id)
        if spec is None:
            spec = self._source.get_run_spec(run_id)
            if spec is None:
                return None
            with self._lock:  # sync functions share a thread pool: evict and insert as one step
                if len(self._specs) >= MAX_CACHED_SPECS:
                    self._specs.pop(next(iter(self._specs)), None)  # oldest first: insertion order
                self._specs[run_id] = spec
        return spec
