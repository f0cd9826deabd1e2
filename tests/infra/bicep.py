"""Helpers for the infra tests: parse infra/*.bicep with pycep (the parser checkov uses) and read values out."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))


@cache
def parse(path: Path) -> dict[str, Any]:
    pycep = pytest.importorskip("pycep", reason="pycep-parser is a dev requirement (requirements-dev.txt)")
    return pycep.BicepParser().parse(file_path=path)  # type: ignore[no-any-return]


def variable(path: Path, name: str) -> Any:
    return parse(path)["variables"][name]["value"]


def resolve_literal(path: Path, expr: Any) -> Any:
    """A var or param name, or `string(<param>)`, down to its literal value; None when it is a runtime value."""
    doc = parse(path)
    if isinstance(expr, str):
        if expr in doc["variables"]:
            return resolve_literal(path, doc["variables"][expr]["value"])
        if expr in doc["parameters"]:
            return resolve_literal(path, doc["parameters"][expr].get("default"))
        return None if "${" in expr else expr
    if isinstance(expr, int | bool):
        return expr
    if isinstance(expr, dict) and expr.get("function", {}).get("type") == "string":
        inner = resolve_literal(path, expr["function"]["parameters"]["value_to_convert"])
        return None if inner is None else str(inner)
    return None


def role_actions(file: str, resource: str) -> list[str]:
    """The `actions` of the custom role definition `resource` in infra/app/`file`."""
    role = parse(INFRA / "app" / file)["resources"][resource]["config"]["properties"]
    [permissions] = role["permissions"]
    return list(permissions["actions"])


def evaluate(path: Path, expr: Any, env: dict[str, Any]) -> Any:
    """Evaluate a pycep expression from `path` for given parameter / loop-variable values (`env`).

    Only the few Bicep functions the template's scope arithmetic uses (filter, length, split, toLower, union,
    subscription(id), `[for x in xs: ...]`, `==`, `!`, `empty`, interpolation of plain names); anything else
    raises, so a test never silently evaluates something it does not understand. Own code because no library
    evaluates Bicep offline (the Bicep CLI is not on the machines the tests run on)."""
    doc = parse(path)
    if isinstance(expr, bool | int) or expr is None:
        return expr
    if isinstance(expr, list):
        return [evaluate(path, e, env) for e in expr]
    if isinstance(expr, str):
        if expr in env:
            return env[expr]
        if expr in doc["variables"]:
            return evaluate(path, doc["variables"][expr]["value"], env)
        if expr in doc["parameters"]:
            return evaluate(path, doc["parameters"][expr].get("default"), env)
        return _interpolate(path, expr, env)
    if "loop_type" in expr:
        detail = expr["loop_type"]["detail"]
        items = evaluate(path, detail["array_name"], env)
        return [evaluate(path, expr["config"], {**env, detail["item_name"]: item}) for item in items]
    if "function" in expr:
        value = _call(path, expr["function"], env)
        return value[expr["function"]["index"]] if "index" in expr["function"] else value
    if "operator" in expr:
        op = expr["operator"]
        args = [evaluate(path, a, env) for a in op["operands"].values()]
        if op["type"] == "equals":
            return args[0] == args[1]
        if op["type"] == "not":
            return not args[0]
    raise NotImplementedError(f"cannot evaluate {expr!r}")


def _call(path: Path, fn: dict[str, Any], env: dict[str, Any]) -> Any:
    kind, params = fn["type"], fn["parameters"]
    if kind == "filter":
        items = evaluate(path, params["input_array"], env)
        return [i for i in items if evaluate(path, params["expression"], {**env, params["input_element"]: i})]
    args = {k: evaluate(path, v, env) for k, v in params.items()}
    if kind == "length":
        return len(args["arg_1"])
    if kind == "split":
        return str(args["input_string"]).split(args["delimiter"])
    if kind == "to_lower":
        return str(args["string_to_change"]).lower()
    if kind == "empty":
        return not args["item_to_test"]
    if kind == "union":  # arrays: each value once, in first-seen order
        return list(dict.fromkeys(v for arg in args.values() for v in arg))
    if kind == "subscription" and args.get("subscription_id") is not None and "property_name" not in fn:
        return f"/subscriptions/{args['subscription_id']}"
    raise NotImplementedError(f"cannot evaluate {kind}({params!r})")


def _interpolate(path: Path, text: str, env: dict[str, Any]) -> str:
    def name(match: re.Match[str]) -> str:
        if not re.fullmatch(r"[A-Za-z_]\w*", match.group(1)):
            raise NotImplementedError(f"cannot evaluate ${{{match.group(1)}}}")
        return str(evaluate(path, match.group(1), env))

    return re.sub(r"\$\{([^}]*)\}", name, text)
