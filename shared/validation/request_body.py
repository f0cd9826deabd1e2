"""JSON request bodies (and JSON inside query values), parsed strictly: what a caller sends either
means one thing or is refused with a 400 naming the problem.

The parser is the standard library's (`json.loads`), with these rules on top:
- at most MAX_DEPTH levels of nesting: the C scanner's RecursionError (about 1,000 levels) and
  anything deeper than PatchPilot's own shapes (6 levels) are answered 400, not 500;
- no key twice in one object: JSON (RFC 8259 §4) leaves duplicates undefined and Python keeps the
  last, so `{"rebootSetting": "Never", "rebootSetting": "Always"}` could be read two ways;
- numbers are finite: `NaN`, `Infinity` and `1e999` are not JSON (RFC 8259 §6);
- strings are well-formed Unicode: a lone surrogate (`"\\ud800"`, or CESU-8 bytes, which
  `json.loads` decodes with surrogatepass) cannot be stored or sent on.
No third-party parser offers all of these; each is a few lines over the standard one.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from shared.core.errors import ValidationError, quoted

MAX_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")


class _DuplicateKeys(dict):  # type: ignore[type-arg]
    """An object that had a key twice; the walk after parsing finds it and names its path."""

    duplicate: str = ""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            marked = _DuplicateKeys(pairs)
            marked.duplicate = key
            return marked
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {quoted(text)} is out of range")
    return value


def _path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def _check(data: Any, *, where: str) -> None:
    """One iterative walk (no recursion): depth, duplicate keys and lone surrogates, with the path."""
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise ValidationError(f"{path or where} is not well-formed Unicode (a lone surrogate)",
                                      target=path or None, code="InvalidRequestContent")
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise ValidationError(f"{where} nests deeper than {MAX_DEPTH} levels", target=path or None,
                                  code="InvalidRequestContent")
        if isinstance(value, _DuplicateKeys):
            field = _path(path, value.duplicate)
            raise ValidationError(f"{quoted(field)} appears twice in {where}; give each field once",
                                  target=field, code="InvalidRequestContent")
        if isinstance(value, dict):
            for key, item in value.items():
                if _SURROGATE.search(key):
                    raise ValidationError(f"a field name in {where} is not well-formed Unicode",
                                          target=path or None, code="InvalidRequestContent")
                stack.append((item, _path(path, key), depth + 1))
        else:
            stack.extend((item, _path(path, i), depth + 1) for i, item in enumerate(value))


def loads_strict(text: str | bytes, *, where: str = "the request body", target: str | None = None) -> Any:
    """Parse JSON by the rules above; raises ValidationError (400, `InvalidRequestContent`).

    `where` names the document in messages; `target` is the field it came in (None for a body).
    """
    try:
        data = json.loads(text, object_pairs_hook=_object, parse_constant=_constant, parse_float=_float)
    except RecursionError:
        raise ValidationError(f"{where} nests deeper than {MAX_DEPTH} levels", target=target,
                              code="InvalidRequestContent") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ValidationError(f"{where} is not valid JSON: {str(exc)[:200]}", target=target,
                              code="InvalidRequestContent") from None
    try:
        _check(data, where=where)
    except ValidationError as exc:
        if target is None:
            raise
        raise ValidationError(exc.message, target=target, code=exc.code) from None
    return data


def parse_json_body(body: bytes, *, max_bytes: int) -> Any:
    """A request body: at most `max_bytes` (413-like 400 `RequestBodyTooLarge`), not empty, strict JSON."""
    if len(body) > max_bytes:
        raise ValidationError(f"the request body is {len(body)} bytes; at most {max_bytes} are accepted",
                              target=None, code="RequestBodyTooLarge")
    if not body.strip():
        raise ValidationError("the request body is empty; send a JSON object", target=None,
                              code="InvalidRequestContent")
    return loads_strict(body)
