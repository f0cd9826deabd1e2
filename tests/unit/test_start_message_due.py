"""When the sweeper counts a released start as overdue (shared/runs/sweeper.py start_message_due): from when its
message went out, not from its slot, since a window held back by backpressure and a dispatch that took a while to
write its rows both send start messages after their slots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.core.clock import iso
from shared.core.records import RunRecord
from shared.runs.sweeper import start_message_due

SLOT = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)


def run(**columns: object) -> RunRecord:
    return RunRecord(etag="", columns=columns, run_id="r")


def test_a_start_is_due_at_its_slot_when_nothing_moved_it() -> None:
    assert start_message_due(run(), SLOT) == SLOT


def test_a_dispatch_shift_moves_every_start() -> None:
    assert start_message_due(run(startShiftSeconds=13), SLOT) == SLOT + timedelta(seconds=13)


def test_a_window_released_after_its_slots_counts_from_its_release() -> None:
    released = SLOT + timedelta(minutes=14)  # the consumers were behind: the window waited 14 minutes
    assert start_message_due(run(startShiftSeconds=13, releasedAt=iso(released)), SLOT) == released


def test_a_release_before_the_slot_leaves_the_slot() -> None:
    released = SLOT - timedelta(seconds=60)  # released half a horizon ahead, as it should be
    assert start_message_due(run(releasedAt=iso(released)), SLOT) == SLOT
