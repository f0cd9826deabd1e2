"""The machine step with in-memory fakes of its ports (shared/runs/machine_worker.py StepPorts): no Azurite, no
simulator, no HTTP. What it shows: every ARM call is drawn from its budgets before it is made, the claim comes
before the POST, a poll records the result, a 429 waits ARM's Retry-After and moves only the budgets of the call
that was refused, and a lost claim sends nothing. The Azurite integration tests cover the same paths for real
(tests/integration/test_machine_worker.py)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from requests.structures import CaseInsensitiveDict

from shared.arm.calls import (
    GET_VM,
    GUEST_PATCH,
    INSTALL_PATCHES,
    INSTANCE_VIEW,
    POLL_OPERATION,
    POLLS,
    READS,
    WRITES,
    ArmCall,
)
from shared.arm.client import ArmResponse
from shared.core.clock import iso, parse_iso, utcnow
from shared.core.errors import ConflictError, UntrustedEndpointError
from shared.core.ids import MachineRef
from shared.core.messages import CarriedRow, StepMessage, parse_step
from shared.core.records import HealthCheck, MachineRecord, RunSpec
from shared.core.settings import Settings
from shared.core.states import MachineState
from shared.maintenance.window_guard import WithinWindow
from shared.runs.health_check import Probe, ProbeAnswer
from shared.runs.hooks import Proceed, RunHooks, Skip, StartContext
from shared.runs.machine_worker import MachineStep, StepPorts, StepResult, run_step
from shared.runs.run_durations import MIN_SAMPLES, RunDurations

ENDPOINT = "https://management.azure.com"
VM = MachineRef("00000000-0000-0000-0000-000000000001", "rg", "web-01")
RUN = "run-1"
INSTALL = {"maximumDuration": "PT2H", "rebootSetting": "IfRequired",
           "windowsParameters": {"classificationsToInclude": ["Critical", "Security"]}}
LOCATION = f"{ENDPOINT}/subscriptions/{VM.subscription_id}/providers/Microsoft.Compute/locations/westeurope/" \
           "operations/op-1?api-version=2025-04-01"


def answer(status: int, body: Any = None, **headers: str) -> ArmResponse:
    return ArmResponse(status, CaseInsensitiveDict({k.replace("_", "-"): v for k, v in headers.items()}), body, "")


@dataclass
class Journal:
    """One ordered log of what the step did through its ports."""

    entries: list[tuple[str, Any]] = field(default_factory=list)

    def add(self, what: str, detail: Any) -> None:
        self.entries.append((what, detail))

    def kinds(self) -> list[str]:
        return [what for what, _ in self.entries]


class FakeTargets:
    """Machine rows with ETags: a write with an old ETag is refused, as Table storage's If-Match is."""

    def __init__(self, journal: Journal) -> None:
        self.rows: dict[str, MachineRecord] = {}
        self.patches: dict[str, list[dict[str, Any]]] = {}
        self.journal = journal
        self.reads = 0  # get_target calls: a step acting on a carried row reads none
        self._etags = itertools.count(1)

    def put(self, columns: Mapping[str, Any]) -> MachineRecord:
        row = MachineRecord(etag=str(next(self._etags)), columns=dict(columns), run_id=RUN, key=VM.key)
        self.rows[VM.key] = row
        return row

    def get_target(self, run_id: str, key: str) -> MachineRecord | None:
        self.reads += 1
        return self.rows.get(key)

    def update_target(self, target: MachineRecord, changes: dict[str, Any]) -> MachineRecord:
        stored = self.rows[target.key]
        if stored.etag != target.etag:
            raise ConflictError("changed since read")
        self.journal.add("write", changes.get("state", stored["state"]))
        self.rows[target.key] = stored.with_changes(changes, str(next(self._etags)))
        return self.rows[target.key]

    def save_patches(self, run_id: str, key: str, patches: list[dict[str, Any]]) -> None:
        self.patches[key] = patches


@dataclass
class FakeSpecs:
    health_check: HealthCheck | None = None
    rollout: bool = False
    window_end: str = ""
    configuration: str = ""

    def run_spec(self, run_id: str) -> RunSpec | None:
        return RunSpec("installPatches", INSTALL, created_at="2026-12-01T00:00:00.000000Z",
                       health_check=self.health_check, rollout=self.rollout,
                       window_end=self.window_end, configuration=self.configuration) if run_id == RUN else None


class FakeQueue:
    def __init__(self, journal: Journal) -> None:
        self.sent: list[StepMessage] = []
        self.delays: list[int] = []
        self.polls: list[bool] = []  # which queue: POLLS_QUEUE (True) or OPERATIONS_QUEUE
        self.rounds: list[int] = []  # seqs of the polls left to the run's rounds (send_poll)
        self.journal = journal

    def send_step(self, run_id: str, machine: str, seq: int, delay_seconds: int = 0, *,
                  held: tuple[str, ...] = (), poll: bool = False, row: CarriedRow | None = None) -> None:
        self.sent.append(StepMessage(run_id, machine, seq, held, row))
        self.delays.append(delay_seconds)
        self.polls.append(poll)
        self.journal.add("queue", delay_seconds)

    def send_poll(self, run_id: str, machine: str, seq: int, delay_seconds: int, at: datetime) -> None:
        """A poll left to the run's rounds: recorded as the step message a round stands for (no row, no tokens)."""
        self.rounds.append(seq)
        self.send_step(run_id, machine, seq, delay_seconds, poll=True)


