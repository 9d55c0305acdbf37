"""``make run``: Azurite, the app on http://127.0.0.1:7071, the local event source and the
reconciler (on ``RECONCILE_SCHEDULE``, as the timer trigger runs it in Azure). Ctrl-C stops all.

With the local event source on (the default), the blob endpoint clients know,
``http://127.0.0.1:10000`` (what ``UseDevelopmentStorage=true`` names), is the event proxy
(``devtools.event_proxy``): it forwards every request to Azurite's blob service on an internal
port and delivers the events Azure would raise to ``POST /api/events``. ``LOCAL_EVENT_FEED=off``
serves without it: Azurite's blob service itself is on 10000 and no event is delivered, for
those who deliver events themselves.

The event source posts with an events key (``EVENTS_KEYS``: it can post events and nothing
else); a ``local.settings.json`` from before keys had roles has none, so one is made up for the
session. The server runs uvicorn's httptools protocol with a deadline on request headers and a
cap on their size (``GuardedHttpToolsProtocol``): uvicorn itself times out idle keep-alive
connections (``--timeout-keep-alive``) but waits for a request's headers forever, so a client
sending them a byte at a time (slowloris) would hold a connection for good, and its httptools
protocol takes a head of any size. The app bounds the body itself. httptools (a C parser) rather
than h11 (pure Python): a thousand clients long-polling one instance cost it a fraction of the
CPU per answer. Under the Functions host none of this runs: the host serves HTTP itself and hands
the worker whole requests (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from devtools.azurite import Azurite, AzuriteError, free_port, port_open
from devtools.dead_letters import BlobDeadLetters
from devtools.event_feed import MAX_ATTEMPTS, TIME_TO_LIVE, EventFeed, Webhook
from devtools.event_proxy import EventProxy
from devtools.reconcile_loop import ReconcileLoop
from shared.http import logs
from shared.settings import LOCAL_SETTINGS_FILE, PROJECT_ROOT, Settings
from shared.store.clients import DEVSTORE_ACCOUNT

APP_PORT = 7071
BLOB_PORT, QUEUE_PORT, TABLE_PORT = 10000, 10001, 10002
FEED_SWITCH = "LOCAL_EVENT_FEED"
#: The local subscription's retry policy (Event Grid's: 30 attempts, 24 hours); then it dead-letters.
FEED_MAX_ATTEMPTS = "LOCAL_EVENT_FEED_MAX_ATTEMPTS"
FEED_TTL_MINUTES = "LOCAL_EVENT_FEED_TTL_MINUTES"


def feed_enabled(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """``LOCAL_EVENT_FEED=off`` (or ``0``, ``false``, ``no``) turns the local event source off."""
    return (environ.get(FEED_SWITCH) or "on").strip().lower() not in {"off", "0", "false", "no"}


#: Seconds a client has to send a request's headers, from connecting or from its last answer.
HEADER_TIMEOUT_SECONDS = 10.0
#: Seconds an idle keep-alive connection stays open (uvicorn's own timer).
KEEP_ALIVE_SECONDS = 5


class _HeadDeadline:
    """The timer both guarded protocols arm for a request head (``_headers_too_slow`` fires)."""

    header_timeout: float = HEADER_TIMEOUT_SECONDS
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    _header_deadline: asyncio.TimerHandle | None

    def _headers_too_slow(self) -> None:
        raise NotImplementedError

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]  # the protocol's, next in the MRO
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]


class GuardedH11Protocol(_HeadDeadline, H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers do not arrive in time.

    The deadline starts when the connection opens and again after each answer; it is disarmed
    once h11 has a whole request head (``their_state`` leaves ``IDLE``).
    """

    header_timeout: float = HEADER_TIMEOUT_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.info("closed a connection that sent no whole request head in %g s", self.header_timeout)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self._disarm()


#: Bytes a request head may take (h11's own limit, which the h11 protocol enforces itself).
MAX_HEAD_BYTES = 16 * 1024


