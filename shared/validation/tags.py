"""ARM resource `tags`, with ARM's own limits (learn.microsoft.com/azure/azure-resource-manager/management/
tag-resources#limitations): at most 50 tags; a name of 1-512 characters without `< > % & \\ ? /`; a value
of at most 256 characters; all strings. ARM refuses anything else, so PatchPilot does too.
"""

from __future__ import annotations

import re

from shared.core.errors import ValidationError, quoted

MAX_TAGS = 50
MAX_NAME = 512
MAX_VALUE = 256
_FORBIDDEN = re.compile(r"[<>%&\\?/]")


def parse_tags(value: object, target: str = "tags") -> dict[str, str]:
    """`{"name": "value", ...}`, or {} for null/absent; raises ValidationError naming the tag."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(f"{target} must be an object of string values", target=target)
    if len(value) > MAX_TAGS:
        raise ValidationError(f"{target} has {len(value)} tags; a resource takes at most {MAX_TAGS}", target=target)
    for name, tag in value.items():
        where = f"{target}.{name}"
        if not 1 <= len(name) <= MAX_NAME or _FORBIDDEN.search(name):
            raise ValidationError(f"the tag name {quoted(name)} must be 1-{MAX_NAME} characters without < > % & "
                                  "\\ ? /", target=where)
        if not isinstance(tag, str) or len(tag) > MAX_VALUE:
            raise ValidationError(f"{where} must be a string of at most {MAX_VALUE} characters", target=where)
    return dict(value)
