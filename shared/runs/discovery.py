"""Finding the machines in a scope: one ARM list page per queue message, like every other step.

A scope holds two kinds of machines, listed one after the other: Azure VMs (Microsoft.Compute/virtualMachines),
then Azure Arc-enabled servers (Microsoft.HybridCompute/machines), skipping a kind the scope's dynamic-scope
filter (resourceTypes) leaves out. The scope row's `listing` column says which kind its pages are of.

A page message lists one page (models: OS type, location, tags), records each VM in the fleet
snapshot, creates the run's targets (`Queued`; a VM that is not running is skipped when ARM
refuses its operation), queues their steps, and then moves the scope's row on to the next page
with an ETag-conditional update before queuing that page. A duplicated message finds the page
moved on (or loses the ETag race); a redelivered one rewrites the same rows. When a scope's last
page is done, machines the snapshot still holds for that scope but the listing did not return are
gone from Azure and leave the snapshot.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any, Protocol

from shared.arm import hybrid
from shared.arm.calls import LIST_MACHINES
from shared.arm.errors import own_error_columns
from shared.arm.operations import Failed, Retry, classify_read, no_answer
from shared.core.clock import iso, parse_iso, utcnow
from shared.core.errors import (
    ArmAuthenticationError,
    ArmConnectionError,
    ConflictError,
    UntrustedEndpointError,
    ValidationError,
)
from shared.core.ids import MACHINE_KINDS, RESOURCE_TYPES, VIRTUAL_MACHINES, MachineKind, MachineRef, ScopeRef
from shared.core.messages import DiscoveryMessage
from shared.core.records import MachineRecord, ScopeListing
from shared.core.states import MachineState
from shared.runs.completion import RunCloser
from shared.runs.dispatch import DispatchDeps, extend_releases, queued_target, send_starts, start_slots
from shared.runs.operation_kinds import INSTALL, KINDS
from shared.runs.pacing import paced_delay, record_call
from shared.runs.ports import Features, Fleet
from shared.runs.retry_policy import retry_delay, retry_limit
from shared.validation.dynamic_scope import filter_matches, lists_type
from shared.validation.resource_ids import parse_machine_id
from shared.validation.scopes import parse_scope

log = logging.getLogger(__name__)


# A subscription where Microsoft.HybridCompute was never registered has no Arc machines: not a failed listing.
# ARM's code for "The subscription is not registered to use namespace ..." (learn.microsoft.com/azure/
# azure-resource-manager/troubleshooting/error-register-resource-provider); whether a list (rather than a PUT)
# answers it is not documented, so this is defensive. The simulator has no unregistered namespaces (untested).
UNREGISTERED = {"MissingSubscriptionRegistration", "SubscriptionNotRegistered"}



class DiscoveryDeps(DispatchDeps, RunCloser, Fleet, Features, Protocol):
    """What listing a scope's machines uses."""


def os_type(vm: dict[str, Any]) -> str:
    """"Windows"/"Linux": a VM's storageProfile.osDisk.osType, an Arc machine's properties.osType."""
    if str(vm.get("type") or "").lower() == RESOURCE_TYPES["hybridMachines"].lower():
        return hybrid.os_type(vm)
    return str(((vm.get("properties") or {}).get("storageProfile") or {}).get("osDisk", {}).get("osType") or "")


def _kinds(flt: dict[str, Any]) -> list[MachineKind]:
    """The kinds of machine this scope's listing covers, in listing order."""
    return [k for k in MACHINE_KINDS if lists_type(flt, RESOURCE_TYPES[k])]


def _listing(row: ScopeListing, flt: dict[str, Any]) -> MachineKind | None:
    """Which kind the row's next page lists: its `listing` column, or the first kind the filter admits."""
    kinds = _kinds(flt)
    current = str(row.get("listing") or "")
    return next((k for k in kinds if k == current), kinds[0] if kinds and not current else None)


