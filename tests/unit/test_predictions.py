"""Predicted installation durations (shared/runs/predictions.py): the peers' fit, a machine's own factor, the
fallbacks from machine to peers to the default, and the error kept from past predictions."""

from __future__ import annotations

import itertools

import pytest

from shared.runs.predictions import (
    MAX_SAMPLES,
    Linear,
    MachineHistory,
    PeerModel,
    Sample,
    fit,
    predict,
    with_sample,
)

BASE, PER_PATCH, REBOOT = 120.0, 30.0, 180.0


def modelled(patches: int, rebooted: bool) -> float:
    return BASE + PER_PATCH * patches + (REBOOT if rebooted else 0.0)


def sample(i: int, patches: int, rebooted: bool, *, factor: float = 1.0, predicted: float | None = None) -> Sample:
    return Sample(at=f"2026-11-{i + 1:02d}T03:00:00Z", seconds=modelled(patches, rebooted) * factor,
                  patches=patches, rebooted=rebooted, predicted=predicted)


def peers(os_type: str = "Windows", n: int = 12) -> list[MachineHistory]:
    """`n` machines of one OS, each with one installation lying exactly on the model."""
    return [MachineHistory(os_type, (sample(i, patches=i % 6 + 1, rebooted=i % 3 == 0),)) for i in range(n)]


def test_the_fit_recovers_base_per_patch_and_reboot() -> None:
    model = fit([s for h in peers() for s in h.samples])
    assert model is not None
    assert (model.base, model.per_patch, model.reboot) == (pytest.approx(BASE), pytest.approx(PER_PATCH),
                                                           pytest.approx(REBOOT))


def test_the_fit_needs_enough_samples_and_drops_a_column_that_never_varies() -> None:
    assert fit([s for h in peers(n=7) for s in h.samples]) is None  # fewer than MIN_PEER_SAMPLES
    never_rebooted = [sample(i, patches=i % 4 + 1, rebooted=False) for i in range(10)]
    model = fit(never_rebooted)
    assert model is not None and model.reboot == 0.0
    assert model(3, False) == pytest.approx(modelled(3, False))


def test_a_slow_machine_keeps_its_factor_and_scales_with_its_patches() -> None:
    model = PeerModel.from_histories(peers())
    slow = MachineHistory("Windows", (sample(20, patches=2, rebooted=False, factor=2.0),))
    got = predict(slow, model, patches=5, default_seconds=1200)
    assert got.basis == "machine" and got.samples == 1
    assert got.seconds == pytest.approx(2.0 * modelled(5, False))  # twice its peers, at five patches
    # a reboot: as last time unless said
    assert predict(slow, model, patches=5, rebooted=True, default_seconds=1200).seconds == pytest.approx(
        2.0 * modelled(5, True))


def test_the_factor_is_clipped_so_one_odd_installation_does_not_run_away() -> None:
    model = PeerModel.from_histories(peers())
    stuck = MachineHistory("Windows", (sample(20, patches=1, rebooted=False, factor=40.0),))
    assert predict(stuck, model, patches=1, default_seconds=1200).seconds == pytest.approx(5.0 * modelled(1, False))


def test_without_a_patch_count_a_machine_is_its_own_median() -> None:
    model = PeerModel.from_histories(peers())
    own = MachineHistory("Windows", tuple(Sample(f"2026-11-0{i}T00:00:00Z", s, 3, False)
                                          for i, s in enumerate([500.0, 300.0, 400.0], start=1)))
    got = predict(own, model, default_seconds=1200)
    assert (got.seconds, got.basis, got.samples) == (400.0, "machine", 3)


