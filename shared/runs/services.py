"""What the run machinery needs from the outside world, built once per process.

Functions are invoked many times per process; clients (HTTP session, Table and Queue clients,
credential) are created on first use and reused, so warm invocations pay no set-up cost.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from azure.storage.queue import QueueClient

from shared.arm.client import ArmClient
from shared.arm.credentials import credential_for
from shared.core.messages import DiscoveryMessage, DispatchMessage, StepMessage, encode_delivery
from shared.core.records import RunSpec
from shared.core.settings import Settings, is_local_development
from shared.egress import EgressSession
from shared.runs.hooks import RunHooks
from shared.runs.pacing import Pacer, buckets_from
from shared.storage.budget_store import BudgetStore
from shared.storage.clients import StorageAccount
from shared.storage.fleet_store import FleetStore
from shared.storage.maintenance_store import MaintenanceStore
from shared.storage.run_store import RunStore

log = logging.getLogger(__name__)
MAX_VISIBILITY_SECONDS = 7 * 24 * 3600 - 1  # Azure Queue's limit for a message's initial invisibility
MAX_CACHED_SPECS = 4096


@dataclass
class Services:
    """Built once per process by the composition root (shared/composition.py) and handed to every trigger.

    `hooks` are what the features (rollouts, maintenance windows, assessment history) registered."""

    settings: Settings
    hooks: RunHooks = field(default_factory=RunHooks)
    sent: Counter[str] = field(default_factory=Counter)  # queue messages sent, by queue (for metrics)
    _specs: dict[str, RunSpec] = field(default_factory=dict, repr=False)
    _specs_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @cached_property
    def account(self) -> StorageAccount:
        return StorageAccount(self.settings)

    @cached_property
    def store(self) -> RunStore:
        return RunStore(self.settings, self.account)

    @cached_property
    def fleet(self) -> FleetStore:
        return FleetStore(self.settings, self.account)

    @cached_property
    def maintenance(self) -> MaintenanceStore:
        return MaintenanceStore(self.settings, self.account)

    @cached_property
    def pacer(self) -> Pacer:
        """The ARM call budget every instance shares (shared/runs/pacing.py)."""
        return Pacer(BudgetStore(self.settings, self.account), buckets_from(self.settings),
                     lease_tokens=self.settings.pacing_lease_tokens)

    @cached_property
    def arm(self) -> ArmClient:
        return ArmClient(
            self.settings.arm_endpoint,
            credential_for(self.settings),
            api_version=self.settings.compute_api_version,
            hybridcompute_api_version=self.settings.hybridcompute_api_version,
            timeout=self.settings.arm_timeout_seconds,
        )

    @cached_property
    def operations_queue(self) -> QueueClient:
        return self.account.queue(self.settings.operations_queue)

    @cached_property
    def dispatch_queue(self) -> QueueClient:
        return self.account.queue(self.settings.dispatch_queue)

    def send_step(self, run_id: str, machine: str, seq: int, delay_seconds: int = 0, *,
                  held: tuple[str, ...] = ()) -> None:
        """A delayed message is how we wait: the function returns, the queue brings us back later.
        `held`: the ARM budget buckets the step's tokens are already reserved in (shared/runs/pacing.py)."""
        self._send(self.operations_queue, "operations", StepMessage(run_id, machine, seq, held).encode(),
                   delay_seconds)

    @cached_property
    def discovery_queue(self) -> QueueClient:
        return self.account.queue(self.settings.discovery_queue)

    def send_discovery(self, run_id: str, scope: int, page: int, delay_seconds: int = 0, *,
                       held: bool = False) -> None:
        self._send(self.discovery_queue, "discovery", DiscoveryMessage(run_id, scope, page, held).encode(),
                   delay_seconds)

    @cached_property
    def events_queue(self) -> QueueClient:
        return self.account.queue(self.settings.events_queue)

    @cached_property
    def hooks_session(self) -> EgressSession:
        """For webhooks and hooks only: never the ARM session, never a bearer token. Every address it
        connects to is checked at connect time (shared/egress/session.py)."""
        return EgressSession(allow_loopback=is_local_development(self.settings))

    def send_delivery(self, message: dict[str, Any], delay_seconds: int = 0) -> None:
        """An event or hook call to make, off the caller's path (shared/events/delivery.py)."""
        self._send(self.events_queue, "events", encode_delivery(message), delay_seconds)

    def send_dispatch(self, run_id: str) -> None:
        self._send(self.dispatch_queue, "dispatch", DispatchMessage(run_id).encode())

    def send_release(self, run_id: str, release_from: str, delay_seconds: int) -> None:
        """Come back at `delay_seconds` to queue the start messages due from `release_from` on (dispatch.py)."""
        self._send(self.dispatch_queue, "dispatch", DispatchMessage(run_id, release_from=release_from).encode(),
                   delay_seconds)

    def send_advance(self, run_id: str, delay_seconds: int = 0) -> None:
        """Ask the rollout controller to look at the run again (after a soak, or when it was busy)."""
        self._send(self.dispatch_queue, "dispatch", DispatchMessage(run_id, advance=True).encode(), delay_seconds)

    def _send(self, client: QueueClient, name: str, body: str, delay_seconds: int = 0) -> None:
        delay = max(0, min(int(delay_seconds), MAX_VISIBILITY_SECONDS))
        client.send_message(body, visibility_timeout=delay or None)
        self.sent[name] += 1

    def run_spec(self, run_id: str) -> RunSpec | None:
        """A run's operation and parameters never change, so one Table read per run per process."""
        spec = self._specs.get(run_id)
        if spec is None:
            spec = self.store.get_run_spec(run_id)
            if spec is None:
                return None
            with self._specs_lock:  # sync functions share a thread pool: evict and insert as one step
                if len(self._specs) >= MAX_CACHED_SPECS:
                    self._specs.pop(next(iter(self._specs)), None)  # oldest first: insertion order
                self._specs[run_id] = spec
        return spec
