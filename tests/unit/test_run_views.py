"""How a stored run is shown by the API (shared/runs/views.py)."""

from __future__ import annotations

import pytest

from shared.core.records import RunRecord
from shared.runs.accept import internal_key
from shared.runs.views import run_view


@pytest.mark.parametrize(("stored", "shown"), [
    ("caller-key-1", "caller-key-1"),
    (internal_key("maintenance:nightly:2026-01-01T00:00:00.000000Z"), None),  # a caller cannot send it back
    (internal_key("periodic-assessment:2026-01-01T03:00:00.000000Z"), None),
    (internal_key("plan|e5db56713c4-295075ac"), None),
    ("", None),
])
def test_a_run_shows_only_the_callers_idempotency_key(stored: str, shown: str | None) -> None:
    run = RunRecord(etag="", run_id="r", columns={"operation": "assessPatches", "idempotencyKey": stored,
                                                  "status": "Succeeded"})
    assert run_view(run, None).get("idempotencyKey") == shown
