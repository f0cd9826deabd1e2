"""App settings, read from the environment once per process.

Azure puts app settings in the environment; locally the host loads `local.settings.json` first.
Every setting is documented in docs/settings.md (tests/unit/test_docs.py checks it); the names used in trigger bindings
(`%OPERATIONS_QUEUE%` …) must also exist as app settings, so they are in local.settings.example.json.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from shared.core.errors import PatchPilotError
from shared.egress.policy import Networks, check_url, parse_networks

DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
DEFAULT_COMPUTE_API_VERSION = "2025-04-01"
# Microsoft.HybridCompute (Azure Arc-enabled servers): the stable version of HybridCompute.json that carries
# machines/{name}/installPatches and assessPatches (azure-rest-api-specs, hybridcompute/stable/2024-07-10).
DEFAULT_HYBRIDCOMPUTE_API_VERSION = "2024-07-10"
# Once a day, as Azure's periodic assessment runs; 03:00 UTC keeps it clear of business hours in most zones.
DEFAULT_ASSESSMENT_SCHEDULE = "0 0 3 * * *"
# A call to a webhook or hook lasts at most connect + read seconds (shared/egress/session.py), and must end
# well inside host.json's functionTimeout (5 minutes) on the queue worker that makes it: 60 + 200 < 300.
MAX_EVENT_CONNECT_SECONDS = 60
MAX_EVENT_READ_SECONDS = 200  # a pre-run hook's timeoutSeconds has the same bound (validation/rollout.py)


class SettingsError(PatchPilotError, ValueError):
    """A setting is missing or malformed; raised at first use so the host log names it."""


def _int(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"setting {name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"setting {name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"setting {name} must be <= {maximum}, got {value}")
    return value


def _str(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def _list(name: str) -> tuple[str, ...]:
    """Comma-, semicolon- or whitespace-separated values (one scope per line reads well in the portal)."""
    return tuple(v for v in re.split(r"[,;\s]+", os.environ.get(name, "")) if v)


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def normalise_arm_endpoint(raw: str) -> str:
    """`https://host[:port]` with no path; plain http only for loopback (the simulator)."""
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise SettingsError(f"ARM_ENDPOINT must be an absolute http(s) URL, got {raw!r}")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise SettingsError(f"ARM_ENDPOINT may use plain http only on loopback, got {raw!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise SettingsError(f"ARM_ENDPOINT must not have a path or query, got {raw!r}")
    return f"{parts.scheme}://{parts.netloc.lower()}"


@dataclass(frozen=True)
class StorageSettings:
    """AzureWebJobsStorage (a connection string, or identity-based `__tableServiceUri`/`__queueServiceUri` with
    `__clientId`, the Functions host's own convention) and the tables PatchPilot keeps its state in."""

    connection: str
    table_service_uri: str | None
    queue_service_uri: str | None
    client_id: str | None  # the user-assigned identity for storage
    runs_table: str
    targets_table: str
    patches_table: str
    machines_table: str
    assessments_table: str
    maintenance_table: str

    @classmethod
    def from_env(cls) -> StorageSettings:
        return cls(
            connection=_str("AzureWebJobsStorage", ""),
            table_service_uri=os.environ.get("AzureWebJobsStorage__tableServiceUri") or None,
            queue_service_uri=os.environ.get("AzureWebJobsStorage__queueServiceUri") or None,
            client_id=os.environ.get("AzureWebJobsStorage__clientId") or None,
            runs_table=_str("RUNS_TABLE", "patchruns"),
            targets_table=_str("TARGETS_TABLE", "patchtargets"),
            patches_table=_str("PATCHES_TABLE", "patchdetails"),
            machines_table=_str("MACHINES_TABLE", "patchmachines"),
            assessments_table=_str("ASSESSMENTS_TABLE", "patchassessments"),
            maintenance_table=_str("MAINTENANCE_TABLE", "patchmaintenance"),
        )


@dataclass(frozen=True)
class QueueSettings:
    """The queues' names (also the `%NAME%` expressions of the queue triggers)."""

    dispatch: str
    operations: str
    discovery: str
    events: str
    polls: str  # a machine's steps once its operation was claimed: polls never queue before starts

    @classmethod
    def from_env(cls) -> QueueSettings:
        return cls(dispatch=_str("DISPATCH_QUEUE", "patch-dispatch"),
                   operations=_str("OPERATIONS_QUEUE", "patch-operations"),
                   polls=_str("POLLS_QUEUE", "patch-polls"),
                   discovery=_str("DISCOVERY_QUEUE", "patch-discovery"),
                   events=_str("EVENTS_QUEUE", "patch-events"))


@dataclass(frozen=True)
class ArmSettings:
    """Where ARM is (Azure's, or the simulator on loopback), each resource provider's api-version, the managed
    identity that calls it, and how long one call may take."""

    endpoint: str
    compute_api_version: str
    hybridcompute_api_version: str  # Arc machines: GET, list, installPatches, assessPatches
    managed_identity_client_id: str | None
    timeout_seconds: int

    @classmethod
    def from_env(cls) -> ArmSettings:
        return cls(endpoint=normalise_arm_endpoint(_str("ARM_ENDPOINT", DEFAULT_ARM_ENDPOINT)),
                   compute_api_version=_str("COMPUTE_API_VERSION", DEFAULT_COMPUTE_API_VERSION),
                   hybridcompute_api_version=_str("HYBRIDCOMPUTE_API_VERSION", DEFAULT_HYBRIDCOMPUTE_API_VERSION),
                   managed_identity_client_id=os.environ.get("AZURE_CLIENT_ID") or None,
                   timeout_seconds=_int("ARM_TIMEOUT_SECONDS", 30, minimum=1))


DEFAULT_MAX_MACHINES_PER_RUN = 10_000  # MAX_MACHINES_PER_RUN unset; openapi.json's maxItems shows it


@dataclass(frozen=True)
class RunLimits:
    """What one request may ask, and how soon a caller is told to look again (Retry-After of a 202)."""

    max_machines_per_run: int
    max_request_bytes: int
    run_retry_after_seconds: int

    @classmethod
    def from_env(cls) -> RunLimits:
        return cls(max_machines_per_run=_int("MAX_MACHINES_PER_RUN", DEFAULT_MAX_MACHINES_PER_RUN, minimum=1),
                   # 10,000 of the longest VM ids (about 280 characters) with their JSON quotes and commas: 2.9 MB.
                   max_request_bytes=_int("MAX_REQUEST_BYTES", 4 * 1024 * 1024, minimum=1024),
                   run_retry_after_seconds=_int("RUN_RETRY_AFTER_SECONDS", 20, minimum=1))


@dataclass(frozen=True)
class RetrySettings:
    """Waiting: polls, Retry-After, backoff, retry limits, and the bounds of recovery (shared/runs/retry_policy.py,
    shared/runs/sweeper.py)."""

    poll_min_seconds: int
    default_retry_after_seconds: int  # ARM's contract: 60 s when a 202 or 429 has no Retry-After
    retry_base_seconds: int
    retry_max_seconds: int
    max_transient_retries: int
    max_conflict_retries: int
    conflict_retry_seconds: int
    operation_grace_seconds: int
    claim_timeout_seconds: int
    stall_after_seconds: int
    poll_round_seconds: int

    @classmethod
    def from_env(cls) -> RetrySettings:
        return cls(
            poll_min_seconds=_int("POLL_MIN_SECONDS", 0),
            default_retry_after_seconds=_int("DEFAULT_RETRY_AFTER_SECONDS", 60),
            retry_base_seconds=_int("RETRY_BASE_SECONDS", 5, minimum=1),
            retry_max_seconds=_int("RETRY_MAX_SECONDS", 600, minimum=1),
            max_transient_retries=_int("MAX_TRANSIENT_RETRIES", 8),
            max_conflict_retries=_int("MAX_CONFLICT_RETRIES", 12),
            conflict_retry_seconds=_int("CONFLICT_RETRY_SECONDS", 120, minimum=1),
            operation_grace_seconds=_int("OPERATION_GRACE_SECONDS", 1800),
            # > the longest a live step holds a claim: one ARM call (ARM_TIMEOUT_SECONDS to connect, and
            # again to read) and two Table writes. A live step overtaken still ends right (machine_worker).
            claim_timeout_seconds=_int("CLAIM_TIMEOUT_SECONDS", 90, minimum=1),
            # A machine whose step is this far past its nextActionAt has lost its message, or its message
            # waits out a dead host's lease (10 minutes): the sweeper queues another (shared/runs/sweeper.py).
            stall_after_seconds=_int("STALL_AFTER_SECONDS", 60, minimum=1),
            # A run's poll rounds come at most this often: a due poll waits up to this long (poll_rounds.py).
            poll_round_seconds=_int("POLL_ROUND_SECONDS", 5, minimum=1),
        )


@dataclass(frozen=True)
class PacingSettings:
    """The shared ARM call budget (shared/runs/budget.py, pacing.py); defaults are Azure's limits."""

    guest_patch_burst: int
    guest_patch_per_minute: int
    arm_write_burst: int
    arm_writes_per_second: int
    arm_read_burst: int
    arm_reads_per_second: int
    poll_read_percent: int
    pacing_late_seconds: int
    pacing_lease_tokens: int
    dispatch_horizon_seconds: int

    @classmethod
    def from_env(cls) -> PacingSettings:
        return cls(
            guest_patch_burst=_int("GUEST_PATCH_BURST", 600, minimum=1),
            guest_patch_per_minute=_int("GUEST_PATCH_PER_MINUTE", 200, minimum=1),
            arm_write_burst=_int("ARM_WRITE_BURST", 200, minimum=1),
            arm_writes_per_second=_int("ARM_WRITES_PER_SECOND", 10, minimum=1),
            arm_read_burst=_int("ARM_READ_BURST", 250, minimum=2),
            arm_reads_per_second=_int("ARM_READS_PER_SECOND", 25, minimum=1),
            poll_read_percent=_int("POLL_READ_PERCENT", 50, minimum=1, maximum=99),
            pacing_late_seconds=_int("PACING_LATE_SECONDS", 5),
            pacing_lease_tokens=_int("PACING_LEASE_TOKENS", 32, minimum=1, maximum=1000),
            dispatch_horizon_seconds=_int("DISPATCH_HORIZON_SECONDS", 120, minimum=1, maximum=86400),
        )


@dataclass(frozen=True)
class AssessmentSettings:
    """The periodic assessment (its schedule and scopes), how long history is kept, when a result is stale."""

    schedule: str
    scopes: tuple[str, ...]
    retention_days: int
    freshness_hours: int

    @classmethod
    def from_env(cls) -> AssessmentSettings:
        return cls(schedule=_str("ASSESSMENT_SCHEDULE", DEFAULT_ASSESSMENT_SCHEDULE),
                   scopes=_list("ASSESSMENT_SCOPES"),
                   retention_days=_int("ASSESSMENT_RETENTION_DAYS", 90, minimum=1),
                   freshness_hours=_int("ASSESSMENT_FRESHNESS_HOURS", 36, minimum=1))


@dataclass(frozen=True)
class EventSettings:
    """Where events go, in which schema, signed with what, and how hard delivery tries."""

    webhooks: tuple[str, ...]
    signing_key: str | None
    schema: str
    max_attempts: int
    connect_timeout_seconds: int  # connecting to a webhook or hook receiver
    read_timeout_seconds: int  # events and post-run hooks; a pre-run hook has its own timeoutSeconds

    @classmethod
    def from_env(cls, *, allow_local: bool) -> EventSettings:
        return cls(
            webhooks=tuple(check_hook_url(u, "EVENT_WEBHOOKS", allow_local=allow_local)
                           for u in _list("EVENT_WEBHOOKS")),
            signing_key=os.environ.get("EVENT_SIGNING_KEY", "").strip() or None,
            schema=_schema(_str("EVENT_SCHEMA", "CloudEvents")),
            max_attempts=_int("EVENT_MAX_ATTEMPTS", 8, minimum=1),
            connect_timeout_seconds=_int("EVENT_CONNECT_TIMEOUT_SECONDS", 10, minimum=1,
                                         maximum=MAX_EVENT_CONNECT_SECONDS),
            read_timeout_seconds=_int("EVENT_READ_TIMEOUT_SECONDS", 10, minimum=1, maximum=MAX_EVENT_READ_SECONDS),
        )


@dataclass(frozen=True)
class HealthSettings:
    """Health checks of rollouts (shared/runs/health_check.py): how often a machine not yet healthy is read
    again, and the workload probe's egress (its private ranges, its time limit)."""

    recheck_seconds: int  # between reads of a machine that is not healthy yet (within its healthCheck.within)
    probe_networks: Networks  # private ranges a probe may reach (HEALTH_PROBE_NETWORKS: CIDRs, comma-separated)
    probe_timeout_seconds: int  # connect + read, per probe

    @classmethod
    def from_env(cls) -> HealthSettings:
        try:
            networks = parse_networks(_str("HEALTH_PROBE_NETWORKS", ""))
        except ValueError as exc:
            raise SettingsError(f"setting HEALTH_PROBE_NETWORKS: {exc}") from None
        return cls(recheck_seconds=_int("HEALTH_RECHECK_SECONDS", 60, minimum=1, maximum=3600),
                   probe_networks=networks,
                   probe_timeout_seconds=_int("HEALTH_PROBE_TIMEOUT_SECONDS", 10, minimum=1,
                                              maximum=MAX_EVENT_READ_SECONDS))


@dataclass(frozen=True)
class PlanSettings:
    """Plans before apply and predicted durations (shared/plans/, shared/runs/predictions.py): how long a plan may
    wait for its apply, the duration predicted for a machine with no history and no peers, and whether a run
    starts each wave's machines longest predicted first."""

    max_age_hours: int  # a plan older than this is refused at apply (PlanExpired)
    default_install_seconds: int  # an installation's predicted duration when neither its machine nor its peers have one
    longest_first: bool  # order each wave's starts by predicted duration, longest first (off: request order)

    @classmethod
    def from_env(cls) -> PlanSettings:
        raw = _str("LONGEST_FIRST", "true").lower()
        if raw not in ("true", "false", "1", "0"):
            raise SettingsError(f"setting LONGEST_FIRST must be true or false, got {raw!r}")
        return cls(max_age_hours=_int("PLAN_MAX_AGE_HOURS", 24, minimum=1, maximum=24 * 14),
                   default_install_seconds=_int("DEFAULT_INSTALL_SECONDS", 1200, minimum=60, maximum=4 * 3600),
                   longest_first=raw in ("true", "1"))


@dataclass(frozen=True)
class LocalDevelopment:
    """Knobs for the local simulator only, honoured only for a loopback ARM_ENDPOINT (SettingsError otherwise):
    ARM_DEV_TOKEN (the simulator's bearer token; also lets events and hooks go to loopback), and a compressed
    clock for maintenance windows (from SCHEDULE_CLOCK_ORIGIN, an ISO instant every host shares, time runs
    SCHEDULE_CLOCK_SCALE times faster)."""

    arm_dev_token: str | None
    schedule_clock_origin: str | None
    schedule_clock_scale: float

    @classmethod
    def from_env(cls, endpoint: str) -> LocalDevelopment:
        loopback = is_loopback_host(urlsplit(endpoint).hostname or "")
        dev_token = os.environ.get("ARM_DEV_TOKEN", "").strip() or None
        if dev_token and not loopback:
            raise SettingsError("ARM_DEV_TOKEN is only honoured for a loopback ARM_ENDPOINT (the simulator)")
        origin = os.environ.get("SCHEDULE_CLOCK_ORIGIN", "").strip() or None
        raw_scale = os.environ.get("SCHEDULE_CLOCK_SCALE", "").strip() or "1"
        try:
            scale = float(raw_scale)
        except ValueError:
            raise SettingsError(f"setting SCHEDULE_CLOCK_SCALE must be a number, got {raw_scale!r}") from None
        if (origin or scale != 1) and not loopback:
            raise SettingsError("SCHEDULE_CLOCK_* is only honoured for a loopback ARM_ENDPOINT (the simulator)")
        return cls(arm_dev_token=dev_token, schedule_clock_origin=origin, schedule_clock_scale=scale)


@dataclass(frozen=True)
class Settings:
    """Every app setting, in groups (httpx's `Timeout`, `Limits`): each consumer takes the group it uses. Each
    setting's name, default and bounds are written once, in its group's `from_env`."""

    storage: StorageSettings
    queues: QueueSettings
    arm: ArmSettings
    limits: RunLimits
    retries: RetrySettings
    pacing: PacingSettings
    assessments: AssessmentSettings
    events: EventSettings
    health: HealthSettings
    local: LocalDevelopment
    plans: PlanSettings = field(default_factory=PlanSettings.from_env)

    @classmethod
    def from_env(cls) -> Settings:
        arm = ArmSettings.from_env()
        local = LocalDevelopment.from_env(arm.endpoint)
        return cls(storage=StorageSettings.from_env(), queues=QueueSettings.from_env(), arm=arm,
                   limits=RunLimits.from_env(), retries=RetrySettings.from_env(), pacing=PacingSettings.from_env(),
                   assessments=AssessmentSettings.from_env(),
                   events=EventSettings.from_env(allow_local=local.arm_dev_token is not None),
                   health=HealthSettings.from_env(), local=local, plans=PlanSettings.from_env())


def check_hook_url(url: str, what: str, *, allow_local: bool) -> str:
    """A webhook or hook URL as PatchPilot may call it (shared/egress/policy.py: https, no user info,
    a literal address must be public); SettingsError naming `what` otherwise. No DNS: the addresses a
    name resolves to are checked when the call connects. `allow_local` is the local development
    setting (ARM simulator on loopback): plain http and loopback receivers allowed."""
    try:
        return check_url(url, allow_local=allow_local)
    except ValueError as exc:
        raise SettingsError(f"{what}: {exc}") from None


def is_local_development(settings: Settings) -> bool:
    """Against the local ARM simulator (ARM_DEV_TOKEN, only honoured for a loopback ARM_ENDPOINT):
    event and hook receivers may then be on loopback, and nowhere else that is not public."""
    return settings.local.arm_dev_token is not None


def _schema(value: str) -> str:
    if value.lower() not in ("cloudevents", "eventgrid"):
        raise SettingsError(f"setting EVENT_SCHEMA must be CloudEvents or EventGrid, got {value!r}")
    return "EventGrid" if value.lower() == "eventgrid" else "CloudEvents"