class FakePacer:
    """Grants every reservation now unless `waits` says otherwise; records what moved after a call."""

    def __init__(self, journal: Journal, waits: Mapping[str, float] | None = None,
                 backlog: Mapping[str, float] | None = None, spacing: float = 0.0) -> None:
        self.journal = journal
        self.spaced = spacing  # Pacer.spacing of the polls share
        self.waits = dict(waits or {})
        self.backlog = dict(backlog or {})  # seconds until a bucket's next token is due (book())
        self.observed: list[tuple[tuple[str, ...], int]] = []

    def reserve(self, subscription: str, names: tuple[str, ...], k: int = 1) -> float:
        self.journal.add("reserve", names[0])
        return self.waits.get(names[0], 0.0)

    def book(self, subscription: str, name: str, after: float) -> float | None:
        due = self.backlog.get(name, 0.0)
        if due < after:
            return None
        self.journal.add("book", name)
        return due

    def spacing(self, subscription: str, name: str) -> float:
        return self.spaced

    def release(self, subscription: str, name: str, due: float) -> None:
        self.journal.add("release", name)

    def sending(self, subscription: str, names: tuple[str, ...]) -> None:
        pass

    def observe(self, subscription: str, names: tuple[str, ...], status: int, headers: Mapping[str, str],
                retry_after: float | None = None) -> None:
        self.observed.append((names, status))


class FakeArm:
    """ARM answering from a script, by call name."""

    def __init__(self, journal: Journal, script: Mapping[str, list[ArmResponse]]) -> None:
        self.journal = journal
        self.script = {name: list(answers) for name, answers in script.items()}

    def send(self, call: ArmCall, target: MachineRef | str, body: Any = None) -> ArmResponse:
        self.journal.add("arm", call.name)
        return self.script[call.name].pop(0)

    def url_for(self, call: ArmCall, machine: MachineRef, **query: str) -> str:
        path = call.path.replace("{machine}", machine.resource_id).replace(
            "{subscription}", f"/subscriptions/{machine.subscription_id}")
        return f"{ENDPOINT}{path}" + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")

    def ensure_trusted(self, url: str) -> str:
        if not url.startswith(ENDPOINT + "/"):  # as ArmClient does: the token goes to ARM_ENDPOINT only
            raise UntrustedEndpointError(url, endpoint=ENDPOINT)
        return url


class FakeEvents:
    settings = Settings.from_env()

    def send_delivery(self, message: dict[str, Any], delay_seconds: int = 0) -> None:
        raise AssertionError("no webhooks are configured")


@dataclass
class Harness:
    journal: Journal
    targets: FakeTargets
    queue: FakeQueue
    pacer: FakePacer
    arm: FakeArm
    progressed: list[str]
    ports: StepPorts

    def step(self) -> StepResult:
        row = self.targets.rows[VM.key]
        return run_step(StepMessage(RUN, VM.key, row.seq, self.queue.sent[-1].held if self.queue.sent else ()),
                        self.ports)

    @property
    def row(self) -> MachineRecord:
        return self.targets.rows[VM.key]


def no_probe(url: str) -> ProbeAnswer:
    raise AssertionError(f"no probe expected, got {url}")


def harness(script: Mapping[str, list[ArmResponse]], *, waits: Mapping[str, float] | None = None,
            backlog: Mapping[str, float] | None = None, before_start: tuple[Any, ...] = (),
            health_check: HealthCheck | None = None, probe: Probe = no_probe,
            durations: RunDurations | None = None, **columns: Any) -> Harness:
    journal = Journal()
    targets, queue = FakeTargets(journal), FakeQueue(journal)
    pacer, arm = FakePacer(journal, waits, backlog), FakeArm(journal, script)
    progressed: list[str] = []

    def progress(run_id: str, machine: str | None = None) -> bool:
        progressed.append(run_id)
        return False
    hooks = RunHooks(before_start=before_start, progressed=progress)
    targets.put({"state": "Queued", "seq": 0, "resourceId": VM.resource_id, **columns})
    settings = Settings.from_env()
    ports = StepPorts(targets=targets, specs=FakeSpecs(health_check), queue=queue, pacer=pacer, arm=arm, hooks=hooks,
                      events=FakeEvents(), retries=settings.retries, health=settings.health, probe=probe,
                      durations=durations if durations is not None else RunDurations())
    return Harness(journal, targets, queue, pacer, arm, progressed, ports)


WINDOWS_VM = answer(200, {"properties": {"storageProfile": {"osDisk": {"osType": "Windows"}}}})
NO_INSTALLATION = answer(200, {"patchStatus": {}})
ACCEPTED = answer(202, None, Location=LOCATION, Retry_After="17")
RESULT = answer(200, {"status": "Succeeded", "installedPatchCount": 2, "failedPatchCount": 0,
                      "patches": [{"name": "KB1"}, {"name": "KB2"}]})


def test_a_start_reserves_each_call_before_making_it_and_claims_before_the_post() -> None:
    h = harness({GET_VM.name: [WINDOWS_VM], INSTANCE_VIEW.name: [NO_INSTALLATION],
                 INSTALL_PATCHES.name: [ACCEPTED]})
    assert h.step() is StepResult.STARTED
    assert h.journal.entries == [
        ("reserve", READS), ("arm", "getVm"),  # the OS type
        ("reserve", READS), ("reserve", GUEST_PATCH), ("reserve", WRITES),  # the instance view's, then the POST's
        ("write", "Starting"),  # the claim, before anything that could start an installation
        ("arm", "instanceView"),  # nothing started since the claim: safe to send
        ("arm", "installPatches"),
        ("write", "Running"), ("queue", 17),  # the poll is a delayed message at ARM's Retry-After
    ]
    assert h.row["pollUrl"] == LOCATION and h.row["osType"] == "Windows"
    assert [c["op"] for c in __import__("json").loads(h.row["armCalls"])] == ["getVm", "instanceView",
                                                                              "installPatches"]


