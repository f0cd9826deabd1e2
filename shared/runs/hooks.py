"""Where features plug into a machine's step. The run mechanism knows nothing of maintenance windows,
rollouts or assessment history: a feature is asked for a decision and the mechanism applies it; a feature
never acts on the mechanism's behalf. Each feature registers what it adds at the composition root
(shared/composition.py), built with the small ports it needs.

    before_start  [(StartContext) -> Proceed(body) | Skip(code, message)], in order: each sees the body the
                  one before it returned; the first Skip ends the machine Skipped with that reason
    before_wait   [(WaitContext) -> Skip | Fits | None]: a machine not yet started is about to wait (Retry-After,
                  a conflict's backoff, the ARM budget); Skip ends it Skipped instead (the wait cannot fit its
                  maintenance window); Fits says a window bounds the wait, so no retry count needs to; None: no
                  opinion (the retry limits apply)
    on_terminal   {operation: (target with its final changes, state, result, run_id) -> extra target
                  fields}; called before the machine's final write, so a redelivery repeats it
    progressed    (run_id, machine key | None) -> bool: a machine (or a scope's listing: None) finished; the run may
                  admit more
                  machines (a rollout) or close. True: this call closed the run (the sweeper counts it)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from shared.core.ids import MachineRef
from shared.core.records import RunSpec
from shared.core.states import MachineState


@dataclass(frozen=True)
class StartContext:
    """What a feature sees of a machine about to start; read-only."""

    run_id: str
    machine: MachineRef
    os_type: str  # "Windows", "Linux", or "" when unknown
    spec: RunSpec
    body: dict[str, Any] | None  # the operation's request body as it stands (None: the operation takes none)
    first_claimed_at: str = ""  # an earlier try claimed it (ISO): Azure may be running its operation already
    # Called by a hook before it writes anything of its own (a lease): raises ConflictError when the machine's row
    # changed since the step read it, or since its message carried it (machine_worker.py MachineStep._confirm_row).
    confirm: Callable[[], None] = field(default=lambda: None, compare=False)


@dataclass(frozen=True)
class Proceed:
    """Start the machine with `body` (the one given, or changed: a capped maximumDuration, pinned packages)."""

    body: dict[str, Any] | None


@dataclass(frozen=True)
class Skip:
    """Do not start the machine: it ends Skipped with PatchPilot's `code` and `message` (ARM's error shape)."""

    code: str
    message: str


Decision = Proceed | Skip


@dataclass(frozen=True)
class WaitContext:
    """A machine that has not started, about to wait `seconds` before its next try, and why (ARM's words)."""

    run_id: str
    machine: MachineRef
    spec: RunSpec
    seconds: int
    reason: str


@dataclass(frozen=True)
class Fits:
    """The wait fits the machine's window, and the window (not a retry count) bounds how long it may go on."""


class BeforeWait(Protocol):
    def __call__(self, ctx: WaitContext) -> Skip | Fits | None: ...


class BeforeStart(Protocol):
    def __call__(self, ctx: StartContext) -> Decision: ...


class OnTerminal(Protocol):
    def __call__(self, target: Mapping[str, Any], state: MachineState, result: dict[str, Any] | None,
                 run_id: str) -> dict[str, Any]: ...


class Progressed(Protocol):
    def __call__(self, run_id: str, machine: str | None = None) -> bool: ...


def _no_progress_hook(run_id: str, machine: str | None = None) -> bool:
    raise RuntimeError("no `progressed` hook is registered (see shared/composition.py)")


@dataclass(frozen=True)
class RunHooks:
    before_start: Sequence[BeforeStart] = ()
    before_wait: Sequence[BeforeWait] = ()
    on_terminal: Mapping[str, OnTerminal] = field(default_factory=dict)
    progressed: Progressed = _no_progress_hook

    def decide(self, ctx: StartContext) -> Decision:
        """Ask each before_start hook in turn; a Proceed hands its body to the next."""
        for hook in self.before_start:
            decision = hook(ctx)
            if isinstance(decision, Skip):
                return decision
            ctx = replace(ctx, body=decision.body)
        return Proceed(ctx.body)

    def decide_wait(self, ctx: WaitContext) -> Skip | Fits | None:
        """The first Skip of the before_wait hooks; else Fits if one said so; else None."""
        fits: Fits | None = None
        for hook in self.before_wait:
            decision = hook(ctx)
            if isinstance(decision, Skip):
                return decision
            fits = fits or decision
        return fits
