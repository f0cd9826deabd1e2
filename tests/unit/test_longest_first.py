"""Longest first (LONGEST_FIRST): the same start slots, handed to the longest predicted machines first, end a fixed
fleet sooner than handing them out in request order (shared/runs/dispatch.py start_slots), and a rollout's waves
start in that order too (shared/rollouts/plan.py start_ranks)."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from shared.arm.calls import GUEST_PATCH, READS, WRITES
from shared.core.clock import iso, utcnow
from shared.core.ids import MachineRef
from shared.core.records import MachineRecord
from shared.core.settings import PlanSettings
from shared.rollouts.plan import start_ranks
from shared.runs import dispatch
from shared.runs.budget import Bucket, slots
from shared.runs.dispatch import send_starts, start_slots

SUB = "00000000-0000-0000-0000-0000000000aa"
# A fixed fleet in request order: seconds each installation takes. The long ones are not first.
FLEET = {"vm-a": 2, "vm-b": 3, "vm-c": 9, "vm-d": 1, "vm-e": 4, "vm-f": 10, "vm-g": 2, "vm-h": 8}


class FakePacer:
    """Compute's guest-patch bucket as one start a second from now (no burst); reads and writes never bind."""

    buckets = {READS: Bucket(READS, 1000, 1000.0), WRITES: Bucket(WRITES, 1000, 1000.0)}

    def reserve_block(self, subscription: str, name: str, k: int, **_: Any) -> list[float]:
        assert name == GUEST_PATCH
        return slots(Bucket(GUEST_PATCH, 1, 1.0), 0.0, 0.0, k)[1]


class FakeQueues:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send_step(self, run_id: str, key: str, seq: int, delay: int = 0, **_: Any) -> None:
        self.sent.append(key)


def deps(*, longest_first: bool) -> SimpleNamespace:
    return SimpleNamespace(pacer=FakePacer(), queues=FakeQueues(), settings=SimpleNamespace(
        plans=PlanSettings(max_age_hours=24, default_install_seconds=1200, longest_first=longest_first),
        pacing=SimpleNamespace(pacing_late_seconds=5)))


def chunks() -> list[list[str]]:
    return [[MachineRef(SUB, "rg", name).resource_id for name in FLEET]]


def makespan(slot_seconds: dict[str, int]) -> int:
    """When the last machine is done: its slot plus what it takes."""
    return max(slot_seconds[MachineRef(SUB, "rg", name).key] + seconds for name, seconds in FLEET.items())


def predicted() -> dict[str, float]:
    return {MachineRef(SUB, "rg", name).key: float(seconds) for name, seconds in FLEET.items()}


def test_longest_first_shortens_the_makespan_of_a_fixed_fleet() -> None:
    request_order = start_slots(deps(longest_first=True), chunks())  # nothing predicted: the request's order
    assert sorted(request_order.values()) == list(range(len(FLEET)))
    assert makespan(request_order) == 15  # vm-f (10 s) starts 6th, at 5 s; vm-h (8 s) 8th, at 7 s
    longest = start_slots(deps(longest_first=True), chunks(), predicted=predicted())
    assert sorted(longest.values()) == sorted(request_order.values())  # the same slots, handed out differently
    assert makespan(longest) == 10  # the 10 s one first; every later start is shorter than its head start
    assert longest[MachineRef(SUB, "rg", "vm-f").key] == 0 and longest[MachineRef(SUB, "rg", "vm-d").key] == 7


def test_longest_first_off_keeps_the_request_order() -> None:
    off = start_slots(deps(longest_first=False), chunks(), predicted=predicted())
    assert off == start_slots(deps(longest_first=True), chunks())
    assert makespan(off) == 15


def test_equal_predictions_keep_the_request_order() -> None:
    same = {k: 1200.0 for k in predicted()}  # no history anywhere: every machine the default
    assert start_slots(deps(longest_first=True), chunks(), predicted=same) == start_slots(
        deps(longest_first=True), chunks())


def test_a_wave_starts_longest_first_and_waves_stay_as_assigned() -> None:
    order = ["a", "b", "c", "d", "e"]
    waves = {"a": 0, "b": 0, "c": 1, "d": 1, "e": 1}
    seconds = {"a": 100.0, "b": 300.0, "c": 50.0, "e": 50.0}  # d has no prediction: 0 s, last
    assert start_ranks(order, waves, seconds, longest_first=True) == {"b": 0, "a": 1, "c": 0, "e": 1, "d": 2}
    assert start_ranks(order, waves, seconds, longest_first=False) == {"a": 0, "b": 1, "c": 0, "d": 1, "e": 2}


@pytest.mark.parametrize(("longest_first", "expected"), [(True, ["b", "c", "a", "d"]), (False, ["a", "b", "c", "d"])])
def test_start_messages_due_at_once_are_sent_longest_first(monkeypatch: pytest.MonkeyPatch, longest_first: bool,
                                                           expected: list[str]) -> None:
    monkeypatch.setattr(dispatch, "SEND_PARALLELISM", 1)  # one sender: the order sent is the order asked
    now, later = iso(utcnow() + timedelta(seconds=1)), iso(utcnow() + timedelta(seconds=30))
    rows = [MachineRecord(etag="", run_id="r", key=name, columns={"seq": 0, "nextActionAt": due,
                                                                    "predictedSeconds": seconds})
            for name, due, seconds in (("a", now, 5), ("b", now, 50), ("c", now, 20), ("d", later, 100))]
    d = deps(longest_first=longest_first)
    send_starts("r", rows, d)  # a burst: a, b and c due at once, then d
    assert d.queues.sent == expected