def test_a_poll_draws_from_the_poll_budget_and_records_the_result() -> None:
    h = harness({GET_VM.name: [WINDOWS_VM], INSTANCE_VIEW.name: [NO_INSTALLATION],
                 INSTALL_PATCHES.name: [ACCEPTED], POLL_OPERATION.name: [answer(202, None, Retry_After="5"),
                                                                         RESULT]})
    h.step()
    assert h.step() is StepResult.PENDING and h.queue.delays[-1] == 5
    assert h.queue.polls == [True, True]  # once claimed, every step goes to POLLS_QUEUE: polls never delay starts
    del h.journal.entries[:]
    assert h.step() is StepResult.COMPLETED
    assert h.journal.kinds()[:2] == ["reserve", "arm"] and h.journal.entries[0] == ("reserve", "polls")
    assert h.row["state"] == "Completed" and h.row["installedPatchCount"] == 2
    assert h.targets.patches[VM.key] == [{"name": "KB1"}, {"name": "KB2"}]
    assert h.progressed == [RUN]  # the run is told a machine finished (a rollout admits the next, or it closes)


def test_a_poll_is_booked_when_its_budget_is_backlogged_past_retry_after_and_calls_when_it_arrives() -> None:
    h = harness({GET_VM.name: [WINDOWS_VM], INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [ACCEPTED],
                 POLL_OPERATION.name: [answer(202, None, Retry_After="5"), RESULT]}, backlog={POLLS: 40.2})
    assert h.step() is StepResult.STARTED
    # Retry-After said 17 s; the polls' next token is due in 40.2 s: booked now, the message comes then
    assert h.journal.entries[-3:] == [("book", POLLS), ("write", "Running"), ("queue", 41)]
    assert h.queue.sent[-1].held == (POLLS,)
    del h.journal.entries[:]
    h.pacer.backlog = {POLLS: 3.0}  # the backlog has cleared: Retry-After (5 s) comes first, nothing is booked
    assert h.step() is StepResult.PENDING
    assert h.journal.kinds()[:2] == ["arm", "write"]  # the booked token is spent: no reserve, no pacing
    assert h.queue.delays[-1] == 5 and not h.queue.sent[-1].held
    del h.journal.entries[:]
    assert h.step() is StepResult.COMPLETED and h.journal.entries[0] == ("reserve", POLLS)


def test_a_running_machine_is_left_to_its_runs_poll_rounds_unless_its_poll_holds_a_token() -> None:
    h = harness({GET_VM.name: [WINDOWS_VM], INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [ACCEPTED],
                 POLL_OPERATION.name: [answer(202, None, Retry_After="5"), answer(202, None, Retry_After="5")]},
                backlog={POLLS: 40.2})
    assert h.step() is StepResult.STARTED  # booked: its own message, holding the token, as before
    assert h.row["pollRound"] is False and h.queue.rounds == [] and h.queue.sent[-1].held == (POLLS,)
    h.pacer.backlog = {}
    assert h.step() is StepResult.PENDING  # nothing held next: the run's rounds poll it, no message of its own
    assert h.row["pollRound"] is True and h.queue.rounds == [h.row.seq]
    assert h.journal.entries[-2:] == [("write", "Running"), ("queue", 5)]  # written, then a round made sure of


def test_a_poll_in_a_round_hands_its_write_to_the_round_instead_of_writing() -> None:
    h = started_then_polled(answer(202, None, Retry_After="5"))
    h.step()
    before, writes = h.row, h.journal.kinds().count("write")
    deferred: list[tuple[MachineRecord, dict[str, Any]]] = []
    assert MachineStep(before, h.ports, deferred=deferred).poll() is StepResult.PENDING
    assert h.journal.kinds().count("write") == writes and h.row.etag == before.etag  # nothing written ...
    ((record, changes),) = deferred  # ... but handed over, with the ETag it was read with, for the round's batch
    assert record.etag == before.etag and changes["seq"] == before.seq + 1 and changes["pollRound"] is True
    assert changes["polls"] == 1 and "armCalls" in changes
    assert abs((parse_iso(changes["nextActionAt"]) - utcnow()).total_seconds() - 5) < 2  # at its Retry-After


def test_a_poll_in_a_round_that_finds_no_budget_gives_its_token_back_and_stays_due() -> None:
    h = started_then_polled(answer(202, None, Retry_After="5"))
    h.step()
    before, sent = h.row, len(h.queue.sent)
    h.pacer.waits = {POLLS: 4.0}
    del h.journal.entries[:]
    deferred: list[tuple[MachineRecord, dict[str, Any]]] = []
    assert MachineStep(before, h.ports, deferred=deferred).poll() is StepResult.NO_BUDGET
    # no ARM call, no write, no message holding the token (as a step's paced poll would): the token went back
    assert h.journal.kinds() == ["reserve", "release"] and deferred == [] and len(h.queue.sent) == sent
    assert h.row.etag == before.etag


