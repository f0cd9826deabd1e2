"""`recurEvery` as Azure's maintenance configurations write it, and the windows it produces.

Grammar (case-insensitive, tokens separated by spaces; from MaintenanceWindow.recurEvery):
    [N]Hour(s)                                   every N hours (InGuestPatch: N >= 6)
    [N]Day(s)                                    every N days
    [N]Week(s) [Monday,...,Sunday]               every N weeks, on the listed days (default: the start's)
    [N]Month(s) [dayD,...]                       every N months, on those days of the month
    [N]Month(s) First|Second|Third|Fourth|Last <Weekday> [Offset-6..Offset6]
N defaults to 1. `Month` alone recurs on the start's day of the month (the grammar allows it;
the maintenance configuration refuses it, as Azure's service does: see configuration.py).
Spaces around the commas of a list are ignored (`Week Saturday, Sunday`, as Microsoft's PowerShell
docs write it, is `Week Saturday,Sunday`); `normalise_recur_every` gives the canonical spelling.

Rules where Azure's text is silent (written down so a user can check a schedule before trusting it):
- Periods count from the start: day k·N, week k·N (weeks begin on Monday), month k·N after the
  start's day, week or month. Hours count in absolute time from the start.
- A month without the day (day31 in April, day30 in February) has no window that month.
- An offset moves the day after the weekday is found, across a month's end if it must
  (`Month Last Sunday Offset6` can fall in the next month).
- Local times that do not exist (the hour skipped when clocks go forward) start when the gap ends
  plus the same minutes, i.e. at the instant the pre-change offset names (02:30 → 03:30); local
  times that happen twice (clocks go back) start at the first of the two. Every window lasts its
  full duration in real time. This is for later occurrences: a configured `startDateTime` that
  does not exist is refused, as Azure refuses it (configuration.py).
- Windows start at or after `startDateTime` and before `expirationDateTime`, both local times.
- A schedule that can never produce a window (`12Months day30` starting in February; an expiration
  before the first window) is refused when it is written, and every search for a window is bounded
  by the 400-year Gregorian cycle, so no schedule can make a search run forever.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from shared.core.errors import PatchPilotError, quoted

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}
MIN_HOURS = 6  # Azure's lower bound for hourly InGuestPatch schedules
# ASCII: Python's `\d` takes any script's digits, and IGNORECASE alone lets U+017F (long s) match `s`.
_HEAD = re.compile(r"([0-9]{0,4})(hours?|days?|weeks?|months?)", re.IGNORECASE | re.ASCII)
MAX_INTERVAL = {"hour": 24 * 366, "day": 366, "week": 104, "month": 120}  # more is surely a typo
_DAY = re.compile(r"day([0-9]{1,2})", re.IGNORECASE | re.ASCII)
_OFFSET = re.compile(r"offset([+-]?[0-9]{1,2})", re.IGNORECASE | re.ASCII)
# The Gregorian calendar repeats every 400 years: a monthly schedule with no day in that many months
# has none ever, so every search for a window is bounded by it (and such a schedule is refused).
GREGORIAN_CYCLE_MONTHS = 400 * 12
_COMMA = re.compile(r"\s*,\s*")


class RecurrenceError(PatchPilotError, ValueError):
    """`recurEvery` is not in Azure's grammar; the message says what is wrong."""


@dataclass(frozen=True)
class Recurrence:
    unit: str  # "hour" | "day" | "week" | "month"
    interval: int = 1
    weekdays: tuple[int, ...] = ()  # week: 0 = Monday … 6 = Sunday
    month_days: tuple[int, ...] = ()  # month: days of the month
    week_of_month: int | None = None  # month: 1-4, or -1 for Last
    weekday: int | None = None  # month: with week_of_month
    offset: int = 0  # month: days added after the weekday is found


def _weekday(token: str, text: str) -> int:
    try:
        return WEEKDAYS.index(token.lower())
    except ValueError:
        raise RecurrenceError(f"{quoted(token)} in recurEvery {quoted(text)} is not a weekday "
                              "(Monday … Sunday)") from None


def normalise_recur_every(text: str) -> str:
    """The spelling kept and shown: single spaces between tokens, none around commas; case as given."""
    return _COMMA.sub(",", " ".join(text.split()))


