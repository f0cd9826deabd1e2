"""`POST /api/assessments` bodies: a list of machines, or scopes whose VMs and Arc machines are discovered."""

from __future__ import annotations

import hashlib
import json

from shared.core.errors import ValidationError
from shared.core.records import NewRun
from shared.validation.install_parameters import reject_unknown
from shared.validation.request_body import parse_json_body
from shared.validation.run_request import parse_machines
from shared.validation.scopes import parse_scopes

FIELDS = {"machines", "scopes"}


def parse_assessment_request(body: bytes, *, max_bytes: int, max_machines: int) -> NewRun:
    data = parse_json_body(body, max_bytes=max_bytes)
    if not isinstance(data, dict):
        raise ValidationError("the request body must be a JSON object", target=None, code="InvalidRequestContent")
    reject_unknown(data, FIELDS, "")
    if ("machines" in data) == ("scopes" in data):
        raise ValidationError("give exactly one of machines (machine resource ids) or scopes (subscription or "
                              "resource group ids)", target="machines" if "machines" in data else None)
    if "machines" in data:
        machines = parse_machines(data["machines"], max_machines=max_machines)
        canonical = {"assessPatches": {"machines": sorted(m.key for m in machines)}}
        return NewRun("assessPatches", {}, _fingerprint(canonical), machines=machines)
    scopes = parse_scopes(data["scopes"], target="scopes")
    canonical = {"assessPatches": {"scopes": sorted(s.resource_id.lower() for s in scopes)}}
    return NewRun("assessPatches", {}, _fingerprint(canonical), scopes=scopes)


def _fingerprint(canonical: object) -> str:
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
