"""Typed records of the domain: what a run is asked to do (`NewRun`), the immutable part of a stored
run (`RunSpec`), and stored rows as records (`RunRecord`, `MachineRecord`, `ScopeListing`). Table
entities are converted to and from records inside shared/storage only."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from shared.core.ids import MachineRef, ScopeRef


@dataclass(frozen=True)
class NewRun:
    """What any run is made of: an operation over a machine list, or over scopes to discover."""

    operation: str
    parameters: dict[str, Any]
    fingerprint: str
    machines: tuple[MachineRef, ...] = ()
    scopes: tuple[ScopeRef, ...] = ()
    filters: tuple[dict[str, Any], ...] = ()  # per scope (dynamic-scope filters); empty: no filters
    origin: str = "api"  # "api", "schedule" (periodic assessment) or "maintenance"
    extra: tuple[tuple[str, Any], ...] = ()  # more fields for the run entity (a maintenance window's)


@dataclass(frozen=True)
class HealthCheck:
    """A rollout's `healthCheck`, validated (shared/validation/health_check.py): what is read of a machine
    before it starts (its baseline) and after its installation ends, and for how long.

    `after_seconds`: wait after the operation's final result (its reboot included) before the first read.
    `within_seconds`: read again until every signal passes, at most this long after `after`; then the
    machine ends Unhealthy. `signals`: of SIGNALS, in reading order. `alert_severities`: Sev0..Sev4 counted;
    `alert_scope`: "machine" (alerts whose target is the machine) or "resourceGroup" (any in its group).
    `probe_url`: a template with {machineName}, {resourceGroup}, {subscriptionId}; `expect_status`: the
    probe's passing HTTP statuses."""

    after_seconds: int
    within_seconds: int
    signals: tuple[str, ...]
    alert_severities: tuple[str, ...] = ()
    alert_scope: str = "machine"
    probe_url: str = ""
    expect_status: tuple[int, ...] = (200,)

    @classmethod
    def from_spec(cls, raw: Mapping[str, Any] | None) -> HealthCheck | None:
        """From the normalised JSON kept on the run (`rollout.healthCheck`), or None."""
        if not raw:
            return None
        alerts, probe = raw.get("alerts") or {}, raw.get("probe") or {}
        return cls(int(raw["afterSeconds"]), int(raw["withinSeconds"]), tuple(raw["signals"]),
                   tuple(alerts.get("severities") or ()), str(alerts.get("scope") or "machine"),
                   str(probe.get("url") or ""), tuple(probe.get("expectStatus") or (200,)))


@dataclass(frozen=True)
class RunSpec:
    """The immutable part of a run: which operation, with which parameters."""

    operation: str
    parameters: dict[str, Any]
    discovers: bool = False  # machines come from listing scopes, page by page (shared/runs/discovery.py)
    configuration: str = ""  # the maintenance configuration whose window this run is
    window_end: str = ""  # ... and when that window closes (a VM is leased to this run until then)
    rollout: bool = False  # machines start only when the rollout controller admits them
    created_at: str = ""  # when the run was accepted (ISO, shared.core.clock.iso)
    counted: bool = False  # its machines are counted in counter rows (shared.core.counters); older runs are not
    health_check: HealthCheck | None = None  # read each machine's health before and after (rollout.healthCheck)
    plan_id: str = ""  # the plan this run applies (shared/plans/): each machine installs its planned patches


@dataclass(frozen=True)
class PollRoundRow:
    """A chain of poll rounds of a run as stored (shared/runs/poll_rounds.py): the `seq` its next round message
    carries, and the row's ETag (None: no row yet). Queued (`polling` false): `at` is when that round is due (ISO
    8601 UTC; "" when none is queued). Polling (a round claimed it and polls): `at` is when it claimed, and `wanted`
    the earliest poll a cover asked its successor to come by meanwhile ("" none)."""

    seq: int
    at: str
    etag: str | None
    polling: bool = False
    wanted: str = ""


@dataclass(frozen=True, eq=False)
class StoredRecord(Mapping[str, Any]):
    """A stored row as a read-only record: typed identity and ETag, and its other columns by name
    (`record["state"]`, `record.get("osType")`). shared/storage converts Table entities to and from
    records; no Table key names or entity metadata exist above it."""

    etag: str
    columns: Mapping[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.columns[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.columns)

    def __len__(self) -> int:
        return len(self.columns)


THROTTLED_AT_COLUMN = "throttledAt"  # a machine's column: when its start was last refused with 429 holding its slot


@dataclass(frozen=True, eq=False)
class MachineRecord(StoredRecord):
    """One machine of a run: where its operation stands (state, seq, poll URL, counters, result)."""

    run_id: str = ""
    key: str = ""  # MachineRef.key: the machine's identity within its run

    @property
    def state(self) -> str:
        return str(self.columns["state"])

    @property
    def seq(self) -> int:
        return int(self.columns["seq"])

    @property
    def resource_id(self) -> str:
        return str(self.columns["resourceId"])

    @property
    def subscription_id(self) -> str:
        return self.key.split("|")[0]

    def with_changes(self, changes: Mapping[str, Any], etag: str | None = None) -> MachineRecord:
        return replace(self, columns={**self.columns, **changes}, etag=self.etag if etag is None else etag)

    @classmethod
    def new(cls, run_id: str, key: str, columns: Mapping[str, Any]) -> MachineRecord:
        """A machine not yet stored (no ETag)."""
        return cls(etag="", columns=dict(columns), run_id=run_id, key=key)


@dataclass(frozen=True, eq=False)
class RunRecord(StoredRecord):
    """A run: what it was asked (operation, parameters, rollout), how far it got, and how it ended."""

    run_id: str = ""

    @cached_property
    def rollout(self) -> dict[str, Any] | None:
        """The rollout spec (validated at acceptance), decoded once; None for a run without one."""
        raw = self.columns.get("rollout")
        return json.loads(str(raw)) if raw else None

    @cached_property
    def parameters(self) -> dict[str, Any]:
        """The operation's parameters as accepted (installPatches: the request's `installPatches`; assessPatches:
        none). Stored as `parameters`; runs stored before that kept them in a column named `installPatches`."""
        raw = self.columns.get("parameters") or self.columns.get("installPatches")
        return dict(json.loads(str(raw))) if raw else {}

    @property
    def counted(self) -> bool:
        """Its machines are counted in counter rows (shared.core.counters); runs stored before are not."""
        return bool(self.columns.get("countersVersion"))

    def with_changes(self, changes: Mapping[str, Any], etag: str | None = None) -> RunRecord:
        return replace(self, columns={**self.columns, **changes}, etag=self.etag if etag is None else etag)


@dataclass(frozen=True, eq=False)
class PlanRecord(StoredRecord):
    """A plan (`POST /api/plans`): the request it answers, its status, summary and the run that applied it."""

    plan_id: str = ""

    def json_column(self, name: str) -> Any:
        """A column holding JSON, decoded (None when absent or empty); a long one is kept in parts `name`, `name1`,
        ... (shared/storage/plan_store.py split_column), joined here."""
        raw = "".join(str(self.columns.get(name if i == 0 else f"{name}{i}") or "") for i in range(16))
        return json.loads(raw) if raw else None


@dataclass(frozen=True, eq=False)
class ScopeListing(StoredRecord):
    """The listing of one scope of a run: which page comes next (fenced by its ETag), how many found."""

    run_id: str = ""
    index: int = 0

    def with_changes(self, changes: Mapping[str, Any], etag: str) -> ScopeListing:
        return replace(self, columns={**self.columns, **changes}, etag=etag)
