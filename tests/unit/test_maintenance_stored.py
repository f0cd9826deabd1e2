"""A maintenance configuration is stored normalised and read back without parsing its body again (the
timer reads every configuration every minute); a body stored before that (version 1) still loads."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from shared.maintenance import configuration
from shared.maintenance.configuration import configuration_from_stored, parse_configuration

BODIES = [
    {"location": "westeurope", "tags": {"env": "prod"}, "properties": {
        "maintenanceScope": "InGuestPatch",
        "maintenanceWindow": {"startDateTime": "2026-01-01 22:00", "duration": "03:00",
                              "timeZone": "W. Europe Standard Time", "recurEvery": "Month Second Tuesday Offset2"},
        "installPatches": {"rebootSetting": "IfRequired",
                           "windowsParameters": {"classificationsToInclude": ["Critical", "Security"]},
                           "linuxParameters": {"classificationsToInclude": ["Critical"],
                                               "packageNameMasksToInclude": ["openssl*"]},
                           "tasks": {"preTasks": [{"source": "runbook"}]}},
        "rollout": {"waves": [{"size": 1}, {"size": "rest"}], "maxConcurrency": 5}}},
    {"location": "eastus", "properties": {
        "maintenanceScope": "InGuestPatch",
        "maintenanceWindow": {"startDateTime": "2026-03-01 01:30", "expirationDateTime": "2027-03-01 00:00",
                              "duration": "02:00", "timeZone": "Pacific Standard Time", "recurEvery": "6Hours"},
        "installPatches": {"rebootSetting": "Never", "windowsParameters": {"kbNumbersToInclude": ["5034441"]}}}},
]


@pytest.mark.parametrize("body", BODIES)
def test_stored_form_reads_back_without_parsing(body: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_configuration("nightly", body)
    stored = {"name": "nightly", "body": json.dumps(config.to_stored())}

    def no_parsing(*args: object, **kwargs: object) -> None:
        raise AssertionError("a normalised configuration must not be parsed again")

    monkeypatch.setattr(configuration, "parse_configuration", no_parsing)
    again = configuration_from_stored("nightly", stored)
    assert again.resource() == config.resource()
    assert again.install_patches == config.install_patches and again.rollout == config.rollout
    after = datetime(2026, 6, 1, tzinfo=UTC)
    assert again.schedule.next_windows(after, 20) == config.schedule.next_windows(after, 20)


def test_a_body_stored_before_normalisation_still_loads() -> None:
    stored = {"name": "nightly", "body": json.dumps(BODIES[0])}  # version 1: the request body as sent
    expected = parse_configuration("nightly", BODIES[0]).resource()
    assert configuration_from_stored("nightly", stored).resource() == expected
