"""Poll rounds (shared/runs/poll_rounds.py) against Azurite and the ARM simulator: one message polls every due machine
of a run in its subscription (a chain of rounds per subscription), a copy of it polls nothing, and a round that was
lost is found again by the sweeper."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from shared.composition import Components
from shared.core.clock import iso, parse_iso, utcnow
from shared.core.messages import PollRoundMessage
from shared.core.records import MachineRecord
from shared.runs import machine_worker
from shared.runs.poll_rounds import RoundResult, run_round, subscription_of
from shared.runs.sweeper import sweep
from tests.integration.queue_pump import QueuePump
from tests.integration.test_machine_worker import finished, machine, run_view, start
from tests.support.fleet import sim_config
from tools.azure_simulator import Simulator, SimulatorConfig


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    # installations long enough that a poll finds them running (simulated minutes, real seconds), and a Retry-After
    # that leaves every start of the run time to find the first one's round still ahead
    # that leaves every start of the run time to find the first one's round still ahead; two subscriptions, so two
    # chains of rounds
    return replace(sim_config(vms=6, seed=3, time_scale=400.0, subscriptions=2), retry_after_seconds=4)


def started(services: Components, simulator: Simulator) -> tuple[str, list[MachineRecord]]:
    """A run of the simulator's VMs, every one started (Running) and left to the run's poll rounds."""
    run_id = start(simulator.vm_ids())
    pump = QueuePump(services)
    pump.pump_once(only="dispatch")
    pump.pump_once(only="operations")
    rows = services.store.list_targets(run_id)
    assert [r["state"] for r in rows] == ["Running"] * len(rows) and all(r.get("pollRound") is True for r in rows)
    return run_id, rows


def polls(simulator: Simulator) -> int:
    return int(simulator.calls()["total"]["poll"])


def queued(services: Components) -> int:
    """Messages in POLLS_QUEUE, visible or not (their delay)."""
    props = services.account.queue(services.settings.queues.polls).get_queue_properties()
    return int(props.approximate_message_count)


def make_due(services: Components, run_id: str) -> None:
    for row in services.store.list_targets(run_id):
        services.store.update_target(row, {"nextActionAt": iso(utcnow() - timedelta(seconds=1))})


def round_now(services: Components, seq: int, run_id: str, subscription: str) -> RoundResult:
    return run_round(PollRoundMessage(run_id, seq, subscription), services.step_ports, services.store,
                     services.poll_rounds)


def by_subscription(rows: list[MachineRecord]) -> dict[str, list[MachineRecord]]:
    subs: dict[str, list[MachineRecord]] = {}
    for row in rows:
        subs.setdefault(subscription_of(row.key), []).append(row)
    return subs


def test_one_round_message_polls_every_due_machine_of_its_subscription(services: Components,
                                                                      simulator: Simulator) -> None:
    run_id, rows = started(services, simulator)
    subs = by_subscription(rows)
    assert len(subs) == 2 and all(len(r) == 3 for r in subs.values())
    # six machines Running in two subscriptions: a round message for each subscription's (no poll message each)
    assert queued(services) == 2
    for sub, mine in subs.items():
        chain = services.store.get_round(run_id, sub)
        assert chain.seq == 0 and chain.at == min(str(r["nextActionAt"]) for r in mine)
    make_due(services, run_id)
    first, other = sorted(subs)
    later = services.store.get_target(run_id, subs[first][-1].key)
    assert later is not None  # ... but one, whose Retry-After has not passed: not polled a moment early
    services.store.update_target(later, {"nextActionAt": iso(utcnow() + timedelta(seconds=30))})
    before = polls(simulator)
    assert round_now(services, 0, run_id, first) is RoundResult.POLLED
    assert polls(simulator) - before == len(subs[first]) - 1  # every machine due in it polled once, by one message
    chain = services.store.get_round(run_id, first)
    assert chain.seq == 1 and chain.at  # claimed (its copies find it moved on), and its successor queued
    assert parse_iso(chain.at) <= utcnow() + timedelta(seconds=30)  # by the poll it left
    assert services.store.get_round(run_id, other).seq == 0  # the other subscription's chain is its own
    for polled in (services.store.get_target(run_id, r.key) for r in subs[first][:-1]):
        assert polled is not None and polled["state"] in ("Running", "Completed")
        if polled["state"] == "Running":  # written back (in a batch) with its next poll, still left to the rounds
            assert polled["polls"] == 1 and polled["pollRound"] is True and polled.seq == 2
            assert parse_iso(str(polled["nextActionAt"])) > utcnow() - timedelta(seconds=1)
    for row in subs[other]:  # due, but in the other subscription: left to its chain
        fresh = services.store.get_target(run_id, row.key)
        assert fresh is not None and fresh["state"] == "Running" and not fresh.get("polls")
    # the copy of that message polls nothing
    assert round_now(services, 0, run_id, first) is RoundResult.STALE
    assert polls(simulator) - before == len(subs[first]) - 1
    assert round_now(services, 0, run_id, other) is RoundResult.POLLED
    assert polls(simulator) - before == len(rows) - 1


def test_two_copies_of_a_round_at_once_poll_each_machine_once(services: Components, simulator: Simulator) -> None:
    run_id, rows = started(services, simulator)
    make_due(services, run_id)
    before = polls(simulator)
    results: list[RoundResult] = []
    copies = [threading.Thread(target=lambda sub=sub: results.append(round_now(services, 0, run_id, sub)))
              for sub in sorted(by_subscription(rows)) for _ in range(2)]
    for t in copies:
        t.start()
    for t in copies:
        t.join()
    assert sorted(results) == [RoundResult.POLLED] * 2 + [RoundResult.STALE] * 2
    assert polls(simulator) - before == len(rows)


def test_a_run_left_to_rounds_finishes_with_fewer_messages_than_polls(services: Components,
                                                                        simulator: Simulator) -> None:
    run_id = start(simulator.vm_ids())
    pump = QueuePump(services)
    pump.run_until(lambda: finished(run_id), timeout=120)
    assert all(m["state"] == "Completed" for m in run_view(run_id)["machines"])
    calls = simulator.calls()["total"]
    assert calls["installPatches"] == len(simulator.vm_ids())
    # each machine was polled about its installation more than once; the messages that did it were the rounds
    assert calls["poll"] > pump.delivered[services.settings.queues.polls]


def test_a_lost_round_is_found_by_the_sweeper_and_the_run_finishes(services: Components,
                                                                     simulator: Simulator) -> None:
    run_id, rows = started(services, simulator)
    services.account.queue(services.settings.queues.polls).clear_messages()  # the round message was lost
    assert sweep(services, utcnow())["rounds"] == 0  # not overdue yet
    # twenty minutes on: the machines' polls and the round that should have made them are overdue
    long_ago = iso(utcnow() - timedelta(minutes=20))
    for row in services.store.list_targets(run_id):
        services.store.update_target(row, {"nextActionAt": long_ago})
    for sub in by_subscription(rows):
        chain = services.store.get_round(run_id, sub)
        services.store.put_round(run_id, sub, chain.seq, long_ago, chain.etag)
    swept = sweep(services, utcnow())
    # one round for each subscription's chain, no step message per machine
    assert swept["rounds"] == 2 and swept["requeued"] == 0
    assert queued(services) == 2
    QueuePump(services).run_until(lambda: finished(run_id), timeout=120)
    view = run_view(run_id)
    assert all(machine(view, vm)["state"] == "Completed" for vm in simulator.vm_ids())
    assert simulator.calls()["total"]["installPatches"] == len(rows)


def test_a_poll_that_raises_in_a_round_is_handed_to_a_step_message(services: Components, simulator: Simulator,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    run_id, rows = started(services, simulator)
    broken = rows[0].key
    poll = machine_worker.MachineStep.poll

    def failing(self: machine_worker.MachineStep) -> Any:
        if self.target.key == broken:
            raise RuntimeError("a bug in one machine's poll")
        return poll(self)
    monkeypatch.setattr(machine_worker.MachineStep, "poll", failing)
    services.account.queue(services.settings.queues.polls).clear_messages()
    make_due(services, run_id)
    for sub in by_subscription(rows):  # both chains' rounds (their messages were cleared)
        assert round_now(services, 0, run_id, sub) is RoundResult.POLLED
    row = services.store.get_target(run_id, broken)
    assert row is not None and row["state"] == "Running" and row["pollRound"] is False  # out of the rounds ...
    time.sleep(1.5)  # the step message waits DEFAULT_RETRY_AFTER_SECONDS (1 s here)
    bodies = [m.content for m in services.account.queue(services.settings.queues.polls).peek_messages(max_messages=32)]
    # ... with a step message of its own at its seq (retried, and poisoned if it keeps failing), besides the round
    assert sum(f'"machine":"{broken}","seq":{row.seq}' in b for b in bodies) == 1, bodies
    monkeypatch.setattr(machine_worker.MachineStep, "poll", poll)
    QueuePump(services).run_until(lambda: finished(run_id), timeout=120)
    assert run_view(run_id)["status"] in ("Succeeded", "CompletedWithWarnings")
