"""Pacing against the shared ARM budget, with Azurite and the simulator enforcing a small guest-patch bucket.

Two "hosts" (two Components, each with its own budget cache and ARM session) take messages from the same queue,
and every message is delivered twice; the simulator refuses any installPatches over its bucket with a 429.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.composition import Components
from shared.core.clock import iso, parse_iso
from shared.core.messages import DispatchMessage, parse_step
from shared.core.records import RunRecord
from shared.core.settings import Settings
from shared.runs.budget import GUEST_PATCH, Bucket
from shared.runs.dispatch import dispatch_run
from shared.runs.machine_worker import run_step
from shared.runs.pacing import Pacer
from shared.storage.budget_store import BudgetStore
from tests.integration.queue_pump import QueuePump
from tests.integration.test_machine_worker import finished, reconfigure, run_view, start
from tests.support.fleet import sim_config
from tools import metrics
from tools.azure_simulator import Simulator, SimulatorConfig

# The simulator's and the app's guest-patch bucket: 10 at once, then 1 per second. The app keeps
# PACING_LATE_SECONDS (2 s here) of refill back from the burst: the in-process pump delivers late.
BURST, PER_MINUTE, LATE = 10, 60, 2
VMS = 14


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return sim_config(vms=VMS, seed=5, patch_ops_per_sub_burst=BURST, patch_ops_per_sub_per_min=PER_MINUTE)


def paced_services() -> Components:
    """The app's guest-patch bucket as the simulator's; a read budget small enough that polls wait for it."""
    return reconfigure(GUEST_PATCH_BURST=str(BURST), GUEST_PATCH_PER_MINUTE=str(PER_MINUTE),
                       PACING_LATE_SECONDS=str(LATE), ARM_READ_BURST="8", ARM_READS_PER_SECOND="8",
                       POLL_READ_PERCENT="50")


def second_host(svc: Components, stop: threading.Event) -> threading.Thread:
    """Another instance: its own Components, taking step messages from the same queue, each one twice."""
    other = Components(Settings.from_env())
    queue = other.account.queue(other.settings.queues.operations)

    def work() -> None:
        while not stop.is_set():
            got = False
            for msg in queue.receive_messages(messages_per_page=8, visibility_timeout=60, max_messages=8):
                got = True
                step = parse_step(msg.content)
                for _ in range(2):
                    run_step(step, other.step_ports)
                queue.delete_message(msg)
            if not got:
                stop.wait(0.1)
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def window_counts(starts: list[list[int]]) -> list[tuple[int, int]]:
    """(seconds wide, operations started) for every window of whole seconds."""
    per = dict((int(s), int(n)) for s, n in starts)
    seconds = sorted(per)
    return [(b - a + 1, sum(per.get(s, 0) for s in range(a, b + 1))) for a in seconds for b in seconds if b >= a]


def test_paced_starts_never_meet_a_429_and_each_machine_installs_once(services: Components,
                                                                       simulator: Simulator) -> None:
    svc = paced_services()
    vms = simulator.vm_ids()
    run_id = start(vms)
    stop = threading.Event()
    other = second_host(svc, stop)
    try:
        QueuePump(svc, duplicate=True).run_until(lambda: finished(run_id), timeout=60)
    finally:
        stop.set()
        other.join(timeout=10)
    calls: dict[str, Any] = simulator.calls()
    assert calls["throttledByBucket"]["computeGuestPatchSubscription"] == 0
    assert calls["throttledByBucket"]["computeGuestPatchVm"] == 0
    assert all(calls["byVm"][vm.lower()]["installPatchesAccepted"] == 1 for vm in vms)
    assert all(calls["byVm"][vm.lower()]["installPatches"] == 1 for vm in vms)  # no POST ever refused
    (starts,) = calls["operationStartsPerSecond"].values()
    for width, started in window_counts(starts):
        assert started <= BURST + PER_MINUTE / 60 * width, (width, started, starts)
    view = run_view(run_id)
    assert [m["state"] for m in view["machines"]] == ["Completed"] * VMS
    # Polls (4/s here, for 14 machines polled every second) found no budget and waited for it, holding it.
    paced = [svc.store.get_target(run_id, _key(vm)) for vm in vms]
    assert sum(int((t or {}).get("paced") or 0) for t in paced) > 0


def test_a_429_only_delays_and_moves_the_budget(services: Components, simulator: Simulator) -> None:
    svc = reconfigure(MAX_TRANSIENT_RETRIES="1")  # the old rule would have failed after 4 throttles
    simulator.set_faults(throttle_rate=1.0, throttle_retry_after=1)
    vm = simulator.vm_ids()[0]
    run_id = start([vm])
    pump = QueuePump(svc)
    pump.pump_once(only="dispatch")

    def throttles() -> int:
        target = svc.store.get_target(run_id, _key(vm))
        return int((target or {}).get("throttles") or 0)
    pump.run_until(lambda: throttles() >= 5, timeout=30)
    target = svc.store.get_target(run_id, _key(vm))
    assert target is not None and target["state"] == "Queued" and target["throttles"] >= 5
    row = svc.pacer.store.read(vm.split("/")[2], ["reads"])["reads"]
    assert row.tat > 0 and row.etag is not None  # the 429s (on the VM's GET) moved the shared read budget
    simulator.set_faults(throttle_rate=0.0)
    pump.run_until(lambda: finished(run_id), timeout=30)
    assert run_view(run_id)["machines"][0]["state"] == "Completed"


def _key(vm_id: str) -> str:
    parts = vm_id.split("/")
    return f"{parts[2]}|{parts[4]}|{parts[8]}".lower()


def test_budget_rows_are_one_per_subscription_and_bucket(services: Components, simulator: Simulator) -> None:
    svc = paced_services()
    before = metrics.table_operations("budget")
    run_id = start(simulator.vm_ids()[:2])
    QueuePump(svc).run_until(lambda: finished(run_id), timeout=30)
    sub = simulator.vm_ids()[0].split("/")[2].lower()
    rows = list(svc.store.runs.query_entities("PartitionKey eq @pk", parameters={"pk": f"budget|{sub}"}))
    assert sorted(r["RowKey"] for r in rows) == sorted(("guestPatch", "writes", "polls", "reads"))
    # one instance alone: it reads a budget once, then writes from what it saw
    ops = metrics.table_operations("budget") - before
    assert ops["budgetRead"] <= 1 + ops["budgetConflict"] and ops["budgetWrite"] >= 6


def test_dispatch_reserves_start_slots_in_one_block(services: Components, simulator: Simulator) -> None:
    svc = paced_services()
    run_id = start(simulator.vm_ids())
    before = metrics.table_operations("budget")
    QueuePump(svc).pump_once(only="dispatch")
    # one subscription: one reservation for all its starts
    assert (metrics.table_operations("budget") - before)["budgetWrite"] == 1
    targets = svc.store.list_targets(run_id)
    due = sorted((parse_iso(t["nextActionAt"]) - parse_iso(t["createdAt"])).total_seconds() for t in targets)
    assert len(due) == VMS
    granted = BURST - LATE * PER_MINUTE / 60
    assert sum(1 for d in due if d < 0.5) <= granted  # at most a burst (less the margin) due at once ...
    assert due[-1] >= (VMS - granted) / (PER_MINUTE / 60) - 1  # ... the rest spread at the bucket's rate


def test_the_start_schedule_counts_from_when_its_messages_go_not_from_the_reservation(
        services: Components, simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing a large run's rows takes a while after its slots are reserved (13 s at 10,000 machines), and meanwhile
    Compute's bucket sits full, losing refill: slots counted from the reservation then over-spend it by that much.
    Here the rows take 10 s: counted from the reservation, all 14 starts would be due at once against a burst of
    10 (429s). The schedule moves by the lag instead, the budget exactly as much, and the sweeper does not take
    the starts whose messages are not due yet for stalled ones."""
    from shared.runs import dispatch as dispatch_module
    from shared.runs.sweeper import sweep

    svc = reconfigure(GUEST_PATCH_BURST=str(BURST), GUEST_PATCH_PER_MINUTE=str(PER_MINUTE),
                      PACING_LATE_SECONDS=str(LATE), STALL_AFTER_SECONDS="1")  # ARM's reads as Azure's
    slow_rows = dispatch_module.create_targets

    def create_targets(*args: Any, **kwargs: Any) -> bool:
        created = slow_rows(*args, **kwargs)
        time.sleep(10)
        return created
    monkeypatch.setattr(dispatch_module, "create_targets", create_targets)
    vms = simulator.vm_ids()
    run_id = start(vms)
    QueuePump(svc).pump_once(only="dispatch")
    run = svc.store.get_run(run_id)
    assert run is not None
    shift = run["startShiftSeconds"]
    assert shift >= 10
    # the budget moved on by the shift, no more: 14 tokens at 1 s from a full bucket, from the reservation (which
    # came just before the rows were created) plus the shift
    tat = svc.pacer.peek(vms[0].split("/")[2])[GUEST_PATCH]
    reserved = min(parse_iso(t["createdAt"]) for t in svc.store.list_targets(run_id)).timestamp()
    assert tat <= reserved + VMS + shift + 0.5
    assert tat >= parse_iso(run["dispatchedAt"]).timestamp() + VMS - 1
    # every slot but the burst's is overdue by more than STALL_AFTER_SECONDS, but no message is late
    swept = sweep(svc, datetime.now(UTC))
    assert swept["requeued"] == swept["behind"] == 0

    QueuePump(svc, duplicate=True).run_until(lambda: finished(run_id), timeout=60)
    calls: dict[str, Any] = simulator.calls()
    assert calls["throttledByBucket"]["computeGuestPatchSubscription"] == 0
    (starts,) = calls["operationStartsPerSecond"].values()
    for width, started in window_counts(starts):
        assert started <= BURST + PER_MINUTE / 60 * width, (width, started, starts)
    assert [m["state"] for m in run_view(run_id)["machines"]] == ["Completed"] * VMS


