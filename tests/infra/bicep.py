"""Helpers for the infra tests: parse infra/*.bicep with pycep (the parser checkov uses) and read values out."""

from __future__ import annotations

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
