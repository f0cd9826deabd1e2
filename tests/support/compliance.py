"""The compliance oracle: the numbers GET /api/compliance must show, worked out independently from what the
simulator holds (its machines and their pending patches), never from the app's own tables."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from tools.azure_simulator import Simulator

Machine = dict[str, Any]
# The simulator reports two Windows classes by display name, as Azure's examples do; PatchPilot stores and counts
# every class by the API's name (WindowsParameters.classificationsToInclude), so the oracle does too.
API_NAMES = {"Definition Updates": "Definition", "Update Rollups": "UpdateRollUp", "Security Updates": "Security",
             "Critical Updates": "Critical", "Feature Packs": "FeaturePack", "Service Packs": "ServicePack"}


def api_name(classification: str) -> str:
    return API_NAMES.get(classification, classification)


def api_named(patch: dict[str, Any]) -> dict[str, Any]:
    """A patch of a simulator's result as PatchPilot keeps and shows it: classifications by the API's names."""
    return {**patch, "classifications": [api_name(c) for c in patch.get("classifications") or []]}


def compliance_of(machines: list[Machine], assessed: list[Machine],
                  lists_patches: Callable[[Machine], bool] = lambda _: True) -> dict[str, Any]:
    """The numbers every compliance view has, for `machines` of which `assessed` were assessed (just now: none
    stale, none failed); only machines for which `lists_patches` holds name their patches (Compute does, Arc
    reports counts per classification)."""
    by_class: Counter[str] = Counter()
    machines_by_class: Counter[str] = Counter()
    widespread: Counter[tuple[str, str]] = Counter()
    for m in assessed:
        classes = Counter(api_name(p["classification"]) for p in m["pendingPatches"])
        by_class.update(classes)
        machines_by_class.update(classes.keys())
        if lists_patches(m):
            widespread.update({(f"KB{p['kbId']}" if p["kbId"] else p["name"], api_name(p["classification"]))
                               for p in m["pendingPatches"]})
    top = sorted(widespread.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    return {
        "machines": len(machines),
        "assessed": len(assessed),
        "neverAssessed": len(machines) - len(assessed),
        "stale": 0,
        "failed": 0,
        "missingCriticalOrSecurity": sum(
            1 for m in assessed if any(p["classification"] in ("Critical", "Security") for p in m["pendingPatches"])),
        "rebootPending": sum(1 for m in assessed if m["rebootPending"]),
        "upToDate": sum(1 for m in assessed if not m["pendingPatches"]),
        "byClassification": {c: {"missingPatches": by_class[c], "machines": machines_by_class[c]}
                             for c in sorted(by_class)},
        "mostWidespreadMissingPatches": [{"patch": k, "classification": c, "machines": n} for (k, c), n in top],
    }


def expected_compliance(sim: Simulator, *, subscription: str | None = None,
                        os_type: str | None = None) -> dict[str, Any]:
    """The VM fleet's compliance numbers (one subscription's, one OS type's) once every running VM is assessed."""
    vms = [v for v in sim.state()["vms"]
           if (subscription is None or v["subscriptionId"].lower() == subscription.lower())
           and (os_type is None or v["osType"] == os_type)]
    running = [v for v in vms if v["powerState"] == "running"]
    return {**compliance_of(vms, running), "notRunning": len(vms) - len(running)}


def assert_compliance_matches(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    for name, value in expected.items():
        assert actual[name] == value, (name, actual[name], value)
