"""Building events (CloudEvents 1.0 JSON, or Event Grid's schema) and queuing their delivery.

Event ids derive from what happened (type, subject, a key), so an event emitted twice by a worker
that ran twice has one id and a receiver can drop the copy.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from shared.core.clock import iso, utcnow
from shared.core.settings import Settings

SOURCE = "/patchpilot"


class DeliveryQueue(Protocol):
    """Where deliveries are queued (the run machinery's Services provides it)."""

    @property
    def settings(self) -> Settings: ...

    def send_delivery(self, message: dict[str, Any], delay_seconds: int = 0) -> None: ...

NAMESPACE = uuid.UUID("3c5b0f6e-8a47-4d3c-9a4e-0d1f7a5e2b10")


def event_id(event_type: str, subject: str, key: str = "") -> str:
    return str(uuid.uuid5(NAMESPACE, f"{event_type}|{subject}|{key}"))


def build(event_type: str, subject: str, data: dict[str, Any], *, schema: str, key: str = "") -> Any:
    ident, now = event_id(event_type, subject, key), iso(utcnow())
    if schema.lower() == "eventgrid":  # Event Grid takes an array; a Logic App's Event Grid trigger reads it
        return [{"id": ident, "eventType": event_type, "subject": subject, "eventTime": now, "data": data,
                 "dataVersion": "1.0"}]
    return {"specversion": "1.0", "id": ident, "source": SOURCE, "type": event_type, "subject": subject,
            "time": now, "datacontenttype": "application/json", "data": data}


def emit(deps: DeliveryQueue, event_type: str, subject: str, data: dict[str, Any], *, key: str = "") -> int:
    """Queue one delivery per configured webhook; returns how many. No webhooks: nothing at all."""
    settings = deps.settings
    for url in settings.events.webhooks:
        deps.send_delivery({"kind": "event", "url": url,
                           "body": build(event_type, subject, data, schema=settings.events.schema, key=key)})
    return len(settings.events.webhooks)


def run_subject(run_id: str) -> str:
    return f"/runs/{run_id}"
