"""Query-string values: whole numbers in ASCII digits within a range, refused with a 400 otherwise.

`str.isdecimal()` and `int()` accept any Unicode decimal digit (Arabic-Indic, full-width) and `int()` fails with a
ValueError past 4,300 digits; a bounded ASCII pattern refuses both before any conversion.
"""

from __future__ import annotations

import re

import azure.functions as func

from shared.core.errors import ValidationError, quoted

_WHOLE = re.compile(r"[0-9]{1,9}")


def whole_number(raw: str, *, target: str, minimum: int, maximum: int) -> int:
    """`raw` as an int in [minimum, maximum]; raises ValidationError naming `target`."""
    if not _WHOLE.fullmatch(raw) or not minimum <= int(raw) <= maximum:
        raise ValidationError(f"{target} must be a whole number from {minimum} to {maximum}, got {quoted(raw)}",
                              target=target)
    return int(raw)


def int_param(req: func.HttpRequest, name: str, default: int, maximum: int, minimum: int = 1) -> int:
    """The query parameter `name` (absent: `default`)."""
    raw = req.params.get(name)
    if raw is None:
        return default
    return whole_number(raw, target=name, minimum=minimum, maximum=maximum)