def test_a_poll_whose_booking_fails_is_queued_unbooked_and_the_operation_is_still_recorded() -> None:
    h = harness({GET_VM.name: [WINDOWS_VM], INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [ACCEPTED]},
                backlog={POLLS: 40.2})

    def unreachable(subscription: str, name: str, after: float) -> float | None:
        raise ConflictError("the budget row kept changing")  # StorageContentionError / a Table error alike
    h.pacer.book = unreachable  # type: ignore[method-assign]
    assert h.step() is StepResult.STARTED  # the POST went out: the row must say so
    assert h.row["state"] == "Running" and h.row["pollUrl"] == LOCATION
    assert h.queue.delays[-1] == 17 and h.queue.sent[-1].held == ()  # at Retry-After; it reserves when it comes


def test_a_booked_token_is_given_back_when_the_rows_write_loses_its_race() -> None:
    h = started_then_polled(answer(202, None, Retry_After="5"), answer(202, None, Retry_After="7"))
    h.step()
    carried = carried_poll(h)
    h.pacer.backlog = {POLLS: 40.0}  # the next poll would be booked ...
    h.targets.put({**h.row.columns, "note": "another writer"})  # ... but the carried row's If-Match fails
    del h.journal.entries[:]
    assert run_step(carried, h.ports) is StepResult.PENDING
    kinds = h.journal.kinds()
    assert kinds.count("book") == 2 and kinds.count("release") == 1  # the losing write's token went back
    assert kinds.index("release") < kinds.index("write")


def test_a_second_look_after_a_lost_race_reserves_what_the_first_spent() -> None:
    h = started_then_polled(answer(202, None, Retry_After="5"), answer(202, None, Retry_After="7"))
    h.step()
    carried = replace(carried_poll(h), held=(POLLS,))  # a booked poll: its token is held
    h.targets.put({**h.row.columns, "note": "another writer"})
    del h.journal.entries[:]
    assert run_step(carried, h.ports) is StepResult.PENDING
    # the first look spent the held token on its poll; the second look's poll reserves its own
    assert h.journal.entries[0] == ("arm", "poll") and ("reserve", POLLS) in h.journal.entries[1:]
    assert h.journal.kinds().count("arm") == 2


def test_a_call_is_counted_against_the_read_budget_before_it_is_sent() -> None:
    h = started_then_polled(answer(202, None, Retry_After="5"))
    order: list[str] = []
    send = h.arm.send

    def sending(subscription: str, names: tuple[str, ...]) -> None:
        order.append(f"sending {names[0]}")

    def sent(call: ArmCall, target: MachineRef | str, body: Any = None) -> ArmResponse:
        order.append(f"send {call.name}")
        return send(call, target, body)
    h.pacer.sending = sending  # type: ignore[method-assign]
    h.arm.send = sent  # type: ignore[method-assign]
    h.step()
    h.step()
    assert order == ["sending reads", "send getVm", "sending reads", "send instanceView",
                     "sending guestPatch", "send installPatches", "sending polls", "send poll"]


def travelled(msg: StepMessage) -> StepMessage:
    """`msg` as the next step gets it: its carried row through JSON, as in the queue (CarriedRow.to_json/from_json)."""
    row = CarriedRow.from_json(json.loads(json.dumps(msg.row.to_json()))) if msg.row is not None else None
    return replace(msg, row=row)


def carried_poll(h: Harness) -> StepMessage:
    """A poll message carrying the machine's row as stored (a booked or paced poll's, which keep their own message:
    a poll left to the run's rounds has none), through JSON as in the queue."""
    row = h.row
    return travelled(StepMessage(RUN, VM.key, row.seq, (), CarriedRow.of(row.etag, row.columns)))


def started_then_polled(*polls: ArmResponse) -> Harness:
    """A Windows VM whose start is accepted (Retry-After 17), then answers `polls` in turn."""
    return harness({GET_VM.name: [WINDOWS_VM], INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [ACCEPTED],
                    POLL_OPERATION.name: list(polls)})


def test_a_poll_acts_on_the_row_its_message_carries_without_reading_it() -> None:
    h = started_then_polled(answer(202, None, Retry_After="5"), RESULT)
    assert h.step() is StepResult.STARTED and h.targets.reads == 1  # a start reads its row: it must see a cancel
    sent = carried_poll(h)
    assert sent.row is not None and sent.row.columns == {k: v for k, v in h.row.columns.items() if v is not None}
    assert run_step(sent, h.ports) is StepResult.PENDING
    assert run_step(carried_poll(h), h.ports) is StepResult.COMPLETED
    assert h.targets.reads == 2  # the pending poll read none; the finishing one once, before its patch rows
    assert h.row["state"] == "Completed" and h.row["installedPatchCount"] == 2 and h.row["polls"] == 1


def test_a_carried_row_that_changed_since_is_read_and_the_step_acts_again() -> None:
    h = started_then_polled(answer(202, None, Retry_After="5"), answer(202, None, Retry_After="7"))
    h.step()
    carried = carried_poll(h)
    h.targets.put({**h.row.columns, "note": "another writer"})  # same seq, new ETag: a write the message missed
    del h.journal.entries[:]
    assert run_step(carried, h.ports) is StepResult.PENDING
    assert h.targets.reads == 2  # the start's, then this step's after its If-Match failed
    assert h.journal.kinds().count("arm") == 2 and h.journal.kinds().count("write") == 1  # polled again, wrote once
    assert h.row["note"] == "another writer" and h.row["polls"] == 1 and h.queue.delays[-1] == 7


