"""Delays and the run-status rule."""

from __future__ import annotations

import random

from shared.arm.operations import Retry
from shared.core.retry import backoff
from shared.core.settings import Settings
from shared.core.states import summarize
from shared.runs.retry_policy import first_poll_delay, later_poll_delay, poll_delay, retry_delay, retry_limit


def settings(**env: str) -> Settings:
    import os

    os.environ.update(env)
    return Settings.from_env().retries


def test_poll_never_sooner_than_retry_after_or_floor() -> None:
    s = settings(POLL_MIN_SECONDS="30")
    assert poll_delay(10, s) == 30
    assert poll_delay(45, s) == 45


def test_first_poll_waits_for_the_shortest_recorded_installation_but_not_past_the_end() -> None:
    s = settings(POLL_MIN_SECONDS="0")
    assert first_poll_delay(60, s, shortest_seconds=600, ends_in_seconds=7200) == 540  # 90% of it
    assert first_poll_delay(60, s, shortest_seconds=None, ends_in_seconds=7200) == 60  # no history: Retry-After
    assert first_poll_delay(60, s, shortest_seconds=30, ends_in_seconds=7200) == 60  # never before Retry-After
    # a history longer than this operation may run (a shorter maximumDuration, a window closing): one Retry-After
    # before the end, so the step polls rather than times out unpolled
    assert first_poll_delay(60, s, shortest_seconds=9000, ends_in_seconds=3600) == 3540
    assert first_poll_delay(60, s, shortest_seconds=9000, ends_in_seconds=30) == 60


def test_a_later_poll_waits_for_the_runs_longer_installations_within_four_retry_afters_and_the_end() -> None:
    s = settings()
    assert later_poll_delay(60, s, later_seconds=None) == 60  # nothing known: Retry-After
    assert later_poll_delay(60, s, later_seconds=150.7) == 150
    assert later_poll_delay(60, s, later_seconds=20) == 60  # never before Retry-After
    assert later_poll_delay(60, s, later_seconds=900) == 240  # at most four Retry-Afters
    assert later_poll_delay(60, s, later_seconds=900, ends_in_seconds=200) == 140  # a Retry-After before the end
    assert later_poll_delay(60, s, later_seconds=150, spacing=30.4) == 150  # spacing is a floor, not added on
    assert later_poll_delay(0, s, later_seconds=150) == 0  # ARM said poll now, and no POLL_MIN_SECONDS: no cap


def test_backoff_grows_is_capped_and_jittered() -> None:
    s = settings(RETRY_BASE_SECONDS="2", RETRY_MAX_SECONDS="20")
    rng = random.Random(1)
    draws = [backoff(n, s, rng) for n in range(1, 8)]
    assert all(1 <= d <= 20 for d in draws)
    assert draws[0] <= 2 and draws[-1] >= 10
    assert len({backoff(3, s, random.Random(i)) for i in range(20)}) > 1  # jitter


def test_throttling_waits_exactly_what_arm_said() -> None:
    s = settings()
    assert retry_delay(Retry("throttled", 1200, "c", "m"), 1, s) == 1200
    assert retry_delay(Retry("throttled", None, "c", "m"), 1, s) == 60  # ARM's default when absent


def test_conflict_waits_setting_and_is_bounded() -> None:
    s = settings(CONFLICT_RETRY_SECONDS="90", MAX_CONFLICT_RETRIES="3")
    assert retry_delay(Retry("conflict", None, "c", "m"), 1, s) == 90
    assert retry_limit(Retry("conflict", None, "c", "m"), s) == 3


def t(state: str, status: str | None = None, failed: int = 0) -> dict[str, object]:
    return {"state": state, "status": status, "failedPatchCount": failed}


def test_run_status_rules() -> None:
    assert summarize([t("Queued")])["status"] == "Accepted"
    assert summarize([t("Queued"), t("Running")])["status"] == "InProgress"
    assert summarize([t("Completed", "Succeeded")] * 2)["status"] == "Succeeded"
    assert summarize([t("Completed", "Succeeded"), t("Completed", "CompletedWithWarnings")])["status"] == \
        "CompletedWithWarnings"
    assert summarize([t("Completed", "Succeeded"), t("Completed", "Failed")])["status"] == "Failed"
    assert summarize([t("Completed", "Succeeded"), t("TimedOut")])["status"] == "Failed"
    assert summarize([t("Completed", "Succeeded", failed=1)])["status"] == "CompletedWithWarnings"


def test_unknown_outcomes_are_counted_apart_from_failures() -> None:
    unknown = summarize([t("Completed", "Succeeded"), t("OutcomeUnknown"), t("OutcomeUnknown")])
    assert unknown["status"] == "CompletedWithWarnings"  # finished, nothing known to have failed, not all known
    assert unknown["outcomes"] == {"succeeded": 1, "unknown": 2}
    assert unknown["finished"] == 3
    mixed = summarize([t("OutcomeUnknown"), t("Failed")])
    assert mixed["status"] == "Failed" and mixed["outcomes"] == {"unknown": 1, "failed": 1}