async def _head_too_large(scope: Any, receive: Any, send: Any) -> None:
    """The answer to a request whose head passed ``MAX_HEAD_BYTES``: the app never sees it."""
    body = b"Request head too large."
    await send({"type": "http.response.start", "status": 431,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class GuardedHttpToolsProtocol(_HeadDeadline, HttpToolsProtocol):
    """uvicorn's httptools protocol with ``GuardedH11Protocol``'s deadline on request heads, and
    h11's 16 KiB cap on them (httptools has none).

    The deadline starts when the connection opens and again after each answer; when it passes
    with no request in hand (none received whole, none being answered), the connection is
    closed. A head of more than ``max_head_bytes`` is answered ``431`` and the connection
    closed: a whole one by its URL and header lines, one still arriving by its bytes (counted
    from the end of the previous request, so a pipelined head counts too).
    """

    header_timeout: float = HEADER_TIMEOUT_SECONDS
    max_head_bytes: int = MAX_HEAD_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        #: Bytes received of the request head still arriving (``None``: it is whole).
        self._head_bytes: int | None = 0
        self._head_size = 0  # of the head being parsed: its URL and header lines

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        # A pipelined request being answered re-arms the deadline when its answer is complete.
        if self._head_bytes is not None and not self._answering() and not self.transport.is_closing():
            self.logger.info("closed a connection that sent no whole request head in %g s", self.header_timeout)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._head_bytes is not None:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._head_bytes is not None and self._head_bytes > self.max_head_bytes and not self.transport.is_closing():
            self.logger.info("closed a connection whose request head passed %d bytes", self.max_head_bytes)
            self._disarm()
            if not self._answering():  # else an answer is being written: no 431 in its middle
                self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
                                     b"connection: close\r\n\r\n")
            self.transport.close()

    def on_message_begin(self) -> None:
        self._head_size = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._disarm()
        if self._head_size <= self.max_head_bytes:
            super().on_headers_complete()
            return
        self.logger.info("refused a request head of more than %d bytes", self.max_head_bytes)
        app, self.app = self.app, _head_too_large
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_bytes = 0  # what comes next is the next request's head


#: How ``make run`` serves the app (``python -m uvicorn`` options): the guarded httptools protocol,
#: idle keep-alive connections closed, client addresses as connected (no X-Forwarded-For trust).
UVICORN_OPTIONS = (
    "--http", "devtools.run:GuardedHttpToolsProtocol",
    "--timeout-keep-alive", str(KEEP_ALIVE_SECONDS),
    "--no-proxy-headers", "--no-server-header",
)


def retry_policy(environ: dict[str, str] | os._Environ[str] = os.environ) -> tuple[int, float]:
    """The local event source's retry policy: attempts and time to live in seconds."""
    attempts = environ.get(FEED_MAX_ATTEMPTS, "").strip()
    minutes = environ.get(FEED_TTL_MINUTES, "").strip()
    try:
        return (max(1, int(attempts)) if attempts else MAX_ATTEMPTS,
                max(1.0, float(minutes)) * 60 if minutes else TIME_TO_LIVE)
    except ValueError:
        raise SystemExit(f"{FEED_MAX_ATTEMPTS} and {FEED_TTL_MINUTES} must be numbers") from None


def local_feed(settings: Settings, env: dict[str, str], azurite: Azurite) -> EventFeed:
    """The local event source's delivery: to the app's webhook with an events key, and what it
    gives up on to the dead-letter container (``DEADLETTER_CONTAINER``), as Event Grid does."""
    attempts, ttl = retry_policy()
    dead_letters = BlobDeadLetters(azurite.connection_string, settings.deadletter_container, DEVSTORE_ACCOUNT)
    webhook = Webhook(f"http://127.0.0.1:{APP_PORT}/api/events", session_events_key(settings, env))
    return EventFeed(webhook, max_attempts=attempts, time_to_live=ttl, dead_letters=dead_letters)


def delivery_key(settings: Settings) -> str | None:
    """The key the event source posts with: an events-only key (SPEC §10)."""
    return settings.events_keys[0] if settings.events_keys else None


def session_events_key(settings: Settings, env: dict[str, str]) -> str:
    """The events key for this session: the first of ``EVENTS_KEYS``, else one made up and put
    in the app's environment (a ``local.settings.json`` from before keys had roles has none)."""
    key = delivery_key(settings)
    if key is None:
        key = "session-" + secrets.token_urlsafe(24)
        env["EVENTS_KEYS"] = key
        logging.getLogger("make-run").warning(
            "local.settings.json sets no EVENTS_KEYS: the local event source posts with a key made up for this session "
            "(add EVENTS_KEYS to local.settings.json, see local.settings.sample.json)")
    return key


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDK logs every request at INFO
    log = logging.getLogger("make-run")
    settings = Settings.load()
    logs.protect([*settings.api_keys, *settings.read_keys, *settings.events_keys])  # this process's logs too (the proxy sees SAS URLs)
    values = json.loads(LOCAL_SETTINGS_FILE.read_text(encoding="utf-8")).get("Values", {})
    with_feed = feed_enabled()
    busy = [p for p in (APP_PORT, BLOB_PORT) if port_open(p)]
    if busy:
        log.error("port %s already in use: is another 'make run' (or Azurite) up?", ", ".join(map(str, busy)))
        return 1
    # With the event source on, Azurite's blob service moves to an internal port behind the proxy.
    azurite_blob_port = free_port() if with_feed else BLOB_PORT
    azurite = Azurite(location=PROJECT_ROOT / "azurite-data", blob_port=azurite_blob_port,
                      queue_port=QUEUE_PORT, table_port=TABLE_PORT)
    try:
        azurite.start()
    except AzuriteError as exc:
        log.error("%s", exc)
        return 1
    env = {**os.environ, **{k: str(v) for k, v in values.items() if k not in os.environ}}
    proxy: EventProxy | None = None
    if with_feed:
        feed = local_feed(settings, env, azurite)
        try:
            proxy = EventProxy(f"http://127.0.0.1:{azurite_blob_port}", feed, port=BLOB_PORT).start()
        except RuntimeError as exc:
            log.error("%s", exc)
            azurite.stop()
            return 1
        log.info("Azurite up: blob %d (through the local event source; Azurite itself on %d), queue %d, table %d "
                 "(data in azurite-data/)", BLOB_PORT, azurite_blob_port, QUEUE_PORT, TABLE_PORT)
    else:
        log.info("Azurite up: blob %d, queue %d, table %d (data in azurite-data/); %s=off: no events are delivered",
                 BLOB_PORT, QUEUE_PORT, TABLE_PORT, FEED_SWITCH)
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "shared.http.app:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(APP_PORT), "--log-level", "info", *UVICORN_OPTIONS],
        cwd=PROJECT_ROOT, env=env,
    )
    reconciler = ReconcileLoop(settings).start()
    log.info("reconciler on %r (RECONCILE_SCHEDULE)", settings.reconcile_schedule)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C or a kill: stop everything in order
        signal.signal(signum, lambda *_: stop.set())
    log.info("API on http://127.0.0.1:%d/api (key: x-functions-key or ?code= from READ_KEYS or API_KEYS; events: EVENTS_KEYS)%s", APP_PORT,
             "; the local event source delivers BlobCreated/BlobDeleted to /api/events" if with_feed else "")
    if with_feed:
        log.info("events the local event source gives up on (%s attempts or %s minutes) are dead-lettered to %s: "
                 "batch-outputs replay-deadletters indexes them", *(int(x) for x in (feed.max_attempts, feed.time_to_live / 60)),
                 settings.deadletter_container)
    log.info("Ctrl-C stops everything")
    try:
        while not stop.is_set():
            if server.poll() is not None and not stop.is_set():
                log.error("the app exited with code %s", server.returncode)
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        reconciler.stop()
        if proxy is not None:
            if proxy.feed.pending:
                proxy.drain(timeout=3)  # deliver what is in hand while the app is still up
            proxy.stop()
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        azurite.stop()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
