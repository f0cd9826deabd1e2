"""Finding the VMs in a scope: one ARM list page per queue message, like every other step.

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
from datetime import timedelta
from typing import Any

from shared.arm.errors import own_error_columns
from shared.arm.operations import Failed, Retry, classify_read
from shared.core.clock import iso, utcnow
from shared.core.errors import ArmConnectionError, ConflictError, UntrustedEndpointError, ValidationError
from shared.core.ids import ScopeRef, VmRef
from shared.core.records import MachineRecord, ScopeListing
from shared.runs.completion import complete_run_if_done
from shared.runs.dispatch import queued_target
from shared.runs.messages import DiscoveryMessage
from shared.runs.pacing import GET, paced_delay, record_call
from shared.runs.retry_policy import retry_delay, retry_limit
from shared.runs.services import Services
from shared.validation.dynamic_scope import filter_matches
from shared.validation.resource_ids import parse_vm_id
from shared.validation.scopes import parse_scope

log = logging.getLogger(__name__)


def os_type(vm: dict[str, Any]) -> str:
    return str(((vm.get("properties") or {}).get("storageProfile") or {}).get("osDisk", {}).get("osType") or "")


def discover_page(msg: DiscoveryMessage, svc: Services) -> str:
    """Process one page message. Safe to run twice."""
    row = svc.store.get_scope(msg.run_id, msg.scope)
    if row is None:
        return "missing"
    if row.get("done"):
        return "finished"
    if int(row["page"]) != msg.page:
        return "stale"
    scope = parse_scope(row["scope"], target="scope")
    if (wait := paced_delay(svc, scope.subscription_id, GET, set(GET) if msg.held else set())) is not None:
        svc.send_discovery(msg.run_id, msg.scope, msg.page, wait, held=True)  # the same page, when its token is due
        return "paced"
    try:
        url = svc.arm.ensure_trusted(row["nextLink"]) if row.get("nextLink") else svc.arm.list_vms_url(scope)
        resp = svc.arm.list_page(url)
        record_call(svc, scope.subscription_id, "listVms", resp)
    except UntrustedEndpointError as exc:
        return _end_scope(msg, row, svc, scope, error=("UntrustedNextLink", str(exc)))
    except ArmConnectionError as exc:
        return _retry(msg, row, svc, Retry("transient", None, "ConnectionError", str(exc)))
    problem = classify_read(resp, default_retry_after=svc.settings.default_retry_after_seconds)
    if isinstance(problem, Retry):
        return _retry(msg, row, svc, problem)
    if isinstance(problem, Failed):
        return _end_scope(msg, row, svc, scope, error=(problem.code, problem.message), cause=problem.detail)
    body = resp.body if isinstance(resp.body, dict) else {}
    flt = json.loads(row.get("filter") or "{}")
    vms = [vm for vm in body.get("value") or [] if filter_matches(flt, vm, os_type(vm))]
    listed = _record_page(msg.run_id, scope, vms, svc)
    next_link = str(body.get("nextLink") or "")
    try:
        if next_link:
            svc.store.update_scope(row, {"page": msg.page + 1, "nextLink": next_link, "attempts": 0,
                                         "listed": int(row.get("listed") or 0) + listed,
                                         "nextActionAt": iso(utcnow())})
            svc.send_discovery(msg.run_id, msg.scope, msg.page + 1)
            return "page"
        return _end_scope(msg, row.with_changes({"listed": int(row.get("listed") or 0) + listed}, row.etag), svc,
                          scope, error=None)
    except ConflictError:
        return "lost-race"


def _record_page(run_id: str, scope: ScopeRef, vms: list[dict[str, Any]], svc: Services) -> int:
    """Snapshot rows, target rows and step messages for one page; every write is repeatable."""
    now = iso(utcnow())
    targets: list[MachineRecord] = []
    inventory: list[tuple[VmRef, dict[str, Any]]] = []
    for vm in vms:
        try:
            ref = parse_vm_id(vm.get("id"), target="id")
        except ValidationError:
            log.warning("discovery: run %s skipped a listed resource with an unexpected id %r", run_id, vm.get("id"))
            continue
        os = os_type(vm)
        snapshot = {"resourceId": ref.resource_id, "resourceGroup": ref.resource_group, "name": ref.name,
                    "location": str(vm.get("location") or ""), "lastSeenAt": now, "lastSeenRun": run_id}
        if os:  # a merge must not blank an OS type known from before
            snapshot["osType"] = os
        # `discovered`: a VM that turns out not to be running (ARM's 409 says so when its operation is
        # posted; the list does not tell) is skipped, not failed, whatever the operation.
        target = queued_target(run_id, ref.resource_id, now, osType=os, discovered=True)
        inventory.append((ref, snapshot))
        targets.append(target)
    svc.fleet.upsert_machines(inventory)
    if inventory:
        svc.fleet.note_subscriptions({scope.subscription_id})
    for start in range(0, len(targets), 100):  # rows an earlier delivery (or another scope) made stay as they are
        svc.store.create_targets(targets[start:start + 100])
    spec = svc.run_spec(run_id)
    if spec is not None and spec.rollout:
        return len(targets)  # the rollout controller admits them once every scope is listed
    for target in targets:
        svc.send_step(run_id, target.key, 0)  # a duplicate finds seq moved on: harmless
    return len(targets)


def _retry(msg: DiscoveryMessage, row: ScopeListing, svc: Services, retry: Retry) -> str:
    attempt = int(row.get("attempts") or 0) + 1
    if attempt > retry_limit(retry, svc.settings):
        scope = parse_scope(row["scope"], target="scope")
        return _end_scope(msg, row, svc, scope, error=(retry.code, f"gave up listing after {attempt - 1} retries "
                                                                   f"({retry.kind}): {retry.message}"),
                          cause=retry.detail)
    delay = retry_delay(retry, attempt, svc.settings)
    try:
        svc.store.update_scope(row, {"attempts": attempt, "lastRetryReason": f"{retry.code}: {retry.message}"[:1000],
                                     "nextActionAt": iso(utcnow() + timedelta(seconds=delay))})
    except ConflictError:
        return "lost-race"
    svc.send_discovery(msg.run_id, msg.scope, msg.page, delay)
    return f"retry-{retry.kind}"


def _end_scope(msg: DiscoveryMessage, row: ScopeListing, svc: Services, scope: ScopeRef,
               error: tuple[str, str] | None, *, cause: dict[str, Any] | None = None) -> str:
    """`cause`: ARM's whole error behind `error` (details, innererror), kept for the scope's view."""
    changes: dict[str, Any] = {"done": True, "page": msg.page + 1, "listed": int(row.get("listed") or 0),
                               "completedAt": iso(utcnow())}
    if error:
        changes.update(own_error_columns(error[0], error[1], cause))
    else:
        # Only a complete listing may say a machine is gone: one nobody has listed since this listing began.
        changes["removed"] = svc.fleet.remove_unseen(scope.subscription_id, scope.resource_group,
                                                     listed_since=str(row.get("startedAt") or row["nextActionAt"]))
    try:
        svc.store.update_scope(row, changes)
    except ConflictError:
        return "lost-race"
    spec = svc.run_spec(msg.run_id)
    if spec is not None and spec.rollout:
        svc.hooks.advance_run(msg.run_id, svc)
    else:
        complete_run_if_done(msg.run_id, svc)
    return "scope-failed" if error else "scope-done"


def fail_poisoned_page(msg: DiscoveryMessage, svc: Services, queue_name: str) -> str:
    """A page message that failed maxDequeueCount times ends its scope with the reason."""
    row = svc.store.get_scope(msg.run_id, msg.scope)
    if row is None or row.get("done") or int(row["page"]) != msg.page:
        return "ignored"
    scope = parse_scope(row["scope"], target="scope")
    return _end_scope(msg, row, svc, scope, error=(
        "PoisonMessage", f"listing this scope failed repeatedly and the message was moved to {queue_name}-poison"))
