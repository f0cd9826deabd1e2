"""Azure Table storage's limits, checked before anything is written, so a value that cannot be stored is a
400 naming its field instead of a 500 after a partial write.

The limits (learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model):
- a property holds at most 64 KiB; a string is stored as UTF-16, so that is 32,768 UTF-16 code units
  (characters outside the BMP take two);
- an entity holds at most 1 MiB, counted as 4 bytes + 2 per character of PartitionKey and RowKey +
  for each property 8 bytes + 2 per character of its name + its value (a string: 4 + 2 per unit);
- PartitionKey and RowKey hold at most 1 KiB (512 UTF-16 units) and none of `/ \\ # ?` or the control
  characters U+0000-U+001F and U+007F-U+009F.
Azurite enforces only some of these; Azure refuses each with a 400 that would reach a caller as a 500.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from shared.core.errors import ValidationError, quoted

MAX_PROPERTY_BYTES = 64 * 1024
MAX_ENTITY_BYTES = 1024 * 1024
MAX_KEY_BYTES = 1024
_KEY_FORBIDDEN = re.compile("[/\\\\#?\x00-\x1f\x7f-\x9f]")


def utf16_bytes(text: str) -> int:
    """Bytes `text` takes as Table storage keeps it (UTF-16)."""
    return len(text.encode("utf-16-le", "surrogatepass"))


def compact_json(value: Any) -> str:
    """The JSON text the stores write for a structured value (so a check measures what is written)."""
    return json.dumps(value, separators=(",", ":"))


def _value_bytes(value: Any) -> int:
    if isinstance(value, str):
        return 4 + utf16_bytes(value)
    if isinstance(value, bytes):
        return 4 + len(value)
    return 8  # bool, int32, int64, double, datetime: at most 8 bytes each


def entity_bytes(entity: Mapping[str, Any]) -> int:
    """Azure's own size formula for an entity (keys included); `etag`/metadata are not stored."""
    size = 4 + utf16_bytes(str(entity.get("PartitionKey", "")) + str(entity.get("RowKey", "")))
    for name, value in entity.items():
        if name in ("PartitionKey", "RowKey", "etag") or value is None:
            continue
        size += 8 + utf16_bytes(name) + _value_bytes(value)
    return size


def check_key(value: str, *, target: str) -> str:
    """A PartitionKey or RowKey made from a caller's input: refused (400) if Table storage would refuse it."""
    if not value or utf16_bytes(value) > MAX_KEY_BYTES or _KEY_FORBIDDEN.search(value):
        raise ValidationError(f"{target} {quoted(value)} cannot be a storage key: 1 to 512 characters without "
                              "/ \\ # ? or control characters", target=target)
    return value


def largest_member(value: Any, target: str) -> str:
    """The path of what makes `value` big: follow the largest member down to a scalar or a list of scalars,
    so a message names `installPatches.linuxParameters.packageNameMasksToInclude`, not `installPatches`."""
    while True:
        if isinstance(value, dict) and value:
            key = max(value, key=lambda k: len(compact_json(k)) + len(compact_json(value[k])))
            target, value = (f"{target}.{key}" if target else str(key)), value[key]
        elif isinstance(value, list) and value and any(isinstance(v, dict | list) for v in value):
            index = max(range(len(value)), key=lambda i: len(compact_json(value[i])))
            target, value = f"{target}[{index}]", value[index]
        else:
            return target


def check_property(text: str, *, target: str, source: Any = None) -> str:
    """A string property to be stored: at most 64 KiB as UTF-16. `source` is the structure `text` was
    serialized from, if any, so the error can name the member that is too big."""
    size = utf16_bytes(text)
    if size > MAX_PROPERTY_BYTES:
        where = largest_member(source, target) if source is not None else target
        raise ValidationError(
            f"{target or 'the request body'} takes {size // 1024} KiB as stored, and Azure Table storage keeps "
            f"at most {MAX_PROPERTY_BYTES // 1024} KiB in one value; the largest part is {where or 'the body'}",
            target=where or None, code="PropertyValueTooLarge")
    return text


def check_json_property(value: Any, *, target: str) -> str:
    """`value` as the stores serialize it, checked as one property; returns the JSON text."""
    return check_property(compact_json(value), target=target, source=value)


def check_entity(entity: Mapping[str, Any], *, targets: Mapping[str, str] | None = None) -> None:
    """Every string property of a whole entity and the entity's total size, before it is written.

    `targets` maps a property name to the request field it came from (default: the property's name);
    a property holding JSON is parsed back to name its largest member.
    """
    targets = targets or {}
    for name, value in entity.items():
        if name in ("PartitionKey", "RowKey"):
            check_key(str(value), target=targets.get(name, name))
        elif isinstance(value, str) and utf16_bytes(value) > MAX_PROPERTY_BYTES:
            try:
                source = json.loads(value)
            except ValueError:
                source = None
            check_property(value, target=targets.get(name, name), source=source)
    size = entity_bytes(entity)
    if size > MAX_ENTITY_BYTES:
        raise ValidationError(f"the request takes {size // 1024} KiB as stored; Azure Table storage keeps at most "
                              f"{MAX_ENTITY_BYTES // 1024} KiB in one entity", target=None,
                              code="RequestTooLarge")
