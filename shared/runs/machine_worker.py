"""One step of one machine's operation, per queue message.

A step loads the target, checks the message is current (`seq`), makes at most one ARM call, and
records the outcome with an ETag-conditional update before queuing the next step. So:
- a duplicated message finds `seq` moved on (or loses the ETag race) and does nothing;
- the `Queued → Starting` claim happens before `installPatches` is sent, so two deliveries can
  never both send it; what Azure already did is read from the VM's instance view before sending,
  and to settle a claim whose worker died (recover_claim; shared/arm/patch_status.py);
- waiting (Retry-After, backoff, polling) is a delayed queue message, never a sleep.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from functools import cached_property
from typing import Any, Protocol

from shared.arm import calls, hybrid
from shared.arm.calls import GUEST_PATCH, INSTANCE_VIEW, POLL_OPERATION, ArmCall
from shared.arm.client import ArmResponse
from shared.arm.errors import error_columns, operation_error, own_error_columns, result_error, stored_error
from shared.arm.health import NOT_RUNNING, SignalReading
from shared.arm.operations import (
    NO_RESULT,
    VM_NOT_RUNNING,
    Done,
    Failed,
    Outcome,
    OutcomeUnknown,
    Pending,
    Retry,
    Started,
    classify_poll,
    classify_read,
    classify_start,
    no_answer,
)
from shared.arm.patch_results import install_patches, not_selected_by_classification
from shared.arm.patch_status import (
    OUTCOME_UNKNOWN,
    classify_instance_view,
    installation_outcome,
    installation_since,
    parse_time,
)
from shared.core.clock import iso, parse_iso, utcnow
from shared.core.errors import ArmAuthenticationError, ArmConnectionError, ConflictError, UntrustedEndpointError
from shared.core.ids import MachineRef
from shared.core.messages import CarriedRow, StepMessage
from shared.core.records import THROTTLED_AT_COLUMN, HealthCheck, MachineRecord, RunSpec
from shared.core.settings import HealthSettings, RetrySettings
from shared.core.states import TERMINAL_STATES, WINDOW_EXCEEDED, MachineState
from shared.core.telemetry import (
    MACHINE_ID,
    QUEUE_STEP,
    RUN_ID,
    annotate,
    budget_wait,
    machines_completed,
    machines_failed,
    machines_started,
)
from shared.events.publish import DeliveryQueue, emit, run_subject
from shared.runs import health_check
from shared.runs.health_check import Probe, Round, Wait
from shared.runs.hooks import Fits, RunHooks, Skip, StartContext, WaitContext
from shared.runs.operation_kinds import INSTALL, KINDS, OperationKind
from shared.runs.pacing import Budget, paced_delay, record_call
from shared.runs.retry_policy import first_poll_delay, later_poll_delay, poll_delay, retry_delay, retry_limit
from shared.runs.run_durations import DurationHints
from shared.validation.resource_ids import parse_machine_id

log = logging.getLogger(__name__)
MAX_RECORDED_CALLS = 25
# An event travels as one queue message (64 KiB, base64-encoded: 48K characters of JSON) per webhook:
# its error is bounded tighter than the record's (shared.arm.errors.MAX_ERROR_CHARS).
EVENT_ERROR_CHARS = 16_000
# States whose next step makes no ARM write and no other row's write before its own row's If-Match write (run_step):
# their messages carry the row. Running and Verifying (a poll, a health read) and Queued: before its claim a start
# only reads ARM (the machine's GET, a health baseline) and reserves budget tokens (given back if the row turns out
# changed), and a maintenance window's hook confirms the row before it writes the VM's lease (StartContext.confirm);
# the claim is If-Match on the carried ETag, so installPatches is never sent on a row that changed since (a cancel
# is read from the run row, shared/rollouts/start_guard.py). Not Starting: recover_claim may POST again on what it
# reads.
CARRIED_STATES = frozenset({MachineState.QUEUED.value, MachineState.RUNNING.value, MachineState.VERIFYING.value})


@dataclass(frozen=True)
class MachineRead:
    """What the GET of a machine before its start said: its OS type ("" when the model has none)."""

    os_type: str


class StepResult(str, Enum):
    """What one step did (logged by the queue trigger; asserted by tests)."""

    STARTED = "started"  # ARM accepted the operation; its Location is polled next
    PENDING = "pending"  # polled: still running
    VERIFYING = "verifying"  # the installation ended; its health is read (again) after a delay
    FOLLOWING = "following"  # an installation found in the instance view is this run's: followed there
    PACED = "paced"  # no ARM budget now: back later, holding the tokens reserved for then
    NO_BUDGET = "no-budget"  # a poll round's poll found no budget now: the token went back, the machine stays due
    RETRY_THROTTLED = "retry-throttled"
    RETRY_TRANSIENT = "retry-transient"
    RETRY_CONFLICT = "retry-conflict"
    LOST_CLAIM = "lost-claim"  # another delivery claimed the machine first
    CLAIMED_ELSEWHERE = "claimed-elsewhere"  # a fresh claim: looked at again when it runs out
    LOST_RACE = "lost-race"  # another delivery moved the row first (ETag)
    MISSING = "missing"  # no such machine row
    FINISHED = "finished"  # the machine had ended already
    STALE = "stale"  # the message's seq is behind the row's: a duplicate
    IGNORED = "ignored"
    COMPLETED = MachineState.COMPLETED.value  # the machine ended, in this state
    FAILED = MachineState.FAILED.value
    TIMED_OUT = MachineState.TIMED_OUT.value
    SKIPPED = MachineState.SKIPPED.value
    OUTCOME_UNKNOWN = MachineState.OUTCOME_UNKNOWN.value
    UNHEALTHY = MachineState.UNHEALTHY.value


class TargetStore(Protocol):
    """The machine rows a step reads and writes (shared/storage/run_store.py `RunStore` is one)."""

    def get_target(self, run_id: str, key: str) -> MachineRecord | None: ...

    def update_target(self, target: MachineRecord, changes: dict[str, Any]) -> MachineRecord: ...

    def save_patches(self, run_id: str, key: str, patches: list[dict[str, Any]]) -> None: ...


class RunSpecs(Protocol):
    """A run's operation and parameters (shared/runs/specs.py caches them per process)."""

    def run_spec(self, run_id: str) -> RunSpec | None: ...


