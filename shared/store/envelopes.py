"""Event envelopes decoded with the SDK's own models (``azure.eventgrid.EventGridEvent``,
``azure.core.messaging.CloudEvent``); the blob view on top is ``shared.domain.events``.

An Event Grid event of the documented shape skips the SDK model (``grid_envelope``): a
webhook delivery holds hundreds of events, and the model's deserializer costs more than
indexing them. Anything unusual goes through the SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent

from shared.domain import events
from shared.domain.events import BlobEvent, Envelope, EventBatch, NamespaceEvent, SkippedEvent, grid_envelope


def read_envelope(item: Mapping[str, Any]) -> Envelope:
    """Type, subject, data and time of one event dict in either schema; raises when malformed."""
    if isinstance(item.get("specversion"), str):
        cloud: CloudEvent[Any] = CloudEvent.from_dict(dict(item))
        return Envelope(cloud.type, cloud.subject, cloud.data, cloud.time)
    fast = grid_envelope(item)
    if fast is not None:
        return fast
    grid = EventGridEvent.from_dict(dict(item))
    return Envelope(grid.event_type, grid.subject, grid.data, grid.event_time)


def parse_event(item: Mapping[str, Any]) -> BlobEvent | NamespaceEvent | SkippedEvent:
    """One event dict as a ``BlobEvent``, or why it is skipped."""
    return events.parse_event(item, read_envelope)


def parse_events(payload: Any) -> EventBatch:
    """A delivery (one event or an array, either schema) as an ``EventBatch``."""
    return events.parse_events(payload, read_envelope)
