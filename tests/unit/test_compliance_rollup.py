"""The rollup's pure parts (shared/storage/fleet_rollup.py): a shard row round-trips, stays within Table storage's
property and entity limits, merges old minutes without changing any count, and says when it had to drop
per-patch counts."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from shared.assessments.compliance import compliance_report, render_report
from shared.core.clock import iso
from shared.storage.fleet_rollup import (
    CHUNK_CHARS,
    MAX_SHARD_BYTES,
    Tally,
    collapse_before,
    delta,
    shard_entity,
    shard_tally,
)
from shared.storage.limits import MAX_PROPERTY_BYTES, entity_bytes, utf16_bytes

NOW = datetime(2026, 11, 30, 12, 0, 30, tzinfo=UTC)


def vm_row(i: int, *, minutes_ago: float | None, patches: int = 3, name_len: int = 10) -> dict[str, object]:
    row: dict[str, object] = {"resourceId": f"/subscriptions/s{i % 2}/resourceGroups/rg/providers/"
                                            f"Microsoft.Compute/virtualMachines/vm{i}",
                              "osType": "Windows" if i % 3 else "Linux", "powerState": "running"}
    if minutes_ago is not None:
        row.update(assessedAt=iso(NOW - timedelta(minutes=minutes_ago)), criticalAndSecurityPatchCount=patches,
                   otherPatchCount=0, classificationCounts=json.dumps({"Security": patches}),
                   missingPatches="[" + ",".join(f'["{"p" * name_len}{(i + k) % 5000}","Security"]'
                                                 for k in range(patches)) + "]")
    return row


def test_a_shard_round_trips_in_chunks_within_the_property_limit() -> None:
    rows = [vm_row(i, minutes_ago=i * 7.3, patches=40, name_len=30) for i in range(400)]
    tally = Tally.of_rows(rows)
    entity = shard_entity("s", 0, tally, built_at=iso(NOW))
    assert entity["chunks"] > 1  # more than one property's worth, split
    assert all(utf16_bytes(entity[f"d{i}"]) <= MAX_PROPERTY_BYTES for i in range(entity["chunks"]))
    assert len(entity["d0"]) == CHUNK_CHARS and entity_bytes(entity) <= MAX_SHARD_BYTES
    assert entity["approximate"] is False
    assert render_report(shard_tally(entity), now=NOW, freshness_hours=36) == compliance_report(
        rows, now=NOW, freshness_hours=36)


def test_merged_minutes_count_the_same_for_every_later_view() -> None:
    rows = [vm_row(i, minutes_ago=random.Random(i).uniform(0, 60 * 24 * 9)) for i in range(300)]
    rows += [vm_row(i, minutes_ago=None) for i in range(300, 320)]
    tally = Tally.of_rows(rows).collapse(collapse_before(NOW, 36))
    assert len(tally.groups[("s0", "Windows", "virtualMachines")].at) < 150  # the old minutes are one bucket
    for later in (timedelta(0), timedelta(minutes=59), timedelta(hours=30)):
        assert render_report(tally, now=NOW + later, freshness_hours=36) == compliance_report(
            rows, now=NOW + later, freshness_hours=36)
    with pytest.raises(ValueError, match="merged"):  # a longer window than was kept cannot be answered
        render_report(tally, now=NOW, freshness_hours=48)
    # Uncounting a machine from a merged minute takes it out of the merged bucket.
    change = delta([rows[-30]], [None])
    tally.add(change)
    tally.collapse("").drop_zeros(clamp=True)
    assert render_report(tally, now=NOW, freshness_hours=36) == compliance_report(
        rows[:-30] + rows[-29:], now=NOW, freshness_hours=36)


def test_per_patch_counts_that_do_not_fit_are_dropped_least_widespread_first_and_said_so() -> None:
    rows = [vm_row(i, minutes_ago=5, patches=1 + i % 3, name_len=200) for i in range(600)]
    full = compliance_report(rows, now=NOW, freshness_hours=36, top=5)
    entity = shard_entity("s", 1, Tally.of_rows(rows), built_at=iso(NOW), max_bytes=200 * 1024)
    assert entity_bytes(entity) <= 200 * 1024 and entity["approximate"] is True
    report = render_report(shard_tally(entity), now=NOW, freshness_hours=36, top=5)
    assert report["mostWidespreadMissingPatchesApproximate"] is True and full[
        "mostWidespreadMissingPatchesApproximate"] is False
    assert report["mostWidespreadMissingPatches"] == full["mostWidespreadMissingPatches"]  # the top survive
    assert {k: v for k, v in report.items() if not k.startswith("mostWidespread")} == {
        k: v for k, v in full.items() if not k.startswith("mostWidespread")}  # everything else stays exact


def test_a_repeated_write_changes_nothing() -> None:
    row = vm_row(1, minutes_ago=3)
    assert delta([row], [dict(row)]).groups == {}
    assert delta([None], [row]).groups and delta([row], [None]).groups
