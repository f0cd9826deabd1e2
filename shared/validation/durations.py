"""ISO 8601 durations as Azure's `maximumDuration` takes them (e.g. `PT4H`, `PT2H30M`, `P1DT2H`).

Years and months are rejected: their length depends on a calendar, and Azure's own examples
only use days and time parts.
"""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(
    r"^P(?!$)(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str) -> timedelta:
    """Parse an ISO 8601 duration; raises ValueError with the reason."""
    match = _DURATION.match(text.strip().upper())
    if not match or text.strip().upper().endswith("T"):
        raise ValueError(f"{text!r} is not an ISO 8601 duration such as PT4H or PT2H30M")
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
