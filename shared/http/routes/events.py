"""``POST /api/events``: the Event Grid webhook (SPEC §3), and the CloudEvents handshake.

Guarded by an events key (``EVENTS_KEYS``), which can do nothing else. The body is read with its
limit enforced as it arrives (a declared or streamed body over the limit is answered 413 without
reading the rest) and within a deadline (a client trickling its body gets 408). Events whose
topic or URLs name another storage account than the outputs account are skipped and counted
(``foreign-account``).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter, Request
from fastapi.responses import Response

from shared.domain.events import MAX_PAYLOAD_BYTES, EventBatch, EventPayloadError, PayloadTooLargeError, decode_body
from shared.domain.sources import outputs_account
from shared.service import Service
from shared.store.envelopes import parse_events
from shared.store.errors import StorageBusyError

from ..dependencies import ServiceDep
from ..errors import ApiError, error_statuses
from ..schemas import IngestResult, ValidationResponse

log = logging.getLogger(__name__)

#: Event Grid waits 30 s for an answer; answer well within it (a late 503 is redelivered).
WEBHOOK_DEADLINE_SECONDS = 20.0
#: A delivery of 16 MiB arrives in well under this; a client slower than that holds a connection.
BODY_READ_SECONDS = 10.0
#: Skipped events logged one by one per delivery; the rest are counted in one line.
LOGGED_SKIPS = 10

router = APIRouter(tags=["events"])

#: Deliveries decoded at once per process. Decoding runs off the event loop, so API reads are
#: served meanwhile, and at most this many at a time, so a flood of large bodies queues here
#: (each already bounded by ``decode_body``) instead of taking every core and the memory.
PARSER_THREADS = 2
_PARSERS = ThreadPoolExecutor(max_workers=PARSER_THREADS, thread_name_prefix="delivery-parser")


def decode_delivery(body: bytes, account: str | None) -> EventBatch:
    """A delivery's bytes as an ``EventBatch`` (runs in a parser thread)."""
    log.debug("decoding a delivery of %d bytes", len(body))
    return parse_events(decode_body(body), account)

_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]}},
    "application/cloudevents+json": {"schema": {"type": "object"}},
    "application/cloudevents-batch+json": {"schema": {"type": "array", "items": {"type": "object"}}},
}}}


def _too_large(size: str) -> ApiError:
    # Close the connection: the rest of the body is never read.
    return ApiError(413, "PayloadTooLarge", f"A delivery is at most {MAX_PAYLOAD_BYTES} bytes; this one is {size}.",
                    {"Connection": "close"})


async def read_body(request: Request) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed the limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_PAYLOAD_BYTES:
        raise _too_large(f"{declared} bytes")
    body = bytearray()

    async def read() -> None:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > MAX_PAYLOAD_BYTES:
                raise _too_large("larger")

    try:
        await asyncio.wait_for(read(), BODY_READ_SECONDS)
    except TimeoutError as exc:
        raise ApiError(408, "RequestTimeout", f"The body did not arrive within {BODY_READ_SECONDS:g} s.",
                       {"Connection": "close"}) from exc
    return bytes(body)


def trusted_account(svc: Service) -> str | None:
    """The account events must come from: the outputs account (None: it cannot be told, so
    events are not checked for their source, and that is logged)."""
    account = outputs_account(svc.blobs.url, svc.blobs.account_name)
    if account is None:
        log.warning("the outputs endpoint %s names no account: events are not checked for their source", svc.blobs.url)
    return account


def _log_skips(batch: EventBatch) -> None:
    for skipped in batch.skipped[:LOGGED_SKIPS]:
        log.warning("skipped event %s: %s (%s)", skipped.event_id, skipped.reason.value, skipped.detail)
    if len(batch.skipped) > LOGGED_SKIPS:
        log.warning("skipped %d more events of this delivery", len(batch.skipped) - LOGGED_SKIPS)


@router.post(
    "/api/events",
    response_model=IngestResult | ValidationResponse,
    response_model_exclude_unset=True,
    responses=error_statuses(400, 401, 408, 413, 429, 503),
    openapi_extra=_BODY,
)
async def events(request: Request, svc: ServiceDep) -> IngestResult | ValidationResponse:
    """The Event Grid webhook: BlobCreated/BlobDeleted in either schema, one or an array."""
    body = await read_body(request)
    account = trusted_account(svc)
    try:
        batch = await asyncio.get_running_loop().run_in_executor(_PARSERS, decode_delivery, body, account)
    except PayloadTooLargeError as exc:
        raise ApiError(413, "PayloadTooLarge", f"{exc}.", {"Connection": "close"}) from exc
    except EventPayloadError as exc:
        raise ApiError(400, "InvalidEvents", str(exc)) from exc
    if batch.validation_code is not None:
        log.info("Event Grid subscription validation answered")
        if not (batch.blob_events or batch.namespace_events or batch.skipped):
            return ValidationResponse(validationResponse=batch.validation_code)
    _log_skips(batch)
    try:
        report = await asyncio.wait_for(svc.ingest(batch), WEBHOOK_DEADLINE_SECONDS)
    except TimeoutError as exc:
        raise StorageBusyError("delivery not indexed within the webhook deadline") from exc
    answer = report.as_dict()
    if batch.validation_code is not None:
        answer["validationResponse"] = batch.validation_code  # the handshake, and the events beside it
    return IngestResult.model_validate(answer)


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