class StepQueue(Protocol):
    """Where a step queues the next one, delayed: the way a step waits (shared/runs/queues.py)."""

    def send_step(self, run_id: str, machine: str, seq: int, delay_seconds: int = 0, *,
                  held: tuple[str, ...] = (), poll: bool = False, row: CarriedRow | None = None) -> None: ...

    def send_poll(self, run_id: str, machine: str, seq: int, delay_seconds: int, at: datetime) -> None:
        """The machine (its row just written Running, `pollRound`, `nextActionAt` = `at`, `delay_seconds` from the
        step's now) is polled by its run's rounds (shared/runs/poll_rounds.py): one must come by `at`."""


class Arm(Protocol):
    """ARM, one call value at a time (shared/arm/client.py `ArmClient` is one)."""

    def send(self, call: ArmCall, target: MachineRef | str, body: Any = None) -> ArmResponse: ...

    def url_for(self, call: ArmCall, machine: MachineRef, **query: str) -> str: ...

    def ensure_trusted(self, url: str) -> str: ...


@dataclass(frozen=True)
class StepPorts:
    """What a machine step uses, each a small Protocol, wired at shared/composition.py (a unit test hands fakes:
    tests/unit/test_machine_step.py)."""

    targets: TargetStore
    specs: RunSpecs
    queue: StepQueue
    pacer: Budget
    arm: Arm
    hooks: RunHooks
    events: DeliveryQueue
    retries: RetrySettings
    health: HealthSettings
    probe: Probe
    durations: DurationHints


