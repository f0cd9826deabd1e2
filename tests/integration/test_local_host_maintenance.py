"""Maintenance windows end to end through two local Functions hosts at once, on a compressed clock
(a 6-hourly schedule, one window every 12 s): a schedule with a dynamic scope opens three consecutive
windows and each becomes exactly one run. The hosts have different host ids, so both timers really tick every
second (no shared singleton lease): exactly-once rests on the claim in Table storage alone."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from shared.core.clock import iso
from shared.maintenance.timezones import resolve_time_zone
from tests.integration.local_host_process import HostProcess
from tests.support.fleet import sim_config
from tools.azure_simulator import Simulator, SimulatorConfig

# Simulated seconds per real second: six hours in 12 s, a 03:55 window in about 8 s. Queue polling
# (up to 2 s real) is then an hour of window time, well inside the window: every VM starts in time.
SCALE = 1800.0
ZONE = "W. Europe Standard Time"


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return sim_config(vms=12, seed=8)


@pytest.fixture
def hosts(app_settings: dict[str, str], tmp_path: Path) -> Iterator[tuple[HostProcess, HostProcess, datetime]]:
    origin = datetime.now(UTC)
    settings = {**app_settings, "SCHEDULE_CLOCK_ORIGIN": iso(origin), "SCHEDULE_CLOCK_SCALE": str(SCALE),
                "MAINTENANCE_SCHEDULE": "* * * * * *"}
    a = HostProcess({**settings, "AzureFunctionsWebHost__hostid": "host-a"}, tmp_path / "a.log")
    b = HostProcess({**settings, "AzureFunctionsWebHost__hostid": "host-b"}, tmp_path / "b.log")
    try:
        yield a.wait_ready(), b.wait_ready(), origin
    finally:
        a.stop()
        b.stop()


def simulated(origin: datetime) -> datetime:
    return origin + (datetime.now(UTC) - origin) * SCALE


def test_three_windows_two_hosts_one_run_each(hosts: tuple[HostProcess, HostProcess, datetime],
                                              simulator: Simulator) -> None:
    a, b, origin = hosts
    zone = resolve_time_zone(ZONE)
    soon = simulated(origin) + timedelta(hours=2)
    start = datetime.fromtimestamp(math.ceil(soon.timestamp() / 60) * 60, UTC).astimezone(zone)
    expiration = start + timedelta(hours=12, minutes=1)  # exactly three windows
    config = {"properties": {
        "maintenanceScope": "InGuestPatch",
        "maintenanceWindow": {"startDateTime": start.strftime("%Y-%m-%d %H:%M"), "duration": "03:55",
                              "expirationDateTime": expiration.strftime("%Y-%m-%d %H:%M"),
                              "timeZone": ZONE, "recurEvery": "6Hours"},
        "installPatches": {"rebootSetting": "IfRequired",
                           "windowsParameters": {"classificationsToInclude": ["Critical", "Security"]},
                           "linuxParameters": {"classificationsToInclude": ["Critical", "Security"]}}}}
    api = "/api/maintenance-configurations/daily"
    assert requests.put(f"{a.base_url}{api}", json=config, timeout=10).status_code == 201
    vms = simulator.state()["vms"]
    owners = sorted({v["tags"]["owner"] for v in vms})
    chosen = {v["id"].lower() for v in vms if v["tags"]["owner"] == owners[0]}
    scope = {"properties": {"resourceId": f"/subscriptions/{simulator.subscriptions()[0]}",
                            "filter": {"tagSettings": {"tags": {"owner": [owners[0]]}, "filterOperator": "Any"}}}}
    resp = requests.put(f"{b.base_url}/api/maintenance-configurations/daily/assignments/by-owner", json=scope,
                        timeout=10)
    assert resp.status_code == 201
    windows = requests.get(f"{a.base_url}/api/maintenance-configurations/daily/occurrences",
                           params={"from": iso(start - timedelta(minutes=1)), "count": "5"}, timeout=10).json()["value"]
    assert len(windows) == 3 and windows[0]["startLocal"].startswith(start.strftime("%Y-%m-%dT%H:%M"))

    # Wait (real time) until the last window has closed and every run has finished.
    deadline = time.monotonic() + 120
    while True:
        runs = [r for r in requests.get(f"{a.base_url}/api/runs?top=20", timeout=10).json()["value"]
                if r["origin"] == "maintenance"]
        done = all(r["status"] not in ("Accepted", "InProgress") for r in runs)
        if len(runs) >= 3 and done and simulated(origin) > start + timedelta(hours=16):
            break
        assert time.monotonic() < deadline, (runs, a.log_path.read_text()[-3000:])
        time.sleep(0.5)

    assert len(runs) == 3, runs
    recorded = requests.get(f"{b.base_url}{api}/occurrences", params={"from": iso(start - timedelta(minutes=1)),
                                                                       "count": "5"}, timeout=10).json()["value"]
    assert [w["state"] for w in recorded] == ["Started"] * 3
    assert sorted(w["runId"] for w in recorded) == sorted(r["id"] for r in runs)
    for run in runs:
        detail = requests.get(f"{a.base_url}/api/runs/{run['id']}", timeout=10).json()
        assert {m["id"].lower() for m in detail["machines"]} == chosen
        assert detail["status"] in ("Succeeded", "CompletedWithWarnings"), detail["states"]
    calls = simulator.calls()["byVm"]
    for vm in (v["id"].lower() for v in vms):
        assert calls[vm]["installPatchesAccepted"] == (3 if vm in chosen else 0), vm