def test_two_instances_share_one_budget_and_subscriptions_are_independent(services: Components,
                                                                          simulator: Simulator) -> None:
    """Two Pacers with their own caches (two hosts) over the same Table rows, on a frozen clock."""
    bucket = {GUEST_PATCH: Bucket(GUEST_PATCH, 5, 1.0)}
    before = metrics.table_operations("budget")
    hosts = [Pacer(BudgetStore(services.settings.storage, services.account), bucket, clock=lambda: 1000.0)
             for _ in range(2)]
    waits = [hosts[i % 2].reserve("sub-a", (GUEST_PATCH,)) for i in range(12)]
    assert waits == [0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7]  # one burst between them, then one a second
    # each lost races to the other, and re-read
    assert (metrics.table_operations("budget") - before)["budgetConflict"] > 0
    assert hosts[0].reserve("sub-b", (GUEST_PATCH,)) == 0  # another subscription: its own full bucket


def first_window_released(simulator: Simulator) -> tuple[Components, list[str], str, str, QueuePump, RunRecord]:
    """A run of the simulator's VMs on a guest-patch budget of 2 burst and a 1 s slot (windows of 4 s, no lateness
    kept back), dispatched, its first window released: (services, VMs, their subscription, run id, pump, run)."""
    svc = reconfigure(GUEST_PATCH_BURST="2", GUEST_PATCH_PER_MINUTE="60", PACING_LATE_SECONDS="0",
                      DISPATCH_HORIZON_SECONDS="4")
    vms = simulator.vm_ids()
    run_id = start(vms)
    pump = QueuePump(svc)
    pump.pump_once(only="dispatch")
    run = svc.store.get_run(run_id)
    assert run is not None
    return svc, vms, vms[0].split("/")[2], run_id, pump, run


