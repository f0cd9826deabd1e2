"""A plan's predicted timeline: when each machine would start and finish, waves, makespan, and who would not fit
the maintenance window. Pure: the caller passes the budgets' buckets and their stored state.

The model is how a run starts machines (shared/runs/dispatch.py `start_slots`, shared/rollouts/controller.py):
- Per subscription, each start takes a token from Compute's guest-patch bucket (600 burst, 200/min), ARM's
  writes (200, 10/s) and reads (`reads_per_start` tokens: the instance view before an install). The first start
  may go when every bucket has room *after what other runs have already reserved* (the buckets' stored `tat`,
  shared/runs/pacing.py `Pacer.peek`): that is the plan's "reservations".
- Within a wave machines start longest predicted first (LONGEST_FIRST, the default) or in request order, and
  never more than the rollout's `maxConcurrency` (and per subscription) at once: a start waits for a finish.
- Waves run one after another: a wave starts when the last machine of the one before has finished (and, with a
  healthCheck, been verified after `after`), plus `soakTime`.
- With a window: a machine whose start would come later than MIN_REMAINING before the window's end is
  `WindowClosed` (the run skips it with that code: shared/maintenance/window_guard.py), one that would start but
  whose predicted finish is after the window's end less the 10-minute reboot reserve (or after maximumDuration) is
  `WouldNotFinish` (the run skips it at its start, when what is left is shorter than its predicted duration:
  shared/plans/apply.py). Without a window, a prediction longer than maximumDuration is `ExceedsMaximumDuration`
  (a warning: Azure installs what fits and leaves the rest pending).
Durations are predictions (shared/runs/predictions.py); the makespan's basis says how many machines had which.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shared.arm.calls import GUEST_PATCH, READS, WRITES
from shared.maintenance.limits import REBOOT_RESERVE
from shared.runs.budget import Bucket
from shared.runs.budget import slots as block_slots

WINDOW_CLOSED = "WindowClosed"
WOULD_NOT_FINISH = "WouldNotFinish"
EXCEEDS_MAXIMUM_DURATION = "ExceedsMaximumDuration"  # no window: a warning, the run does not skip it


@dataclass(frozen=True)
class Item:
    """One machine to schedule: its key (MachineRef.key), subscription, wave index and predicted seconds."""

    key: str
    subscription: str
    wave: int
    seconds: float


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Limits:
    """A rollout's concurrency (None: unlimited), soak between waves and verification time, in seconds."""

    max_concurrency: int | None = None
    max_per_subscription: int | None = None
    soak_seconds: float = 0.0
    verify_seconds: float = 0.0
    maximum_seconds: float | None = None  # installPatches' maximumDuration: Azure stops starting patches then


@dataclass(frozen=True)
class Slot:
    start: datetime
    finish: datetime
    outside: str = ""  # WINDOW_CLOSED | WOULD_NOT_FINISH | ""
    reason: str = ""


@dataclass
class Timeline:
    """Per machine key its Slot; per wave (start, finish); per subscription what paced it."""

    slots: dict[str, Slot] = field(default_factory=dict)
    waves: list[tuple[datetime, datetime]] = field(default_factory=list)
    subscriptions: dict[str, dict[str, object]] = field(default_factory=dict)
    start: datetime | None = None
    finish: datetime | None = None


def start_order(items: Sequence[Item], *, longest_first: bool) -> list[Item]:
    """Longest predicted first (stable: equal predictions keep request order), or request order."""
    return sorted(items, key=lambda i: -i.seconds) if longest_first else list(items)


def _budget_slots(items: Sequence[Item], buckets: Mapping[str, Bucket], tats: dict[str, dict[str, float]],
                  at: float, reads_per_start: int) -> dict[str, float]:
    """Epoch second each item's start is allowed by its subscription's buckets; moves `tats` on (what it took)."""
    by_sub: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        by_sub[item.subscription].append(item)
    due: dict[str, float] = {}
    for sub, group in by_sub.items():
        state = tats.setdefault(sub, {})
        offsets = [0.0] * len(group)
        for name, per in ((GUEST_PATCH, 1), (WRITES, 1), (READS, reads_per_start)):
            bucket = buckets.get(name)
            if bucket is None:
                continue
            new_tat, found = block_slots(bucket, state.get(name, 0.0), at, len(group) * per)
            state[name] = new_tat
            offsets = [max(o, f) for o, f in zip(offsets, found[per - 1::per], strict=True)]
        due.update((item.key, at + o) for item, o in zip(group, offsets, strict=True))
    return due


