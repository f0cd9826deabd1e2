"""Predicted installation durations, learned from each machine's own past installations.

Per machine a prediction comes from, in order:
1. `machine`: its own history (the last MAX_SAMPLES installations it had). Its peers' linear model
   (below) says how duration grows with the number of patches and a reboot; the machine's own ratio to that
   model (the median of actual / modelled over its samples) scales it, so a machine that installs slowly stays
   slow, and one that now has more patches than before takes longer. With no peer model its own median is used.
2. `peers`: machines of the same OS type. Their samples fit `seconds = base + perPatch * patches + reboot * r`
   by least squares (numpy-free: three normal equations), used when at least MIN_PEER_SAMPLES exist; with
   fewer, their median.
3. `default`: DEFAULT_INSTALL_SECONDS (shared.core.settings.PlanSettings).

The error is kept: each sample records the prediction made for it (`predicted`, when one was), and a
prediction's `error` is the mean absolute relative error |actual - predicted| / actual over the machine's samples
that have one (None before any). A duration is the installation's wall time as PatchPilot saw it: from the
accepted POST (`operationStartedAt`) to the middle of the last poll that found it running and the one that found
it finished (install_history.sample_of), so it is off by up to half a poll interval either way (half a
Retry-After, or up to two where later polls wait for the run's longer installations: retry_policy
later_poll_delay); or, when the first poll (90% of the machine's shortest installation,
retry_policy.first_poll_delay) found it finished already, it is that poll's time: an upper bound, which lowers
the shortest and so the next first poll. The shortest is taken from each sample's poll that saw the end (`seen`),
never from a middle, which could fall before the end and bring first polls early for good.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

MAX_SAMPLES = 8  # kept per machine, newest first
MIN_PEER_SAMPLES = 8  # fewer: the peers' median instead of their linear model
FACTOR_RANGE = (0.2, 5.0)  # a machine's ratio to its peers is clipped to this (one odd sample does not run away)


@dataclass(frozen=True)
class Sample:
    """One past installation: when it started (ISO), how long it took (seconds), patches installed, whether the
    machine rebooted, the prediction made for it (seconds, None when none was made), and, when `seconds` counts
    its end between two polls (install_history.sample_of), `seen`: seconds to the poll that saw it ended, an
    upper bound, which the shortest (the first poll's timing) is taken from."""

    at: str
    seconds: float
    patches: int
    rebooted: bool
    predicted: float | None = None
    seen: float | None = None

    @property
    def seen_by(self) -> float:
        """Seconds by which the installation had certainly ended (the poll that saw it)."""
        return self.seen if self.seen is not None else self.seconds

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"at": self.at, "seconds": round(self.seconds, 1), "patches": self.patches,
                                  "rebooted": self.rebooted}
        if self.predicted is not None:
            out["predicted"] = round(self.predicted, 1)
        if self.seen is not None:
            out["seen"] = round(self.seen, 1)
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> Sample:
        predicted, seen = raw.get("predicted"), raw.get("seen")
        return cls(at=str(raw.get("at") or ""), seconds=float(raw.get("seconds") or 0.0),  # type: ignore[arg-type]
                   patches=int(raw.get("patches") or 0), rebooted=bool(raw.get("rebooted")),  # type: ignore[call-overload]
                   predicted=float(predicted) if isinstance(predicted, (int, float)) else None,
                   seen=float(seen) if isinstance(seen, (int, float)) else None)


@dataclass(frozen=True)
class MachineHistory:
    """A machine's OS type ("Windows", "Linux" or "") and its samples, newest first."""

    os_type: str
    samples: tuple[Sample, ...]


@dataclass(frozen=True)
class Prediction:
    """`seconds` predicted; `basis` "machine" | "peers" | "default"; `samples` behind it; `error`: the mean absolute
    relative error of this machine's past predictions (None: none made yet); `shortest`: the shortest of the
    machine's own recorded installations (None: it has none), which times its first poll
    (shared/runs/retry_policy.py `first_poll_delay`)."""

    seconds: float
    basis: str
    samples: int
    error: float | None = None
    shortest: float | None = None

    def to_json(self) -> dict[str, object]:
        return {"seconds": round(self.seconds), "basis": self.basis, "samples": self.samples,
                "error": None if self.error is None else round(self.error, 3)}


@dataclass(frozen=True)
class Linear:
    base: float
    per_patch: float
    reboot: float

    def __call__(self, patches: int, rebooted: bool) -> float:
        return max(1.0, self.base + self.per_patch * patches + (self.reboot if rebooted else 0.0))