def test_the_shortest_installation_times_the_first_poll_and_the_loop_does_not_drift_later() -> None:
    # The loop the worker runs: first poll at 90% of the shortest recorded installation (retry_policy), the
    # duration recorded at the poll that saw the end (every Retry-After after the first). A machine whose
    # installations got shorter (40 min, then 2 min) is first polled 10% sooner each time until its first poll
    # falls before the end; one whose durations vary keeps its first poll at or below its shortest.
    from shared.core.settings import Settings
    from shared.runs.retry_policy import first_poll_delay

    retries = Settings.from_env().retries
    model = PeerModel.from_histories([])

    def install(history: MachineHistory, i: int, actual: float) -> tuple[MachineHistory, float]:
        got = predict(history, model, default_seconds=1200)
        first = first_poll_delay(60, retries, shortest_seconds=got.shortest, ends_in_seconds=4 * 3600)
        seen = first if actual <= first else first + 60 * -(-(actual - first) // 60)
        new = Sample(f"2026-{i // 28 + 1:02d}-{i % 28 + 1:02d}T00:00:00Z", seen, 3, False)
        return MachineHistory("Windows", with_sample(history.samples, new)), first

    history = MachineHistory("Windows", (Sample("2025-12-01T00:00:00Z", 2400.0, 3, False),))
    firsts = []
    for i in range(40):
        history, first = install(history, i, 120.0)
        firsts.append(first)
    assert firsts[0] == 2160 and all(b < a for a, b in itertools.pairwise(firsts) if a > 120)
    assert firsts[-1] <= 120  # it caught up with the 2-minute installations
    history = MachineHistory("Windows", (Sample("2025-12-01T00:00:00Z", 600.0, 3, False),))
    shortest = []
    for i, actual in enumerate([300.0, 900.0, 450.0, 600.0, 750.0, 320.0, 880.0, 500.0] * 4):
        history, first = install(history, i, actual)
        shortest.append(predict(history, model, default_seconds=1200).shortest)
    assert max(shortest) <= 600 and min(shortest) >= 0.9 * 300 * 0.9  # never later, never far below the true floor


def test_the_shortest_comes_from_the_polls_that_saw_the_ends_not_from_a_middle() -> None:
    """A duration counted between two polls (install_history.sample_of) may fall before the end: the first poll
    is timed from the poll that saw it (`seen`), an upper bound, so it never comes early for good."""
    between = Sample("2026-11-02T00:00:00Z", 300.0, 3, False, seen=400.0)
    assert Sample.from_json(between.to_json()) == between
    assert "seen" not in Sample("2026-11-01T00:00:00Z", 500.0, 3, False).to_json()
    history = MachineHistory("Linux", (between, Sample("2026-11-01T00:00:00Z", 500.0, 3, False)))
    got = predict(history, PeerModel.from_histories([]), default_seconds=1200)
    assert got.shortest == 400.0 and got.seconds < 500.0  # the prediction reads the middle


def test_without_a_peer_model_the_latest_scales_by_half_its_patches() -> None:
    latest = MachineHistory("Linux", (Sample("2026-11-02T00:00:00Z", 400.0, 4, False),
                                      Sample("2026-11-01T00:00:00Z", 100.0, 4, False)))
    got = predict(latest, PeerModel.from_histories([]), patches=8, default_seconds=1200)
    assert got.seconds == pytest.approx(400.0 * (0.5 + 0.5 * 8 / 4)) and got.basis == "machine"


def test_a_machine_without_history_takes_its_peers_then_the_default() -> None:
    model = PeerModel.from_histories([*peers("Windows"), *peers("Linux", n=3)])
    windows = predict(None, model, os_type="windows", patches=2, rebooted=False, default_seconds=1200)
    assert (windows.basis, windows.samples) == ("peers", 12)
    assert windows.seconds == pytest.approx(modelled(2, False))
    linux = predict(None, model, os_type="Linux", patches=2, default_seconds=1200)  # 3 samples: too few to fit
    assert (linux.basis, linux.samples) == ("peers", 3)
    assert linux.seconds == pytest.approx(modelled(3, False))  # their median: 330, 180, 210
    unknown = predict(None, model, default_seconds=1200)  # no OS known: no peers
    assert (unknown.seconds, unknown.basis, unknown.samples, unknown.error) == (1200.0, "default", 0, None)


def test_the_error_is_the_mean_relative_miss_of_past_predictions() -> None:
    history = MachineHistory("Windows", (
        Sample("2026-11-03T00:00:00Z", 400.0, 3, False, predicted=300.0),  # missed by 25 %
        Sample("2026-11-02T00:00:00Z", 200.0, 3, False, predicted=300.0),  # missed by 50 %
        Sample("2026-11-01T00:00:00Z", 300.0, 3, False),  # nothing was predicted: not counted
    ))
    got = predict(history, PeerModel.from_histories([]), default_seconds=1200)
    assert got.error == pytest.approx(0.375)
    assert predict(MachineHistory("Windows", history.samples[2:]), PeerModel.from_histories([]),
                   default_seconds=1200).error is None
    assert got.to_json() == {"seconds": 300, "basis": "machine", "samples": 3, "error": 0.375}


def test_samples_keep_one_per_start_newest_first_and_at_most_eight() -> None:
    samples: tuple[Sample, ...] = ()
    for i in range(MAX_SAMPLES + 3):
        samples = with_sample(samples, sample(i, patches=1, rebooted=False))
    assert len(samples) == MAX_SAMPLES and samples[0].at == "2026-11-11T03:00:00Z"
    again = with_sample(samples, Sample(samples[0].at, 999.0, 1, False))  # the same installation recorded again
    assert len(again) == MAX_SAMPLES and again[0].seconds == 999.0 and again[1:] == samples[1:]


def test_a_sample_survives_its_json() -> None:
    s = Sample("2026-11-01T00:00:00Z", 321.04, 7, True, predicted=300.0)
    assert Sample.from_json(s.to_json()) == Sample("2026-11-01T00:00:00Z", 321.0, 7, True, 300.0)
    assert Sample.from_json({"at": "x", "seconds": 5}).predicted is None
    assert Linear(10.0, 1.0, 0.0)(0, False) == 10.0 and Linear(-50.0, 1.0, 0.0)(0, False) == 1.0  # never below 1 s
