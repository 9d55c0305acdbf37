"""The delivery half of the local event source: Storage events shaped as Azure shapes them,
delivered to a webhook the way an Event Grid subscription with batching delivers them.

Azurite emits no events. ``devtools.event_proxy.EventProxy`` sits in front of Azurite's blob
endpoint, sees every operation and decides what Azure would emit for it; this module builds
those events (Event Grid schema, ``blob_event``), numbers them (``Sequencer``) and delivers them
(``EventFeed``):

* events are delivered in the order they were published (so per blob in sequencer order), in
  batches of up to ``batch_size``, the first within ``linger`` seconds of being published;
* a batch that fails (connection refused because the app is not up yet, a timeout, any answer
  but 2xx and the dead-letter codes, e.g. 429/500/503) is retried with capped exponential
  backoff, honouring ``Retry-After``, never reordered, as Event Grid's retry policy does: until an
  event has had ``max_attempts`` deliveries or is older than ``time_to_live`` seconds (30 and
  24 hours by default, the subscription's; ``make run`` reads ``LOCAL_EVENT_FEED_MAX_ATTEMPTS``
  and ``LOCAL_EVENT_FEED_TTL_MINUTES``). Then it is dead-lettered;
* ``400``/``401``/``403``/``413`` are what Event Grid dead-letters at once.

Dead-lettered events go to ``dead_letters`` (``devtools.dead_letters.BlobDeadLetters`` under
``make run``: the dead-letter container, in Event Grid's format, with ``deadLetterReason``,
``deliveryAttempts``, ``lastDeliveryOutcome``, ...); without one they are logged and dropped.

The delivery target is pluggable: ``Webhook`` posts to ``/api/events`` with an events key
(``EVENTS_KEYS``: it posts events and nothing else; an API key gets 401 there);
tests pass any ``async def deliver(batch)`` (raise to have the batch redelivered later).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import aiohttp

from shared.domain.deadletters import dead_lettered

log = logging.getLogger("event-feed")

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
BLOB_DELETED = "Microsoft.Storage.BlobDeleted"
TOPIC = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local"
    "/providers/Microsoft.Storage/storageAccounts/{account}"
)
#: Event Grid does not retry these: the events go to the dead-letter container.
DEAD_LETTER_STATUSES = frozenset({400, 401, 403, 413})
#: Event Grid's default retry policy (the Bicep's subscription has the same).
MAX_ATTEMPTS = 30
TIME_TO_LIVE = 24 * 3600.0
#: ``lastDeliveryOutcome`` by status, as Event Grid writes it.
_OUTCOMES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 408: "TimedOut",
             413: "RequestEntityTooLarge", 429: "Busy", 503: "Busy"}

Event = dict[str, Any]
#: Delivers one batch; raising (anything) hands the batch back for redelivery later.
Deliver = Callable[[list[Event]], Awaitable[None]]
#: Stores dead-lettered events (each with its delivery record) as one dead-letter blob.
DeadLetters = Callable[[list[Event]], Awaitable[Any]]


class DeadLettered(Exception):
    """The target refused the batch for good (what Event Grid dead-letters): do not retry."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class HandedBack(Exception):
    """The target asked for redelivery later (e.g. 429/503), optionally after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


def _outcome(exc: BaseException) -> tuple[str, int | None]:
    """``lastDeliveryOutcome`` and ``lastHttpStatusCode`` of a failed delivery."""
    status = getattr(exc, "status", None)
    if status is not None:
        return _OUTCOMES.get(status, "GenericError"), status
    return ("TimedOut" if isinstance(exc, asyncio.TimeoutError | TimeoutError) else "GenericError"), None


class Sequencer:
    """Opaque, strictly increasing sequencers: 32 digits, compared as strings.

    Seeded from the clock so a restarted ``make run`` keeps increasing past the sequencers it
    already indexed (the index ignores an event older than the one it holds for a blob). The
    digits are decimal, like the former polling feed's, so existing local indexes keep working.
    """

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> str:
        self._last = max(self._last + 1, time.time_ns())
        return f"{self._last:032d}"


def blob_event(
    event_type: str,
    *,
    account: str,
    container: str,
    blob: str,
    api: str,
    url: str,
    sequencer: str,
    blob_type: str,
    content_type: str | None,
    request_id: str | None,
    client_request_id: str | None,
    etag: str | None = None,
    content_length: int | None = None,
    batch_id: str | None = None,
    event_time: datetime | None = None,
) -> Event:
    """One Storage event in the Event Grid schema, with the fields Azure sends for it.

    BlobCreated carries ``eTag`` and ``contentLength``; BlobDeleted carries neither.
    """
    data: dict[str, Any] = {"api": api}
    if client_request_id:
        data["clientRequestId"] = client_request_id
    data["requestId"] = request_id or str(uuid.uuid4())
    if event_type == BLOB_CREATED:
        data["eTag"] = etag
    data["contentType"] = content_type or "application/octet-stream"
    if event_type == BLOB_CREATED:
        data["contentLength"] = content_length
    data["blobType"] = blob_type
    data["url"] = url
    data["sequencer"] = sequencer
    data["storageDiagnostics"] = {"batchId": batch_id or str(uuid.uuid4())}
    when = (event_time or datetime.now(timezone.utc)).isoformat().replace("+00:00", "Z")
    return {
        "id": str(uuid.uuid4()),
        "topic": TOPIC.format(account=account),
        "subject": f"/blobServices/default/containers/{container}/blobs/{blob}",
        "eventType": event_type,
        "eventTime": when,
        "dataVersion": "",
        "metadataVersion": "1",
        "data": data,
    }


class Webhook:
    """Delivers batches to an Event Grid webhook endpoint, e.g. the app's ``/api/events``, with an
    events key (``make run`` passes the first of ``EVENTS_KEYS``)."""

    def __init__(self, endpoint: str, key: str | None = None, timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        self.headers = {"x-functions-key": key} if key else {}
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, batch: list[Event]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        async with self._session.post(self.endpoint, json=batch, headers=self.headers) as response:
            body = await response.text()
            if 200 <= response.status < 300:
                return
            if response.status in DEAD_LETTER_STATUSES:
                raise DeadLettered(f"{response.status}: {body[:300]}", response.status)
            retry_after = response.headers.get("Retry-After")
            raise HandedBack(
                f"{response.status}: {body[:200]}",
                float(retry_after) if retry_after and retry_after.isdigit() else None,
                response.status,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class EventFeed:
    """An in-order queue of events and the task that delivers it (run it in an event loop)."""

    def __init__(
        self,
        deliver: Deliver,
        *,
        batch_size: int = 500,
        linger: float = 0.05,
        first_backoff: float = 0.2,
        max_backoff: float = 2.0,
        max_attempts: int = MAX_ATTEMPTS,
        time_to_live: float = TIME_TO_LIVE,
        dead_letters: DeadLetters | None = None,
    ) -> None:
        self.deliver = deliver
        self.max_attempts = max_attempts
        self.time_to_live = time_to_live
        self.dead_letters = dead_letters
        #: Per event (by position in the queue, keyed by ``id``): deliveries tried, when published.
        self._attempts: dict[str, int] = {}
        self._published: dict[str, float] = {}
        self.batch_size = batch_size
        self.linger = linger
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.sequencer = Sequencer()
        self.delivered = 0
        self.dead_lettered = 0
        self.failures = 0
        self._queue: deque[Event] = deque()
        self._in_flight = 0
        self._wake: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None

    @property
    def pending(self) -> int:
        """Events published and not yet delivered (or dead-lettered)."""
        return len(self._queue) + self._in_flight

    def publish(self, event: Event) -> None:
        """Queue one event for delivery (call from the feed's event loop)."""
        self._published[event["id"]] = time.time()
        self._queue.append(event)
        self._events()[0].set()
        self._events()[1].clear()

    def _events(self) -> tuple[asyncio.Event, asyncio.Event]:
        if self._wake is None or self._idle is None:
            self._wake, self._idle = asyncio.Event(), asyncio.Event()
            self._idle.set()
        return self._wake, self._idle

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything published so far is delivered; False on timeout."""
        _, idle = self._events()
        try:
            await asyncio.wait_for(idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """Deliver forever (until cancelled)."""
        wake, idle = self._events()
        backoff = self.first_backoff
        while True:
            if not self._queue:
                idle.set()
                wake.clear()
                await wake.wait()
                if self.linger:
                    await asyncio.sleep(self.linger)  # let a burst of operations share a batch
            batch = [self._queue[i] for i in range(min(self.batch_size, len(self._queue)))]
            self._in_flight = len(batch)
            for _ in batch:
                self._queue.popleft()
            try:
                await self.deliver(batch)
            except asyncio.CancelledError:
                self._queue.extendleft(reversed(batch))
                self._in_flight = 0
                raise
            except DeadLettered as exc:
                self._queue.extendleft(reversed(await self._give_up(batch, exc, at_once=True)))
            except Exception as exc:
                retry = await self._give_up(batch, exc, at_once=False)
                self._in_flight = 0
                if not retry:
                    continue  # all of it dead-lettered: nothing to wait for
                # Not delivered: put the rest back in front, in order, and retry later.
                self._queue.extendleft(reversed(retry))
                self.failures += 1
                delay = min(backoff, self.max_backoff)
                if isinstance(exc, HandedBack) and exc.retry_after is not None:
                    delay = min(max(delay, exc.retry_after), self.max_backoff)
                log.log(
                    logging.WARNING if self.failures % 10 == 1 else logging.DEBUG,
                    "%d events not delivered (%s: %s); retrying in %.1fs",
                    len(retry), type(exc).__name__, exc, delay,
                )
                backoff = min(backoff * 2, self.max_backoff)
                await asyncio.sleep(delay)
                continue
            else:
                self.delivered += len(batch)
                self._forget(batch)
            self._in_flight = 0
            backoff = self.first_backoff

    def _forget(self, events: list[Event]) -> None:
        for event in events:
            self._attempts.pop(event["id"], None)
            self._published.pop(event["id"], None)

    async def _give_up(self, batch: list[Event], exc: BaseException, *, at_once: bool) -> list[Event]:
        """Count a failed delivery; dead-letter what Event Grid would give up on now. Returns
        the events to retry."""
        now = time.time()
        expired: dict[str, list[Event]] = {}
        retry: list[Event] = []
        for event in batch:
            attempts = self._attempts[event["id"]] = self._attempts.get(event["id"], 0) + 1
            if at_once:
                expired.setdefault("UndeliverableDueToHttpBadRequest" if getattr(exc, "status", None) == 400
                                   else "UndeliverableDueToClientError", []).append(event)
            elif attempts >= self.max_attempts:
                expired.setdefault("MaxDeliveryAttemptsExceeded", []).append(event)
            elif now - self._published.get(event["id"], now) > self.time_to_live:
                expired.setdefault("TimeToLiveExceeded", []).append(event)
            else:
                retry.append(event)
        outcome, status = _outcome(exc)
        for reason, events in expired.items():
            letters = [dead_lettered(e, reason=reason, attempts=self._attempts[e["id"]], outcome=outcome, status=status,
                                     published=datetime.fromtimestamp(self._published.get(e["id"], now), timezone.utc),
                                     last_attempt=datetime.fromtimestamp(now, timezone.utc)) for e in events]
            try:
                if self.dead_letters is None:
                    log.error("%d events dead-lettered and dropped (%s, no dead-letter container): %s", len(events), reason, exc)
                else:
                    await self.dead_letters(letters)
            except Exception as failure:  # the container is unreachable: keep them, try again later
                log.error("could not dead-letter %d events (%s): retrying later", len(events), failure)
                kept = {id(e) for e in events + retry}
                retry = [e for e in batch if id(e) in kept]
                continue
            self.dead_lettered += len(events)
            self._forget(events)
        return retry
