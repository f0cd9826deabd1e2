"""Every queue message contract in one place: its dataclass (or shape), its encoding and its parsing.

    queue           message            what it asks
    DISPATCH_QUEUE  DispatchMessage    create a run's machine rows and queue their first steps (or, with
                                       `advance`, have the rollout controller decide again)
    OPERATIONS_QUEUE StepMessage       one step of one machine's operation (`seq` fences duplicates)
    POLLS_QUEUE     StepMessage       the same, once its operation was claimed: a poll or a health read, which
                                       may carry the row its sender wrote (CarriedRow)
    DISCOVERY_QUEUE DiscoveryMessage   list one page of one scope of a run (`page` fences duplicates)
    EVENTS_QUEUE    delivery (a dict)  an event, a post-run hook call, or the pre-run hook of a run

Bodies are compact JSON (the queue client base64-encodes them, as the Functions queue trigger expects).
A malformed body is dropped with a log line, never retried: BadMessageError.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.core.clock import iso, parse_iso
from shared.core.errors import PatchPilotError

RUN_ID = re.compile(r"[0-9a-f]{11}-[0-9a-f]{8}")  # fullmatch: `$` would also take "…\n"
BUCKET = re.compile(r"[A-Za-z]{1,32}")
# A subscription id as machine keys hold it (MachineRef.key: case-folded GUID)
SUBSCRIPTION = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class BadMessageError(PatchPilotError, ValueError):
    """The body can never be processed; retrying it would only fill the poison queue later."""


def _encode(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"))


INT32 = (-(2**31), 2**31 - 1)  # Table storage's Edm.Int32: a larger int is read back as an Int64 EntityProperty
CARRIED_ROW_LIMIT = 32_000  # characters of JSON: Azure queue messages are <= 64 KiB, base64 takes 4/3 of that


@dataclass(frozen=True)
class CarriedRow:
    """A machine's row as the sender of a step message had just written it: the ETag Table storage returned
    and the columns it holds (what a read would give: str, bool, int32 and finite float values only).

    A start, poll or health read step acts on it instead of reading the row again, then writes with its ETag: a
    row changed since (a copy of the message won, or any other write) fails that If-Match, and the step reads the
    row and acts again. So only steps that make no ARM write (and no write to another row without confirming this
    one first) before their first write carry one (machine_worker.py CARRIED_STATES: a start's first write is its
    claim, before installPatches). A start message carries the row its release listed (shared/runs/dispatch.py
    send_starts). Costs and why: docs/performance.md."""

    etag: str
    columns: Mapping[str, str | int | float | bool]

    @classmethod
    def of(cls, etag: str, columns: Mapping[str, Any]) -> CarriedRow | None:
        """The row as a message can carry it, or None when a value would not read back the same from JSON
        (an Int64, a datetime, bytes) or there is no ETag. None values are left out: Table storage does not
        store them (a merge with one keeps the old value), and they read back as absent."""
        if not etag:
            return None
        kept: dict[str, str | int | float | bool] = {}
        for name, value in columns.items():
            if value is None:
                continue
            if not (isinstance(value, (bool, str)) or (isinstance(value, int) and INT32[0] <= value <= INT32[1])
                    or (isinstance(value, float) and math.isfinite(value))):
                return None
            kept[name] = value
        return cls(etag, kept)

    def to_json(self) -> dict[str, Any]:
        return {"etag": self.etag, "columns": dict(self.columns)}

    @classmethod
    def from_json(cls, raw: object) -> CarriedRow | None:
        """The carried row of a parsed message; None when it is not one (the step then reads the row)."""
        if not isinstance(raw, dict) or not isinstance(raw.get("etag"), str) or not isinstance(raw.get("columns"),
                                                                                                dict):
            return None
        return cls.of(raw["etag"], raw["columns"])


@dataclass(frozen=True)
class StepMessage:
    """'Do the next thing for this machine': start its operation, or poll it. `seq` fences duplicates."""

    run_id: str
    machine: str
    seq: int
    # The ARM budget buckets its tokens were reserved in when it was sent: it calls without reserving
    # those again (shared/runs/pacing.py).
    held: tuple[str, ...] = ()
    # The row as the sender wrote or listed it (a start's, poll's or health read's), so the step need not read it:
    # CarriedRow.
    row: CarriedRow | None = field(default=None, hash=False)

    def encode(self) -> str:
        """The JSON body; the carried row is left out when it would pass CARRIED_ROW_LIMIT."""
        body = {"runId": self.run_id, "machine": self.machine, "seq": self.seq,
                **({"held": list(self.held)} if self.held else {})}
        if self.row is not None:
            carried = _encode({**body, "row": self.row.to_json()})
            if len(carried) <= CARRIED_ROW_LIMIT:
                return carried
        return _encode(body)


@dataclass(frozen=True)
class PollRoundMessage:
    """'Poll every machine of this run in this subscription whose poll is due' (shared/runs/poll_rounds.py), on
    POLLS_QUEUE beside the step messages. `seq` fences duplicates: only a message whose seq the chain's round row
    still holds claims it. `subscription`: the chain's subscription id as machine keys hold it (lower case); ""
    (a message queued before chains were per subscription) polls the whole run."""

    run_id: str
    seq: int
    subscription: str = ""

    def encode(self) -> str:
        return _encode({"runId": self.run_id, "round": self.seq,
                        **({"subscription": self.subscription} if self.subscription else {})})


@dataclass(frozen=True)
class DispatchMessage:
    run_id: str
    advance: bool = False  # a rollout run: ask its controller to decide again, rather than fan out
    # a dispatched run: send the start messages of the machines whose slot is due from this time on
    # (ISO 8601, UTC) up to DISPATCH_HORIZON_SECONDS later (shared/runs/dispatch.py release_starts)
    release_from: str = ""
    plan: bool = False  # `run_id` is a plan's id: plan it (shared/plans/build.py), nothing is dispatched

    def encode(self) -> str:
        return _encode({"runId": self.run_id, **({"advance": True} if self.advance else {}),
                        **({"releaseFrom": self.release_from} if self.release_from else {}),
                        **({"plan": True} if self.plan else {})})


@dataclass(frozen=True)
class DiscoveryMessage:
    """'List page `page` of scope number `scope` of this run'; `page` fences duplicates like `seq`."""

    run_id: str
    scope: int
    page: int
    held: bool = False  # its read token was reserved when it was sent (shared/runs/pacing.py)

    def encode(self) -> str:
        return _encode({"runId": self.run_id, "scope": self.scope, "page": self.page,
                        **({"held": True} if self.held else {})})


def _load(body: str) -> dict[str, object]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise BadMessageError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadMessageError("not a JSON object")
    run_id = data.get("runId")
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise BadMessageError(f"bad runId {run_id!r}")
    return data


def parse_step(body: str) -> StepMessage:
    data = _load(body)
    machine, seq = data.get("machine"), data.get("seq")
    # MachineRef.key: "sub|rg|name" for a VM, "sub|rg|name|hybridmachines" for an Arc machine
    if not isinstance(machine, str) or not (machine.count("|") == 2 or (machine.endswith("|hybridmachines")
                                            and machine.count("|") == 3)):
        raise BadMessageError(f"bad machine {machine!r}")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise BadMessageError(f"bad seq {seq!r}")
    held = data.get("held", [])
    if not isinstance(held, list) or len(held) > 8 or not all(isinstance(h, str) and BUCKET.fullmatch(h)
                                                               for h in held):
        raise BadMessageError(f"bad held {held!r}")
    return StepMessage(str(data["runId"]), machine, seq, tuple(held), CarriedRow.from_json(data.get("row")))


def parse_poll(body: str) -> StepMessage | PollRoundMessage:
    """A message of POLLS_QUEUE: a machine's step (parse_step) or a poll round of a run's machines in one
    subscription (`{"runId", "round": seq, "subscription"}`)."""
    data = _load(body)
    if "round" not in data:
        return parse_step(body)
    seq, subscription = data["round"], data.get("subscription", "")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= INT32[1]:
        raise BadMessageError(f"bad round {seq!r}")
    if not isinstance(subscription, str) or (subscription and not SUBSCRIPTION.fullmatch(subscription)):
        raise BadMessageError(f"bad subscription {subscription!r}")
    return PollRoundMessage(str(data["runId"]), seq, subscription)


def _is_iso(value: str) -> bool:
    """The shape shared.core.clock.iso writes (fixed width, UTC), read back by parse_iso."""
    try:
        return len(value) <= 40 and iso(parse_iso(value)) == value
    except ValueError:
        return False


def parse_dispatch(body: str) -> DispatchMessage:
    data = _load(body)
    release_from = data.get("releaseFrom", "")
    if not isinstance(release_from, str) or (release_from and not _is_iso(release_from)):
        raise BadMessageError(f"bad releaseFrom {release_from!r}")
    return DispatchMessage(str(data["runId"]), data.get("advance") is True, release_from, data.get("plan") is True)


def parse_discovery(body: str) -> DiscoveryMessage:
    data = _load(body)
    scope, page = data.get("scope"), data.get("page")
    for name, value in (("scope", scope), ("page", page)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise BadMessageError(f"bad {name} {value!r}")
    assert isinstance(scope, int) and isinstance(page, int)
    return DiscoveryMessage(str(data["runId"]), scope, page, data.get("held") is True)


DELIVERY_KINDS = ("event", "posthook", "prehook")


def encode_delivery(message: dict[str, Any]) -> str:
    """`{"kind": "event"|"posthook", "url", "body", "attempt"?}` or `{"kind": "prehook", "runId"}`."""
    return _encode(message)


def parse_delivery(body: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise BadMessageError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("kind") not in DELIVERY_KINDS:
        raise BadMessageError("not a delivery message")
    if data["kind"] == "prehook" and not isinstance(data.get("runId"), str):
        raise BadMessageError("a prehook message needs runId")
    if data["kind"] != "prehook" and not isinstance(data.get("url"), str):
        raise BadMessageError("a delivery needs url")
    return data