def test_start_messages_are_released_a_horizon_at_a_time_and_a_duplicate_release_does_nothing(
        services: Components, simulator: Simulator) -> None:
    # 14 machines, 2 at once then 1 per second: slots over about 12 s; messages queued 4 s ahead.
    svc, vms, _, run_id, pump, run = first_window_released(simulator)
    due_in_window = [t for t in svc.store.list_targets(run_id) if t["nextActionAt"] < run["releasedThrough"]]
    queued = svc.account.queue(svc.settings.queues.operations).get_queue_properties().approximate_message_count
    assert queued == len(due_in_window) < VMS  # only the first window's start messages
    assert run["lastSlotAt"] > run["releasedThrough"]

    release = DispatchMessage(run_id, release_from=run["releasedThrough"])
    first, second = dispatch_run(release, svc), dispatch_run(release, svc)
    assert first > 0 and second == 0  # the run's releasedThrough fences the copy

    pump.run_until(lambda: finished(run_id), timeout=60)  # later windows come from the chained releases
    assert [m["state"] for m in run_view(run_id)["machines"]] == ["Completed"] * VMS
    calls: dict[str, Any] = simulator.calls()
    assert all(calls["byVm"][vm.lower()]["installPatches"] == 1 for vm in vms)


def test_start_slots_also_leave_room_for_each_starts_read_and_write(services: Components, simulator: Simulator) -> None:
    # Guest patch would allow all 14 at once; ARM's reads allow 2 at once then 1 per second (half of 4 burst /
    # 2 per s: polls have the other half), and each install start reads twice (the VM's GET for its OS type and
    # its instance view before the POST), so the slots follow the reads: one start at once, then one every 2 s.
    svc = reconfigure(GUEST_PATCH_BURST="100", GUEST_PATCH_PER_MINUTE="600", ARM_READ_BURST="4",
                      ARM_READS_PER_SECOND="2", POLL_READ_PERCENT="50", PACING_LATE_SECONDS="0")
    run_id = start(simulator.vm_ids())
    QueuePump(svc).pump_once(only="dispatch")
    due = sorted((parse_iso(t["nextActionAt"]) - parse_iso(t["createdAt"])).total_seconds()
                 for t in svc.store.list_targets(run_id))
    assert sum(1 for d in due if d < 0.5) <= 1
    assert due[-1] >= 2 * (VMS - 1) - 1  # 13 more at 2 reads each, 1 read per second