def parse_recur_every(text: object) -> Recurrence:
    if not isinstance(text, str) or not text.strip():
        raise RecurrenceError("recurEvery must be a string such as 'Day', 'Week Saturday,Sunday' or "
                              "'Month Second Tuesday Offset2'")
    tokens = normalise_recur_every(text).split()
    head = _HEAD.fullmatch(tokens[0])
    if not head:
        raise RecurrenceError(f"recurEvery {quoted(text)} must start with [N]Hours, [N]Days, [N]Weeks or [N]Months "
                              f"(e.g. Day, 3Days, Week, 2Months), not {quoted(tokens[0])}")
    interval = int(head[1]) if head[1] else 1
    unit = head[2].lower().rstrip("s")
    if not 1 <= interval <= MAX_INTERVAL[unit]:
        raise RecurrenceError(f"recurEvery {quoted(text)}: the frequency must be from 1 to {MAX_INTERVAL[unit]}")
    rest = tokens[1:]
    if unit in ("hour", "day"):
        if rest:
            raise RecurrenceError(f"recurEvery {quoted(text)}: a {unit}ly schedule takes nothing after "
                                  f"{quoted(tokens[0])}")
        if unit == "hour" and interval < MIN_HOURS:
            raise RecurrenceError(f"recurEvery {quoted(text)}: hourly maintenance recurs every {MIN_HOURS} hours "
                                  "or more")
        return Recurrence(unit, interval)
    if unit == "week":
        if len(rest) > 1:
            raise RecurrenceError(f"recurEvery {quoted(text)}: list weekdays separated by commas, "
                                  "e.g. 'Week Saturday,Sunday'")
        days = tuple(sorted({_weekday(d, text) for d in rest[0].split(",")})) if rest else ()
        return Recurrence(unit, interval, weekdays=days)
    return _parse_month(text, interval, rest)


def _parse_month(text: str, interval: int, rest: list[str]) -> Recurrence:
    if not rest:
        return Recurrence("month", interval)
    if _DAY.fullmatch(rest[0].split(",")[0]):
        if len(rest) > 1:
            raise RecurrenceError(f"recurEvery {quoted(text)}: list month days separated by commas, "
                                  "e.g. 'Month day23,day24'")
        days = set()
        for token in rest[0].split(","):
            match = _DAY.fullmatch(token)
            if not match or not 1 <= int(match[1]) <= 31:
                raise RecurrenceError(f"recurEvery {quoted(text)}: {quoted(token)} is not a day of the month "
                                      "(day1 … day31)")
            days.add(int(match[1]))
        return Recurrence("month", interval, month_days=tuple(sorted(days)))
    ordinal = ORDINALS.get(rest[0].lower())
    if ordinal is None:
        raise RecurrenceError(f"recurEvery {quoted(text)}: after Month comes day numbers (day1,day15) or "
                              f"First|Second|Third|Fourth|Last and a weekday, not {quoted(rest[0])}")
    if len(rest) < 2:
        raise RecurrenceError(f"recurEvery {quoted(text)}: {quoted(rest[0])} needs a weekday, "
                              f"e.g. 'Month {rest[0]} Sunday'")
    weekday = _weekday(rest[1], text)
    offset = 0
    if len(rest) > 2:
        match = _OFFSET.fullmatch(rest[2])
        if not match:
            raise RecurrenceError(f"recurEvery {quoted(text)}: {quoted(rest[2])} is not an offset "
                                  "(Offset-6 … Offset6)")
        offset = int(match[1])
        if not -6 <= offset <= 6:
            raise RecurrenceError(f"recurEvery {quoted(text)}: the offset must be between -6 and 6 days, not {offset}")
    if len(rest) > 3:
        raise RecurrenceError(f"recurEvery {quoted(text)}: unexpected {quoted(' '.join(rest[3:]))} after the offset")
    return Recurrence("month", interval, week_of_month=ordinal, weekday=weekday, offset=offset)


def nth_weekday(year: int, month: int, ordinal: int, weekday: int) -> date:
    """The first…fourth (1-4) or last (-1) given weekday of a month."""
    if ordinal == -1:
        last = date(year, month, calendar.monthrange(year, month)[1])
        return last - timedelta(days=(last.weekday() - weekday) % 7)
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (ordinal - 1))


def to_utc(local: datetime, zone: ZoneInfo) -> datetime:
    """Local wall time → UTC, by the module's rules for skipped and repeated local times."""
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC)


