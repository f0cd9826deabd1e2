"""Settings come in groups (shared/core/settings.py), each setting's name, default and bounds written once: per
group, a setting's default, an override from the environment, and a bad value refused naming the setting."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from shared.core.settings import Settings, SettingsError

# (group, field, environment variable, default, an override and how it reads, a value refused)
CASES: list[tuple[str, str, str, Any, tuple[str, Any], str]] = [
    ("storage", "runs_table", "RUNS_TABLE", "patchruns", ("runsx", "runsx"), ""),
    ("queues", "operations", "OPERATIONS_QUEUE", "patch-operations", ("ops-1", "ops-1"), ""),
    ("queues", "polls", "POLLS_QUEUE", "patch-polls", ("polls-1", "polls-1"), ""),
    ("arm", "timeout_seconds", "ARM_TIMEOUT_SECONDS", 30, ("12", 12), "0"),
    ("arm", "endpoint", "ARM_ENDPOINT", "https://management.azure.com",
     ("https://Example.Test:8443", "https://example.test:8443"), "http://example.test"),
    ("limits", "max_machines_per_run", "MAX_MACHINES_PER_RUN", 10_000, ("50", 50), "0"),
    ("retries", "default_retry_after_seconds", "DEFAULT_RETRY_AFTER_SECONDS", 60, ("7", 7), "soon"),
    ("retries", "claim_timeout_seconds", "CLAIM_TIMEOUT_SECONDS", 90, ("120", 120), "0"),
    ("retries", "poll_round_seconds", "POLL_ROUND_SECONDS", 5, ("2", 2), "0"),
    ("pacing", "guest_patch_per_minute", "GUEST_PATCH_PER_MINUTE", 200, ("60", 60), "0"),
    ("pacing", "poll_read_percent", "POLL_READ_PERCENT", 50, ("25", 25), "100"),
    ("assessments", "scopes", "ASSESSMENT_SCOPES", (), ("/subscriptions/a; /subscriptions/b",
                                                        ("/subscriptions/a", "/subscriptions/b")), ""),
    ("assessments", "freshness_hours", "ASSESSMENT_FRESHNESS_HOURS", 36, ("12", 12), "-1"),
    ("events", "schema", "EVENT_SCHEMA", "CloudEvents", ("eventgrid", "EventGrid"), "xml"),
    ("events", "connect_timeout_seconds", "EVENT_CONNECT_TIMEOUT_SECONDS", 10, ("20", 20), "61"),
    ("local", "schedule_clock_scale", "SCHEDULE_CLOCK_SCALE", 1.0, ("1", 1.0), "fast"),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}.{c[1]}" for c in CASES])
def test_each_setting_has_one_default_an_override_and_a_refusal(
        monkeypatch: pytest.MonkeyPatch, case: tuple[str, str, str, Any, tuple[str, Any], str]) -> None:
    group, name, env, default, override, refused = case
    monkeypatch.delenv(env, raising=False)
    assert getattr(getattr(Settings.from_env(), group), name) == default
    monkeypatch.setenv(env, override[0])
    assert getattr(getattr(Settings.from_env(), group), name) == override[1]
    if refused:
        monkeypatch.setenv(env, refused)
        with pytest.raises(SettingsError, match=env):
            Settings.from_env()


def test_local_development_knobs_are_refused_for_real_arm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARM_ENDPOINT", "https://management.azure.com")
    for env, value in (("ARM_DEV_TOKEN", "t"), ("SCHEDULE_CLOCK_SCALE", "60")):
        monkeypatch.setenv(env, value)
        with pytest.raises(SettingsError, match="loopback"):
            Settings.from_env()
        monkeypatch.delenv(env)
    monkeypatch.setenv("ARM_ENDPOINT", "http://127.0.0.1:8090")
    monkeypatch.setenv("ARM_DEV_TOKEN", "t")
    assert Settings.from_env().local.arm_dev_token == "t"


def test_every_group_is_frozen_and_no_field_has_a_second_default() -> None:
    settings = Settings.from_env()
    for group in dataclasses.fields(settings):
        value = getattr(settings, group.name)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, dataclasses.fields(value)[0].name, None)
        # defaults live in from_env alone: a dataclass default would be a second place to change
        assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   for f in dataclasses.fields(value)), group.name