class MachineStep:
    """Carries one target through one step; each entry point returns a `StepResult` (for logs and tests)."""

    def __init__(self, target: MachineRecord, ports: StepPorts, rng: random.Random | None = None,
                 held: tuple[str, ...] = (), carried: bool = False, *,
                 deferred: list[tuple[MachineRecord, dict[str, Any]]] | None = None) -> None:
        self.target = target
        # a poll round's step (shared/runs/poll_rounds.py): a machine left Running is not written here but added
        # to this list, which the round writes in batches and covers with its next round
        self.deferred = deferred
        # acting on the row its message carried (run_step): confirmed against storage before any write that is not
        # the row's own If-Match update (_confirm_row)
        self.carried = carried
        self.held = set(held)  # the ARM budget buckets this step's tokens are already reserved in (pacing.py)
        self.refused: set[str] = set()  # budgets of a call ARM answered 429: their tokens were not spent
        self.ports = ports
        self.retries = ports.retries
        self.rng = rng
        self.now = utcnow()
        self.calls: list[dict[str, Any]] = json.loads(target.get("armCalls") or "[]")

    @property
    def run_id(self) -> str:
        return self.target.run_id

    @cached_property
    def machine(self) -> MachineRef:
        return parse_machine_id(self.target["resourceId"], target="resourceId")

    # -- entry points --------------------------------------------------------------------------
    def start(self, *, settled: bool = False) -> StepResult:
        """Claim the machine and send its operation. `settled`: Azure was just asked whether an
        installation already runs (recover_claim), so the check before sending is not repeated."""
        spec = self.ports.specs.run_spec(self.run_id)
        if spec is None or spec.operation not in KINDS:
            return self.fail("RunNotFound", "the run this machine belongs to no longer exists")
        kind = KINDS[spec.operation]
        os_type = str(self.target.get("osType") or "")
        # An Arc machine is always read first: its agent's connection status (properties.status) decides whether
        # Azure can run the operation at all, and a listing's may be stale. A VM is read only for its OS.
        if self.machine.is_hybrid or not os_type:
            read = self._read_machine()
            if not isinstance(read, MachineRead):
                return read  # paced, retried, failed or skipped: this step is over
            os_type = read.os_type or os_type
        body, unusable = kind.request_body(spec.parameters, os_type)
        if unusable:
            return self.fail("NoParametersForOsType", unusable, extra={"osType": os_type})
        decision = self.ports.hooks.decide(StartContext(self.run_id, self.machine, os_type, spec, body,
                                                        str(self.target.get("firstClaimedAt") or ""),
                                                        confirm=self._confirm_row))
        if isinstance(decision, Skip):  # rollouts (stopped? one patch set), maintenance windows
            return self.skip(decision.code, decision.message, osType=os_type)
        body = decision.body
        baseline: dict[str, Any] = {}
        if spec.health_check is not None and kind is INSTALL and not self.target.get("baselineAt"):
            # The same signals, read before anything changes: a machine already unhealthy is not the patch's doing.
            got = self._read_health(spec.health_check, "baseline", None, osType=os_type)
            if isinstance(got, StepResult):
                return got
            # A machine that is not running is not "unhealthy" before patching: the start answers it as always
            # (VMNotRunning, MachineNotConnected); after patching it is.
            if health_check.verdict([r for r in got if r.code != NOT_RUNNING]) == "Unhealthy":
                return self._unhealthy_before(got, os_type)
            baseline = {"baselineAt": iso(self.now), "healthBaseline": _readings_json(got), "healthRound": ""}
        settle = not settled and kind.settles_from(self.machine)
        # Budget before the claim (the POST's, and the instance-view read's when it settles first): a step that
        # must wait goes back to the queue still Queued.
        budgets = kind.start_budgets(self.machine, settle=settle)
        if (paced := self._paced(budgets)) is not None:
            return self.paced(*paced, osType=os_type, **baseline)
        # Reserved for now: held by this step until its calls spend them, so a carried row found changed at the
        # claim hands them to the second look (run_step) instead of dropping them.
        self.held |= set(budgets)
        # The claim: after this succeeds no other delivery of this message can send the operation.
        # firstClaimedAt stays: an installation that started after it is this run's (patch_status.py).
        since = self._installations_since(spec)
        try:
            self._update({"state": MachineState.STARTING.value, "claimedAt": iso(self.now), **baseline,
                          "firstClaimedAt": self.target.get("firstClaimedAt") or iso(self.now), "osType": os_type,
                          **({"agentStatus": self.target["agentStatus"]} if self.target.get("agentStatus") else {})})
        except ConflictError:
            if self.carried:
                raise  # the carried row is out of date, not necessarily claimed: run_step reads it and looks again
            return StepResult.LOST_CLAIM
        if settle:
            # An answer lost (dropped connection, a crash after Azure accepted it, a storage write
            # lost) must not become a second installation: one instance view read per start, behind
            # the claim so a duplicate message does not repeat it.
            found = self._settle_from_azure(since, recovering=False)
            if found is not None:
                return found
        try:
            resp = self._call(kind.call, self.machine, body)
        except (ArmConnectionError, ArmAuthenticationError) as exc:
            # Dropped before an answer. A retry is safe in the common case (request never reached
            # ARM); if ARM had accepted it, the retry meets 409 while that operation runs.
            return self.retry(no_answer(exc), phase="start")
        return self.apply(classify_start(resp, default_retry_after=self.retries.default_retry_after_seconds),
                          phase="start")

    def _read_machine(self) -> MachineRead | StepResult:
        """GET the machine before its start: its OS type (`""` when the model has none), or what this step did
        instead (paced, retried, failed, or skipped: an Arc machine whose agent is not connected)."""
        call = calls.get_machine(self.machine)
        if (paced := self._paced(call.budgets)) is not None:
            return self.paced(*paced)
        try:
            resp = self._call(call, self.machine)
        except (ArmConnectionError, ArmAuthenticationError) as exc:
            return self.retry(no_answer(exc), phase="start")
        if resp.status != 200:
            outcome = classify_start(resp, default_retry_after=self.retries.default_retry_after_seconds)
            return self.apply(outcome if isinstance(outcome, Retry | Failed) else Failed(*resp.error()), phase="start")
        if not self.machine.is_hybrid:
            return MachineRead(str(((resp.body or {}).get("properties") or {}).get("storageProfile", {})
                                   .get("osDisk", {}).get("osType") or ""))
        os_type = hybrid.os_type(resp.body) or ""
        status = hybrid.agent_status(resp.body)
        if status != hybrid.CONNECTED:  # skipped with the reason, like a deallocated VM; nothing posted
            return self.skip(hybrid.MACHINE_NOT_CONNECTED, hybrid.not_connected_reason(self.machine.name, status),
                             agentStatus=status, **({"osType": os_type} if os_type else {}))
        self.target = self.target.with_changes({"agentStatus": status})
        return MachineRead(os_type)

    def poll(self) -> StepResult:
        if self._past_deadline():
            return self.time_out()
        if (paced := self._paced(POLL_OPERATION.budgets)) is not None:
            if self.deferred is not None:
                # A round's poll does not wait holding a token (a message and a row write of its own): the token
                # goes back to this process's lease, where the round's successor takes it, and the machine stays
                # due for that round (shared/runs/poll_rounds.py).
                wait, names = paced
                for name in names:
                    self.ports.pacer.release(self.machine.subscription_id, name, wait)
                return StepResult.NO_BUDGET
            return self.paced(*paced)
        try:
            resp = self._call(POLL_OPERATION, self.target["pollUrl"])
        except UntrustedEndpointError as exc:
            return self.fail("UntrustedPollingUrl", str(exc))
        except (ArmConnectionError, ArmAuthenticationError) as exc:
            return self.retry(no_answer(exc), phase="poll")
        mode = self.target.get("pollMode") or "location"
        outcome = classify_instance_view(resp, str(self.target.get("installationActivityId") or ""),
                                         default_retry_after=self.retries.default_retry_after_seconds) \
            if mode == "instanceView" else \
            classify_poll(resp, mode=mode, default_retry_after=self.retries.default_retry_after_seconds)
        return self.apply(outcome, phase="poll")

    def recover_claim(self) -> StepResult:
        """`Starting` means a delivery claimed the machine and may have sent the operation.

        While the claim is fresh (CLAIM_TIMEOUT_SECONDS) that delivery may still be at work: look
        again when it runs out. A stale claim's delivery died between the claim and recording ARM's
        answer, so Azure settles it: the VM's last installation, if it started after the first
        claim, is this run's and is followed; none means the POST never reached Azure and it is
        sent again (an assessment only reads: it is simply sent again). Only when the instance view
        cannot be read (after retries) does the machine end OutcomeUnknown."""
        expires = parse_iso(self.target["claimedAt"]) + timedelta(seconds=self.retries.claim_timeout_seconds)
        if self.now < expires:
            # The sweeper's copy (or a duplicate) came early. Without this look, the next sweep would.
            wait = math.ceil((expires - self.now).total_seconds()) + 1
            self.ports.queue.send_step(self.run_id, self.target.key, self.target.seq, wait, poll=True)
            return StepResult.CLAIMED_ELSEWHERE
        if not self.kind.settles_from_instance_view:
            return self.start(settled=True)
        if self.machine.is_hybrid:  # an Arc machine shows no patch history ARM can read: the outcome is unknown
            return self.unknown(OUTCOME_UNKNOWN, "the worker stopped after claiming this Arc machine and may or may "
                                "not have sent installPatches; Azure shows no patch history for it to settle that "
                                "(check the machine's update history before running it again)")
        if (paced := self._paced(INSTANCE_VIEW.budgets)) is not None:
            return self.paced(*paced)
        since = parse_iso(str(self.target.get("firstClaimedAt") or self.target["claimedAt"]))
        found = self._settle_from_azure(since, recovering=True)
        return found if found is not None else self.start(settled=True)

    def _installations_since(self, spec: RunSpec) -> datetime:
        """From when an installation on the VM is this run's: the machine's first claim; with none
        recorded (a first start, or storage lost the claim), the run's creation."""
        first = self.target.get("firstClaimedAt") or spec.created_at
        return parse_iso(str(first)) if first else self.now

    def _settle_from_azure(self, since: datetime, *, recovering: bool) -> StepResult | None:
        """Read the VM's instance view (its budget already reserved): None when no installation started since
        `since` (sending installPatches is safe); otherwise what this step did (following or recording the
        installation found, or a retry or failure when the read did not answer)."""
        problem: Retry | Failed | None
        try:
            resp = self._call(INSTANCE_VIEW, self.machine)
            problem = classify_read(resp, default_retry_after=self.retries.default_retry_after_seconds)
        except (ArmConnectionError, ArmAuthenticationError) as exc:
            problem = no_answer(exc)
        if problem is None:
            summary = installation_since(resp.body, since)
            return None if summary is None else self.follow_installation(summary)
        if not recovering:  # nothing sent yet: retry from Queued, or fail with ARM's reason
            return self.apply(problem, phase="start")
        unknown = ("the worker stopped after claiming this machine and Azure could not say whether "
                   "installPatches reached it; check the VM's patch history before running it again. "
                   "Reading its instance view ")
        if isinstance(problem, Retry):
            return self.retry(problem, phase="recover", gave_up=(OUTCOME_UNKNOWN, unknown))
        return self.unknown(OUTCOME_UNKNOWN, f"{unknown}failed: {problem.code}: {problem.message}",
                            detail=problem.detail)

    def follow_installation(self, summary: dict[str, Any]) -> StepResult:
        """An installation found in the instance view is this run's: record it when finished, else
        read the instance view again (at the polling cadence) until it is."""
        outcome = installation_outcome(summary, retry_after=self.retries.default_retry_after_seconds)
        if isinstance(outcome, Done):
            return self.finish(outcome.result)
        spec = self.ports.specs.run_spec(self.run_id)
        started = parse_time(summary.get("startTime")) or self.now
        duration = INSTALL.expected_duration(spec.parameters) if spec else timedelta(hours=4)
        self._advance(poll_delay(outcome.retry_after, self.retries), {
            "state": MachineState.RUNNING.value,
            "pollUrl": self.ports.arm.url_for(INSTANCE_VIEW, self.machine),
            "pollMode": "instanceView",
            "asyncOperationUrl": "",
            "installationActivityId": str(summary["installationActivityId"]),
            "operationStartedAt": iso(started),
            "deadline": iso(started + duration + timedelta(seconds=self.retries.operation_grace_seconds)),
            "polls": 0,
            "attempts": 0,
        })
        return StepResult.FOLLOWING

    # -- outcomes ------------------------------------------------------------------------------
    def apply(self, outcome: Outcome, *, phase: str) -> StepResult:
        if isinstance(outcome, Started):
            return self.started(outcome)
        if isinstance(outcome, Pending):
            return self.pending(outcome)
        if isinstance(outcome, Done):
            return self.finish(outcome.result)
        if isinstance(outcome, Retry):
            return self.retry(outcome, phase=phase)
        if isinstance(outcome, OutcomeUnknown):
            return self.unknown(outcome.code, outcome.message, detail=outcome.detail)
        return self.fail(outcome.code, outcome.message, detail=outcome.detail)

    def started(self, outcome: Started) -> StepResult:
        try:  # the token goes to ARM_ENDPOINT only: every URL ARM handed back is checked before it is kept
            for url in (outcome.poll_url, outcome.result_url):
                if url:
                    self.ports.arm.ensure_trusted(url)
        except UntrustedEndpointError as exc:
            return self.fail("UntrustedPollingUrl", str(exc))
        spec = self.ports.specs.run_spec(self.run_id)
        duration = KINDS[spec.operation].expected_duration(spec.parameters) if spec else timedelta(hours=4)
        deadline = self.now + duration + timedelta(seconds=self.retries.operation_grace_seconds)
        ends_in = self._seconds_to_end(deadline, spec)
        assert ends_in is not None  # the deadline is known
        delay = first_poll_delay(outcome.retry_after, self.retries,
                                 shortest_seconds=self._shortest_installation(spec), ends_in_seconds=ends_in)
        self._advance(delay, {
            "state": MachineState.RUNNING.value,
            "pollUrl": outcome.poll_url,
            "pollMode": outcome.mode,
            "asyncOperationUrl": outcome.async_url or "",
            "resultUrl": outcome.result_url or "",
            "operationStartedAt": iso(self.now),
            "deadline": iso(deadline),
            "polls": 0,
            "attempts": 0,
        })
        machines_started.add(1, {"patchpilot.operation": self.kind.action})
        return StepResult.STARTED

    def pending(self, outcome: Pending) -> StepResult:
        if self._past_deadline():
            return self.time_out()
        changes: dict[str, Any] = {"polls": int(self.target.get("polls") or 0) + 1, "attempts": 0}
        if outcome.fetch_result:  # the status said Succeeded; the result is at the operation's Location
            if not self.target.get("resultUrl"):
                return self.unknown(NO_RESULT, "the operation's status says Succeeded but carries no result, and "
                                    "ARM gave no Location to read it from; see the machine's update history")
            changes.update(pollUrl=self.target["resultUrl"], pollMode="location")
        else:  # it is running: its end comes after now (the installation's history counts from it: install_history)
            changes["runningSeenAt"] = iso(self.now)
            if outcome.poll_url and outcome.poll_url != self.target.get("pollUrl"):
                try:
                    changes["pollUrl"] = self.ports.arm.ensure_trusted(outcome.poll_url)
                except UntrustedEndpointError as exc:
                    return self.fail("UntrustedPollingUrl", str(exc))
        self._advance(self._next_poll_delay(outcome.retry_after, spaced=not outcome.fetch_result), changes)
        return StepResult.PENDING

    def _next_poll_delay(self, retry_after: int, *, spaced: bool) -> int:
        """The wait before polling a running operation again: its Retry-After, plus the polls share's spacing
        when the next poll asks about the operation (not when it fetches a result already there), up to one
        Retry-After before the sooner of its deadline and its maintenance window's end (as the first poll); later
        still when the run's longer installations say it is likely to run on (retry_policy.later_poll_delay)."""
        if not spaced:
            return poll_delay(retry_after, self.retries)
        deadline = self.target.get("deadline")
        spec = self.ports.specs.run_spec(self.run_id)  # cached per process
        ends_in = self._seconds_to_end(parse_iso(str(deadline)) if deadline else None, spec)
        (budget,) = POLL_OPERATION.budgets
        return later_poll_delay(retry_after, self.retries, ends_in_seconds=ends_in, later_seconds=self._later_end(spec),
                                spacing=self.ports.pacer.spacing(self.machine.subscription_id, budget))

    def _seconds_to_end(self, deadline: datetime | None, spec: RunSpec | None) -> float | None:
        """Seconds from now to the sooner of the operation's deadline and its maintenance window's end (None:
        neither is known)."""
        ends = [end for end in (deadline, self._window_end(spec)) if end is not None]
        return (min(ends) - self.now).total_seconds() if ends else None

    def paced(self, wait: int, names: tuple[str, ...], **changes: Any) -> StepResult:
        """No ARM budget now: come back after `wait` seconds, holding the tokens reserved for then (and
        any this step held already), so the next delivery calls without reserving them again. A machine not yet
        started whose wait cannot fit its window ends Skipped now (hooks.before_wait)."""
        if self.target["state"] == MachineState.QUEUED.value:
            verdict = self._wait_verdict(wait, f"the ARM budget ({', '.join(names)}) is spent until then")
            if isinstance(verdict, Skip):
                return self.skip(verdict.code, verdict.message, **changes)
        log.info("paced run=%s machine=%s state=%s wait=%ds budgets=%s", self.run_id, self.target.key,
                 self.target["state"], wait, ",".join(names))
        try:
            self._advance(wait, {**changes, "paced": int(self.target.get("paced") or 0) + 1},
                          held=tuple(sorted(self.held | set(names))))
        except ConflictError:  # no message will spend the tokens reserved for then: they go back to the lease
            for name in names:
                self.ports.pacer.release(self.machine.subscription_id, name, wait)
            raise
        return StepResult.PACED

    def retry(self, retry: Retry, *, phase: str, gave_up: tuple[str, str] | None = None) -> StepResult:
        """Try again after a delay (phase "start": from Queued). Out of retries: Failed with ARM's code,
        or OutcomeUnknown with `gave_up` (PatchPilot's code, and what was not learnt) when ARM's is not
        the outcome."""
        counter = {"conflict": "conflicts", "throttled": "throttles"}.get(retry.kind, "attempts")
        attempt = int(self.target.get(counter) or 0) + 1
        delay = retry_delay(retry, attempt, self.retries, self.rng)
        bounded = False  # a wait that clears is bounded by the machine's window rather than a count (before_wait)
        if phase == "start" and retry.clears:  # a definite refusal: nothing started (a 5xx or no answer may have)
            verdict = self._wait_verdict(delay, f"{retry.code}: {retry.message}"[:300])
            if isinstance(verdict, Skip):
                return self.skip(verdict.code, verdict.message, lastRetryReason=f"{retry.code}: {retry.message}"[:1000])
            bounded = isinstance(verdict, Fits)
        if attempt > retry_limit(retry, self.retries) and not bounded:
            message = f"gave up after {attempt - 1} retries ({retry.kind}): {retry.message}"
            if gave_up is None:
                return self.fail(retry.code, message, detail=retry.detail)
            code, context = gave_up  # what Azure did could not be learnt: the outcome is unknown, not failed
            return self.unknown(code, f"{context}{message} ({retry.code})", detail=retry.detail)
        changes: dict[str, Any] = {counter: attempt, "lastRetryReason": f"{retry.code}: {retry.message}"[:1000]}
        held: tuple[str, ...] = ()
        if phase == "start":
            changes["state"] = MachineState.QUEUED.value
            if retry.kind == "throttled":
                # A throttled start keeps its guest-patch token (held from its slot, or refused with the POST: a
                # 429 spends none) and tries again after Retry-After. Reserving anew would put it behind every slot
                # the run reserved at dispatch: at 10,000 machines, long machines that longest first had started
                # first were throttled and then started about 20 minutes later, last, and set the makespan.
                held = tuple(sorted((self.held | self.refused) & {GUEST_PATCH}))
                if held:  # its try will be one start more than its slot's moment: the next release makes room
                    changes[THROTTLED_AT_COLUMN] = iso(self.now)  # (shared/runs/dispatch.py room_for_throttled)
        self._advance(delay, changes, held=held)
        if retry.kind == "throttled":
            budget_wait.record(delay, {"patchpilot.phase": phase})
        return StepResult(f"retry-{retry.kind}")

    def _wait_verdict(self, seconds: int, reason: str) -> Skip | Fits | None:
        spec = self.ports.specs.run_spec(self.run_id)
        if spec is None:
            return None
        return self.ports.hooks.decide_wait(WaitContext(self.run_id, self.machine, spec, seconds, reason))

    @cached_property
    def kind(self) -> OperationKind:
        spec = self.ports.specs.run_spec(self.run_id)
        return KINDS[spec.operation] if spec and spec.operation in KINDS else INSTALL

    def _confirm_row(self) -> None:
        """Before a side effect other than the row's own If-Match write (patch rows, an assessment's fleet record):
        a step acting on a carried row reads the row once and stops (ConflictError: run_step reads it and looks
        again) when it changed since, e.g. a late copy of a poll whose machine has finished already."""
        if not self.carried:
            return
        stored = self.ports.targets.get_target(self.run_id, self.target.key)
        if stored is None or stored.etag != self.target.etag:
            raise ConflictError(f"{self.run_id}/{self.target.key} changed since its message was sent")
        self.carried = False

    def finish(self, result: dict[str, Any]) -> StepResult:
        self._confirm_row()
        kind = self.kind
        started = parse_time(self.target.get("operationStartedAt"))
        if kind is INSTALL and started is not None:  # times later first polls (shared/runs/run_durations.py)
            # when this poll was due, not when the queue delivered it: a backlog's lateness is not installation time
            due = parse_time(self.target.get("nextActionAt")) or self.now
            self.ports.durations.observe(self.run_id, str(self.target.get("osType") or ""),
                                         (min(self.now, due) - started).total_seconds())
        if self.machine.is_hybrid:  # HybridCompute's result shapes: counts instead of patch lists, errorDetails
            result = hybrid.compute_shaped(kind.action, result)
        changes: dict[str, Any] = {k: result[k] for k in kind.result_fields if result.get(k) is not None}
        if not kind.keeps_history:  # assessments keep their patches in the machine's history instead
            patches = install_patches(result)  # classifications by the API's names, never "None" for a null kbId
            self.ports.targets.save_patches(self.run_id, self.target.key, patches)
            if not_selected := not_selected_by_classification(patches):  # Ubuntu's security fixes classed Other
                changes["notSelectedByClassification"] = json.dumps(not_selected, separators=(",", ":"))
        # The result's `error` whole (details say why a package was skipped), or none at all: a
        # succeeded result's {"code": "0", "details": []} is no error (shared.arm.errors).
        azure_error = operation_error(result_error(result))
        changes.update(error_columns(azure_error))
        if kind is INSTALL and _window_ran_out(result):
            pending = int(result.get("pendingPatchCount") or 0)
            changes.update(own_error_columns(
                WINDOW_EXCEEDED, f"the maintenance window (maximumDuration) ran out with {pending} patch(es) still "
                "pending and none failed: the machine is not broken; they install in its next window", azure_error))
        spec = self.ports.specs.run_spec(self.run_id)
        check = spec.health_check if spec is not None else None
        if check is not None and kind is INSTALL and result.get("status") in ("Succeeded", "CompletedWithWarnings"):
            # Azure's Succeeded is not health: read the machine after `after` (shared/runs/health_check.py).
            self._advance(check.after_seconds, {
                **changes, "state": MachineState.VERIFYING.value, "operationEndedAt": iso(self.now),
                "healthDeadline": iso(self.now + timedelta(seconds=check.after_seconds + check.within_seconds)),
                "healthRound": "", "healthReads": 0, "attempts": 0})
            return StepResult.VERIFYING
        return self._terminal(MachineState.COMPLETED, changes, result)

    def verify(self) -> StepResult:
        """A Verifying machine: read its health signals; Completed when every one passes, read again later while
        `within` lasts, Unhealthy when it ran out (shared/runs/health_check.py says which code)."""
        spec = self.ports.specs.run_spec(self.run_id)
        if spec is None or spec.health_check is None:  # nothing to verify against: the operation's result stands
            return self._terminal(MachineState.COMPLETED, {})
        got = self._read_health(spec.health_check, "after", parse_time(self.target.get("operationStartedAt")))
        if isinstance(got, StepResult):
            return got
        reads = int(self.target.get("healthReads") or 0) + 1
        changes: dict[str, Any] = {"healthChecks": _readings_json(got), "healthRound": "", "healthReads": reads,
                                   "healthReadAt": iso(self.now)}
        outcome = health_check.verdict(got)
        if outcome == "Healthy":
            return self._terminal(MachineState.COMPLETED, {**changes, "health": "Healthy", "lastVerdict": "Healthy",
                                                           "unhealthySignals": ""})
        deadline = parse_iso(str(self.target["healthDeadline"]))
        if self.now < deadline:  # not yet: read again (a last time at the deadline)
            wait = min(self.ports.health.recheck_seconds, math.ceil((deadline - self.now).total_seconds()))
            self._advance(max(1, wait), {**changes, "health": "Verifying", "lastVerdict": outcome})
            return StepResult.VERIFYING
        bad = health_check.failing(got)
        check = spec.health_check
        message = (f"no round of health reads passed from {check.after_seconds} s to "
                   f"{check.after_seconds + check.within_seconds} s after the installation's result: "
                   f"{health_check.describe(got)}")
        if outcome == "HealthUnknown":
            message += " (a signal that cannot be read is not a pass)"
        return self._unhealthy(outcome, message, bad, changes)

    def _read_health(self, check: HealthCheck, phase: str, since: datetime | None,
                     **paced_changes: Any) -> list[SignalReading] | StepResult:
        """One round of `check`'s signals (`phase` "baseline" or "after"), each ARM read paced; a round the budget
        interrupts is kept in the row (`healthRound`) and goes on at the next delivery."""
        state = Round.load(self.target.get("healthRound"), phase)
        got = health_check.read_round(check, self.machine, state, io=_StepSignals(self), probe=self.ports.probe,
                                      since=since, default_retry_after=self.retries.default_retry_after_seconds)
        if isinstance(got, Wait):
            return self.paced(got.seconds, got.held, healthRound=got.round.dump(), **paced_changes)
        return got

    def _unhealthy_before(self, readings: list[SignalReading], os_type: str) -> StepResult:
        bad = health_check.failing(readings)
        message = (f"unhealthy before patching, so not patched (not counted against maxFailures): "
                   f"{health_check.describe(readings)}")
        result = self.skip("UnhealthyBeforePatching", message, osType=os_type,
                           healthBaseline=_readings_json(readings), health="UnhealthyBeforePatching", healthRound="",
                           unhealthySignals=",".join(r.signal for r in bad if r.verdict == "unhealthy"))
        self._emit_unhealthy("before", "UnhealthyBeforePatching", bad)  # after the write: a lost race sends none
        return result

    def _unhealthy(self, code: str, message: str, bad: list[SignalReading], changes: dict[str, Any]) -> StepResult:
        result = self._terminal(MachineState.UNHEALTHY, {
            **changes, "health": code, "lastVerdict": code, "errorCode": code, "errorMessage": message[:4000],
            "unhealthySignals": ",".join(r.signal for r in bad)})
        self._emit_unhealthy("after", code, bad)  # after the write: a lost race sends none
        return result

    def _emit_unhealthy(self, phase: str, code: str, bad: list[SignalReading]) -> None:
        emit(self.ports.events, "patchpilot.machine.unhealthy",
             f"{run_subject(self.run_id)}{self.machine.resource_id}", {
                 "runId": self.run_id, "machine": self.machine.resource_id, "phase": phase, "reason": code,
                 "signals": [r.as_dict() for r in bad]},
             key=f"{phase}|{self.target.seq}")

    def fail(self, code: str, message: str, *, extra: dict[str, Any] | None = None,
             detail: dict[str, Any] | None = None) -> StepResult:
        """End the machine Failed (or Skipped) with PatchPilot's code and message; `detail` is ARM's
        error behind it, kept whole (shared.arm.errors.own_error_columns)."""
        state = MachineState.FAILED
        if code == hybrid.MACHINE_NOT_CONNECTED:  # the agent went away between our GET and the POST
            state = MachineState.SKIPPED
        elif code == VM_NOT_RUNNING:  # asked for by name: the kind decides; found by listing a scope: skipped
            state = MachineState.SKIPPED if self.target.get("discovered") else self.kind.not_running_state
        return self._terminal(state, {**own_error_columns(code, message, detail), **(extra or {})})

    def unknown(self, code: str, message: str, *, detail: dict[str, Any] | None = None) -> StepResult:
        """End the machine `OutcomeUnknown`: the operation may run (or have run) in Azure, but how it ends
        cannot be seen from here. `code` says why (`PollForbidden`, `OutcomeUnknown`); `detail` is ARM's
        error behind it, kept whole. Not a failure: runs count it apart, rollouts do not spend on it."""
        return self._terminal(MachineState.OUTCOME_UNKNOWN, own_error_columns(code, message, detail))

    def skip(self, code: str, message: str, **extra: Any) -> StepResult:
        """End the machine as Skipped: deliberately not started, with the reason (a hook's `Skip`)."""
        return self._terminal(MachineState.SKIPPED, {"errorCode": code, "errorMessage": message[:4000], **extra})

    def time_out(self) -> StepResult:
        return self._terminal(MachineState.TIMED_OUT, {
            "errorCode": "OperationTimedOut",
            "errorMessage": f"no final result by {self.target.get('deadline')} "
                            "(maximumDuration plus OPERATION_GRACE_SECONDS)",
        })

    # -- plumbing ------------------------------------------------------------------------------
    def _paced(self, budgets: tuple[str, ...]) -> tuple[int, tuple[str, ...]] | None:
        """Reserve `budgets` for the next call (those held are spent now): None to call now, else paced()'s args."""
        return paced_delay(self.ports.pacer, self.machine.subscription_id, budgets, self.held)

    def _call(self, call: ArmCall, target: MachineRef | str, body: Any = None) -> ArmResponse:
        """Make one ARM call (its budget reserved by _paced), record it in the audit trail, and let ARM's
        answer correct the shared budget (remaining-* headers, a 429's Retry-After)."""
        self.held -= set(call.budgets)  # spent on this call
        self.ports.pacer.sending(self.machine.subscription_id, call.budgets)
        try:
            resp = self.ports.arm.send(call, target, body)
        except (ArmConnectionError, ArmAuthenticationError):
            self._record(call.name, None, None)
            raise
        self._record(call.name, resp.status, resp.request_id)
        record_call(self.ports.pacer, self.machine.subscription_id, call, resp,
                    default_retry_after=self.retries.default_retry_after_seconds)
        if resp.status == 429:
            self.refused |= set(call.budgets) & {GUEST_PATCH}
        return resp

    def _record(self, op: str, status: int | None, request_id: str | None) -> None:
        self.calls.append({"op": op, "status": status, "requestId": request_id, "at": iso(utcnow())})
        while len(self.calls) > MAX_RECORDED_CALLS:  # keep the first calls, drop the oldest polls
            polls = [i for i, c in enumerate(self.calls) if c["op"] == POLL_OPERATION.name]
            self.calls.pop(polls[0] if polls else 0)

    def _update(self, changes: dict[str, Any]) -> None:
        self.target = self.ports.targets.update_target(self.target, self._stamped(changes))
        self.carried = False  # the If-Match write confirmed the row: it is as stored now (_confirm_row)

    def _stamped(self, changes: dict[str, Any]) -> dict[str, Any]:
        return {**changes, "armCalls": json.dumps(self.calls), "updatedAt": iso(utcnow())}

    def _advance(self, delay: int, changes: dict[str, Any], *, held: tuple[str, ...] = ()) -> None:
        """Record the step and queue the next one; raises ConflictError if we lost a race.

        A machine left Running is polled next, by its run's poll rounds (shared/runs/poll_rounds.py: the row
        says `pollRound`, and a round comes by `nextActionAt`), unless its poll holds budget tokens: a paced poll,
        or one whose budget is backlogged past `delay` (Budget.book), which is booked now and queued as its own
        message for when that token is due, so the poll calls when it arrives instead of finding the budget spent
        and being queued again."""
        booked: float | None = None
        running = changes.get("state", self.target["state"]) == MachineState.RUNNING.value
        if not held and running:
            (budget,) = POLL_OPERATION.budgets
            booked = self._book(budget, delay)
            if booked is not None:
                delay, held = max(delay, math.ceil(booked)), (budget,)
        seq = self.target.seq + 1
        next_at = self.now + timedelta(seconds=delay)
        in_rounds = running and not held
        changes = {**changes, "seq": seq, "nextActionAt": iso(next_at),
                   **({"pollRound": in_rounds} if running or self.target.get("pollRound") else {})}
        if in_rounds and self.deferred is not None:  # a round's poll: the round writes it, in a batch
            self.deferred.append((self.target, self._stamped(changes)))
            return
        try:
            self._update(changes)
        except ConflictError:
            if booked is not None:  # no message will spend it: the token goes back to the lease
                self.ports.pacer.release(self.machine.subscription_id, held[0], booked)
            raise
        if in_rounds:
            self.ports.queue.send_poll(self.run_id, self.target.key, seq, delay, next_at)
            return
        carried = (CarriedRow.of(self.target.etag, self.target.columns)
                   if self.target["state"] in CARRIED_STATES else None)
        self.ports.queue.send_step(self.run_id, self.target.key, seq, delay, held=held,
                                   poll=self.target["state"] != MachineState.QUEUED.value, row=carried)

    def _book(self, budget: str, after: int) -> float | None:
        """Budget.book, as advice: the operation is sent, so a budget row that cannot be read or written now
        (a Table error, contention) leaves the poll unbooked (it reserves when it arrives) instead of failing
        the step and leaving the machine's row behind its operation."""
        try:
            return self.ports.pacer.book(self.machine.subscription_id, budget, after)
        except Exception:  # the budget is advice here (docstring); the poll reserves when it comes
            log.warning("could not book a poll's budget in %s", self.machine.subscription_id, exc_info=True)
            return None

    def _terminal(self, state: MachineState, changes: dict[str, Any],
                  result: dict[str, Any] | None = None) -> StepResult:
        self._confirm_row()
        record = self.ports.hooks.on_terminal.get(self.kind.action)
        if record is not None:  # before our own update: a redelivery then writes the same rows again
            changes = {**changes, **record({**self.target, **changes}, state, result, self.run_id)}
        self._update({**changes, "state": state.value, "seq": self.target.seq + 1, "completedAt": iso(utcnow()),
                      **({"pollRound": False} if self.target.get("pollRound") else {})})
        if state is MachineState.COMPLETED:
            machines_completed.add(1, {"patchpilot.operation": self.kind.action})
        elif state in (MachineState.FAILED, MachineState.TIMED_OUT):
            machines_failed.add(1, {"patchpilot.operation": self.kind.action, "patchpilot.state": state.value})
        run_id = self.run_id
        emit(self.ports.events, "patchpilot.machine.completed", f"{run_subject(run_id)}{self.machine.resource_id}", {
            "runId": run_id, "machine": self.machine.resource_id, "machineKind": self.machine.kind,
            "state": state.value,
            **{k: self.target[k] for k in ("status", "installedPatchCount", "failedPatchCount", "errorCode")
               if self.target.get(k) not in (None, "")},
            **({"error": error} if (error := operation_error(stored_error(self.target), limit=EVENT_ERROR_CHARS))
               else {})},
            key=str(self.target["seq"]))  # one id per finish
        # frees a rollout slot (admits the next machine), or closes the run
        self.ports.hooks.progressed(run_id, self.target.key)
        return StepResult(state.value)

    def _shortest_installation(self, spec: RunSpec | None) -> float | None:
        """The machine's shortest recorded installation (`shortestSeconds`, written with its prediction) or, with
        none, how soon the run's installations on its OS type have been ending (run_durations.py), when its
        first poll may wait for it: an install run with no rollout and no health check, where nothing (a wave's
        failure gate, a soak, a health read) waits on an early end (retry_policy.first_poll_delay)."""
        if not _polls_may_wait(spec):
            return None
        shortest = self.target.get("shortestSeconds")
        if isinstance(shortest, (int, float)):
            return float(shortest)
        return self.ports.durations.early_end(self.run_id, str(self.target.get("osType") or ""))

    def _later_end(self, spec: RunSpec | None) -> float | None:
        """Seconds until half the run's installations on this machine's OS type that have run longer than
        this one had ended (run_durations.py `later_end`), when its next poll may wait for it: as
        `_shortest_installation`, an install run with no rollout and no health check."""
        started = parse_time(self.target.get("operationStartedAt"))
        if started is None or not _polls_may_wait(spec):
            return None
        return self.ports.durations.later_end(self.run_id, str(self.target.get("osType") or ""),
                                              (self.now - started).total_seconds())

    @staticmethod
    def _window_end(spec: RunSpec | None) -> datetime | None:
        return parse_iso(spec.window_end) if spec is not None and spec.window_end else None

    def _past_deadline(self) -> bool:
        deadline = self.target.get("deadline")
        return bool(deadline) and self.now > parse_iso(str(deadline))