@dataclass(frozen=True)
class Schedule:
    """A maintenance window's timing, ready to generate occurrences."""

    recurrence: Recurrence
    start: datetime  # local, naive
    expiration: datetime | None  # local, naive; windows start before it
    duration: timedelta
    zone: ZoneInfo

    def _starts(self, not_before: date) -> Iterator[tuple[datetime, datetime]]:
        """(local start, UTC start) in order, from the period containing `not_before` (or the start) on.
        Hourly schedules step in absolute time; the others step on the local calendar."""
        r, start, at = self.recurrence, self.start, self.start.time()
        if r.unit == "hour":
            step = timedelta(hours=r.interval)
            first_utc = to_utc(start, self.zone)
            lower = datetime.combine(not_before, at).replace(tzinfo=UTC) - timedelta(days=1)
            k = max(0, int((lower - first_utc) / step))
            while True:  # absolute hours: local time only for the start/expiration comparisons
                utc = first_utc + k * step
                yield utc.astimezone(self.zone).replace(tzinfo=None), utc
                k += 1
        elif r.unit == "day":
            k = max(0, (not_before - start.date()).days // r.interval - 1)
            while True:
                local = datetime.combine(start.date() + timedelta(days=k * r.interval), at)
                yield local, to_utc(local, self.zone)
                k += 1
        elif r.unit == "week":
            monday = start.date() - timedelta(days=start.weekday())
            days = r.weekdays or (start.weekday(),)
            w = max(0, (not_before - monday).days // 7 // r.interval - 1) * r.interval
            while True:
                for d in days:
                    local = datetime.combine(monday + timedelta(weeks=w, days=d), at)
                    yield local, to_utc(local, self.zone)
                w += r.interval
        else:
            months_since = (not_before.year - start.year) * 12 + not_before.month - start.month
            m = max(0, months_since // r.interval - 1) * r.interval
            empty = 0  # periods in a row without a day: `12Months day30` from February has none, ever
            while empty <= GREGORIAN_CYCLE_MONTHS // r.interval + 1:
                year, month = divmod(start.year * 12 + start.month - 1 + m, 12)
                month += 1
                dates = self._month_dates(year, month)
                empty = 0 if dates else empty + 1
                for day in dates:
                    local = datetime.combine(day, at)
                    yield local, to_utc(local, self.zone)
                m += r.interval

    def _month_dates(self, year: int, month: int) -> list[date]:
        r = self.recurrence
        length = calendar.monthrange(year, month)[1]
        if r.week_of_month is not None and r.weekday is not None:
            return [nth_weekday(year, month, r.week_of_month, r.weekday) + timedelta(days=r.offset)]
        days = r.month_days or (self.start.day,)
        return [date(year, month, d) for d in days if d <= length]

    def windows(self, after: datetime) -> Iterator[tuple[datetime, datetime]]:
        """(start, end) in UTC of every window starting at or after `after` (aware), in order."""
        try:
            not_before = max(self.start.date(), after.astimezone(self.zone).date() - timedelta(days=1))
            for local, begin in self._starts(not_before):
                if local < self.start:
                    continue
                if self.expiration is not None and local >= self.expiration:
                    return
                if begin >= after:
                    yield begin, begin + self.duration
        except (OverflowError, ValueError):
            return  # past the year 9999: there are no more windows

    def first_window(self) -> tuple[datetime, datetime] | None:
        """The schedule's first window, or None when it can never produce one (a day no month of its
        cycle has, or an expiration before the first start). Bounded: see GREGORIAN_CYCLE_MONTHS."""
        try:
            after = to_utc(self.start, self.zone) - timedelta(days=1)
        except (OverflowError, ValueError):
            return None  # at the very edge of the calendar: there is no window to find
        return next(iter(self.windows(after)), None)

    def next_windows(self, after: datetime, count: int) -> list[tuple[datetime, datetime]]:
        result: list[tuple[datetime, datetime]] = []
        for window in self.windows(after):
            result.append(window)
            if len(result) == count:
                break
        return result

    def window_at(self, when: datetime) -> tuple[datetime, datetime] | None:
        """The window open at `when` (start <= when < end), if any."""
        for begin, end in self.windows(when - self.duration):
            if begin > when:
                return None
            if when < end:
                return begin, end
        return None
