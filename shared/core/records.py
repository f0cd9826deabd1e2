"""Typed records of the domain: what a run is asked to do (`NewRun`) and the immutable part of a
stored run (`RunSpec`). Table entities are converted to and from records inside shared/storage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.core.ids import ScopeRef, VmRef


@dataclass(frozen=True)
class NewRun:
    """What any run is made of: an operation over a machine list, or over scopes to discover."""

    operation: str
    parameters: dict[str, Any]
    fingerprint: str
    machines: tuple[VmRef, ...] = ()
    scopes: tuple[ScopeRef, ...] = ()
    filters: tuple[dict[str, Any], ...] = ()  # per scope (dynamic-scope filters); empty: no filters
    origin: str = "api"  # "api", "schedule" (periodic assessment) or "maintenance"
    extra: tuple[tuple[str, Any], ...] = ()  # more fields for the run entity (a maintenance window's)


@dataclass(frozen=True)
class RunSpec:
    """The immutable part of a run: which operation, with which parameters."""

    operation: str
    parameters: dict[str, Any]
    discovers: bool = False  # machines come from listing scopes, page by page (shared/runs/discovery.py)
    configuration: str = ""  # the maintenance configuration whose window this run is
    window_end: str = ""  # ... and when that window closes (a VM is leased to this run until then)
    rollout: bool = False  # machines start only when the rollout controller admits them
