"""Simulator settings: the fleet's shape, ARM/Compute throttling budgets and injected faults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

# The string-valued settings and what each accepts (the first is the default: today's behaviour).
CHOICES: dict[str, tuple[str, ...]] = {
    "error_shape": ("arm", "pascal", "bare", "toplevel"),
    "arc_lro_style": ("location", "async"),
    "conflict_style": ("operation", "hostupdate"),
    "classification_style": ("name", "display"),
}


@dataclass
class FaultSettings:
    """Knobs for misbehaviour; all default to a perfectly healthy ARM.

    Settable at start (SimulatorConfig.faults) and at run time (Simulator.set_faults, POST /_sim/faults).
    """

    error_rate: float = 0.0  # share of ARM requests answered 500/503 before any processing
    drop_rate: float = 0.0  # share of ARM requests whose connection is closed with no response, unprocessed
    latency_ms: int = 0  # added before every ARM request
    conflict_rate: float = 0.0  # share of patch POSTs answered 409 as if another operation were running
    throttle_rate: float = 0.0  # share of ARM requests answered 429 SubscriptionRequestsThrottled
    throttle_retry_after: int = 2  # Retry-After (seconds) on injected 429s
    patch_failure_rate: float = 0.0  # chance each patch selected for installation fails
    sync_rate: float = 0.0  # share of accepted patch POSTs answered 200 with the final result at once
    foreign_location_rate: float = 0.0  # share of 202s whose Location/Azure-AsyncOperation name another host
    # share of installPatches operations after which the machine comes back down for good (health.py): Resource
    # Health Unavailable, vmHealth unhealthy (with the extension), agent Not Ready, probe unreachable
    unhealthy_after_patch_rate: float = 0.0
    # How every error the simulator answers on ARM's surface is shaped (errors.py: render_error): "arm"
    # ({"error": {"code", "message"}}), "pascal" ({"Error": {"Code", "Message", "Target", "Details"}}, as
    # Microsoft.Maintenance answers validation errors), "bare" (5xx only: {"Message": "An error has occurred."},
    # no code, with x-ms-failure-cause: service; other errors keep ARM's shape), "toplevel" ({"code", "message"}).
    error_shape: str = "arm"
    failure_cause_header: bool = False  # every 5xx also carries x-ms-failure-cause: service ("bare" always does)
    # An injected 429 reports this many reads left in x-ms-ratelimit-remaining-subscription-reads (None: the
    # bucket's real count), so a far-off throttle_retry_after can come with thousands of reads "left".
    throttle_remaining_reads: int | None = None
    # HybridCompute's 202 for installPatches/assessPatches: "location" (Location to updateCenterOperationResults
    # + Retry-After) or "async" (Azure-AsyncOperation to .../operationstatus/{id} and Location to
    # .../operationresults/{id}, no Retry-After).
    arc_lro_style: str = "location"
    # What a spurious conflict (conflict_rate) says: "operation" (another operation is in progress) or
    # "hostupdate" (the VM is waiting for an ongoing update to complete the resource).
    conflict_style: str = "operation"
    host_update_seconds: float = 0.0  # default length of a host-update window (Simulator.start_host_update)
    # Patch lists in Compute results: "name" (Security, Critical, FeaturePack, ...) or "display" (Windows:
    # Security Updates, Critical Updates, Feature Packs, ...; Linux keeps its names and says kbId: null).
    classification_style: str = "name"
    seed: int | None = None  # seed of the fault dice; None derives it from the fleet seed

    def update(self, values: dict[str, Any]) -> None:
        """Apply a partial update, refusing unknown names and out-of-range values (fail loudly in tests).

        All or nothing: one bad value leaves every setting as it was."""
        known = {f.name for f in fields(self)}
        staged = {}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown fault setting {name!r}; known: {', '.join(sorted(known))}")
            staged[name] = _checked(name, value)
        for name, value in staged.items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _checked(name: str, value: Any) -> Any:
    """One fault setting's value, converted to its type, or ValueError."""
    if name in CHOICES:
        if value not in CHOICES[name]:
            raise ValueError(f"{name} must be one of {', '.join(CHOICES[name])}, got {value!r}")
        return value
    if name == "failure_cause_header":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return value
    if name == "seed" or (name == "throttle_remaining_reads" and value is None):
        return None if value is None else int(value)
    number = float(value) if name.endswith("_rate") or name == "host_update_seconds" else int(value)
    if number < 0 or (name.endswith("_rate") and number > 1):
        bounds = "between 0 and 1" if name.endswith("_rate") else ">= 0"
        raise ValueError(f"{name} must be {bounds}, got {value!r}")
    return number


