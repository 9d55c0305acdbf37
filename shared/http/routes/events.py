"""``POST /api/events``: the Event Grid webhook (SPEC §3), and the CloudEvents handshake."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response

from shared.domain.events import EventPayloadError, decode_body
from shared.store.envelopes import parse_events
from shared.store.errors import StorageBusyError

from ..dependencies import ServiceDep
from ..errors import ApiError, error_statuses
from ..schemas import IngestResult, ValidationResponse

log = logging.getLogger(__name__)

#: Event Grid waits 30 s for an answer; answer well within it (a late 503 is redelivered).
WEBHOOK_DEADLINE_SECONDS = 20.0

router = APIRouter(tags=["events"])

_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]}},
    "application/cloudevents+json": {"schema": {"type": "object"}},
    "application/cloudevents-batch+json": {"schema": {"type": "array", "items": {"type": "object"}}},
}}}


@router.post(
    "/api/events",
    response_model=IngestResult | ValidationResponse,
    response_model_exclude_unset=True,
    responses=error_statuses(400, 401, 413, 429, 503),
    openapi_extra=_BODY,
)
async def events(request: Request, svc: ServiceDep) -> IngestResult | ValidationResponse:
    """The Event Grid webhook: BlobCreated/BlobDeleted in either schema, one or an array."""
    body = await request.body()
    try:
        batch = parse_events(decode_body(body))
    except EventPayloadError as exc:
        raise ApiError(400, "InvalidEvents", str(exc)) from exc
    if batch.validation_code is not None:
        log.info("Event Grid subscription validation answered")
        return ValidationResponse(validationResponse=batch.validation_code)
    for skipped in batch.skipped:
        log.warning("skipped event %s: %s (%s)", skipped.event_id, skipped.reason.value, skipped.detail)
    try:
        report = await asyncio.wait_for(svc.ingest(batch), WEBHOOK_DEADLINE_SECONDS)
    except TimeoutError as exc:
        raise StorageBusyError("delivery not indexed within the webhook deadline") from exc
    return IngestResult.model_validate(report.as_dict())


@router.options("/api/events", status_code=200, response_class=Response)
async def events_handshake(request: Request) -> Response:
    """CloudEvents 1.0 abuse-protection handshake (WebHook-Request-Origin)."""
    origin = request.headers.get("webhook-request-origin")
    if not origin:
        raise ApiError(400, "InvalidHandshake", "WebHook-Request-Origin header is required.")
    return Response(
        status_code=200,
        headers={"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*", "Allow": "POST, OPTIONS"},
    )
