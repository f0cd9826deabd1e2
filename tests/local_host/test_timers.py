"""Timer triggers: firing on schedule, past-due catch-up from the schedule monitor, the test hook,
the singleton lock across two hosts, and schedule validation."""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import BlobServiceClient

from tests.local_host.conftest import Records, wait_for
from tools.local_host import HostStartupError


def test_timer_fires_every_second_not_past_due(start_host, records: Records) -> None:
    host = start_host({"TICK_SCHEDULE": "* * * * * *"})
    ticks = wait_for(lambda: len(records("tick")) >= 3 and records("tick"), timeout=6)
    assert all(t["past_due"] is False for t in ticks)
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(ticks)]
    assert all(0.5 < g < 1.5 for g in gaps), gaps
    assert host.timer_listeners["tick"].use_monitor is False  # sub-minute schedules are not monitored


def test_missed_occurrence_runs_at_startup_as_past_due(
    start_host, app_dir, settings, records: Records
) -> None:
    from tools.local_host.host import default_host_id

    # an hourly schedule whose recorded Next passed while "the host was down"
    schedule = "0 0 * * * *"
    last = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    status = {
        "Last": last.isoformat(),
        "Next": (last + timedelta(hours=1)).isoformat(),
        "LastUpdated": last.isoformat(),
    }
    blobs = BlobServiceClient.from_connection_string(settings["AzureWebJobsStorage"])
    container = blobs.get_container_client("azure-webjobs-hosts")
    if not container.exists():
        container.create_container()
    host_id = default_host_id(app_dir.resolve())
    container.upload_blob(f"timers/{host_id}/Host.Functions.tick/status", json.dumps(status), overwrite=True)

    host = start_host({"TICK_SCHEDULE": schedule})
    [tick] = wait_for(lambda: records("tick"), timeout=5)
    assert tick["past_due"] is True
    assert tick["status"]["Next"] == status["Next"]
    # the status moved on: the next occurrence is in the future now
    wait_for(lambda: host.timer_listeners["tick"].status["Next"] > datetime.now(UTC))
    def stored_next() -> datetime:
        blob = container.download_blob(f"timers/{host_id}/Host.Functions.tick/status").readall()
        return datetime.fromisoformat(json.loads(blob)["Next"])

    # the host writes the status after the tick: wait for the write, then it points to the future
    wait_for(lambda: stored_next() > datetime.now(UTC))


def test_trigger_timer_hook(start_host, records: Records) -> None:
    host = start_host()  # yearly schedule: only the hook fires it
    record = host.trigger_timer("tick", past_due=True)
    assert record.succeeded
    [tick] = records("tick")
    assert tick["past_due"] is True
    with pytest.raises(KeyError):
        host.trigger_timer("nope")


def test_only_one_of_two_hosts_runs_a_timer(start_host, spawn_host, records: Records) -> None:
    every_second = {"TICK_SCHEDULE": "* * * * * *"}
    first = start_host(every_second)
    wait_for(first.timer_listeners["tick"].holds_lock.is_set, timeout=5)
    spawn_host(every_second)
    time.sleep(3)
    ticks = records("tick")
    assert len(ticks) >= 3
    assert {t["pid"] for t in ticks} == {ticks[0]["pid"]}  # the lock holder only
    # when the holder stops and gives the lease up, the other host takes over within the recovery interval
    first.stop()
    count = len(records("tick"))
    wait_for(lambda: len(records("tick")) > count + 1, timeout=8)
    assert len({t["pid"] for t in records("tick")}) == 2


def test_five_field_schedule_is_rejected_at_startup(start_host) -> None:
    with pytest.raises(HostStartupError, match="6 fields"):
        start_host({"TICK_SCHEDULE": "*/5 * * * *"})


def test_missing_setting_is_a_startup_error_naming_it(start_host, app_dir) -> None:
    settings = json.loads((app_dir / "local.settings.json").read_text())
    del settings["Values"]["TICK_SCHEDULE"]
    (app_dir / "local.settings.json").write_text(json.dumps(settings))
    with pytest.raises(HostStartupError, match="TICK_SCHEDULE"):
        start_host()