def test_a_copy_of_a_carried_poll_that_lost_stops_without_a_second_write() -> None:
    h = started_then_polled(answer(202, None, Retry_After="5"), answer(202, None, Retry_After="5"))
    h.step()
    carried = carried_poll(h)
    assert run_step(carried, h.ports) is StepResult.PENDING
    writes = h.journal.kinds().count("write")
    assert run_step(carried, h.ports) is StepResult.STALE  # the copy: its If-Match fails, the row says seq moved
    assert h.journal.kinds().count("write") == writes and len(h.queue.sent) == 2  # the start's and the poll's


def test_a_late_copy_of_a_carried_poll_writes_nothing_once_its_machine_has_finished() -> None:
    h = started_then_polled(answer(202, None, Retry_After="5"), RESULT, RESULT)
    recorded: list[str] = []
    saved: list[str] = []

    def record(target: Mapping[str, Any], state: MachineState, result: dict[str, Any] | None,
               run_id: str) -> dict[str, Any]:
        recorded.append(state.value)  # an assessment's fleet record, say: a side effect before the row's write
        return {}

    h.ports = replace(h.ports, hooks=replace(h.ports.hooks, on_terminal={"installPatches": record}))
    save = h.targets.save_patches

    def save_patches(run_id: str, key: str, patches: list[dict[str, Any]]) -> None:
        saved.append(key)
        save(run_id, key, patches)
    h.targets.save_patches = save_patches  # type: ignore[method-assign]
    h.step()
    assert run_step(carried_poll(h), h.ports) is StepResult.PENDING
    last_poll = carried_poll(h)
    assert run_step(last_poll, h.ports) is StepResult.COMPLETED and recorded == ["Completed"] and len(saved) == 1
    # the host died before deleting that message: it comes back, minutes later, with the row as it was then
    assert run_step(last_poll, h.ports) is StepResult.FINISHED
    assert recorded == ["Completed"] and len(saved) == 1  # no second record, no patches written again


def carried_start(h: Harness, held: tuple[str, ...] = ()) -> StepMessage:
    """A start message carrying the machine's Queued row as stored (what dispatch.send_starts sends), through JSON."""
    row = h.row
    return travelled(StepMessage(RUN, VM.key, row.seq, held, CarriedRow.of(row.etag, row.columns)))


def test_a_start_acts_on_the_row_its_message_carries_and_claims_it_if_match() -> None:
    h = harness({INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [ACCEPTED]}, osType="Windows")
    assert run_step(carried_start(h, (GUEST_PATCH,)), h.ports) is StepResult.STARTED
    assert h.targets.reads == 0  # the claim's If-Match stood in for the read
    assert h.journal.kinds().count("write") == 2 and h.journal.entries.count(("arm", INSTALL_PATCHES.name)) == 1


def test_a_paced_start_carries_its_row_to_its_next_try() -> None:
    h = harness({INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [ACCEPTED]},
                waits={GUEST_PATCH: 42.5}, osType="Windows")
    assert h.step() is StepResult.PACED
    sent = h.queue.sent[-1]
    assert sent.row is not None and sent.row.etag == h.row.etag and sent.row.columns.get("state") == "Queued"


def test_a_carried_start_whose_row_was_claimed_since_reads_it_and_does_not_post_again() -> None:
    h = harness({INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [ACCEPTED]}, osType="Windows")
    message = carried_start(h)
    # a copy of this start message won meanwhile: the row is Starting now, at the same seq, with a fresh claim
    h.targets.put({**h.row.columns, "state": "Starting", "claimedAt": iso(utcnow())})
    assert run_step(message, h.ports) is StepResult.CLAIMED_ELSEWHERE  # the claim's If-Match failed: read, looked again
    assert h.targets.reads == 1 and ("arm", INSTALL_PATCHES.name) not in h.journal.entries
    assert "write" not in h.journal.kinds()


def given_back(h: Harness) -> bool:
    """Every token reserved was given back (Budget.release): none is lost to a start that did not call."""
    return (sorted(d for k, d in h.journal.entries if k == "reserve")
            == sorted(d for k, d in h.journal.entries if k == "release"))


def test_a_carried_start_of_a_machine_ended_since_sends_nothing_and_gives_its_tokens_back() -> None:
    h = harness({INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [ACCEPTED]}, osType="Windows")
    message = carried_start(h)
    h.targets.put({**h.row.columns, "state": "Skipped", "errorCode": "RunCanceled"})  # any write since the release
    assert run_step(message, h.ports) is StepResult.FINISHED
    assert "arm" not in h.journal.kinds() and "write" not in h.journal.kinds()
    assert "reserve" in h.journal.kinds() and given_back(h)  # the instance view's and the POST's, reserved to claim
    # a forged or older message whose ETag never was the row's: the same
    forged = StepMessage(RUN, VM.key, h.row.seq, (), CarriedRow.of("0", {**h.row.columns, "state": "Queued"}))
    assert run_step(forged, h.ports) is StepResult.FINISHED and "arm" not in h.journal.kinds()


def test_a_carried_start_changed_since_that_must_wait_gives_back_what_it_reserved_for_then() -> None:
    h = harness({INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [ACCEPTED]},
                waits={GUEST_PATCH: 42.5}, osType="Windows")
    message = carried_start(h)
    h.targets.put({**h.row.columns, "note": "another writer"})  # still Queued at its seq: the second look waits
    assert run_step(message, h.ports) is StepResult.PACED and h.targets.reads == 1
    released = [d for k, d in h.journal.entries if k == "release"]
    assert released == [READS, GUEST_PATCH]  # the first look's, whose write failed; the second holds its own
    assert h.journal.kinds().count("write") == 1 and h.queue.sent[-1].held == (GUEST_PATCH, READS)


