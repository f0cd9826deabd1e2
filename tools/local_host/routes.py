"""HTTP route templates as the host's ASP.NET router reads them, enough for Functions routes.

Supported: literal segments (matched case-insensitively), `{name}`, optional `{name?}`, defaults
`{name=value}`, catch-all `{*rest}` (last segment), several parameters in one segment
(`{name}.{ext}`) and the common inline constraints: int, long, bool, guid, alpha, double, decimal,
float, datetime, min(n), max(n), range(a,b), length(n|a,b), minlength(n), maxlength(n), regex(...).

Order: the first route that matches wins, and routes are tried in the order of their functions' names
(case-insensitive ordinal), not by how specific they are. That is the host's order: FunctionMetadataManager
returns the functions sorted by name (`OrderBy(f => f.Name, StringComparer.OrdinalIgnoreCase)`),
WebScriptHostHttpRoutesManager maps each HTTP function's route in that order with WebJobsRouteBuilder,
whose Build() puts them in one ASP.NET RouteCollection, which tries its routes in order and stops at the
first match (Azure/azure-functions-host 89dc438d; Azure/azure-webjobs-sdk-extensions 2e7550f7).
So `items/{id}` in function `get_item` shadows `items/new` in function `new_item`: name such functions so
the specific one sorts first, or add a constraint. Routes whose `methods` exclude the request's method are
skipped (the method is a route constraint), so a known path with a wrong method is a 404 (not 405).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import unquote

_PARAM = re.compile(r"\{([^{}]+)\}")


class RouteError(ValueError):
    """The route template is malformed or uses an unknown constraint."""


def _int_in(bits: int) -> Callable[[str], bool]:
    def check(v: str) -> bool:
        return re.fullmatch(r"[+-]?\d+", v) is not None and -(2 ** (bits - 1)) <= int(v) < 2 ** (bits - 1)

    return check


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _is_decimal(v: str) -> bool:
    try:
        Decimal(v)
    except InvalidOperation:
        return False
    return True


def _is_guid(v: str) -> bool:
    try:
        uuid.UUID(v)
    except ValueError:
        return False
    return True


def _is_datetime(v: str) -> bool:
    try:
        datetime.fromisoformat(v)
    except ValueError:
        return False
    return True


_SIMPLE: dict[str, Callable[[str], bool]] = {
    "int": _int_in(32),
    "long": _int_in(64),
    "bool": lambda v: v.lower() in ("true", "false"),
    "guid": _is_guid,
    "alpha": lambda v: re.fullmatch(r"[A-Za-z]+", v) is not None,
    "double": _is_float,
    "float": _is_float,
    "decimal": _is_decimal,
    "datetime": _is_datetime,
}


def _constraint(text: str) -> Callable[[str], bool]:
    m = re.fullmatch(r"(\w+)(?:\((.*)\))?", text, re.DOTALL)
    if not m:
        raise RouteError(f"route constraint '{text}' is malformed")
    name, arg = m.group(1).lower(), m.group(2)
    if arg is None and name in _SIMPLE:
        return _SIMPLE[name]
    if arg is None:
        raise RouteError(f"unknown route constraint '{text}'")
    if name == "regex":
        pattern = re.compile(arg, re.IGNORECASE)
        return lambda v: pattern.search(v) is not None
    nums = [int(x) for x in arg.split(",")]
    checks: dict[str, Callable[[str], bool]] = {
        "min": lambda v: _SIMPLE["long"](v) and int(v) >= nums[0],
        "max": lambda v: _SIMPLE["long"](v) and int(v) <= nums[0],
        "range": lambda v: _SIMPLE["long"](v) and nums[0] <= int(v) <= nums[-1],
        "minlength": lambda v: len(v) >= nums[0],
        "maxlength": lambda v: len(v) <= nums[0],
        "length": lambda v: len(v) == nums[0] if len(nums) == 1 else nums[0] <= len(v) <= nums[1],
    }
    if name not in checks:
        raise RouteError(f"unknown route constraint '{text}'")
    return checks[name]


@dataclass
class _Param:
    name: str
    optional: bool = False
    catch_all: bool = False
    default: str | None = None
    constraints: list[Callable[[str], bool]] = field(default_factory=list)


def _parse_param(text: str) -> _Param:
    catch_all = text.startswith("*")
    text = text.lstrip("*")
    default = None
    if "=" in text:
        text, default = text.split("=", 1)
    parts = text.split(":")
    name = parts[0]
    optional = name.endswith("?")
    name = name.rstrip("?")
    if not re.fullmatch(r"[A-Za-z_][\w-]*", name):
        raise RouteError(f"route parameter name '{name}' is not valid")
    constraints = [_constraint(c.rstrip("?")) for c in parts[1:]]
    if parts[-1].endswith("?") and len(parts) > 1:
        optional = True
    return _Param(name, optional or default is not None, catch_all, default, constraints)


@dataclass
class Route:
    """One function's compiled route template."""

    template: str
    target: Any
    methods: frozenset[str] | None
    name: str = ""
    segments: list[tuple[re.Pattern[str] | None, list[_Param], str]] = field(default_factory=list)

    @classmethod
    def compile(cls, template: str, target: Any, methods: frozenset[str] | None) -> Route:
        route = cls(template.strip("/"), target, methods)
        parts = [p for p in route.template.split("/")] if route.template else []
        seen: set[str] = set()
        for i, part in enumerate(parts):
            if not part:
                raise RouteError(f"route '{template}' has an empty segment")
            params = [_parse_param(m.group(1)) for m in _PARAM.finditer(part)]
            for p in params:
                if p.name.lower() in seen:
                    raise RouteError(f"route '{template}' uses parameter '{p.name}' twice")
                seen.add(p.name.lower())
                if p.catch_all and i != len(parts) - 1:
                    raise RouteError(f"catch-all '{{*{p.name}}}' must be the last segment of '{template}'")
            if not params:
                route.segments.append((None, [], part))
                continue
            if len(params) == 1 and _PARAM.fullmatch(part):
                route.segments.append((None, params, part))
                continue
            regex, pos = "", 0
            for m, p in zip(_PARAM.finditer(part), params, strict=True):
                regex += re.escape(part[pos : m.start()]) + f"(?P<{p.name}>.+?)"
                pos = m.end()
            regex += re.escape(part[pos:])
            route.segments.append((re.compile(regex, re.IGNORECASE), params, part))
        return route

    def match(self, path: str) -> dict[str, str] | None:
        """Route values for `path` (already without the route prefix), or None."""
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        values: dict[str, str] = {}
        for i, (regex, params, literal) in enumerate(self.segments):
            if params and params[0].catch_all and regex is None:
                rest = "/".join(parts[i:])
                if not rest and not params[0].optional and params[0].default is None:
                    return None
                if rest:
                    values[params[0].name] = rest
                elif params[0].default is not None:
                    values[params[0].name] = params[0].default
                return values if self._check(values) else None
            if i >= len(parts):
                # missing trailing segments are fine only when every remaining one is optional
                for _, rest_params, _ in self.segments[i:]:
                    if len(rest_params) != 1 or not rest_params[0].optional:
                        return None
                    if rest_params[0].default is not None:
                        values[rest_params[0].name] = rest_params[0].default
                return values if self._check(values) else None
            part = parts[i]
            if not params:
                if part.lower() != literal.lower():
                    return None
            elif regex is None:
                values[params[0].name] = part
            else:
                m = regex.fullmatch(part)
                if not m:
                    return None
                values.update(m.groupdict())
        if len(parts) > len(self.segments):
            return None
        return values if self._check(values) else None

    def _check(self, values: dict[str, str]) -> bool:
        for _, params, _ in self.segments:
            for p in params:
                if p.name in values and not all(c(values[p.name]) for c in p.constraints):
                    return False
        return True


