"""NCRONTAB parsing and next-occurrence computation, and timer schedule parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.scheduling.ncrontab import CrontabError, CrontabSchedule
from tools.local_host.timers import ScheduleError, TimerSchedule

BASE = datetime(2024, 1, 15, 10, 20, 30)  # a Monday


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("* * * * * *", datetime(2024, 1, 15, 10, 20, 31)),
        ("0 * * * * *", datetime(2024, 1, 15, 10, 21, 0)),
        ("*/15 * * * * *", datetime(2024, 1, 15, 10, 20, 45)),
        ("0 */5 * * * *", datetime(2024, 1, 15, 10, 25, 0)),
        ("0 0 * * * *", datetime(2024, 1, 15, 11, 0, 0)),
        ("0 30 9 * * *", datetime(2024, 1, 16, 9, 30, 0)),
        ("0 30 9 * * 1-5", datetime(2024, 1, 16, 9, 30, 0)),
        ("0 30 9 * * MON-FRI", datetime(2024, 1, 16, 9, 30, 0)),
        ("0 0 0 * * SAT,sun", datetime(2024, 1, 20, 0, 0, 0)),
        ("0 0 12 * * Sunday", datetime(2024, 1, 21, 12, 0, 0)),
        ("0 0 0 1 * *", datetime(2024, 2, 1, 0, 0, 0)),
        ("0 0 0 1 JAN *", datetime(2025, 1, 1, 0, 0, 0)),
        ("0 0 0 1 jan-mar *", datetime(2024, 2, 1, 0, 0, 0)),
        ("0 0 0 29 2 *", datetime(2024, 2, 29, 0, 0, 0)),
        ("5,10,50 * * * * *", datetime(2024, 1, 15, 10, 20, 50)),
        ("10-40/10 * * * * *", datetime(2024, 1, 15, 10, 20, 40)),
        ("20/20 * * * * *", datetime(2024, 1, 15, 10, 20, 40)),  # a/n: from a to the maximum
        ("0 0 9-17 * * *", datetime(2024, 1, 15, 11, 0, 0)),
        ("0 0 0 13 * 5", datetime(2024, 9, 13, 0, 0, 0)),  # Friday the 13th: day AND weekday must match
        ("30 20 10 15 1 1", datetime(2029, 1, 15, 10, 20, 30)),  # exact start is excluded
    ],
)
def test_next_occurrence(expression: str, expected: datetime) -> None:
    assert CrontabSchedule.parse(expression).next_after(BASE) == expected


def test_sub_second_start_and_month_ends() -> None:
    s = CrontabSchedule.parse("* * * * * *")
    assert s.next_after(datetime(2024, 1, 1, 0, 0, 0, 999_000)) == datetime(2024, 1, 1, 0, 0, 1)
    assert CrontabSchedule.parse("0 0 0 31 * *").next_after(datetime(2024, 4, 1)) == datetime(2024, 5, 31)
    assert CrontabSchedule.parse("59 59 23 31 12 *").next_after(
        datetime(2024, 12, 31, 23, 59, 59)
    ) == datetime(2025, 12, 31, 23, 59, 59)


def test_impossible_date_has_no_occurrence() -> None:
    assert CrontabSchedule.parse("0 0 0 30 2 *").next_after(BASE) is None


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("*/5 * * * *", "6 fields"),
        ("* * * * * * *", "6 fields"),
        ("", "6 fields"),
        ("60 * * * * *", "outside 0-59"),
        ("* 60 * * * *", "outside 0-59"),
        ("* * 24 * * *", "outside 0-23"),
        ("* * * 0 * *", "outside 1-31"),
        ("* * * * 13 *", "outside 1-12"),
        ("* * * * * 7", "outside 0-6"),
        ("* * * * FOO *", "'FOO' is not a valid value for the month field"),
        ("*/0 * * * * *", "not a valid step"),
        ("5-1 * * * * *", "runs backwards"),
        ("1,,2 * * * * *", "empty list item"),
        ("? * * * * *", "not a valid value"),
    ],
)
def test_invalid_expressions_are_rejected(expression: str, message: str) -> None:
    with pytest.raises(CrontabError, match=message):
        CrontabSchedule.parse(expression)


def test_timer_schedule_accepts_timespans_and_time_zones() -> None:
    every = TimerSchedule.parse("00:00:05")
    now = datetime(2024, 1, 1, tzinfo=UTC)
    assert every.next_after(now) == now + timedelta(seconds=5)
    assert every.is_sub_minute
    assert not TimerSchedule.parse("01:00:00").is_sub_minute
    assert not TimerSchedule.parse("0 0 * * * *").is_sub_minute
    assert TimerSchedule.parse("*/10 * * * * *").is_sub_minute
    from zoneinfo import ZoneInfo

    daily = TimerSchedule.parse("0 0 9 * * *", tz=ZoneInfo("Europe/Amsterdam"))
    assert daily.next_after(now) == datetime(2024, 1, 1, 8, 0, tzinfo=UTC)  # 09:00 CET


def test_timer_schedule_rejects_garbage_with_the_host_message() -> None:
    with pytest.raises(ScheduleError, match="not recognized as a valid cron expression or timespan string"):
        TimerSchedule.parse("every five minutes")
