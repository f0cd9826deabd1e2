"""Installation histories (shared/runs/install_history.py): what a closed install run records per machine, that
closing it twice records each installation once, and how dispatch predicts from them. Fakes, no storage."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from shared.core.counters import RunCounters, count_rows
from shared.core.ids import MachineRef
from shared.core.records import MachineRecord, RunRecord, RunSpec
from shared.core.settings import PlanSettings
from shared.runs.completion import complete_run_if_done
from shared.runs.install_history import predict_machines, record_run, sample_of
from shared.runs.predictions import Sample

SUB = "00000000-0000-0000-0000-0000000000aa"
RUN = "run-1"


def key(name: str, sub: str = SUB) -> str:
    return f"{sub}|rg|{name}"


def finished(name: str, **columns: Any) -> MachineRecord:
    return MachineRecord(etag="e", run_id=RUN, key=key(name), columns={
        "resourceId": MachineRef(SUB, "rg", name).resource_id, "state": "Completed", "status": "Succeeded",
        "osType": "Linux", "operationStartedAt": "2026-12-01T03:00:00.000Z",
        "completedAt": "2026-12-01T03:07:30.000Z", "installedPatchCount": 6, "rebootStatus": "Completed",
        "predictedSeconds": 400, **columns})


class FakeDurations:
    def __init__(self, rows: dict[str, dict[str, Any]] | None = None) -> None:
        self.rows: dict[str, dict[str, Any]] = dict(rows or {})
        self.queries: list[str] = []
        self.saves: list[tuple[str, int]] = []

    def histories(self, subscription_id: str) -> dict[str, dict[str, Any]]:
        self.queries.append(subscription_id)
        return {k: v for k, v in self.rows.items() if k.startswith(subscription_id + "|")}

    def save(self, subscription_id: str, rows: Iterable[tuple[MachineRef, dict[str, Any]]]) -> int:
        written = list(rows)
        self.saves.append((subscription_id, len(written)))
        self.rows.update((vm.key, row) for vm, row in written)
        return len(written)


class FakeStore:
    """The run's rows and entity as complete_run_if_done and record_run read them."""

    def __init__(self, targets: list[MachineRecord]) -> None:
        self.targets = targets
        self.run = RunRecord(etag="r", run_id=RUN, columns={"operation": "installPatches", "countersVersion": 1})
        self.closes = 0

    def run_counters(self, run_id: str, *, counted: bool) -> RunCounters:
        return RunCounters(dict(count_rows(self.targets)))

    def has_unfinished_targets(self, run_id: str) -> bool:
        return False

    def get_run(self, run_id: str) -> RunRecord:
        return self.run

    def update_run(self, run_id: str, changes: dict[str, Any], etag: str | None = None) -> None:
        self.closes += 1
        self.run = self.run.with_changes(changes)

    def iter_targets(self, run_id: str, *, select: list[str] | None = None, **_: Any) -> Iterator[MachineRecord]:
        yield from self.targets


class FakeInventory:
    """The fleet inventory's OS types (FleetStore.query_machines), by machine key."""

    def __init__(self, os_types: Mapping[str, str] | None = None) -> None:
        self.os_types = dict(os_types or {})
        self.queries: list[str] = []

    def query_machines(self, subscription_id: str, resource_group: str | None = None, **_: Any) -> list[dict[str, Any]]:
        self.queries.append(subscription_id)
        return [{"RowKey": k.split("|", 1)[1], "osType": os} for k, os in self.os_types.items()
                if k.split("|", 1)[0] == subscription_id]


def deps(targets: list[MachineRecord], durations: FakeDurations | None = None, *,
         planned: Mapping[str, float] | None = None, inventory: FakeInventory | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        store=FakeStore(targets), durations=durations or FakeDurations(), fleet=inventory or FakeInventory(),
        settings=SimpleNamespace(plans=PlanSettings(max_age_hours=24, default_install_seconds=1200,
                                                    longest_first=True), events=SimpleNamespace(webhooks=())),
        run_spec=lambda run_id: RunSpec("installPatches", {}, counted=True),
        send_delivery=lambda message, delay_seconds=0: None,
        predicted_seconds=lambda run, keys: planned)


def test_a_finished_installation_gives_one_sample_with_what_it_took() -> None:
    assert sample_of(finished("vm1")) == Sample(at="2026-12-01T03:00:00.000Z", seconds=450.0, patches=6,
                                                rebooted=True, predicted=400.0)
    # a health-checked machine ended when its result came, not when it was verified
    verified = sample_of(finished("vm1", state="Unhealthy", operationEndedAt="2026-12-01T03:05:00.000Z"))
    assert verified is not None and verified.seconds == 300.0
    plain = sample_of(finished("vm1", rebootStatus="NotNeeded", predictedSeconds=None, installedPatchCount=None))
    assert plain is not None and (plain.rebooted, plain.predicted, plain.patches) == (False, None, 0)


def test_an_end_seen_after_a_running_poll_counts_at_the_middle_of_the_two_polls() -> None:
    def seconds(**columns: Any) -> tuple[float, float | None] | None:
        sample = sample_of(finished("vm1", **columns))
        return None if sample is None else (sample.seconds, sample.seen)

    # running at 03:05:30, ended by 03:07:30 (a later poll waited two minutes): the end is in between, and the
    # poll that saw it is kept (the shortest, which times first polls, is an upper bound)
    assert seconds(runningSeenAt="2026-12-01T03:05:30.000Z") == (390.0, 450.0)
    assert seconds(runningSeenAt="2026-12-01T03:04:00.000Z",
                   operationEndedAt="2026-12-01T03:05:00.000Z") == (270.0, 300.0)
    # a time outside the installation (a clock step, a copy of a poll that ran late), or one that does not read,
    # is not used
    for odd in ("2026-12-01T02:59:00.000Z", "2026-12-01T03:07:30.000Z", "2026-12-01T03:09:00.000Z", "yesterday"):
        assert seconds(runningSeenAt=odd) == (450.0, None)