@dataclass
class SimulatorConfig:
    """Everything that shapes one simulated ARM endpoint. Defaults mirror Azure's documented limits."""

    vms: int = 20  # fleet size, spread over all subscriptions
    subscriptions: int = 1
    seed: int = 1
    time_scale: float = 600.0  # simulated seconds per real second
    windows_ratio: float = 0.5
    stopped_ratio: float = 0.0  # share of VMs generated deallocated/stopped
    page_size: int = 100
    location: str = "westus"
    host: str = "127.0.0.1"
    port: int = 0  # 0 = any free port
    required_token: str | None = None  # None = any non-empty bearer token is accepted
    retry_after_seconds: int = 5  # Retry-After on 202s, in real seconds
    # ARM per-subscription token buckets (bucket size, refill per real second), as documented since 2024.
    read_burst: int = 250
    read_rate: float = 25.0
    write_burst: int = 200
    write_rate: float = 10.0
    # Compute's guest-patch throttling policy for installPatches/assessPatches POSTs; None disables a bucket.
    patch_ops_per_vm_burst: int | None = 6
    patch_ops_per_vm_per_min: float | None = 2
    patch_ops_per_sub_burst: int | None = 600
    patch_ops_per_sub_per_min: float | None = 200
    # Budget clock: every token bucket refills budget_scale times faster than Azure's (burst sizes unchanged),
    # so every bucket-derived Retry-After is in that scaled clock. See `compressed()` for the consistent setting.
    budget_scale: float = 1.0
    # simulated fixed overhead of each operation; an installation's is drawn per machine (and its n-th installation)
    operation_seconds: tuple[float, float] = (60.0, 240.0)
    reboot_seconds: float = 180.0  # simulated time a reboot adds to an installation
    # Patches published after the simulator starts: this many new ones per OS type, spread over the first
    # `upcoming_within_hours` of simulated time; every VM of that OS type gets them as they publish.
    upcoming_patches: int = 0
    upcoming_within_hours: float = 72.0
    # Ubuntu: share of the security fixes its images publish that reach the machine through the -updates pocket
    # and so are classified Other, as Azure's patch extension reports them (fleet.py); 0 keeps them Security.
    ubuntu_other_security_share: float = 0.0
    faults: FaultSettings = field(default_factory=FaultSettings)
    # Azure Arc-enabled servers (Microsoft.HybridCompute/machines), Windows and Linux by arc_windows_ratio, in
    # resource group rg-arc-onprem of each subscription; this many report agent status Disconnected / Expired.
    arc_machines: int = 0
    arc_windows_ratio: float = 0.5
    arc_disconnected: int = 1
    arc_expired: int = 0
    # Azure RBAC for the caller (see rbac.py): None allows everything; otherwise a list of role assignments,
    # each a RoleAssignment or {"scope": "/subscriptions/<id>[/resourceGroups/<rg>]", "actions": ["*"]}.
    role_assignments: list[Any] | None = None
    # Named in 403 AuthorizationFailed messages; None derives stable ids from the bearer token.
    principal_client_id: str | None = None
    principal_object_id: str | None = None

    @classmethod
    def compressed(cls, scale: float, *, azure_retry_after_seconds: float = 60.0, **settings: Any) -> SimulatorConfig:
        """A simulator on one clock running `scale` times faster than Azure's, for fleet-scale runs in minutes.

        Three things are scaled by the same factor, so Azure's ratios hold:
        - operation durations: `time_scale = scale` (a 30-minute installation takes 1800/scale real seconds);
        - every throttling budget: `budget_scale = scale` (ARM's 25 reads/s become 25*scale/s, Compute's
          guest-patch refill of 200/min per subscription becomes 200*scale/min; bursts stay 250, 200, 600, 6);
        - every Retry-After: those computed from a bucket follow from the faster refill, and the 202's becomes
          `azure_retry_after_seconds / scale`.
        Then "polls per operation", "operations startable per refill" and "a 429's wait versus an operation's
        length" are what they are in Azure, and a client that divides its own timers (poll floors, backoffs) by
        `scale` sees Azure's throttling behaviour. Caveat: HTTP sends Retry-After in whole seconds, so waits under
        one scaled second round up (to 1 on a 429, as ARM never says 0) and a 202's rounds to the nearest second
        (0 allowed); keep `scale` where the waits that matter stay >= 1 s (e.g. scale 60: a 60 s poll is 1 s, a
        20-minute Compute 429 is 20 s, a 10,000-VM run of about two Azure hours takes about two minutes).
        """
        if scale <= 0:
            raise ValueError("scale must be > 0")
        settings.setdefault("retry_after_seconds", round(azure_retry_after_seconds / scale))
        return cls(time_scale=scale, budget_scale=scale, **settings)

    def __post_init__(self) -> None:
        if self.budget_scale <= 0:
            raise ValueError("budget_scale must be > 0")
        if self.vms < 0 or self.subscriptions < 1:
            raise ValueError("need vms >= 0 and subscriptions >= 1")
        if self.time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if self.arc_machines < 0 or self.arc_disconnected < 0 or self.arc_expired < 0:
            raise ValueError("need arc_machines, arc_disconnected and arc_expired >= 0")
        if not 0.0 <= self.ubuntu_other_security_share <= 1.0:
            raise ValueError("ubuntu_other_security_share must be between 0 and 1")
        if self.page_size < 1:
            raise ValueError("page_size must be >= 1")
        if isinstance(self.faults, dict):
            settings = FaultSettings()
            settings.update(self.faults)
            self.faults = settings
