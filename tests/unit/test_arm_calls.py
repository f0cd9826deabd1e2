"""Every ARM call PatchPilot makes is one value (shared/arm/calls.py): its URL, its budgets, and what a 429 on it
moves, walked call by call."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from requests.structures import CaseInsensitiveDict

from shared.arm.calls import (
    ALL_CALLS,
    BUDGETS,
    GUEST_PATCH,
    LIST_ALERTS,
    POLLS,
    READS,
    RESOURCE_HEALTH,
    WRITES,
    ArmCall,
    get_machine,
)
from shared.arm.client import ArmClient, ArmResponse
from shared.core.ids import HYBRID_MACHINES, MachineRef
from shared.runs.pacing import paced_delay, record_call
from tests.unit.test_settings_and_endpoint_guard import StaticTokenCredential

VM = MachineRef("00000000-0000-0000-0000-000000000001", "rg", "web-01")
ARC = MachineRef("00000000-0000-0000-0000-000000000001", "rg", "arc-01", HYBRID_MACHINES)
COMPUTE_SUBSCRIPTION_LIMIT = "Microsoft.Compute/VMGuestPatchOperationSubscriptionMaximum;0"


class Recorder:
    def __init__(self) -> None:
        self.reserved: list[str] = []
        self.sent: list[str] = []
        self.observed: list[tuple[tuple[str, ...], int, float | None]] = []

    def reserve(self, subscription: str, names: tuple[str, ...], k: int = 1) -> float:
        self.reserved.extend(names)
        return 0.0

    def book(self, subscription: str, name: str, after: float) -> float | None:
        return None

    def spacing(self, subscription: str, name: str) -> float:
        return 0.0

    def release(self, subscription: str, name: str, due: float) -> None:
        pass

    def sending(self, subscription: str, names: tuple[str, ...]) -> None:
        self.sent.extend(names)

    def observe(self, subscription: str, names: tuple[str, ...], status: int, headers: Mapping[str, str],
                retry_after: float | None = None) -> None:
        self.observed.append((names, status, retry_after))


def throttled(**headers: str) -> ArmResponse:
    return ArmResponse(429, CaseInsensitiveDict({"Retry-After": "120", **headers}), None, "")


@pytest.mark.parametrize("call", ALL_CALLS, ids=lambda c: c.name)
def test_every_call_is_drawn_from_its_budgets_before_it_is_made(call: ArmCall) -> None:
    assert call.budgets and set(call.budgets) <= set(BUDGETS)
    pacer = Recorder()
    assert paced_delay(pacer, VM.subscription_id, call, set()) is None
    assert tuple(pacer.reserved) == call.budgets  # in the call's order, slow one first


@pytest.mark.parametrize("call", ALL_CALLS, ids=lambda c: c.name)
def test_a_429_moves_the_budgets_of_the_call_that_was_refused(call: ArmCall) -> None:
    pacer = Recorder()
    record_call(pacer, VM.subscription_id, call, throttled(), default_retry_after=60)
    names, status, retry_after = pacer.observed[-1]
    assert status == 429 and retry_after == 120  # Retry-After obeyed, whatever the counters say
    if call.is_write:
        assert names == (GUEST_PATCH, WRITES)  # no Compute header: ARM's write limit, or unknown
        record_call(pacer, VM.subscription_id, call,
                    throttled(**{"x-ms-ratelimit-remaining-resource": COMPUTE_SUBSCRIPTION_LIMIT}),
                    default_retry_after=60)
        assert pacer.observed[-1][0] == (GUEST_PATCH,)  # Compute's subscription policy: ARM's writes untouched
    else:
        # both shares of ARM's one read limit wait it out; a read never moves a write
        assert set(names) == {READS, POLLS} and not {GUEST_PATCH, WRITES} & set(names)


def test_reads_and_writes_draw_from_the_buckets_azure_counts_them_in() -> None:
    by_name = {c.name: c for c in ALL_CALLS}
    assert by_name["installPatches"].budgets == by_name["assessPatches"].budgets == (GUEST_PATCH, WRITES)
    assert {by_name[n].budgets for n in ("getVm", "getMachine", "instanceView", "listVms", "resourceHealth",
                                         "alerts")} == {(READS,)}
    assert by_name["poll"].budgets == (POLLS,)


@pytest.mark.parametrize("call", [c for c in ALL_CALLS if "{machine}" in c.path], ids=lambda c: c.name)
def test_a_machine_call_builds_its_url_from_its_path_shape(call: ArmCall) -> None:
    client = ArmClient("https://management.azure.com", StaticTokenCredential("t"), api_version="2025-04-01",
                       hybridcompute_api_version="2024-07-10")
    for machine, version in ((VM, "2025-04-01"), (ARC, "2024-07-10")):
        suffix = f"/{call.action}" if call.action else ""
        assert client.url_for(call, machine) == \
            f"https://management.azure.com{machine.resource_id}{suffix}?api-version={call.api_version or version}"
    assert get_machine(ARC).name == "getMachine" and get_machine(VM).name == "getVm"


def test_a_subscription_call_of_a_machine_is_built_at_its_subscription_with_its_own_api_version() -> None:
    client = ArmClient("https://management.azure.com", StaticTokenCredential("t"), api_version="2025-04-01")
    url = client.url_for(LIST_ALERTS, VM, targetResource=VM.resource_id)
    assert url.startswith(f"https://management.azure.com/subscriptions/{VM.subscription_id}/providers/"
                          "Microsoft.AlertsManagement/alerts?api-version=2019-05-05-preview&targetResource=")
    assert client.url_for(RESOURCE_HEALTH, ARC).endswith(
        "/providers/Microsoft.HybridCompute/machines/" + ARC.name +
        "/providers/Microsoft.ResourceHealth/availabilityStatuses/current?api-version=2022-10-01")


@pytest.mark.parametrize("call", [c for c in ALL_CALLS if "{machine}" not in c.path and "{subscription}" not in c.path],
                         ids=lambda c: c.name)
def test_a_call_that_is_not_on_a_machine_has_no_machine_url(call: ArmCall) -> None:
    client = ArmClient("https://management.azure.com", StaticTokenCredential("t"), api_version="2025-04-01")
    with pytest.raises(ValueError, match=call.name):
        client.url_for(call, VM)
