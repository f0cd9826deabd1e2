"""Run counters (shared.core.counters) say what a pass over the machines says: the same summary as
summarize(), the same per-wave states, and the same rollout failures as failure_kind() per machine."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.arm.patch_status import OUTCOME_UNKNOWN
from shared.core.counters import (
    FAILURE_KINDS,
    OUTCOME_UNKNOWN_CODE,
    RunCounters,
    count_rows,
    counts_delta,
    machine_counts,
)
from shared.core.states import TERMINAL_STATES, MachineState, summarize
from shared.rollouts.plan import failure_kind

machines = st.lists(st.fixed_dictionaries({
    "state": st.sampled_from([s.value for s in MachineState]),
    "status": st.sampled_from(["", "Succeeded", "CompletedWithWarnings", "Failed", "Unknown"]),
    "failedPatchCount": st.sampled_from([0, 0, 2]),
    "maintenanceWindowExceeded": st.booleans(),
    "errorCode": st.sampled_from(["", "", OUTCOME_UNKNOWN, "PollForbidden", "RunHalted"]),
    "wave": st.sampled_from([None, 0, 1, 2]),
    "admitted": st.sampled_from([None, False, True]),
}), max_size=40)
failure_ons = st.lists(st.sampled_from(FAILURE_KINDS), min_size=1, unique=True)


def test_the_outcome_unknown_code_is_arms() -> None:
    assert OUTCOME_UNKNOWN_CODE == OUTCOME_UNKNOWN


@settings(max_examples=300, deadline=None)
@given(machines, failure_ons)
def test_counters_say_what_a_pass_over_the_machines_says(rows: list[dict[str, Any]], failure_on: list[str]) -> None:
    counters = RunCounters(count_rows(rows))
    assert counters.summary() == summarize(rows)
    waves: dict[int, Counter[str]] = {}
    for t in rows:
        waves.setdefault(int(t["wave"] or 0), Counter())[t["state"]] += 1
    assert counters.waves() == {w: dict(c) for w, c in sorted(waves.items())}
    admitted = [t for t in rows if t["admitted"]]
    assert counters.in_flight == sum(1 for t in admitted if t["state"] not in TERMINAL_STATES)
    assert counters.waiting() == sum(1 for t in rows if not t["admitted"] and t["state"] == "Queued")
    expected = Counter(k for t in admitted if t["state"] in TERMINAL_STATES and (k := failure_kind(t, failure_on)))
    assert counters.failures(failure_on) == expected
    for wave in waves:
        in_wave = [t for t in rows if int(t["wave"] or 0) == wave]
        kinds = Counter(failure_kind(t, failure_on) for t in in_wave)
        kinds.pop(None, None)
        assert counters.failures(failure_on, wave=wave) == kinds
        assert counters.wave_admitted(wave) == sum(1 for t in in_wave if t["admitted"])
        assert counters.wave_unfinished(wave) == sum(1 for t in in_wave if t["state"] not in TERMINAL_STATES)


@given(machines.filter(bool), st.data())
def test_a_change_moves_the_counts_by_its_delta(rows: list[dict[str, Any]], data: st.DataObject) -> None:
    before = rows[0]
    after = {**before, "state": data.draw(st.sampled_from([s.value for s in MachineState])),
             "admitted": data.draw(st.booleans())}
    moved = count_rows(rows)
    moved.update(counts_delta(before, after))
    assert {k: n for k, n in moved.items() if n} == dict(count_rows([after, *rows[1:]]))
    assert counts_delta(before, {**before, "polls": 3, "nextActionAt": "x"}) == {}  # not counted: no move


def test_the_keys_of_one_machine() -> None:
    assert machine_counts({"state": "Completed", "status": "Succeeded", "failedPatchCount": 1, "wave": 2,
                           "admitted": True}) == Counter({
        "state:Completed": 1, "wave:2:state:Completed": 1, "outcome:warnings": 1,
        "wave:2:failure:FailedPatches": 1, "wave:2:admitted": 1, "admitted:state:Completed": 1,
        "admitted:failure:FailedPatches": 1})
    assert machine_counts({"state": "Queued"}) == Counter({"state:Queued": 1, "wave:0:state:Queued": 1,
                                                           "wave:0:waiting": 1})
