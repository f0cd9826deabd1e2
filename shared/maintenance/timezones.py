"""Time zones by Windows name (as Azure's maintenance configurations use them) or by IANA name.

Windows names map to IANA zones through CLDR's windowsZones table, as shipped and maintained in
`tzlocal.windows_tz` (every zone `TimeZoneInfo.GetSystemTimeZones()` lists); the zone rules come
from the IANA database (`tzdata` when the OS has none).

An IANA name must be one the database names (its zones and their links, e.g. `Europe/Berlin`,
`US/Pacific`, `UTC`), as listed by the `tzdata` package: `zoneinfo` by itself opens any file under
the OS's zoneinfo folder, so `posix/Europe/Berlin`, `right/UTC` (leap-second clocks), `localtime`
(whatever the machine is set to) would be read as zones too. `Factory` is in the database but is a
placeholder for "not configured", not a place's time, and is refused as well. IANA names are matched
without regard to case and used in their own spelling.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from tzlocal.windows_tz import win_tz

from shared.core.errors import PatchPilotError, quoted

_WINDOWS = {name.lower(): iana for name, iana in win_tz.items()}
_NOT_PLACES = {"Factory", "localtime", "posixrules"}


def _iana_names() -> dict[str, str]:
    try:
        names = set(resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8").split())
    except (ModuleNotFoundError, FileNotFoundError):  # no tzdata package: the OS's list (posix/, right/ left out)
        names = available_timezones()
    return {name.lower(): name for name in names - _NOT_PLACES}


_IANA = _iana_names()


class UnknownTimeZoneError(PatchPilotError, ValueError):
    """Neither a Windows time zone name nor an IANA one."""


@lru_cache(maxsize=512)
def resolve_time_zone(name: str) -> ZoneInfo:
    """"Pacific Standard Time" or "America/Los_Angeles" (any case for Windows names) → ZoneInfo."""
    text = name.strip().lower()
    iana = _WINDOWS.get(text) or _IANA.get(text)
    try:
        if iana:
            return ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # a listed name this machine's database lacks
        pass
    raise UnknownTimeZoneError(
        f"{quoted(name)} is not a Windows time zone name (e.g. 'W. Europe Standard Time') or an IANA one "
        "(e.g. 'Europe/Berlin')")

