"""Time zones by Windows name (as Azure's maintenance configurations use them) or by IANA name.

Windows names map to IANA zones through CLDR's windowsZones table, as shipped and maintained in
`tzlocal.windows_tz` (every zone `TimeZoneInfo.GetSystemTimeZones()` lists); the zone rules come
from the IANA database (`tzdata` when the OS has none).
"""

from __future__ import annotations

from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tzlocal.windows_tz import win_tz

_WINDOWS = {name.lower(): iana for name, iana in win_tz.items()}


class UnknownTimeZoneError(ValueError):
    """Neither a Windows time zone name nor an IANA one."""


@lru_cache(maxsize=512)
def resolve_time_zone(name: str) -> ZoneInfo:
    """"Pacific Standard Time" or "America/Los_Angeles" (any case for Windows names) → ZoneInfo."""
    text = name.strip()
    iana = _WINDOWS.get(text.lower())
    if iana:
        return ZoneInfo(iana)
    if not text or ".." in text or text.startswith("/"):
        raise UnknownTimeZoneError(f"{name!r} is not a time zone")
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder of the database ("Europe")
        raise UnknownTimeZoneError(
            f"{name!r} is not a Windows time zone name (e.g. 'W. Europe Standard Time') or an IANA one "
            "(e.g. 'Europe/Berlin')") from None