def _polls_may_wait(spec: RunSpec | None) -> bool:
    """Whether an installation's polls may come later than its Retry-After (retry_policy first_poll_delay and
    later_poll_delay): an install run with no rollout and no health check, where nothing (a wave's failure gate,
    a soak, a health read) waits on an early end."""
    return spec is not None and spec.operation == INSTALL.action and not spec.rollout and spec.health_check is None


class _StepSignals:
    """A health round's view of the step (shared/runs/health_check.py SignalCalls): its pacing and audited calls."""

    def __init__(self, step: MachineStep) -> None:
        self.step = step

    def reserve(self, budgets: tuple[str, ...]) -> tuple[int, tuple[str, ...]] | None:
        return self.step._paced(budgets)

    def call(self, call: ArmCall, target: MachineRef | str) -> ArmResponse:
        return self.step._call(call, target)

    def url_for(self, call: ArmCall, machine: MachineRef, **query: str) -> str:
        return self.step.ports.arm.url_for(call, machine, **query)


def _window_ran_out(result: dict[str, Any]) -> bool:
    """Azure's `Failed` that only says the window ran out (shared.core.states.WINDOW_EXCEEDED)."""
    return (result.get("status") == "Failed" and bool(result.get("maintenanceWindowExceeded"))
            and int(result.get("pendingPatchCount") or 0) > 0 and not int(result.get("failedPatchCount") or 0))


