"""The composition root: the app's whole object graph, built once per process from its settings, wired by hand.

    storage       one StorageAccount (its Table transactions without azure-core's per-call thread pools:
                  shared/storage/serial_multipart.py); RunStore, FleetStore, MaintenanceStore, DurationStore;
                  the budget rows
    arm           ArmClient (azure-core pipeline, same-origin before the bearer token)
    runs          WorkQueues (a sender per queue), RunSpecCache, Pacer (the shared ARM budget), a run's own
                  predicted durations (a planned run's from its plan; others: dispatch predicts from the histories)
    features      the machine step's hooks, each built with the ports it needs:
                  rollouts      before_start: a stopped run's machine does not start; Linux pins after the canary
                                progressed: the controller admits machines and closes rollout runs
                  maintenance   before_start: inside the window, once per VM across overlapping windows
                  plans         before_start: a planned run's machine installs its planned patches, or is skipped
                                when its predicted duration no longer fits the window (shared/plans/apply.py)
                  assessments   on_terminal (assessPatches): history and the latest snapshot per machine
    step_ports    what a machine step uses (shared/runs/machine_worker.py StepPorts), each a small Protocol

Nothing here decides anything. Each consumer declares the Protocol it needs beside its own code; `Components`
satisfies them all, and a unit test hands a consumer fakes instead. function_app.py builds one
`ProcessComponents` per process; clients are created on first use and reused across invocations (the
Functions docs' advice on client reuse), not at import: indexing the functions must not need storage or
credentials.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any

from shared.arm.client import ArmClient
from shared.arm.credentials import credential_for
from shared.assessments.results import record_outcome
from shared.core.clock import schedule_now
from shared.core.records import RunRecord, RunSpec
from shared.core.settings import Settings, is_local_development
from shared.egress import EgressSession
from shared.egress.session import get as egress_get
from shared.maintenance.window_guard import WithinWindow
from shared.plans.apply import FollowPlan, planned_seconds
from shared.rollouts.controller import on_progress
from shared.rollouts.start_guard import StoppedOrPinned
from shared.runs.health_check import Probe
from shared.runs.hooks import RunHooks
from shared.runs.machine_worker import StepPorts
from shared.runs.pacing import SPACING_RETRY_AFTERS, Pacer, buckets_from
from shared.runs.poll_rounds import PollRounds
from shared.runs.queues import WorkQueues
from shared.runs.run_durations import RunDurations
from shared.runs.specs import RunSpecCache
from shared.storage import serial_multipart
from shared.storage.budget_store import BudgetStore
from shared.storage.clients import StorageAccount
from shared.storage.duration_store import DurationStore
from shared.storage.fleet_store import FleetStore
from shared.storage.maintenance_store import MaintenanceStore
from shared.storage.plan_store import PlanStore
from shared.storage.run_store import RunStore


class Components:
    """The app's object graph for one set of settings. Each part is built on first use, then kept."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # -- storage -------------------------------------------------------------------------------
    @cached_property
    def account(self) -> StorageAccount:
        serial_multipart.install()  # Table transactions without azure-core's per-call thread pools
        return StorageAccount(self.settings.storage)

    @cached_property
    def store(self) -> RunStore:
        return RunStore(self.settings.storage, self.account)

    @cached_property
    def fleet(self) -> FleetStore:
        return FleetStore(self.settings.storage, self.account,
                          freshness_hours=self.settings.assessments.freshness_hours)

    @cached_property
    def maintenance(self) -> MaintenanceStore:
        return MaintenanceStore(self.settings.storage, self.account)

    @cached_property
    def plans(self) -> PlanStore:
        return PlanStore(self.settings.storage, self.account)

    @cached_property
    def durations(self) -> DurationStore:
        """Each machine's past installation durations (shared/runs/install_history.py)."""
        return DurationStore(self.settings.storage, self.account)

    # -- ARM -----------------------------------------------------------------------------------
    @cached_property
    def arm(self) -> ArmClient:
        return ArmClient(self.settings.arm.endpoint, credential_for(self.settings.arm, self.settings.local),
                         api_version=self.settings.arm.compute_api_version,
                         hybridcompute_api_version=self.settings.arm.hybridcompute_api_version,
                         timeout=self.settings.arm.timeout_seconds)

    @cached_property
    def pacer(self) -> Pacer:
        """The ARM call budget every instance shares (shared/runs/pacing.py)."""
        return Pacer(BudgetStore(self.settings.storage, self.account), buckets_from(self.settings.pacing),
                     lease_tokens=self.settings.pacing.pacing_lease_tokens,
                     spacing_ceiling=SPACING_RETRY_AFTERS * self.settings.retries.default_retry_after_seconds)

    # -- runs ----------------------------------------------------------------------------------
    @cached_property
    def queues(self) -> WorkQueues:
        queue = self.account.queue
        return WorkQueues(operations=queue(self.settings.queues.operations),
                          dispatch=queue(self.settings.queues.dispatch),
                          discovery=queue(self.settings.queues.discovery), events=queue(self.settings.queues.events),
                          polls=queue(self.settings.queues.polls))

    @cached_property
    def specs(self) -> RunSpecCache:
        return RunSpecCache(self.store)

    def run_spec(self, run_id: str) -> RunSpec | None:
        """A run's operation and parameters never change: one Table read per run per process."""
        return self.specs.run_spec(run_id)

    def predicted_seconds(self, run: RunRecord, keys: Sequence[str]) -> Mapping[str, float] | None:
        """A run's own predicted durations, {machine key: seconds}, asked by dispatch before any history
        (shared/runs/install_history.py RunPredictions): a run that applies a plan starts its machines in the plan's
        order, with the plan's predictions (shared/plans/apply.py). Any other run: None."""
        plan_id = str(run.get("planId") or "")
        if not plan_id:
            return None
        planned = planned_seconds(self.plans, plan_id)
        return {key: planned[key] for key in keys if key in planned}

    # Events and hooks are queued through `send_delivery` (shared/events/publish.py DeliveryQueue); every
    # other message through `queues`.
    def send_delivery(self, message: dict[str, Any], delay_seconds: int = 0) -> None:
        self.queues.send_delivery(message, delay_seconds)

    @cached_property
    def hooks_session(self) -> EgressSession:
        """For webhooks and hooks only: never the ARM session, never a bearer token. Every address it
        connects to is checked at connect time (shared/egress/session.py)."""
        return EgressSession(allow_loopback=is_local_development(self.settings))

    @cached_property
    def probe(self) -> Probe:
        """A rollout's health probe: a GET through its own egress session (the hooks' policy, plus the private
        ranges HEALTH_PROBE_NETWORKS opens), the status only, never a bearer token."""
        health = self.settings.health
        session = EgressSession(allow_loopback=is_local_development(self.settings), allowed=health.probe_networks)
        half = health.probe_timeout_seconds / 2
        return lambda url: egress_get(session, url, {"User-Agent": "PatchPilot-HealthProbe"},
                                      connect_seconds=half, read_seconds=half)

    # -- features ------------------------------------------------------------------------------
    @cached_property
    def hooks(self) -> RunHooks:
        window = WithinWindow(self.maintenance, self.store, lambda: schedule_now(self.settings.local))
        plan = FollowPlan(self.plans, lambda: schedule_now(self.settings.local))
        return RunHooks(
            before_start=(StoppedOrPinned(self.store), window, plan),
            before_wait=(window.wait,),
            on_terminal={"assessPatches": lambda target, state, result, run_id:
                         record_outcome(self, target, state, result, run_id)},
            progressed=lambda run_id, machine=None: on_progress(run_id, self, machine),
        )

    @cached_property
    def poll_rounds(self) -> PollRounds:
        """The step queue machine steps send to: step messages, and polls left to their run's rounds."""
        return PollRounds(self.store, self.queues, round_seconds=self.settings.retries.poll_round_seconds)

    @cached_property
    def step_ports(self) -> StepPorts:
        return StepPorts(targets=self.store, specs=self.specs, queue=self.poll_rounds, pacer=self.pacer, arm=self.arm,
                         hooks=self.hooks, events=self, retries=self.settings.retries, health=self.settings.health,
                         probe=self.probe, durations=self.run_durations)

    @cached_property
    def run_durations(self) -> RunDurations:
        return RunDurations()  # this process's view of how long each run's installations take


class ProcessComponents:
    """The app's Components, built once per process from the settings on first use (not at import)."""

    def __init__(self, settings: Callable[[], Settings] = Settings.from_env) -> None:
        self._settings = settings
        self._components: Components | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Components:
        if self._components is None:
            with self._lock:
                if self._components is None:
                    self._components = Components(self._settings())
        return self._components
