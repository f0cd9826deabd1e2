"""ISO 8601 durations as Azure's `maximumDuration` takes them (e.g. `PT4H`, `PT2H30M`, `P1DT2H`).

Years and months are rejected: their length depends on a calendar, and Azure's own examples
only use days and time parts. Digits are ASCII only (Python's `\\d` and `float()` also take Arabic-Indic or
full-width digits, which no Azure parser does) and at most MAX_DIGITS per part, so every value fits a timedelta;
callers bound the result to their field's own range.
"""

from __future__ import annotations

import re
from datetime import timedelta

from shared.core.errors import ValidationError, quoted

MAX_DIGITS = 6  # 999999 hours is 114 years: more than any field takes, far less than timedelta's limit
_N = rf"[0-9]{{1,{MAX_DIGITS}}}"
_DURATION = re.compile(
    rf"P(?!\Z)(?:(?P<weeks>{_N})W)?(?:(?P<days>{_N})D)?"
    rf"(?:T(?=[0-9])(?:(?P<hours>{_N})H)?(?:(?P<minutes>{_N})M)?(?:(?P<seconds>{_N}(?:\.[0-9]{{1,7}})?)S)?)?"
)
_UNBOUNDED = re.compile(_DURATION.pattern.replace(_N, "[0-9]+"))


def parse_duration(text: str) -> timedelta:
    """Parse an ISO 8601 duration; raises ValueError with the reason (quoting a bounded prefix)."""
    normal = text.strip().upper()
    match = _DURATION.fullmatch(normal)
    if not match or normal.endswith("T"):
        if _UNBOUNDED.fullmatch(normal):
            raise ValueError(f"{quoted(text)} is out of range: at most {MAX_DIGITS} digits per part")
        raise ValueError(f"{quoted(text)} is not an ISO 8601 duration such as PT4H or PT2H30M")
    parts = {k: float(v) for k, v in match.groupdict().items() if v is not None}
    return timedelta(
        weeks=parts.get("weeks", 0),
        days=parts.get("days", 0),
        hours=parts.get("hours", 0),
        minutes=parts.get("minutes", 0),
        seconds=parts.get("seconds", 0),
    )


def format_duration(value: timedelta) -> str:
    """Canonical `PT#H#M#S` form, the shape Azure echoes back."""
    total = int(value.total_seconds())
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    out = "PT"
    if hours:
        out += f"{hours}H"
    if minutes:
        out += f"{minutes}M"
    if seconds or out == "PT":
        out += f"{seconds}S"
    return out


def duration_field(value: object, target: str, *, maximum: timedelta, example: str,
                   whole_seconds: bool = False) -> timedelta:
    """A request field that is an ISO 8601 duration from PT0S to `maximum`: ValidationError naming `target`
    otherwise (not a string, not a duration, too long; with `whole_seconds`, a fraction of a second)."""
    if not isinstance(value, str):
        raise ValidationError(f"{target} must be an ISO 8601 duration string such as {example}", target=target)
    try:
        duration = parse_duration(value)
    except ValueError as exc:
        raise ValidationError(f"{target}: {exc}", target=target) from None
    if whole_seconds and duration.total_seconds() % 1:
        raise ValidationError(f"{target} must be whole seconds", target=target)
    if duration > maximum:
        raise ValidationError(f"{target} is {format_duration(duration)}; at most {format_duration(maximum)}",
                              target=target)
    return duration
