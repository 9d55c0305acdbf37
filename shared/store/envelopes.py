"""Event envelopes decoded with the SDK's own models (``azure.eventgrid.EventGridEvent``,
``azure.core.messaging.CloudEvent``); the blob view on top is ``shared.domain.events``.

An Event Grid event of the documented shape skips the SDK model (``grid_envelope``): a
webhook delivery holds hundreds of events, and the model's deserializer costs more than
indexing them. Anything unusual goes through the SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent

from shared.domain import events
from shared.domain.events import BlobEvent, Envelope, EventBatch, NamespaceEvent, SkippedEvent, grid_envelope


def _cloud_time(text: Any, parsed: Any) -> Any:
    """A CloudEvent's ``time`` with its UTC offset: azure-core's deserializer drops the offset
    (``...T10:00:00+02:00`` reads as 10:00 UTC), so an RFC 3339 time is read here first."""
    if isinstance(text, str):
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    return parsed


def read_envelope(item: Mapping[str, Any]) -> Envelope:
    """Type, subject, data and time of one event dict in either schema; raises when malformed."""
    if isinstance(item.get("specversion"), str):
        cloud: CloudEvent[Any] = CloudEvent.from_dict(dict(item))
        return Envelope(cloud.type, cloud.subject, cloud.data, _cloud_time(item.get("time"), cloud.time))
    fast = grid_envelope(item)
    if fast is not None:
        return fast
    grid = EventGridEvent.from_dict(dict(item))
    return Envelope(grid.event_type, grid.subject, grid.data, grid.event_time)


def parse_event(item: Mapping[str, Any], account: str | None = None) -> BlobEvent | NamespaceEvent | SkippedEvent:
    """One event dict as a ``BlobEvent``, or why it is skipped (``account``: see ``events.parse_event``)."""
    return events.parse_event(item, read_envelope, account)


def parse_events(payload: Any, account: str | None = None) -> EventBatch:
    """A delivery (one event or an array, either schema) as an ``EventBatch``; with ``account``,
    events from another storage account are skipped as ``foreign-account``."""
    return events.parse_events(payload, read_envelope, account)
