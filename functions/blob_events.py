"""The Event Grid trigger (one event an invocation) and the anonymous health route.

Same core as the webhook: decode, index, and raise on storage trouble so Event Grid
redelivers on the subscription's retry policy. Unusable events are logged and acknowledged.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func

from shared.domain.events import SkippedEvent, SkipReason
from shared.domain.sources import outputs_account
from shared.store.envelopes import parse_event
from shared.store.errors import StorageAccessError, StorageBusyError

from .http_app import services

log = logging.getLogger(__name__)
blueprint = func.Blueprint()


def event_of(text: str | bytes) -> dict[str, Any] | None:
    """The event the trigger was handed, as the dict the core parses (None: not an event object)."""
    try:
        event = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return event if isinstance(event, dict) else None


@blueprint.function_name("index_blob_event")
@blueprint.event_grid_trigger(arg_name="event")
async def index_blob_event(event: str) -> None:
    # Annotated ``str``, the worker hands over the event's JSON as the host sent it: a str or
    # bytes parameter takes the worker's *generic* binding, which passes the data through
    # (azure-functions-python-worker, functions.py and bindings/generic.py). Typed
    # func.EventGridEvent, every event went through azure-functions' EventGridEventInConverter,
    # which tries up to twelve strptime formats for the event time against a regex cache of five
    # (CPython 3.11): 44% of the trigger's CPU in ``make bench``. The core reads both schemas
    # (Event Grid and CloudEvents 1.0) from the JSON, as the webhook does.
    payload = event_of(event)
    if payload is None:
        log.warning("skipped an event: %s (the trigger's data is not a JSON object)", SkipReason.MALFORMED.value)
        return
    service = await services.get()
    # Only events from the outputs account are indexed (a forged or misrouted one is skipped).
    outcome = parse_event(payload, outputs_account(service.blobs.url, service.blobs.account_name))
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


#: This function stays free of the app's settings (liveness must answer while they are broken),
#: so it does not check who asks for detail: that is ``GET /api/admin/health``, an admin's.
DETAIL_ELSEWHERE = json.dumps({"error": {
    "code": "DetailNeedsKey",
    "message": "Under Azure Functions the detailed health is GET /api/admin/health, with an admin key or token.",
}})


@blueprint.function_name("health")
@blueprint.route(route="api/health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    if (req.params.get("detail") or "").lower() in ("true", "1"):
        return func.HttpResponse(DETAIL_ELSEWHERE, status_code=401, mimetype="application/json")
    return func.HttpResponse('{"status":"ok"}', mimetype="application/json")