def _readings_json(readings: list[SignalReading]) -> str:
    return json.dumps([r.as_dict() for r in readings])


def run_step(msg: StepMessage, ports: StepPorts, rng: random.Random | None = None) -> StepResult:
    """Process one step message. Safe to run twice: duplicates return STALE or lose the ETag race.

    A message that carries its machine's row (a start, poll or health read: CARRIED_STATES, shared/core/messages.py
    CarriedRow) is acted on without reading the row: one Table round-trip less per step. Its write is
    If-Match on the carried ETag, so a row changed since (a copy of this message won, any write) makes it read the
    row and act again: that costs the ARM reads again, and the budget tokens the first look held are handed to the
    second, or given back (Budget.release) when the row says there is nothing to do. Before any other write (patch
    rows, an assessment's fleet record, a window's lease) the step confirms the row with one read
    (MachineStep._confirm_row), so a late copy whose machine has moved on writes nothing. A start carries its row
    from the release that listed it (shared/runs/dispatch.py send_starts): its claim is that If-Match write, before
    installPatches is sent."""
    annotate({RUN_ID: msg.run_id, "patchpilot.step.seq": msg.seq})
    row = msg.row
    looked: MachineRecord | None = None  # the carried row, when the step acted on it and found it changed
    if (row is not None and row.columns.get("seq") == msg.seq and row.columns.get("state") in CARRIED_STATES
            and isinstance(row.columns.get("resourceId"), str)):
        carried = MachineRecord(etag=row.etag, columns=dict(row.columns), run_id=msg.run_id, key=msg.machine)
        result, held = _step(carried, msg, ports, rng, carried=True)
        if result is not StepResult.LOST_RACE:
            return result
        looked = carried
        annotate({"patchpilot.step.carried_row": "changed"})  # read the row as stored and look again
    else:
        held = msg.held
    target = ports.targets.get_target(msg.run_id, msg.machine)
    stopped = StepResult.MISSING if target is None else _nothing_to_do(target, msg.seq)
    if stopped is not None:
        if looked is not None:  # tokens the carried look held (or reserved) for calls it did not make: given back
            subscription = parse_machine_id(looked.resource_id, target="resourceId").subscription_id
            for name in held:
                ports.pacer.release(subscription, name, 0.0)
        return stopped
    assert target is not None  # for mypy: a missing row stopped above
    annotate({MACHINE_ID: str(target.get("resourceId") or "")})
    return _step(target, msg, ports, rng, held=held)[0]


