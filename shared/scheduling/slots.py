"""Which schedule slot a timer tick belongs to, so a late or duplicated tick can be recognised.

Two hosts may fire the same occurrence, and a host that was down fires once, late, with
`past_due`. Both cases must map to one slot: the latest occurrence of the schedule at or before
the tick (with a little tolerance for a tick that arrives a moment early). Claiming that slot in
Table storage then lets exactly one tick do the work.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.scheduling.ncrontab import CrontabSchedule

EARLY_TOLERANCE = timedelta(seconds=30)  # a tick this much before its occurrence still counts for it
_LOOKBACKS = (timedelta(minutes=2), timedelta(hours=2), timedelta(days=2), timedelta(days=40), timedelta(days=400))


def current_slot(expression: str, now: datetime) -> datetime | None:
    """The latest occurrence at or before `now` (+ tolerance), in UTC; None if there was none in a year.

    Searches back in widening windows so a per-second schedule and a yearly one both cost a few
    steps; then walks forward inside the window, which holds only a few occurrences.
    """
    schedule = CrontabSchedule.parse(expression)
    upper = now.astimezone(UTC).replace(tzinfo=None) + EARLY_TOLERANCE
    for lookback in _LOOKBACKS:
        occurrence = schedule.next_after(upper - lookback)
        if occurrence is None or occurrence > upper:
            continue
        while True:
            following = schedule.next_after(occurrence)
            if following is None or following > upper:
                return occurrence.replace(tzinfo=UTC)
            occurrence = following
    return None