@pytest.mark.parametrize("columns", [
    {"state": "Failed"},  # never started, or failed to: nothing ran to an end
    {"state": "TimedOut"},  # its end was never seen: the time is a floor, not a duration
    {"state": "OutcomeUnknown"},
    {"operationStartedAt": ""},  # a synchronous answer: no start recorded
    {"completedAt": "2026-12-01T02:00:00.000Z"},  # ends before it starts (a clock went back): not a duration
])
def test_no_sample_when_the_operation_did_not_run_to_a_seen_end(columns: dict[str, Any]) -> None:
    assert sample_of(finished("vm1", **columns)) is None


def test_closing_a_run_twice_records_each_installation_once() -> None:
    targets = [finished("vm1"), finished("vm2", osType="Windows", rebootStatus="NotNeeded"),
               finished("vm3", state="Failed")]
    durations = FakeDurations({key("vm1"): {"osType": "Linux", "samples": [
        Sample("2026-11-01T03:00:00.000Z", 600.0, 9, True).to_json()]}})
    d = deps(targets, durations)
    assert complete_run_if_done(RUN, d) and complete_run_if_done(RUN, d)  # two callers both close it
    assert d.store.closes == 2
    assert durations.queries == [SUB, SUB] and durations.saves == [(SUB, 2), (SUB, 2)]  # one query, one batch
    vm1 = durations.rows[key("vm1")]
    assert [s["at"] for s in vm1["samples"]] == ["2026-12-01T03:00:00.000Z", "2026-11-01T03:00:00.000Z"]
    assert vm1["samples"][0] == {"at": "2026-12-01T03:00:00.000Z", "seconds": 450.0, "patches": 6,
                                 "rebooted": True, "predicted": 400.0}
    assert durations.rows[key("vm2")]["osType"] == "Windows"
    assert key("vm3") not in durations.rows


def test_an_assessment_run_records_nothing() -> None:
    d = deps([finished("vm1")])
    d.run_spec = lambda run_id: RunSpec("assessPatches", {}, counted=True)
    assert complete_run_if_done(RUN, d)
    assert d.durations.saves == []


def test_a_failure_to_record_is_logged_and_the_run_still_closes(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(FakeDurations):
        def histories(self, subscription_id: str) -> dict[str, dict[str, Any]]:
            raise OSError("the table is gone")

    d = deps([finished("vm1")], Broken())
    with caplog.at_level(logging.ERROR):
        assert complete_run_if_done(RUN, d)
    assert d.store.run["status"] == "Succeeded" and "durations were not recorded" in caplog.text
    assert record_run(RUN, d) == 0


def test_dispatch_predicts_from_own_history_else_the_default_with_one_query_per_subscription() -> None:
    other = "00000000-0000-0000-0000-0000000000bb"
    durations = FakeDurations({key("old"): {"osType": "Linux", "samples": [
        Sample("2026-11-02T03:00:00.000Z", 500.0, 5, False).to_json(),
        Sample("2026-11-01T03:00:00.000Z", 300.0, 5, False).to_json()]},
        key("broken"): {"osType": "Linux", "samples": [{"at": "x", "seconds": "not a number"}]}})
    keys = [key("old"), key("new"), key("broken"), key("elsewhere", other)]
    got = predict_machines(RunRecord(etag="", run_id=RUN, columns={}), keys, deps([], durations))
    assert (got[key("old")].seconds, got[key("old")].basis) == (400.0, "machine")
    assert {got[k].basis for k in keys[1:]} == {"default"} and got[key("new")].seconds == 1200.0
    assert sorted(durations.queries) == sorted([SUB, other])


def test_a_machine_with_no_history_takes_its_os_peers_duration() -> None:
    durations = FakeDurations({key("old"): {"osType": "Linux", "samples": [
        Sample("2026-11-02T03:00:00.000Z", 500.0, 5, False).to_json()]}})
    inventory = FakeInventory({key("new"): "Linux", key("win"): "Windows"})
    got = predict_machines(RunRecord(etag="", run_id=RUN, columns={}), [key("old"), key("new"), key("win")],
                           deps([], durations, inventory=inventory))
    assert (got[key("new")].seconds, got[key("new")].basis) == (500.0, "peers")  # a Linux machine, like "old"
    assert got[key("win")].basis == "default"  # no Windows peer has a history
    assert inventory.queries == [SUB]  # one inventory query for the subscription


def test_a_run_that_carries_its_own_predictions_is_asked_first() -> None:
    durations = FakeDurations()
    keys: Sequence[str] = [key("a"), key("b")]
    got = predict_machines(RunRecord(etag="", run_id=RUN, columns={"planId": "p1"}), keys,
                           deps([], durations, planned={key("a"): 900.0, key("b"): 60.0}))
    assert {k: (p.seconds, p.basis) for k, p in got.items()} == {key("a"): (900.0, "plan"), key("b"): (60.0, "plan")}
    assert durations.queries == []  # nothing left to predict: no history read
