"""The delivery half of the local event source: Storage events shaped as Azure shapes them,
delivered to a webhook the way an Event Grid subscription with batching delivers them.

Azurite emits no events. ``devtools.event_proxy.EventProxy`` sits in front of Azurite's blob
endpoint, sees every operation and decides what Azure would emit for it; this module builds
those events (Event Grid schema, ``blob_event``), numbers them (``Sequencer``) and delivers them
(``EventFeed``):

* events are delivered in the order they were published (so per blob in sequencer order), in
  batches of up to ``batch_size``, the first within ``linger`` seconds of being published;
* a batch that fails (connection refused because the app is not up yet, a timeout, any answer
  but 2xx and the dead-letter codes, e.g. 429/503) is retried with capped exponential backoff,
  honouring ``Retry-After``: never dropped, never reordered;
* ``400``/``401``/``403``/``413`` are what Event Grid dead-letters: logged loudly and dropped.

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

log = logging.getLogger("event-feed")

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
BLOB_DELETED = "Microsoft.Storage.BlobDeleted"
TOPIC = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local"
    "/providers/Microsoft.Storage/storageAccounts/{account}"
)
#: Event Grid does not retry these: the events go to the dead-letter container.
DEAD_LETTER_STATUSES = frozenset({400, 401, 403, 413})

Event = dict[str, Any]
#: Delivers one batch; raising (anything) hands the batch back for redelivery later.
Deliver = Callable[[list[Event]], Awaitable[None]]


class DeadLettered(Exception):
    """The target refused the batch for good (what Event Grid dead-letters): do not retry."""


class HandedBack(Exception):
    """The target asked for redelivery later (e.g. 429/503), optionally after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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
                raise DeadLettered(f"{response.status}: {body[:300]}")
            retry_after = response.headers.get("Retry-After")
            raise HandedBack(
                f"{response.status}: {body[:200]}",
                float(retry_after) if retry_after and retry_after.isdigit() else None,
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
    ) -> None:
        self.deliver = deliver
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
                log.error("%d events dead-lettered (not retried, as Event Grid would not): %s", len(batch), exc)
                self.dead_lettered += len(batch)
            except Exception as exc:
                # Not delivered: put the batch back in front, in order, and retry later.
                self._queue.extendleft(reversed(batch))
                self._in_flight = 0
                self.failures += 1
                delay = min(backoff, self.max_backoff)
                if isinstance(exc, HandedBack) and exc.retry_after is not None:
                    delay = min(max(delay, exc.retry_after), self.max_backoff)
                log.log(
                    logging.WARNING if self.failures % 10 == 1 else logging.DEBUG,
                    "%d events not delivered (%s: %s); retrying in %.1fs",
                    len(batch), type(exc).__name__, exc, delay,
                )
                backoff = min(backoff * 2, self.max_backoff)
                await asyncio.sleep(delay)
                continue
            else:
                self.delivered += len(batch)
            self._in_flight = 0
            backoff = self.first_backoff
