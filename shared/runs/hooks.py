"""Where features plug into a machine's step. The run mechanism knows nothing of maintenance windows,
rollouts or assessment history; each feature registers what it adds here, at the composition root
(shared/composition.py), and the machine step calls what is registered.

    before_start     (step, spec, body, os_type) -> (body, "") to go on, possibly with a changed body,
                     or (None, outcome) when the hook ended the machine itself (e.g. Skipped)
    on_terminal      {operation: (svc, target with its final changes, state, result, run_id) -> extra
                     target fields}; called before the machine's final write, so a redelivery repeats it
    advance          (run_id, svc) -> what happened: the rollout controller, which admits machines and
                     closes rollout runs; without it, advance_run raises RuntimeError (a wiring error)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.core.states import MachineState

if TYPE_CHECKING:
    from shared.core.records import RunSpec
    from shared.runs.machine_worker import MachineStep
    from shared.runs.services import Services

BeforeStart = Callable[["MachineStep", "RunSpec", "dict[str, Any] | None", str], "tuple[dict[str, Any] | None, str]"]
OnTerminal = Callable[["Services", "dict[str, Any]", MachineState, "dict[str, Any] | None", str], "dict[str, Any]"]
Advance = Callable[[str, "Services"], str]


@dataclass
class RunHooks:
    before_start: list[BeforeStart] = field(default_factory=list)
    on_terminal: dict[str, OnTerminal] = field(default_factory=dict)
    advance: Advance | None = None

    def advance_run(self, run_id: str, svc: Services) -> str:
        if self.advance is None:
            raise RuntimeError("no rollout controller is registered (see shared/composition.py)")
        return self.advance(run_id, svc)