def test_a_carried_start_of_a_maintenance_window_confirms_its_row_before_the_window_leases_the_vm() -> None:
    leases: list[str] = []

    class Leases:  # the maintenance store's leases (shared/storage/maintenance_store.py): a write of its own
        def lease(self, vm: MachineRef, *, run_id: str, configuration: str, until: datetime, now: datetime,
                  take_over: str | None = None) -> dict[str, Any] | None:
            leases.append(run_id)
            return None
    for changed in (True, False):
        window = WithinWindow(Leases(), cast(Any, None), utcnow)  # the real hook, on a fake store
        h = harness({INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [ACCEPTED]},
                    before_start=(window,), osType="Windows")
        h.ports = replace(h.ports, specs=FakeSpecs(configuration="mc-1", window_end=iso(utcnow() + timedelta(hours=3))))
        message = carried_start(h)
        leases.clear()
        if changed:
            h.targets.put({**h.row.columns, "state": "Skipped", "errorCode": "WindowClosed"})
            assert run_step(message, h.ports) is StepResult.FINISHED and leases == [] and given_back(h)
        else:
            assert run_step(message, h.ports) is StepResult.STARTED and leases == [RUN] and h.targets.reads == 1


def test_a_row_is_carried_only_when_every_value_reads_back_the_same_and_the_message_stays_small() -> None:
    assert CarriedRow.of("e", {"a": "x", "b": 1, "c": 1.5, "d": True, "gone": None}) == CarriedRow(
        "e", {"a": "x", "b": 1, "c": 1.5, "d": True})  # None is not stored by Table storage
    assert CarriedRow.of("e", {"big": 2**31}) is None  # read back as an Int64 EntityProperty, not an int
    assert CarriedRow.of("e", {"nan": float("nan")}) is None and CarriedRow.of("", {"a": "x"}) is None
    run = "e5dd4c8afe8-fcad69ec"
    small = StepMessage(run, VM.key, 3, (), CarriedRow("e", {"a": "x"}))
    assert parse_step(small.encode()) == small
    large = StepMessage(run, VM.key, 3, (), CarriedRow("e", {"a": "x" * 40_000}))
    assert parse_step(large.encode()).row is None  # past CARRIED_ROW_LIMIT: sent without it, the step reads
    bad = small.encode().replace('"etag":"e"', '"etag":5')
    assert parse_step(bad).row is None and parse_step(bad).seq == 3  # a malformed row is ignored, not the step


@pytest.mark.parametrize(("columns", "rollout", "first_poll"), [
    ({"shortestSeconds": 600}, False, 540),  # its shortest installation took 600 s: one poll at 540 s
    ({"predictedSeconds": 600, "predictionBasis": "peers"}, False, 17),  # no history of its own: Retry-After
    ({"shortestSeconds": 600}, True, 17),  # a rollout gates waves on failures: an early end must be seen early
])
def test_a_machine_with_a_history_is_first_polled_near_its_shortest_installation(
        columns: dict[str, Any], rollout: bool, first_poll: int) -> None:
    h = harness({GET_VM.name: [WINDOWS_VM], INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [ACCEPTED]},
                **columns)
    h.ports = replace(h.ports, specs=FakeSpecs(rollout=rollout))
    assert h.step() is StepResult.STARTED
    assert h.queue.delays == [first_poll] and h.queue.polls == [True]


@pytest.mark.parametrize(("seen", "os_type", "rollout", "first_poll"), [
    (MIN_SAMPLES, "Windows", False, 270),  # the run's Windows installations end from 300 s: first poll at 90 %
    (MIN_SAMPLES - 1, "Windows", False, 17),  # too few seen yet: ARM's Retry-After
    (MIN_SAMPLES, "Linux", False, 17),  # another OS type's ends say nothing of this one's
    (MIN_SAMPLES, "Windows", True, 17),  # a rollout's failure gate waits on early ends
])
def test_a_machine_without_a_history_is_first_polled_near_the_runs_early_ends_on_its_os_type(
        seen: int, os_type: str, rollout: bool, first_poll: int) -> None:
    durations = RunDurations()
    for i in range(seen):
        durations.observe(RUN, os_type, 300.0 + i)
    durations.observe("another-run", "Windows", 30.0)
    h = harness({GET_VM.name: [WINDOWS_VM], INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [ACCEPTED]},
                durations=durations)
    h.ports = replace(h.ports, specs=FakeSpecs(rollout=rollout))
    assert h.step() is StepResult.STARTED
    assert h.queue.delays == [first_poll]


def test_a_finished_installation_is_seen_by_the_runs_durations_with_its_os_type() -> None:
    durations = RunDurations()
    h = harness({GET_VM.name: [WINDOWS_VM], INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [ACCEPTED],
                 POLL_OPERATION.name: [RESULT] * MIN_SAMPLES}, durations=durations)
    h.step()
    for _ in range(MIN_SAMPLES):  # the same end delivered again is seen again: a hint, not a count
        h.targets.put({**h.row, "state": "Running", "seq": 1, "operationStartedAt": "2020-01-01T00:00:00Z"})
        assert h.step() is StepResult.COMPLETED
    assert durations.early_end(RUN, "Windows") is not None and durations.early_end(RUN, "Windows") > 3600
    assert durations.early_end(RUN, "Linux") is None