def discover_page(msg: DiscoveryMessage, deps: DiscoveryDeps) -> str:
    """Process one page message. Safe to run twice."""
    row = deps.store.get_scope(msg.run_id, msg.scope)
    if row is None:
        return "missing"
    if row.get("done"):
        return "finished"
    if int(row["page"]) != msg.page:
        return "stale"
    scope = parse_scope(row["scope"], target="scope")
    held = set(LIST_MACHINES.budgets) if msg.held else set()
    if (paced := paced_delay(deps.pacer, scope.subscription_id, LIST_MACHINES, held)) is not None:
        # the same page, when its token is due
        deps.queues.send_discovery(msg.run_id, msg.scope, msg.page, paced[0], held=True)
        return "paced"
    flt = json.loads(row.get("filter") or "{}")
    kind = _listing(row, flt)
    if kind is None:  # the filter admits no kind PatchPilot lists (parse_filter refuses that; old rows only)
        return _end_scope(msg, row, deps, scope, error=None)
    try:
        url = (deps.arm.ensure_trusted(row["nextLink"]) if row.get("nextLink")
               else deps.arm.list_url(scope, kind))
        deps.pacer.sending(scope.subscription_id, LIST_MACHINES.budgets)
        resp = deps.arm.send(LIST_MACHINES, url)
        record_call(deps.pacer, scope.subscription_id, LIST_MACHINES, resp,
                    default_retry_after=deps.settings.retries.default_retry_after_seconds)
    except UntrustedEndpointError as exc:
        return _end_scope(msg, row, deps, scope, error=("UntrustedNextLink", str(exc)))
    except (ArmConnectionError, ArmAuthenticationError) as exc:
        return _retry(msg, row, deps, no_answer(exc))
    problem = classify_read(resp, default_retry_after=deps.settings.retries.default_retry_after_seconds)
    if isinstance(problem, Retry):
        return _retry(msg, row, deps, problem)
    if isinstance(problem, Failed) and not (kind != VIRTUAL_MACHINES and problem.code in UNREGISTERED):
        return _end_scope(msg, row, deps, scope, error=(problem.code, problem.message), cause=problem.detail)
    body = resp.body if isinstance(resp.body, dict) and problem is None else {}
    resource_type = RESOURCE_TYPES[kind].lower()
    vms = [vm for vm in body.get("value") or []
           if str(vm.get("type") or resource_type).lower() == resource_type and filter_matches(flt, vm, os_type(vm))]
    listed = _record_page(msg.run_id, scope, vms, deps)
    next_link = str(body.get("nextLink") or "")
    kinds = _kinds(flt)
    following = kinds[kinds.index(kind) + 1] if kind in kinds and kinds.index(kind) + 1 < len(kinds) else None
    try:
        if next_link or following:  # more of this kind, or the next kind's first page
            deps.store.update_scope(row, {"page": msg.page + 1, "nextLink": next_link, "attempts": 0,
                                         "listing": kind if next_link else following,
                                         "listed": int(row.get("listed") or 0) + listed,
                                         "nextActionAt": iso(utcnow())})
            deps.queues.send_discovery(msg.run_id, msg.scope, msg.page + 1)
            return "page"
        return _end_scope(msg, row.with_changes({"listed": int(row.get("listed") or 0) + listed}, row.etag), deps,
                          scope, error=None)
    except ConflictError:
        return "lost-race"


def _record_page(run_id: str, scope: ScopeRef, vms: list[dict[str, Any]], deps: DiscoveryDeps) -> int:
    """Snapshot rows, target rows and step messages for one page; every write is repeatable."""
    now = iso(utcnow())
    targets: list[MachineRecord] = []
    inventory: list[tuple[MachineRef, dict[str, Any]]] = []
    for vm in vms:
        try:
            ref = parse_machine_id(vm.get("id"), target="id")
        except ValidationError:
            log.warning("discovery: run %s skipped a listed resource with an unexpected id %r", run_id, vm.get("id"))
            continue
        os = os_type(vm)
        snapshot = {"resourceId": ref.resource_id, "resourceGroup": ref.resource_group, "name": ref.name,
                    "machineKind": ref.kind, "location": str(vm.get("location") or ""), "lastSeenAt": now,
                    "lastSeenRun": run_id}
        extra: dict[str, Any] = {}
        if os:  # a merge must not blank an OS type known from before
            snapshot["osType"] = os
        if ref.is_hybrid:  # the agent's status as listed; the machine step reads it again before posting
            snapshot["agentStatus"] = extra["agentStatus"] = hybrid.agent_status(vm)
        # `discovered`: a VM that turns out not to be running (ARM's 409 says so when its operation is
        # posted; the list does not tell) is skipped, not failed, whatever the operation.
        target = queued_target(run_id, ref.resource_id, now, osType=os, discovered=True, **extra)
        inventory.append((ref, snapshot))
        targets.append(target)
    deps.fleet.upsert_machines(inventory)
    if inventory:
        deps.fleet.note_subscriptions({scope.subscription_id})
    spec = deps.run_spec(run_id)
    if spec is None or spec.rollout or not targets:
        deps.store.create_targets(targets)  # rows an earlier delivery (or another scope) made stay as they are
        return len(targets)  # a rollout's controller admits them once every scope is listed
    # Slotted like an explicit run's machines (dispatch.start_slots): each gets its guest-patch token's slot, and
    # the run's release chain queues its start message a horizon ahead of it, held back under backpressure.
    kind = KINDS.get(spec.operation, INSTALL)
    slots = start_slots(deps, [[t["resourceId"] for t in targets]], reads_per_start=kind.reads_per_start)
    start = utcnow()
    targets = [t.with_changes({"nextActionAt": iso(start + timedelta(seconds=slots[t.key]))}) for t in targets]
    listed = len(targets)
    if not deps.store.create_targets(targets):
        # A redelivery (the first died before sending), or a machine another scope listed too: rows made earlier keep
        # their slots, and the release chain may have passed those slots already. Send from what is stored, not from
        # this delivery's slots, or such a machine's start waits for the sweeper (and holds the run's releases back).
        # One listing of the run's waiting starts (pages of 1,000), not a point read per machine of the page.
        keys = {t.key for t in targets}
        targets = [t for t in deps.store.iter_targets(run_id, state=MachineState.QUEUED.value, seq=0,
                                                      select=["resourceId", "seq", "nextActionAt", "predictedSeconds"])
                   if t.key in keys]
        if not targets:
            return listed

    def slot(target: MachineRecord) -> datetime:
        return parse_iso(str(target.get("nextActionAt") or iso(start)))
    released = extend_releases(run_id, max(slot(t) for t in targets), deps)
    send_starts(run_id, [t for t in targets if slot(t) < released], deps)
    return listed