def _nothing_to_do(target: MachineRecord, seq: int) -> StepResult | None:
    """FINISHED (the machine ended already) or STALE (its row moved past `seq`), else None: the step goes on."""
    if target["state"] in TERMINAL_STATES:
        return StepResult.FINISHED
    return StepResult.STALE if int(target["seq"]) != seq else None


def _step(target: MachineRecord, msg: StepMessage, ports: StepPorts, rng: random.Random | None, *,
          carried: bool = False, held: tuple[str, ...] | None = None) -> tuple[StepResult, tuple[str, ...]]:
    """The step for the machine's state (holding `held`, by default the message's tokens), and the held tokens
    it did not spend. LOST_RACE when its write found the row changed: a second look then holds only what the
    first did not spend, so one token is never spent on two calls."""
    annotate({MACHINE_ID: str(target.get("resourceId") or "")})
    step = MachineStep(target, ports, rng, held=msg.held if held is None else held, carried=carried)
    phase = {MachineState.QUEUED.value: "start", MachineState.STARTING.value: "recover",
             MachineState.VERIFYING.value: "verify"}.get(str(target["state"]))
    annotate({QUEUE_STEP: phase or "poll"})
    try:
        if target["state"] == MachineState.QUEUED.value:
            result = step.start()
        elif target["state"] == MachineState.STARTING.value:
            result = step.recover_claim()
        elif target["state"] == MachineState.VERIFYING.value:
            result = step.verify()
        else:
            result = step.poll()
    except ConflictError:
        result = StepResult.LOST_RACE  # another delivery of this message moved the target first
    return result, tuple(sorted(step.held))


def fail_poisoned_step(msg: StepMessage, ports: StepPorts, queue_name: str) -> StepResult:
    """A step that failed maxDequeueCount times: end the machine as Failed so the run still ends."""
    target = ports.targets.get_target(msg.run_id, msg.machine)
    if target is None or target["state"] in TERMINAL_STATES or int(target["seq"]) != msg.seq:
        return StepResult.IGNORED
    try:
        return MachineStep(target, ports).fail(
            "PoisonMessage",
            f"processing this machine's step failed repeatedly and the message was moved to "
            f"{queue_name}-poison; see the function logs for the error",
        )
    except ConflictError:
        return StepResult.LOST_RACE


def fail_machines(ports: StepPorts, targets: Iterable[MachineRecord], code: str, reason: str) -> int:
    """End each of `targets` Failed with `code` (the dispatch message itself was poisoned: the machines that
    never got going, shared/runs/dispatch.py fail_undispatched); returns how many it ended."""
    failed = 0
    for target in targets:
        try:
            MachineStep(target, ports).fail(code, reason)
            failed += 1
        except ConflictError:
            continue
    return failed
