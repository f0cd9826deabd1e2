"""NCRONTAB expressions as the timer trigger reads them: six fields, seconds first.

`{second} {minute} {hour} {day} {month} {day-of-week}`; each field takes `*`, a value, a range `a-b`,
a step `*/n`, `a-b/n` or `a/n` (from a to the field's maximum), and comma lists of those. Months accept
JAN..DEC and days of week SUN..SAT (0 = Sunday .. 6 = Saturday), full names too, case-insensitive.

Like NCrontab (the library the host uses, with IncludingSeconds=true):
- exactly six fields: a classic five-field expression is rejected;
- when both day-of-month and day-of-week are restricted, a time must match BOTH (not cron's OR);
- the next occurrence is strictly after the start time, at whole-second granularity.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.core.errors import PatchPilotError

_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
_FULL_MONTHS = [
    "JANUARY",
    "FEBRUARY",
    "MARCH",
    "APRIL",
    "MAY",
    "JUNE",
    "JULY",
    "AUGUST",
    "SEPTEMBER",
    "OCTOBER",
    "NOVEMBER",
    "DECEMBER",
]
_FULL_DAYS = ["SUNDAY", "MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY"]

# (name, min, max, names, first value the names map to)
_FIELDS = (
    ("second", 0, 59, None, 0),
    ("minute", 0, 59, None, 0),
    ("hour", 0, 23, None, 0),
    ("day", 1, 31, None, 1),
    ("month", 1, 12, (_MONTHS, _FULL_MONTHS), 1),
    ("day-of-week", 0, 6, (_DAYS, _FULL_DAYS), 0),
)

# No expression needs more than this to find an occurrence that exists (Feb 29 on a given weekday: 28 years).
_SEARCH_YEARS = 30


class CrontabError(PatchPilotError, ValueError):
    """The expression is not a valid six-field NCRONTAB expression; the message says which part."""


def _value(token: str, field: tuple[Any, ...]) -> int:
    name, lo, hi, names, first = field
    if token.isdecimal():
        value = int(token)
    elif names and token.upper() in names[0]:
        value = names[0].index(token.upper()) + first
    elif names and token.upper() in names[1]:
        value = names[1].index(token.upper()) + first
    else:
        raise CrontabError(f"'{token}' is not a valid value for the {name} field")
    if not lo <= value <= hi:
        raise CrontabError(f"{name} value {value} is outside {lo}-{hi}")
    return value


def _parse_field(text: str, field: tuple[Any, ...]) -> frozenset[int]:
    name, lo, hi, _, _ = field
    values: set[int] = set()
    for item in text.split(","):
        part = item
        if not part:
            raise CrontabError(f"empty list item in the {name} field '{text}'")
        step = 1
        if "/" in part:
            part, _, step_text = part.partition("/")
            if not step_text.isdigit() or int(step_text) == 0:
                raise CrontabError(f"'{step_text}' is not a valid step in the {name} field")
            step = int(step_text)
        if part == "*":
            start, end = lo, hi
        elif "-" in part:
            a, _, b = part.partition("-")
            start, end = _value(a, field), _value(b, field)
            if start > end:
                raise CrontabError(f"range {part} in the {name} field runs backwards")
        else:
            start = _value(part, field)
            end = hi if step > 1 else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CrontabSchedule:
    """A parsed expression; `next_after(t)` gives the next matching wall-clock time (naive or aware)."""

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]

    @classmethod
    def parse(cls, expression: str) -> CrontabSchedule:
        fields = expression.split()
        if len(fields) != 6:
            raise CrontabError(
                f"'{expression}' is an invalid crontab expression: it must contain 6 fields "
                "(second minute hour day month day-of-week), found "
                f"{len(fields)}"
                + (
                    "; prefix a seconds field, e.g. '0 " + expression.strip() + "'"
                    if len(fields) == 5
                    else ""
                )
            )
        parsed = [_parse_field(text, spec) for text, spec in zip(fields, _FIELDS, strict=True)]
        return cls(expression, *parsed)

    def _day_matches(self, t: datetime) -> bool:
        return t.day in self.days and (t.isoweekday() % 7) in self.days_of_week

    def next_after(self, start: datetime) -> datetime | None:
        """The first matching time strictly after `start` (sub-second part ignored), or None."""
        t = start.replace(microsecond=0) + timedelta(seconds=1)
        limit = start.year + _SEARCH_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0, second=0) + timedelta(days=32)).replace(day=1)
                continue
            if not self._day_matches(t):
                t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
                continue
            if t.hour not in self.hours:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
                continue
            if t.minute not in self.minutes:
                t = t.replace(second=0) + timedelta(minutes=1)
                continue
            if t.second not in self.seconds:
                t += timedelta(seconds=1)
                continue
            return t
        return None