def test_a_broken_release_chain_is_restarted_by_the_sweeper_and_a_poisoned_release_fails_nothing(
        services: Components, simulator: Simulator) -> None:
    from datetime import timedelta

    import azure.functions as func

    from shared.runs.sweeper import sweep
    from tests.app import run_workers
    svc = reconfigure(GUEST_PATCH_BURST="2", GUEST_PATCH_PER_MINUTE="60", PACING_LATE_SECONDS="0",
                      DISPATCH_HORIZON_SECONDS="4", STALL_AFTER_SECONDS="1")
    run_id = start(simulator.vm_ids())
    pump = QueuePump(svc)
    pump.pump_once(only="dispatch")
    svc.account.queue(svc.settings.queues.dispatch).clear_messages()  # the chain's next release is lost
    run = svc.store.get_run(run_id)
    assert run is not None
    poisoned = DispatchMessage(run_id, release_from=run["releasedThrough"]).encode()
    run_workers.dispatch_poison(func.QueueMessage(id="p", body=poisoned.encode()))  # type: ignore[attr-defined]
    assert not [t for t in svc.store.list_targets(run_id) if t["state"] == "Failed"]  # not a failed dispatch

    # the next release was due half a horizon (2 s) before its window; overdue STALL_AFTER_SECONDS (1 s) later
    window = parse_iso(run["releasedThrough"])
    assert sweep(svc, window - timedelta(seconds=1.5))["released"] == 0
    assert sweep(svc, window - timedelta(seconds=0.5))["released"] == 1
    pump.run_until(lambda: finished(run_id), timeout=60)  # the restarted chain releases every window
    assert [m["state"] for m in run_view(run_id)["machines"]] == ["Completed"] * VMS