def routes_conflict(
    template: str, methods: frozenset[str] | None, other: str, other_methods: frozenset[str] | None
) -> bool:
    """ScriptHost.HttpRoutesConflict: the same template (case-insensitive) and some method in common."""
    if template.strip("/").lower() != other.strip("/").lower():
        return False
    return not methods or not other_methods or bool(methods & other_methods)


def reserved_route(template: str) -> bool:
    """ScriptHost.ValidateHttpFunction: function routes may not start with `admin` or `runtime`."""
    lower = template.strip("/").lower()
    return lower.startswith("admin") or lower.startswith("runtime")


class RouteTable:
    """All HTTP routes, tried in their functions' name order (see module docstring)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.strip("/")
        self.routes: list[Route] = []

    def add(self, template: str, target: Any, methods: frozenset[str] | None, name: str | None = None) -> Route:
        """Add a function's route; `name` (default: `target.name`) decides where it is tried."""
        route = Route.compile(template, target, methods)
        route.name = name if name is not None else str(getattr(target, "name", target))
        self.routes.append(route)
        self.routes.sort(key=lambda r: r.name.upper())  # StringComparer.OrdinalIgnoreCase
        return route

    def strip_prefix(self, path: str) -> str | None:
        """The path under the route prefix (case-insensitive), or None if it is outside it."""
        path = "/" + path.lstrip("/")
        if not self.prefix:
            return path
        head = "/" + self.prefix
        if path.lower() == head.lower() or path.lower().startswith(head.lower() + "/"):
            return path[len(head) :] or "/"
        return None

    def find(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        sub = self.strip_prefix(path)
        if sub is None:
            return None
        for route in self.routes:
            values = route.match(sub)
            if values is None:
                continue
            if route.methods is None or method.upper() in route.methods:
                return route, values
        return None