def _retry(msg: DiscoveryMessage, row: ScopeListing, deps: DiscoveryDeps, retry: Retry) -> str:
    attempt = int(row.get("attempts") or 0) + 1
    if attempt > retry_limit(retry, deps.settings.retries):
        scope = parse_scope(row["scope"], target="scope")
        return _end_scope(msg, row, deps, scope, error=(retry.code, f"gave up listing after {attempt - 1} retries "
                                                                   f"({retry.kind}): {retry.message}"),
                          cause=retry.detail)
    delay = retry_delay(retry, attempt, deps.settings.retries)
    try:
        deps.store.update_scope(row, {"attempts": attempt, "lastRetryReason": f"{retry.code}: {retry.message}"[:1000],
                                     "nextActionAt": iso(utcnow() + timedelta(seconds=delay))})
    except ConflictError:
        return "lost-race"
    deps.queues.send_discovery(msg.run_id, msg.scope, msg.page, delay)
    return f"retry-{retry.kind}"


def _end_scope(msg: DiscoveryMessage, row: ScopeListing, deps: DiscoveryDeps, scope: ScopeRef,
               error: tuple[str, str] | None, *, cause: dict[str, Any] | None = None) -> str:
    """`cause`: ARM's whole error behind `error` (details, innererror), kept for the scope's view."""
    changes: dict[str, Any] = {"done": True, "page": msg.page + 1, "listed": int(row.get("listed") or 0),
                               "completedAt": iso(utcnow())}
    if error:
        changes.update(own_error_columns(error[0], error[1], cause))
    elif not json.loads(row.get("filter") or "{}"):
        # Only a complete listing may say a machine is gone: one nobody has listed since this listing began.
        # A filtered one (a dynamic scope: some resource types, tags, OS types) saw only part of the scope.
        changes["removed"] = deps.fleet.remove_unseen(scope.subscription_id, scope.resource_group,
                                                     listed_since=str(row.get("startedAt") or row["nextActionAt"]))
    try:
        deps.store.update_scope(row, changes)
    except ConflictError:
        return "lost-race"
    deps.hooks.progressed(msg.run_id)  # the rollout controller admits the listed machines, or the run closes
    return "scope-failed" if error else "scope-done"


def fail_poisoned_page(msg: DiscoveryMessage, deps: DiscoveryDeps, queue_name: str) -> str:
    """A page message that failed maxDequeueCount times ends its scope with the reason."""
    row = deps.store.get_scope(msg.run_id, msg.scope)
    if row is None or row.get("done") or int(row["page"]) != msg.page:
        return "ignored"
    scope = parse_scope(row["scope"], target="scope")
    return _end_scope(msg, row, deps, scope, error=(
        "PoisonMessage", f"listing this scope failed repeatedly and the message was moved to {queue_name}-poison"))