@pytest.mark.parametrize(("seen", "retry_after", "rollout", "next_poll"), [
    (60, 30, False, 79),  # half the run's 60 longer installations had ended 79 s on from this one's age
    (60, 10, False, 40),  # but never more than four Retry-Afters later: an end is seen at most that late
    (60, 30, True, 30),  # a rollout's failure gate waits on early ends: ARM's Retry-After
    (MIN_SAMPLES - 1, 30, False, 30),  # too few of the run's installations ran longer: Retry-After
])
def test_a_running_installation_is_polled_again_when_half_the_runs_longer_ones_had_ended(
        seen: int, retry_after: int, rollout: bool, next_poll: int) -> None:
    durations = RunDurations()
    for i in range(seen):
        durations.observe(RUN, "Windows", 100.0 + i)  # 100 .. 159 s
    for i in range(MIN_SAMPLES):
        durations.observe(RUN, "Windows", 10.0 + i)  # shorter than this one's age: they say nothing of it
    h = harness({GET_VM.name: [WINDOWS_VM], INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [ACCEPTED],
                 POLL_OPERATION.name: [answer(200, {"status": "InProgress"}, Retry_After=str(retry_after))]},
                durations=durations)
    h.ports = replace(h.ports, specs=FakeSpecs(rollout=rollout))
    assert h.step() is StepResult.STARTED
    h.targets.put({**h.row.columns, "operationStartedAt": iso(utcnow() - timedelta(seconds=50))})
    assert h.step() is StepResult.PENDING
    assert h.queue.delays[-1] in (next_poll - 1, next_poll)  # 129 s, the 30th of the 60, less its 50 s so far
    assert h.row["polls"] == 1


def test_run_durations_keep_the_low_quantile_within_their_bounds() -> None:
    from shared.runs import run_durations

    durations = RunDurations()
    for i in range(run_durations.MAX_SAMPLES * 3):  # 0 .. 6143 s, in a scrambled order
        durations.observe("r", "Linux", float((i * 7919) % (run_durations.MAX_SAMPLES * 3)))
    low = durations.early_end("r", "Linux")
    assert low is not None and abs(low - 0.1 * run_durations.MAX_SAMPLES * 3) < 60
    exact = RunDurations()
    for seconds in [*range(100, 160), *range(10, 30)]:
        exact.observe("r", "Linux", float(seconds))
    assert exact.later_end("r", "Linux", 50.0) == 79.0  # the 30th of the 60 longer (129 s), less 50 s
    assert exact.later_end("r", "Linux", 139.0) == 10.0  # exactly MIN_SAMPLES longer: 140-159, the 10th is 149 s
    assert exact.later_end("r", "Linux", 140.0) is None  # 19 longer
    later = durations.later_end("r", "Linux", 3000.0)  # half the way from 3000 s to the 6143 s end
    assert later is not None and abs(later - (6144 - 3000) / 2) < 60
    assert durations.later_end("r", "Linux", 6140.0) is None  # too few ran longer: the run's tail
    for i in range(run_durations.MAX_RUNS):
        durations.observe(f"run-{i}", "Linux", 1.0)
    assert durations.early_end("r", "Linux") is None  # the oldest run is forgotten
    durations.observe("r", "", 5.0)
    durations.observe("r", "Linux", 0.0)
    assert durations.early_end("r", "") is None


def test_a_throttled_post_waits_retry_after_from_queued_and_moves_only_the_posts_budgets() -> None:
    h = harness({INSTANCE_VIEW.name: [NO_INSTALLATION],
                 INSTALL_PATCHES.name: [answer(429, {"error": {"code": "TooManyRequests", "message": "slow"}},
                                               Retry_After="30")]}, osType="Windows")
    assert h.step() is StepResult.RETRY_THROTTLED
    assert h.row["state"] == "Queued" and h.row["throttles"] == 1  # not sent: started again later
    assert h.queue.delays[-1] == 30
    assert h.pacer.observed[-1] == ((GUEST_PATCH, WRITES), 429)  # no Compute header: ARM's write limit
    # the refused POST spent no guest-patch token: the retry keeps it instead of queueing behind the run's slots,
    # and says when, so the run's next release makes room for it (dispatch.room_for_throttled)
    assert h.queue.sent[-1].held == (GUEST_PATCH,) and h.row["throttledAt"]
    del h.journal.entries[:]
    h.arm.script[INSTALL_PATCHES.name].append(ACCEPTED)
    h.arm.script[INSTANCE_VIEW.name].append(NO_INSTALLATION)
    assert h.step() is StepResult.STARTED
    assert ("reserve", GUEST_PATCH) not in h.journal.entries


def test_a_throttled_read_keeps_the_guest_patch_token_the_start_held() -> None:
    h = harness({INSTANCE_VIEW.name: [answer(429, None, Retry_After="9")]}, osType="Windows")
    h.queue.sent.append(StepMessage(RUN, VM.key, 0, (GUEST_PATCH,)))  # its slot's token, from dispatch
    assert h.step() is StepResult.RETRY_THROTTLED
    assert h.queue.sent[-1].held == (GUEST_PATCH,) and h.row["throttledAt"]


def test_a_throttled_start_holding_no_slot_reserves_afresh_and_asks_no_room() -> None:
    h = harness({GET_VM.name: [answer(429, None, Retry_After="9")]})
    assert h.step() is StepResult.RETRY_THROTTLED  # its first read, before any guest-patch token was taken
    assert h.queue.sent[-1].held == () and "throttledAt" not in h.row.columns


