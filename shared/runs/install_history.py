"""Each machine's installation history: recorded when an install run closes, read when a run is dispatched to
predict how long each of its machines will take (shared/runs/predictions.py), so the longest start first.

Recording (`record_run`, called by shared/runs/completion.py after an installPatches run's final write): each
machine whose operation ran to an end (Completed or Unhealthy, with an `operationStartedAt`) gives one Sample: `at`
its operationStartedAt, `seconds` from then to its end: the poll that saw it ended (`operationEndedAt` for a
health-checked machine, when its result came, before verifying; else `completedAt`) or, when an earlier poll had
seen it running (`runningSeenAt`), the middle of those two polls (see `sample_of`), `patches` its
installedPatchCount, `rebooted` when its rebootStatus is "Completed", and `predicted` the predictedSeconds dispatch
wrote on its row (so each prediction's error is kept). Cost, per subscription of the run: one partition query of
the stored histories and ⌈n/100⌉ batch writes, whatever n; the run's rows are one query (paged) for the whole run.
Recording twice (two callers closing the same run) changes nothing: a sample is keyed by its start
(predictions.with_sample).

Predicting (`predict_machines`, called by shared/runs/dispatch.py when it creates a run's rows): a run that
carries its own predictions (a plan's: `RunPredictions.predicted_seconds`) uses them (basis "plan"); every other
machine is predicted from its own history, then its OS peers' (the histories of the run's subscriptions; a machine
with no history of its own takes its OS type from the inventory), then DEFAULT_INSTALL_SECONDS: one partition query
per subscription, only for machines the run did not predict, and one of the inventory when some have no history.

A history read or write is advisory: a failure to record is logged, never raised (the run has closed already);
at dispatch a failure propagates, and the dispatch message is retried like any other storage failure.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from shared.core.clock import parse_iso
from shared.core.ids import MachineRef
from shared.core.records import MachineRecord, RunRecord
from shared.core.states import MachineState
from shared.runs.ports import Fleet, RunRows
from shared.runs.predictions import MachineHistory, PeerModel, Prediction, Sample, predict, with_sample

log = logging.getLogger(__name__)

# What recording reads of a run's rows (iter_targets adds the counted columns and the keys).
HISTORY_COLUMNS = ["resourceId", "osType", "state", "operationStartedAt", "runningSeenAt", "operationEndedAt",
                   "completedAt", "installedPatchCount", "rebootStatus", "predictedSeconds"]
ENDED = (MachineState.COMPLETED.value, MachineState.UNHEALTHY.value)  # the operation's end was seen
PLAN_BASIS = "plan"


class DurationRows(Protocol):
    """Installation histories as stored (shared/storage/duration_store.py DurationStore): raw rows by machine key,
    {"osType": str, "samples": [Sample JSON, newest first]}."""

    def histories(self, subscription_id: str) -> dict[str, dict[str, Any]]: ...

    def save(self, subscription_id: str, rows: Iterable[tuple[MachineRef, dict[str, Any]]]) -> int: ...


class Durations(Protocol):
    """Where installation histories are kept."""

    @property
    def durations(self) -> DurationRows: ...


class RunPredictions(Protocol):
    """A run's own predictions, asked before any history: {machine key: seconds} for some or all of `keys`
    (MachineRef.key), or None when the run carries none (shared/composition.py; a plan's run will)."""

    def predicted_seconds(self, run: RunRecord, keys: Sequence[str]) -> Mapping[str, float] | None: ...


class Predicting(RunRows, Durations, RunPredictions, Fleet, Protocol):
    """What predicting a run's machines uses."""


# -- rows <-> histories (pure) ------------------------------------------------------------------------------
def to_history(raw: Mapping[str, Any]) -> MachineHistory | None:
    """A stored row as a MachineHistory; None when it holds no readable sample."""
    samples: list[Sample] = []
    for item in raw.get("samples") or []:
        try:
            sample = Sample.from_json(item)
        except (TypeError, ValueError):
            continue
        if sample.at and sample.seconds > 0:
            samples.append(sample)
    if not samples:
        return None
    return MachineHistory(str(raw.get("osType") or ""), tuple(samples))


def to_row(history: MachineHistory) -> dict[str, Any]:
    return {"osType": history.os_type, "samples": [s.to_json() for s in history.samples]}


def sample_of(target: Mapping[str, Any]) -> Sample | None:
    """The Sample a finished machine of an install run gives (see the module doc), or None: its operation did not
    run to a seen end, or its times do not read.

    The end is somewhere between the last poll that saw the installation running (`runningSeenAt`) and the one
    that saw it ended, which can be up to retry_policy.LATER_POLL_CAP Retry-Afters apart when later polls wait
    for the run's longer installations (retry_policy.later_poll_delay); counting it at their middle errs by at
    most half that either way, where counting it at the second poll always errs long. With no poll that saw it
    running (the first poll found it ended) the first poll's time is kept: an upper bound, which lowers the
    machine's shortest installation and so its next first poll (retry_policy.first_poll_delay). The poll's time
    is kept beside the middle (`seen`): the shortest is taken from it (predictions.Sample)."""
    started, ended = target.get("operationStartedAt"), target.get("operationEndedAt") or target.get("completedAt")
    if target.get("state") not in ENDED or not started or not ended:
        return None
    try:
        start, end = parse_iso(str(started)), parse_iso(str(ended))
    except ValueError:
        return None
    try:  # a time that does not read leaves the end at the poll that saw it
        running = parse_iso(str(target["runningSeenAt"])) if target.get("runningSeenAt") else None
    except ValueError:
        running = None
    seen = (end - start).total_seconds()
    if seen <= 0:
        return None
    seconds, upper = seen, None
    if running is not None and start < running < end:
        seconds, upper = (running + (end - running) / 2 - start).total_seconds(), seen
    predicted = target.get("predictedSeconds")
    return Sample(at=str(started), seconds=seconds, patches=int(target.get("installedPatchCount") or 0),
                  rebooted=target.get("rebootStatus") == "Completed",
                  predicted=float(predicted) if isinstance(predicted, (int, float)) and predicted > 0 else None,
                  seen=upper)


def merged(current: MachineHistory | None, sample: Sample, os_type: str) -> MachineHistory:
    """`current` with `sample` in front (one per start, at most MAX_SAMPLES); the OS type as last seen."""
    return MachineHistory(os_type or (current.os_type if current else ""),
                          with_sample(current.samples if current else (), sample))


# -- recording -----------------------------------------------------------------------------------------------
class Recorder(RunRows, Durations, Protocol):
    """What recording a closed run's durations uses."""


def record_run(run_id: str, deps: Recorder) -> int:
    """Add each of the run's finished machines' installation to its history (module doc). Returns how many
    histories were written; never raises (a failure is logged: the run is closed already)."""
    try:
        return _record(run_id, deps)
    except Exception:  # advisory data: the run's close must not fail because of it
        log.exception("run %s: its installation durations were not recorded", run_id)
        return 0


def _record(run_id: str, deps: Recorder) -> int:
    by_subscription: dict[str, list[tuple[MachineRecord, Sample]]] = defaultdict(list)
    for target in deps.store.iter_targets(run_id, select=HISTORY_COLUMNS):
        sample = sample_of(target)
        if sample is not None:
            by_subscription[target.subscription_id].append((target, sample))
    written = 0
    for subscription, finished in sorted(by_subscription.items()):
        stored = deps.durations.histories(subscription)
        rows = []
        for target, sample in finished:
            history = merged(to_history(stored.get(target.key) or {}), sample, str(target.get("osType") or ""))
            rows.append((MachineRef.from_key(target.key), to_row(history)))
        written += deps.durations.save(subscription, rows)
    log.info("run %s: recorded %d installation durations", run_id, written)
    return written


# -- predicting ----------------------------------------------------------------------------------------------
def read_histories(subscriptions: Iterable[str], deps: Durations) -> dict[str, MachineHistory]:
    """The stored histories of these subscriptions, by machine key: one partition query each."""
    found: dict[str, MachineHistory] = {}
    for subscription in sorted({s.lower() for s in subscriptions}):
        for key, raw in deps.durations.histories(subscription).items():
            history = to_history(raw)
            if history is not None:
                found[key] = history
    return found


def predict_machines(run: RunRecord, keys: Sequence[str], deps: Predicting) -> dict[str, Prediction]:
    """{machine key: Prediction} for each of `keys` (MachineRef.key): the run's own prediction when it carries
    one (basis "plan"), else from the histories of the run's subscriptions (predictions.predict)."""
    planned = deps.predicted_seconds(run, keys) or {}
    out = {k: Prediction(float(planned[k]), PLAN_BASIS, 0) for k in keys if planned.get(k) is not None}
    rest = [k for k in keys if k not in out]
    if not rest:
        return out
    histories = read_histories({k.split("|", 1)[0] for k in rest}, deps)
    peers = PeerModel.from_histories(histories.values())
    default = deps.settings.plans.default_install_seconds
    os_types: dict[str, str] = {}
    unknown = {k.split("|", 1)[0] for k in rest if k not in histories}
    if peers.count and unknown:  # machines with no history of their own: their OS, for their peers' durations
        for subscription in sorted(unknown):  # one partition query of the inventory each
            for row in deps.fleet.query_machines(subscription, select=["osType"]):
                os_types[f"{subscription}|{row['RowKey']}"] = str(row.get("osType") or "")
    for key in rest:
        out[key] = predict(histories.get(key), peers, os_type=os_types.get(key, ""), default_seconds=default)
    return out


def prediction_columns(prediction: Prediction) -> dict[str, Any]:
    """What a target row keeps of its prediction: `predictedSeconds` (whole seconds) and `predictionBasis`, and
    `shortestSeconds` (its shortest recorded installation) when it has a history of its own."""
    columns: dict[str, Any] = {"predictedSeconds": round(prediction.seconds), "predictionBasis": prediction.basis}
    if prediction.shortest is not None:
        columns["shortestSeconds"] = round(prediction.shortest)
    return columns