def test_a_release_waits_while_the_start_messages_already_due_are_not_taken(
        services: Components, simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Backpressure: consumers that fall behind (none at all here) hold the next window back instead of piling its
    messages on the backlog; the sweeper does not release it either; once they catch up every machine starts once."""
    from shared.runs import dispatch as dispatch_module
    from shared.runs.sweeper import sweep

    svc = reconfigure(GUEST_PATCH_BURST="2", GUEST_PATCH_PER_MINUTE="60", PACING_LATE_SECONDS="0",
                      DISPATCH_HORIZON_SECONDS="4", STALL_AFTER_SECONDS="1")
    monkeypatch.setattr(dispatch_module, "BACKLOG_SECONDS", 1)
    vms = simulator.vm_ids()
    run_id = start(vms)
    pump = QueuePump(svc)
    pump.pump_once(only="dispatch")
    run = svc.store.get_run(run_id)
    assert run is not None
    operations = svc.account.queue(svc.settings.queues.operations)
    queued = operations.get_queue_properties().approximate_message_count
    time.sleep(3)  # the first window's slots pass; nobody takes their messages
    release = DispatchMessage(run_id, release_from=run["releasedThrough"])
    assert dispatch_run(release, svc) == 0
    assert svc.store.get_run(run_id)["releasedThrough"] == run["releasedThrough"]  # type: ignore[index]
    # The held window's machines are the release chain's: the sweeper copies none, and it sends no second release
    # of the window (the held one is alive; two would both send the window when the backlog clears).
    assert sweep(svc, datetime.now(UTC))["released"] == 0
    copies = operations.get_queue_properties().approximate_message_count - queued
    assert copies == 0  # the released window's starts wait visibly in the queue: a backlog, not lost messages

    pump.run_until(lambda: finished(run_id), timeout=90)
    assert [m["state"] for m in run_view(run_id)["machines"]] == ["Completed"] * VMS
    calls: dict[str, Any] = simulator.calls()
    assert all(calls["byVm"][vm.lower()]["installPatchesAccepted"] == 1 for vm in vms)


def test_a_window_released_after_its_slots_moves_the_schedule_once_instead_of_queueing_its_starts_twice(
        services: Components, simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """A window held back by a backlog (or released late) is sent when its slots have passed. Its starts keep
    their guest-patch tokens and go now, in order: the run's schedule and the subscription's budget move on by
    the lateness, once, whichever delivery of the release makes the move. Stale instead, each would reserve
    afresh after every slot of the run and be queued twice (docs/performance.md, session 22)."""
    from shared.runs import dispatch as dispatch_module

    monkeypatch.setattr(dispatch_module, "SEND_GRACE_SECONDS", 1)
    svc, vms, subscription, run_id, pump, run = first_window_released(simulator)
    shift0 = int(run.get("startShiftSeconds") or 0)
    window = parse_iso(run["releasedThrough"])
    tat_before = svc.pacer.peek(subscription)[GUEST_PATCH]
    sent: list[tuple[str, tuple[str, ...]]] = []
    send_step = svc.queues.send_step

    def recording(run_id: str, machine: str, seq: int, delay_seconds: float = 0, *, held: tuple[str, ...] = (),
                  **kw: Any) -> None:
        sent.append((machine, held))
        send_step(run_id, machine, seq, delay_seconds, held=held, **kw)
    monkeypatch.setattr(svc.queues, "send_step", recording)

    # 4 s past the window's first slot as the run sends it (its slot plus the dispatch's own shift)
    time.sleep(max(0.0, (window - datetime.now(UTC)).total_seconds()) + shift0 + 4)
    queued = svc.store.list_targets(run_id, state="Queued", seq=0, due_from=run["releasedThrough"])
    # A first delivery of the release moves the schedule and dies before sending; its redelivery sends the window.
    shifted = dispatch_module.shift_late_window(run, window, queued, svc)
    assert shifted is not None
    late = shifted[1]
    assert late >= 3  # the window's slots were about 4 s past (its first slot may be up to 1 s into it)
    assert dispatch_run(DispatchMessage(run_id, release_from=run["releasedThrough"]), svc) > 0
    moved = svc.store.get_run(run_id)
    assert moved is not None and moved["startShiftSeconds"] == shift0 + late  # moved once, by the first
    assert sent and all(held == (GUEST_PATCH,) for _, held in sent)  # every start spends its own token
    tat_after = svc.pacer.peek(subscription)[GUEST_PATCH]
    assert tat_before + late - 0.01 <= tat_after < tat_before + 2 * late  # later runs come after, moved once
    assert dispatch_module.shift_late_window(run, window, queued, svc) is None  # a late copy: the fence moved on

    monkeypatch.setattr(svc.queues, "send_step", send_step)
    pump.run_until(lambda: finished(run_id), timeout=90)
    assert [m["state"] for m in run_view(run_id)["machines"]] == ["Completed"] * VMS
    calls: dict[str, Any] = simulator.calls()
    assert calls["throttledByBucket"]["computeGuestPatchSubscription"] == 0
    assert all(calls["byVm"][vm.lower()]["installPatchesAccepted"] == 1 for vm in vms)  # each started once


def test_starts_waiting_out_a_429_get_slots_of_their_own_at_the_next_release(
        services: Components, simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run reserves its slots at Compute's full rate, so a start refused with 429 that tries again holding its
    token is one start more than any later moment has room for, and would keep a start refused until the run's last
    slot (docs/performance.md, session 23). The next release moves the run's schedule (and the subscription's
    budget) on by one slot for each start refused since the last release and still waiting, once."""
    from shared.runs import dispatch as dispatch_module

    svc, vms, subscription, run_id, pump, run = first_window_released(simulator)
    assert run["releasedAt"]
    window = parse_iso(run["releasedThrough"])
    queued = svc.store.list_targets(run_id, state="Queued", seq=0, due_from=run["releasedThrough"])
    assert queued
    shift0 = int(run.get("startShiftSeconds") or 0)
    # nothing waits out a 429 and the window is on time: the schedule stays
    assert dispatch_module.shift_late_window(run, window, queued, svc) == (run, 0)

    released = svc.store.list_targets(run_id, state="Queued", seq=0, due_before=run["releasedThrough"])
    since = parse_iso(run["releasedAt"])
    # three starts of the window before were refused and wait out Retry-After holding their slots; one more was
    # refused before that window went out (a release already made room for it)
    for target, at in zip(released[:4], [1, 1, 1, -1], strict=True):
        svc.store.update_target(target, {"throttles": 1, "seq": 1, "throttledAt": iso(since + timedelta(seconds=at))})
    tat_before = svc.pacer.peek(subscription)[GUEST_PATCH]
    shifted = dispatch_module.shift_late_window(run, window, queued, svc)
    assert shifted is not None and shifted[1] == 3  # three slots of 1 s
    moved = svc.store.get_run(run_id)
    assert moved is not None and moved["startShiftSeconds"] == shift0 + 3
    assert svc.pacer.peek(subscription)[GUEST_PATCH] == pytest.approx(tat_before + 3, abs=0.01)
    # a copy of the same release (it read the run before the move) makes no more room
    again = dispatch_module.shift_late_window(run, window, queued, svc)
    assert again is not None and again[1] == 0
    assert svc.store.get_run(run_id)["startShiftSeconds"] == shift0 + 3  # type: ignore[index]
    assert svc.pacer.peek(subscription)[GUEST_PATCH] == pytest.approx(tat_before + 3, abs=0.01)

    for target in released[:4]:  # they start: the run goes on
        fresh = svc.store.get_target(run_id, target.key)
        assert fresh is not None
        svc.store.update_target(fresh, {"seq": 0})
    pump.run_until(lambda: finished(run_id), timeout=90)
    assert [m["state"] for m in run_view(run_id)["machines"]] == ["Completed"] * VMS
    calls: dict[str, Any] = simulator.calls()
    assert all(calls["byVm"][vm.lower()]["installPatchesAccepted"] == 1 for vm in vms)
