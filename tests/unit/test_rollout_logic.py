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
    # Azure may still be patching it (a poll was refused): not a failure, whatever failureOn lists.
    ({"state": "OutcomeUnknown", "errorCode": "PollForbidden"},
     ["Failed", "TimedOut", "FailedPatches", "CompletedWithWarnings", "MaintenanceWindowExceeded"], None),
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
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation is pure: a lookup would be a defect (a DNS blip must not turn a request into a 400)."""

    def fail(*args: object, **kwargs: object) -> list[tuple[object, ...]]:
        raise AssertionError(f"validation looked up {args[0]!r} in DNS")

    monkeypatch.setattr("socket.getaddrinfo", fail)


@pytest.mark.parametrize("url", ["https://169.254.169.254/metadata/instance", "https://168.63.129.16/machine",
                                 "https://10.1.2.3/hook", "https://[::ffff:127.0.0.1]/x", "https://[64:ff9b::7f00:1]/x",
                                 "https://2130706433/x", "https://localhost/admin", "https://hooks.localhost/x",
                                 "http://127.0.0.1:7071/admin/functions/x", "http://hooks.example.com/x",
                                 "https://user:secret@hooks.example.com/x", "https://hooks.example.com:99999/x"])
def test_hooks_a_caller_names_must_be_public_on_their_face(no_dns: None, url: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_rollout({"preHook": {"url": url}})
    assert err.value.target == "rollout.preHook.url"


def test_a_hook_name_is_not_resolved_while_validating(no_dns: None) -> None:
    """Names pass on their face (even one that would not resolve now): the call checks its addresses."""
    spec = parse_rollout({"preHook": {"url": "https://hooks.example.com/pre"},
                          "postHook": {"url": " https://nowhere.invalid:8443/post "}})
    assert spec["preHook"]["url"] == "https://hooks.example.com/pre"
    assert spec["postHook"]["url"] == "https://nowhere.invalid:8443/post"


def test_parse_rollout_normalises(no_dns: None) -> None:
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