def fit(samples: Sequence[Sample]) -> Linear | None:
    """Least squares of seconds on (1, patches, rebooted); None when the system is singular (e.g. every sample has
    the same patch count and reboot) or there are too few samples."""
    if len(samples) < MIN_PEER_SAMPLES:
        return None
    rows = [(1.0, float(s.patches), 1.0 if s.rebooted else 0.0) for s in samples]
    ys = [s.seconds for s in samples]
    a = [[sum(r[i] * r[j] for r in rows) for j in range(3)] for i in range(3)]
    b = [sum(r[i] * y for r, y in zip(rows, ys, strict=True)) for i in range(3)]
    # a column that never varies (no sample rebooted): drop it rather than fail
    active = [i for i in range(3) if a[i][i] > 0 and (i == 0 or len({r[i] for r in rows}) > 1)]
    solution = _solve([[a[i][j] for j in active] for i in active], [b[i] for i in active])
    if solution is None:
        return None
    coef = [0.0, 0.0, 0.0]
    for i, value in zip(active, solution, strict=True):
        coef[i] = value
    return Linear(*coef)


def _solve(a: list[list[float]], b: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting; None when singular."""
    n = len(b)
    m = [[*row, rhs] for row, rhs in zip(a, b, strict=True)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-9:
            return None
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(n):
            if r != col:
                f = m[r][col] / m[col][col]
                m[r] = [x - f * y for x, y in zip(m[r], m[col], strict=True)]
    return [m[i][n] / m[i][i] for i in range(n)]


@dataclass(frozen=True)
class PeerModel:
    """Per OS type: the peers' linear model (None: too few or degenerate samples) and their median seconds."""

    linear: Mapping[str, Linear | None]
    median: Mapping[str, float]
    count: Mapping[str, int]

    @classmethod
    def from_histories(cls, histories: Iterable[MachineHistory]) -> PeerModel:
        by_os: dict[str, list[Sample]] = {}
        for history in histories:
            by_os.setdefault(history.os_type.lower(), []).extend(history.samples)
        return cls(linear={os: fit(s) for os, s in by_os.items()},
                   median={os: statistics.median(x.seconds for x in s) for os, s in by_os.items() if s},
                   count={os: len(s) for os, s in by_os.items()})

    def estimate(self, os_type: str, patches: int | None, rebooted: bool | None) -> tuple[float, int] | None:
        """(seconds, samples) for a machine of this OS type, or None when no peer has a sample."""
        key = os_type.lower()
        model = self.linear.get(key)
        if model is not None and patches is not None:
            return model(patches, bool(rebooted)), self.count[key]
        if key in self.median:
            return self.median[key], self.count[key]
        return None


def predict(history: MachineHistory | None, peers: PeerModel, *, os_type: str = "", patches: int | None = None,
            rebooted: bool | None = None, default_seconds: float) -> Prediction:
    """The predicted duration of this machine's next installation of `patches` patches (None: as before) with
    a reboot (`rebooted`, None: as before). See the module doc for the order of bases."""
    own = history.samples if history is not None else ()
    os_type = os_type or (history.os_type if history is not None else "")
    error = _error(own)
    if own:
        own_prediction = _own(own, peers, os_type, patches, rebooted=rebooted, error=error)
        return replace(own_prediction, shortest=min(s.seen_by for s in own))  # upper bounds: see Sample
    peer = peers.estimate(os_type, patches, rebooted)
    if peer is not None:
        return Prediction(peer[0], "peers", peer[1], error)
    return Prediction(float(default_seconds), "default", 0, error)


def _own(own: Sequence[Sample], peers: PeerModel, os_type: str, patches: int | None, *, rebooted: bool | None,
         error: float | None) -> Prediction:
    """The prediction from the machine's own samples (basis "machine")."""
    model = peers.linear.get(os_type.lower())
    if model is not None and patches is not None:
        ratios = sorted(s.seconds / model(s.patches, s.rebooted) for s in own)
        factor = min(max(statistics.median(ratios), FACTOR_RANGE[0]), FACTOR_RANGE[1])
        reboot = own[0].rebooted if rebooted is None else rebooted
        return Prediction(model(patches, reboot) * factor, "machine", len(own), error)
    if patches is not None and own[0].patches > 0 and patches != own[0].patches:
        # no peer model: scale the latest by patch count, half of it being fixed overhead
        latest = own[0]
        return Prediction(latest.seconds * (0.5 + 0.5 * patches / latest.patches), "machine", len(own), error)
    return Prediction(statistics.median(s.seconds for s in own), "machine", len(own), error)


def _error(samples: Sequence[Sample]) -> float | None:
    errors = [abs(s.seconds - s.predicted) / s.seconds for s in samples if s.predicted is not None and s.seconds > 0]
    return statistics.fmean(errors) if errors else None


def with_sample(samples: Sequence[Sample], new: Sample) -> tuple[Sample, ...]:
    """`new` first, then the others (one per `at`: a run recorded twice keeps one), at most MAX_SAMPLES."""
    kept = [s for s in samples if s.at != new.at]
    return (new, *kept)[:MAX_SAMPLES]