def schedule(items: Sequence[Item], *, begin: datetime, buckets: Mapping[str, Bucket],
             reserved: Mapping[str, Mapping[str, float]], limits: Limits, longest_first: bool,
             reads_per_start: int = 1, window: Window | None = None,
             min_remaining: timedelta = timedelta(minutes=15)) -> Timeline:
    """The timeline of these machines started from `begin` (UTC). `reserved`: per subscription each bucket's stored
    `tat` (epoch seconds), what other runs hold. Raises nothing; an empty list gives an empty timeline."""
    timeline = Timeline()
    if not items:
        return timeline
    tats = {sub: dict(values) for sub, values in reserved.items()}
    held = {sub: max(0.0, values.get(GUEST_PATCH, 0.0) - begin.timestamp()) for sub, values in reserved.items()}
    waves = sorted({i.wave for i in items})
    wave_begin = begin.timestamp()
    for wave in waves:
        members = start_order([i for i in items if i.wave == wave], longest_first=longest_first)
        allowed = _budget_slots(members, buckets, tats, wave_begin, reads_per_start)
        running: list[float] = []  # finish times (epoch) of machines in flight, whole run
        per_sub: dict[str, list[float]] = defaultdict(list)
        wave_end = wave_begin
        for item in members:
            start = allowed[item.key]
            if limits.max_concurrency and len(running) >= limits.max_concurrency:
                start = max(start, heapq.heappop(running))
            subs = per_sub[item.subscription]
            if limits.max_per_subscription and len(subs) >= limits.max_per_subscription:
                start = max(start, heapq.heappop(subs))
            done = start + item.seconds
            holds = done + limits.verify_seconds  # a Verifying machine keeps its concurrency slot
            heapq.heappush(running, holds)
            heapq.heappush(subs, holds)
            wave_end = max(wave_end, holds)
            timeline.slots[item.key] = _slot(item, start, done, window, min_remaining=min_remaining,
                                             reserved_seconds=held.get(item.subscription),
                                             maximum_seconds=limits.maximum_seconds)
        timeline.waves.append((_at(wave_begin), _at(wave_end)))
        wave_begin = wave_end + limits.soak_seconds
    for sub in {i.subscription for i in items}:
        starts = sorted(timeline.slots[i.key].start for i in items if i.subscription == sub)
        timeline.subscriptions[sub] = {"machineCount": len(starts), "firstStart": starts[0], "lastStart": starts[-1],
                                       "reservedSeconds": round(held.get(sub, 0.0))}
    timeline.start = min(s.start for s in timeline.slots.values())
    timeline.finish = max(s.finish for s in timeline.slots.values())
    return timeline


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(round(epoch), tz=UTC)


def _slot(item: Item, start: float, done: float, window: Window | None, *, min_remaining: timedelta,
          reserved_seconds: float | None, maximum_seconds: float | None) -> Slot:
    slot = Slot(_at(start), _at(done))
    if window is None:
        if maximum_seconds is not None and item.seconds > maximum_seconds:
            return Slot(slot.start, slot.finish, EXCEEDS_MAXIMUM_DURATION,
                        f"predicted to take {round(item.seconds / 60)} min, longer than maximumDuration "
                        f"({round(maximum_seconds / 60)} min): Azure stops starting patches then, the rest stay "
                        "pending")
        return slot
    latest_start = (window.end - min_remaining).timestamp()
    if start > latest_start:
        why = (f"its start, paced by the subscription's ARM budgets behind the machines before it, would come at "
               f"{_at(start).isoformat()}, later than {int(min_remaining.total_seconds() // 60)} minutes before the "
               f"window closes at {window.end.isoformat()}")
        if reserved_seconds:
            why += f"; other runs already hold {round(reserved_seconds)} s of the subscription's guest-patch budget"
        return Slot(slot.start, slot.finish, WINDOW_CLOSED, why)
    # the run gives Azure what is left of the window less the reboot reserve, and never more than maximumDuration
    deadline = window.end.timestamp() - REBOOT_RESERVE.total_seconds()
    if maximum_seconds is not None:
        deadline = min(deadline, start + maximum_seconds)
    if done > deadline:
        return Slot(slot.start, slot.finish, WOULD_NOT_FINISH,
                    f"predicted to take {round(item.seconds / 60)} min from {_at(start).isoformat()}, finishing after "
                    f"{_at(deadline).isoformat()} (the window closes at {window.end.isoformat()}, less the "
                    f"{round(REBOOT_RESERVE.total_seconds() / 60)} minutes kept for a reboot, or maximumDuration)")
    return slot
