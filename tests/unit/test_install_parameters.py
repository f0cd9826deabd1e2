"""Per-OS parameters and durations."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.validation.durations import format_duration, parse_duration
from shared.validation.install_parameters import parameters_for_os, parse_install_parameters

PARAMS = parse_install_parameters({
    "maximumDuration": "PT2H",
    "rebootSetting": "Never",
    "windowsParameters": {"classificationsToInclude": ["Critical"]},
})


def test_each_os_gets_only_its_own_parameters() -> None:
    assert parameters_for_os(PARAMS, "Windows") == {
        "maximumDuration": "PT2H", "rebootSetting": "Never",
        "windowsParameters": {"classificationsToInclude": ["Critical"]},
    }
    assert parameters_for_os(PARAMS, "Linux") is None
    assert parameters_for_os(PARAMS, "") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("PT4H", timedelta(hours=4)), ("PT2H30M", timedelta(hours=2, minutes=30)), ("pt90m", timedelta(minutes=90)),
     ("P1DT1H", timedelta(days=1, hours=1)), ("PT0.5S", timedelta(seconds=0.5)), ("P1W", timedelta(weeks=1))],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["P", "PT", "4H", "P1Y", "PT1H2", "PTH", "-PT1H", "P1DT"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_duration(text)


def test_format_duration_is_canonical() -> None:
    assert format_duration(timedelta(minutes=150)) == "PT2H30M"
    assert format_duration(timedelta(0)) == "PT0S"
