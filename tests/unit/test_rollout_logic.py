"""Pure rollout decisions: wave assignment, what spends the error budget, request parsing,
percentages, and the Linux patch set carried from the canary."""

from __future__ import annotations

import pytest

from shared.core.errors import ValidationError
from shared.core.states import with_rollout
from shared.rollouts.plan import assign_waves, failure_kind
from shared.rollouts.start_guard import pinned_body
from shared.validation.rollout import count_or_percent, parse_rollout, resolve

SUB_A, SUB_B = "00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b"
KEYS = [f"{SUB_A if i % 2 else SUB_B}|rg-{i % 3}|vm-{i:02d}" for i in range(20)]


def test_sized_waves_take_from_the_rest_in_request_order() -> None:
    waves = assign_waves(KEYS, [{"size": 1}, {"size": "10%"}, {"size": "rest"}])
    assert waves[KEYS[0]] == 0 and [waves[k] for k in KEYS[1:3]] == [1, 1]
    assert all(waves[k] == 2 for k in KEYS[3:])


def test_named_and_selected_machines_are_placed_first() -> None:
    waves = assign_waves(KEYS, [{"machines": [KEYS[7]]}, {"selector": {"resourceGroups": ["rg-2"]}}, {"size": 2}])
    assert waves[KEYS[7]] == 0
    assert all(waves[k] == 1 for k in KEYS if "|rg-2|" in k)
    rest = [k for k in KEYS if k != KEYS[7] and "|rg-2|" not in k]
    assert [waves[k] for k in rest[:2]] == [2, 2] and all(waves[k] == 2 for k in rest)  # leftovers: last wave
    assert set(assign_waves(KEYS, []).values()) == {0}


@pytest.mark.parametrize(("target", "kinds", "expected"), [
    ({"state": "Failed"}, None, "Failed"),
    ({"state": "TimedOut"}, None, "TimedOut"),
    ({"state": "Skipped"}, None, None),
    ({"state": "Completed", "status": "Succeeded", "failedPatchCount": 2}, None, "FailedPatches"),
    ({"state": "Completed", "status": "CompletedWithWarnings"}, None, None),
    ({"state": "Completed", "status": "CompletedWithWarnings"}, ["CompletedWithWarnings"], "CompletedWithWarnings"),
    ({"state": "Completed", "status": "Succeeded", "maintenanceWindowExceeded": True},
     ["MaintenanceWindowExceeded"], "MaintenanceWindowExceeded"),
    ({"state": "Completed", "status": "Failed"}, ["TimedOut"], None),
])
def test_what_spends_the_error_budget(target: dict[str, object], kinds: list[str] | None, expected: str | None) -> None:
    assert failure_kind(target, kinds) == expected


def test_counts_and_percentages() -> None:
    assert count_or_percent(3, "x") == 3 and count_or_percent(" 25% ", "x") == "25%"
    assert count_or_percent("rest", "x", allow_rest=True) == "rest"
    for bad in ("0%", "101%", "ten", True, -1, "rest"):
        with pytest.raises(ValidationError):
            count_or_percent(bad, "x")
    assert resolve("10%", 7) == 1 and resolve("50%", 7) == 4 and resolve(5, 7) == 5 and resolve(None, 7) is None


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names resolve without a network: one public host, and hosts pointing inwards."""
    table = {"hooks.example.com": "20.50.2.10", "x.example": "20.50.2.11", "metadata.internal": "169.254.169.254",
             "intranet.example": "10.1.2.3", "localhost.example": "127.0.0.1"}

    def fake(host: str, port: object, *args: object) -> list[tuple[object, ...]]:
        if host not in table:
            raise OSError("unknown host")
        return [(2, 1, 6, "", (table[host], port))]

    monkeypatch.setattr("socket.getaddrinfo", fake)


@pytest.mark.parametrize("url", ["https://metadata.internal/latest", "https://intranet.example/hook",
                                 "https://localhost.example/admin", "http://127.0.0.1:7071/admin/functions/x",
                                 "https://nowhere.example/hook"])
def test_hooks_a_caller_names_must_be_public(dns: None, url: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_rollout({"preHook": {"url": url}})
    assert err.value.target == "rollout.preHook.url"


def test_parse_rollout_normalises(dns: None) -> None:
    spec = parse_rollout({"waves": [{"name": "canary", "size": 1}, {"size": "REST"}], "soakTime": "pt30m",
                          "maxFailures": "5%", "failureOn": ["failed", "Completed With Warnings"],
                          "preHook": {"url": "https://hooks.example.com/pre"}})
    assert spec["waves"][1]["size"] == "rest" and spec["soakTime"] == "PT30M" and spec["maxFailures"] == "5%"
    assert spec["failureOn"] == ["CompletedWithWarnings", "Failed"] and spec["preHook"]["timeoutSeconds"] == 60
    for bad, target in (({"preHook": {"url": "http://example.com/pre"}}, "rollout.preHook.url"),
                        ({"preHook": {"url": "https://x.example", "timeoutSeconds": 900}},
                         "rollout.preHook.timeoutSeconds"),
                        ({"postHook": {"url": "https://x.example", "timeoutSeconds": 5}},
                         "rollout.postHook.timeoutSeconds"),
                        ({"approveAfterDays": 400}, "rollout.approveAfterDays"),
                        ({"waves": []}, "rollout.waves")):
        with pytest.raises(ValidationError) as err:
            parse_rollout(bad)
        assert err.value.target == target


def test_later_linux_waves_install_exactly_the_canary_versions() -> None:
    body = {"maximumDuration": "PT2H", "rebootSetting": "IfRequired",
            "linuxParameters": {"classificationsToInclude": ["Critical"], "packageNameMasksToExclude": ["kernel*"]}}
    run = ["openssl_3.0.2-0ubuntu1.15", "sudo_1.9.9-1ubuntu2.4"]
    pinned = pinned_body(body, run, "Linux")
    assert pinned is not None and pinned["linuxParameters"] == {
        "packageNameMasksToExclude": ["kernel*"],
        "packageNameMasksToInclude": ["openssl_3.0.2-0ubuntu1.15", "sudo_1.9.9-1ubuntu2.4"]}
    assert pinned_body(body, [], "Linux") == body and pinned_body(body, run, "Windows") == body


def test_a_stopped_rollout_says_how_it_stopped() -> None:
    assert with_rollout("Succeeded", {"canceledAt": "t"}) == "Canceled"
    assert with_rollout("Failed", {"haltedReason": "r"}) == "Halted"
    assert with_rollout("InProgress", {"haltedReason": "r"}) == "InProgress"  # still following machines
    assert with_rollout("Succeeded", {}) == "Succeeded"