def test_a_throttled_read_moves_only_the_read_budget() -> None:
    h = harness({INSTANCE_VIEW.name: [answer(429, None, Retry_After="9")]}, osType="Windows")
    assert h.step() is StepResult.RETRY_THROTTLED
    assert h.pacer.observed == [((READS, POLLS), 429)]  # ARM's read limit (both shares); guest patch, writes untouched
    assert "installPatches" not in h.journal.kinds() and h.queue.delays[-1] == 9


def test_no_budget_now_goes_back_to_the_queue_holding_what_it_took() -> None:
    h = harness({INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [ACCEPTED]},
                waits={GUEST_PATCH: 42.5}, osType="Windows")
    assert h.step() is StepResult.PACED
    assert h.row["state"] == "Queued" and h.queue.delays[-1] == 43
    assert h.queue.polls == [False]  # a start that waits stays a start (OPERATIONS_QUEUE)
    assert h.queue.sent[-1].held == (GUEST_PATCH, READS)  # the read taken before it, and the one that waits
    assert "arm" not in h.journal.kinds()  # nothing sent, nothing claimed
    h.pacer.waits.clear()
    del h.journal.entries[:]
    assert h.step() is StepResult.STARTED
    assert h.journal.entries[0] == ("reserve", WRITES)  # held tokens are spent, not reserved again


def test_a_lost_claim_sends_nothing() -> None:
    h = harness({}, osType="Windows")
    other = h.row
    h.targets.update_target(other, {"note": "another delivery moved the row"})
    stale = other  # this delivery read the row before the other one wrote it
    from shared.runs.machine_worker import MachineStep

    assert MachineStep(stale, h.ports).start() is StepResult.LOST_CLAIM
    assert "arm" not in h.journal.kinds()


@pytest.mark.parametrize(("decision", "state"), [
    (Skip("RunHalted", "the run stopped before this machine started"), "Skipped"),
    (Proceed({"maximumDuration": "PT1H", "rebootSetting": "IfRequired"}), "Running"),
])
def test_a_features_decision_is_applied_by_the_step(decision: Any, state: str) -> None:
    seen: list[StartContext] = []

    def hook(ctx: StartContext) -> Any:
        seen.append(ctx)
        return decision
    h = harness({INSTANCE_VIEW.name: [NO_INSTALLATION], INSTALL_PATCHES.name: [ACCEPTED]}, osType="Windows",
                before_start=(hook,))
    h.step()
    assert seen[0].os_type == "Windows" and seen[0].body and seen[0].body["maximumDuration"] == "PT2H"
    assert h.row["state"] == state
    if state == "Skipped":
        assert h.row["errorCode"] == "RunHalted" and "arm" not in h.journal.kinds()


def test_a_poll_comes_later_by_the_poll_shares_spacing_but_never_past_the_deadline_nor_for_a_result() -> None:
    status_url = "https://management.azure.com/subscriptions/s/providers/Microsoft.Compute/locations/westeurope/" \
                 "operations/op-1?api-version=2024-07-01"
    h = harness({GET_VM.name: [WINDOWS_VM], INSTANCE_VIEW.name: [NO_INSTALLATION],
                 INSTALL_PATCHES.name: [answer(202, None, Location=LOCATION, Azure_AsyncOperation=status_url,
                                               Retry_After="17")],
                 POLL_OPERATION.name: [answer(200, {"status": "InProgress"}, Retry_After="5"),
                                       answer(200, {"status": "InProgress"}, Retry_After="5"),
                                       answer(200, {"status": "Succeeded"})]})
    h.pacer.spaced = 12.7  # the polls share has been finding its burst in use
    assert h.step() is StepResult.STARTED
    assert h.queue.delays[-1] == 17  # the first poll is timed by the start (Retry-After, or the run's early ends)
    assert "runningSeenAt" not in h.row.columns
    assert h.step() is StepResult.PENDING
    assert h.queue.delays[-1] == 5 + 12  # Retry-After, then the spacing in whole seconds
    assert h.row["runningSeenAt"]  # the end comes after this poll (the machine's history counts from it)
    h.targets.put({**h.row.columns, "deadline": iso(utcnow() + timedelta(seconds=14))})
    assert h.step() is StepResult.PENDING
    # spaced only up to one Retry-After before the deadline, so the operation is still asked about before it
    assert h.queue.delays[-1] in (8, 9)
    h.targets.put({**h.row.columns, "deadline": iso(utcnow() + timedelta(hours=1))})
    h.ports.specs.window_end = iso(utcnow() + timedelta(seconds=14))  # type: ignore[attr-defined]
    h.arm.script[POLL_OPERATION.name].insert(0, answer(200, {"status": "InProgress"}, Retry_After="5"))
    assert h.step() is StepResult.PENDING
    assert h.queue.delays[-1] in (8, 9)  # and before the maintenance window's end
    h.ports.specs.window_end = ""  # type: ignore[attr-defined]
    running_seen = h.row["runningSeenAt"]
    h.targets.put({**h.row.columns, "runningSeenAt": "2026-12-01T03:00:00.000Z"})
    assert h.step() is StepResult.PENDING  # the status says Succeeded: its result is read next, not spaced
    assert h.row["pollUrl"] == LOCATION and h.queue.delays[-1] == 0
    assert h.row["runningSeenAt"] == "2026-12-01T03:00:00.000Z" != running_seen  # it had ended: not "running"
