"""The Event Grid trigger (one event an invocation) and the anonymous health route.

Same core as the webhook: decode, index, and raise on storage trouble so Event Grid
redelivers on the subscription's retry policy. Unusable events are logged and acknowledged.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func

from shared.domain.events import SkippedEvent
from shared.domain.sources import outputs_account
from shared.store.envelopes import parse_event
from shared.store.errors import StorageAccessError, StorageBusyError

from .http_app import services

log = logging.getLogger(__name__)
blueprint = func.Blueprint()


def event_payload(event: func.EventGridEvent | func.CloudEvent) -> dict[str, Any]:
    """The trigger's event as the dict the core parses, in the schema it arrived in.

    azure-functions' converter decodes a CloudEvents 1.0 delivery (a subscription with
    ``eventDeliverySchema: CloudEventSchemaV1_0``) into ``func.CloudEvent`` and an Event Grid
    schema one into ``func.EventGridEvent``, whatever the parameter's annotation says.
    """
    if isinstance(event, func.CloudEvent):
        return {
            "specversion": event.specversion,
            "id": event.id,
            "source": event.source,
            "type": event.type,
            "subject": event.subject,
            "time": event.time.isoformat() if event.time else None,
            "datacontenttype": event.datacontenttype,
            "data": event.get_json(),
        }
    return {
        "id": event.id,
        "topic": event.topic,
        "subject": event.subject,
        "eventType": event.event_type,
        "eventTime": event.event_time.isoformat() if event.event_time else None,
        "dataVersion": event.data_version,
        "data": event.get_json(),
    }


@blueprint.function_name("index_blob_event")
@blueprint.event_grid_trigger(arg_name="event")
async def index_blob_event(event: func.EventGridEvent) -> None:
    # The worker accepts only one class as the annotation; a CloudEvents subscription still
    # hands this function a func.CloudEvent, which event_payload reads as such.
    service = await services.get()
    # Only events from the outputs account are indexed (a forged or misrouted one is skipped).
    outcome = parse_event(event_payload(event), outputs_account(service.blobs.url, service.blobs.account_name))
    if isinstance(outcome, SkippedEvent):
        log.warning("skipped event %s: %s (%s)", outcome.event_id, outcome.reason.value, outcome.detail)
        return
    try:
        report = await service.group_commit.submit(outcome)
    except StorageBusyError:
        log.warning("event %s handed back: index storage busy", outcome.event_id)
        raise
    except StorageAccessError:
        # Misconfigured (logged once, with the fix, by the store): Event Grid retries, then
        # dead-letters, and replay-deadletters indexes the event once it is fixed.
        raise
    # One line per commit (GroupCommit logs it), not per event: a delivery of 500 events
    # would otherwise send 500 records to Application Insights.
    if log.isEnabledFor(logging.DEBUG):  # not formatted 500 times a delivery for nothing
        log.debug("event %s durable; its group commit: %s", outcome.event_id, json.dumps(report.as_dict()))


#: The host does not check a key on this anonymous function, so it cannot tell who asks for
#: detail: the detailed health is ``GET /api/admin/health``, behind the host's function keys.
DETAIL_ELSEWHERE = json.dumps({"error": {
    "code": "DetailNeedsKey",
    "message": "Under Azure Functions the detailed health is GET /api/admin/health, with a function key.",
}})


@blueprint.function_name("health")
@blueprint.route(route="api/health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    if (req.params.get("detail") or "").lower() in ("true", "1"):
        return func.HttpResponse(DETAIL_ELSEWHERE, status_code=401, mimetype="application/json")
    return func.HttpResponse('{"status":"ok"}', mimetype="application/json")
