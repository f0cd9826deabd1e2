"""The periodic assessment: one sweep of the configured scopes per schedule slot.

The slot (the latest occurrence of ASSESSMENT_SCHEDULE at the tick) is claimed in Table storage
through the same Idempotency-Key mechanism `POST /api/runs` uses, with the key
"periodic-assessment:<slot>". A second host firing the same occurrence, a late `past_due` tick, or
a retried invocation all find the claim and return the run it names: one sweep per slot.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from typing import Protocol

from shared.core.clock import iso
from shared.core.errors import ValidationError
from shared.core.ids import ScopeRef
from shared.core.records import NewRun
from shared.core.settings import SettingsError
from shared.runs.accept import AcceptDeps, accept, internal_key
from shared.scheduling.slots import current_slot
from shared.validation.scopes import covering_scopes, parse_scope


class PeriodicDeps(AcceptDeps, Protocol):
    """What starting the periodic assessment uses."""


def configured_scopes(raw: tuple[str, ...]) -> tuple[ScopeRef, ...]:
    try:
        return covering_scopes([parse_scope(v, target=f"ASSESSMENT_SCOPES[{i}]") for i, v in enumerate(raw)])
    except ValidationError as exc:
        raise SettingsError(f"setting {exc.message}") from None


def scopes_fingerprint(scopes: tuple[ScopeRef, ...]) -> str:
    canonical = json.dumps({"assessPatches": sorted(s.resource_id.lower() for s in scopes)}, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def start_periodic_sweep(deps: PeriodicDeps, now: datetime) -> tuple[str | None, bool]:
    """(run id, created); (None, False) when no scope is configured."""
    log = logging.getLogger(__name__)
    if not deps.settings.assessments.scopes:
        log.warning("periodic assessment: ASSESSMENT_SCOPES is empty; nothing to assess")
        return None, False
    scopes = configured_scopes(deps.settings.assessments.scopes)
    slot = current_slot(deps.settings.assessments.schedule, now)
    if slot is None:
        raise SettingsError(f"ASSESSMENT_SCHEDULE {deps.settings.assessments.schedule!r} had no occurrence in a year")
    new = NewRun("assessPatches", {}, scopes_fingerprint(scopes), scopes=scopes, origin="schedule")
    run, created = accept(new, internal_key(f"periodic-assessment:{iso(slot)}"), deps)
    log.info("periodic assessment for slot %s: run %s (%s)", iso(slot), run.run_id,
             "started" if created else "already started for this slot")
    return run.run_id, created
