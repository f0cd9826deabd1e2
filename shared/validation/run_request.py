"""`POST /api/runs` bodies: parse, validate, normalise, fingerprint."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from shared.core.errors import ValidationError
from shared.core.ids import MachineRef, ScopeRef
from shared.egress.policy import Networks
from shared.validation.dynamic_scope import parse_filter
from shared.validation.install_parameters import parse_install_parameters, reject_unknown
from shared.validation.request_body import parse_json_body
from shared.validation.resource_ids import parse_machine_id
from shared.validation.rollout import parse_rollout, pin_windows_publish_date
from shared.validation.scopes import parse_scopes

RUN_FIELDS = {"machines", "scopes", "filter", "installPatches", "rollout"}


@dataclass(frozen=True)
class RunRequest:
    """`machines` by id, or `scopes` (subscription and resource-group ids) whose VMs are listed through ARM
    and kept when they pass `filter` (a maintenance assignment's dynamic-scope filter: locations, osTypes,
    tagSettings Any/All, resourceGroups, resourceTypes)."""

    machines: tuple[MachineRef, ...]
    install_parameters: dict[str, Any]
    rollout: dict[str, Any] | None = None
    scopes: tuple[ScopeRef, ...] = ()
    filter: dict[str, Any] | None = None

    def accepted_parameters(self) -> dict[str, Any]:
        """installPatches' parameters as the run keeps them: with a rollout, Windows machines are pinned to one
        patch set (validation/rollout.py pin_windows_publish_date)."""
        if self.rollout is None:
            return self.install_parameters
        return pin_windows_publish_date(self.install_parameters, self.rollout)

    def fingerprint(self) -> str:
        """Hash of the normalised request: equal for bodies that mean the same (Idempotency-Key checks)."""
        canonical = json.dumps(
            {"machines": sorted(m.key for m in self.machines), "installPatches": self.install_parameters,
             **({"rollout": self.rollout} if self.rollout is not None else {}),
             **({"scopes": sorted(s.resource_id.lower() for s in self.scopes), "filter": self.filter or {}}
                if self.scopes else {})},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


def parse_run_request(body: bytes, *, max_bytes: int, max_machines: int,
                      allow_local_hooks: bool = False, probe_networks: Networks = ()) -> RunRequest:
    data = parse_json_body(body, max_bytes=max_bytes)
    if not isinstance(data, dict):
        raise ValidationError("the request body must be a JSON object", target=None,
                              code="InvalidRequestContent")
    reject_unknown(data, RUN_FIELDS, "")
    if ("machines" in data) == ("scopes" in data):
        raise ValidationError("give exactly one of machines (VM or Arc-enabled server resource ids) or scopes "
                              "(subscription or resource group ids)", target="machines" if "machines" in data else None)
    scopes: tuple[ScopeRef, ...] = ()
    flt: dict[str, Any] | None = None
    if "scopes" in data:
        scopes = parse_scopes(data["scopes"], target="scopes")
        flt = parse_filter(data["filter"], target="filter") if data.get("filter") is not None else None
        if data.get("rollout") is not None:
            raise ValidationError("a rollout's waves name machines: give machines, not scopes", target="rollout")
        machines: tuple[MachineRef, ...] = ()
    else:
        if "filter" in data:
            raise ValidationError("filter applies to scopes: give scopes, or leave filter out", target="filter")
        machines = parse_machines(data.get("machines"), max_machines=max_machines)

    if "installPatches" not in data:
        raise ValidationError("installPatches is required", target="installPatches")
    params = parse_install_parameters(data["installPatches"])
    rollout = parse_rollout(data["rollout"], allow_local_hooks=allow_local_hooks, probe_networks=probe_networks) \
        if data.get("rollout") is not None else None
    if rollout is not None:
        check_wave_machines(rollout, {m.key for m in machines})
    return RunRequest(machines=machines, install_parameters=params, rollout=rollout, scopes=scopes, filter=flt)


def check_wave_machines(rollout: dict[str, Any], keys: set[str]) -> None:
    for i, wave in enumerate(rollout.get("waves") or []):
        for j, key in enumerate(wave.get("machines") or []):
            if key not in keys:
                raise ValidationError(f"rollout.waves[{i}].machines[{j}] is not one of the run's machines",
                                      target=f"rollout.waves[{i}].machines[{j}]")


def parse_machines(raw_machines: object, *, max_machines: int) -> tuple[MachineRef, ...]:
    """A non-empty list of distinct machine resource ids (Azure VMs, Arc-enabled servers), at most
    MAX_MACHINES_PER_RUN."""
    if not isinstance(raw_machines, list):
        raise ValidationError("machines must be a JSON array of machine resource ids", target="machines")
    if not raw_machines:
        raise ValidationError("machines is empty; give at least one machine resource id", target="machines")
    if len(raw_machines) > max_machines:
        raise ValidationError(
            f"machines has {len(raw_machines)} entries; a run takes at most {max_machines} "
            "(setting MAX_MACHINES_PER_RUN)",
            target="machines",
        )
    machines: list[MachineRef] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_machines):
        ref = parse_machine_id(raw, target=f"machines[{i}]")
        if ref.key in seen:
            raise ValidationError(f"machines[{i}] repeats machines[{seen[ref.key]}]", target=f"machines[{i}]")
        seen[ref.key] = i
        machines.append(ref)
    return tuple(machines)
