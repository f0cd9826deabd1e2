"""The small Protocols the run machinery's consumers are typed against, by role. A module's own Protocol
names the roles it uses (`class SweepDeps(RunRows, Dispatching, Protocol)`); shared/composition.py's
`Components` satisfies them all, and a unit test hands a fake with just those members.

Events and hooks are queued through shared/events/publish.py's `DeliveryQueue`. The machine step's own
ports (TargetStore, RunSpecs, StepQueue, Arm) are in shared/runs/machine_worker.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from shared.core.records import RunSpec
from shared.core.settings import Settings

if TYPE_CHECKING:
    from shared.arm.client import ArmClient
    from shared.runs.hooks import RunHooks
    from shared.runs.machine_worker import StepPorts
    from shared.runs.pacing import Pacer
    from shared.runs.queues import WorkQueues
    from shared.storage.fleet_store import FleetStore
    from shared.storage.run_store import RunStore


class RunRows(Protocol):
    """The run and machine rows (shared/storage/run_store.py), and the app's settings."""

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> RunStore: ...

    def run_spec(self, run_id: str) -> RunSpec | None: ...


class Fleet(Protocol):
    """The fleet's machine and assessment rows (shared/storage/fleet_store.py)."""

    @property
    def fleet(self) -> FleetStore: ...


class Dispatching(Protocol):
    """Sends the run machinery's messages (shared/runs/queues.py `WorkQueues`)."""

    @property
    def queues(self) -> WorkQueues: ...


class Paced(Protocol):
    """The shared ARM budget (shared/runs/pacing.py) and ARM itself."""

    @property
    def pacer(self) -> Pacer: ...

    @property
    def arm(self) -> ArmClient: ...


class Features(Protocol):
    """What the features registered (shared/runs/hooks.py), and the machine step's ports."""

    @property
    def hooks(self) -> RunHooks: ...

    @property
    def step_ports(self) -> StepPorts: ...
