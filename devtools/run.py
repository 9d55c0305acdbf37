"""``make run``: Azurite, the app on http://127.0.0.1:7071, the local event source and the
reconciler (on ``RECONCILE_SCHEDULE``, as the timer trigger runs it in Azure). Ctrl-C stops all.

With the local event source on (the default), the blob endpoint clients know,
``http://127.0.0.1:10000`` (what ``UseDevelopmentStorage=true`` names), is the event proxy
(``devtools.event_proxy``): it forwards every request to Azurite's blob service on an internal
port and delivers the events Azure would raise to ``POST /api/events``. ``LOCAL_EVENT_FEED=off``
serves without it: Azurite's blob service itself is on 10000 and no event is delivered, for
those who deliver events themselves.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from devtools.azurite import Azurite, AzuriteError, free_port, port_open
from devtools.event_feed import EventFeed, Webhook
from devtools.event_proxy import EventProxy
from devtools.reconcile_loop import ReconcileLoop
from shared.settings import LOCAL_SETTINGS_FILE, PROJECT_ROOT, Settings

APP_PORT = 7071
BLOB_PORT, QUEUE_PORT, TABLE_PORT = 10000, 10001, 10002
FEED_SWITCH = "LOCAL_EVENT_FEED"


def feed_enabled(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """``LOCAL_EVENT_FEED=off`` (or ``0``, ``false``, ``no``) turns the local event source off."""
    return (environ.get(FEED_SWITCH) or "on").strip().lower() not in {"off", "0", "false", "no"}


def delivery_key(settings: Settings) -> str | None:
    """The key the event source posts with: an events-only key when there is one (SPEC §10)."""
    for keys in (getattr(settings, "events_keys", ()), settings.api_keys):
        if keys:
            return str(keys[0])
    return None


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDK logs every request at INFO
    log = logging.getLogger("make-run")
    settings = Settings.load()
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
    proxy: EventProxy | None = None
    if with_feed:
        feed = EventFeed(Webhook(f"http://127.0.0.1:{APP_PORT}/api/events", delivery_key(settings)))
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
    env = {**os.environ, **{k: str(v) for k, v in values.items() if k not in os.environ}}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "shared.http.app:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(APP_PORT), "--log-level", "info"],
        cwd=PROJECT_ROOT, env=env,
    )
    reconciler = ReconcileLoop(settings).start()
    log.info("reconciler on %r (RECONCILE_SCHEDULE)", settings.reconcile_schedule)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C or a kill: stop everything in order
        signal.signal(signum, lambda *_: stop.set())
    log.info("API on http://127.0.0.1:%d/api (key: x-functions-key or ?code= from API_KEYS)%s", APP_PORT,
             "; the local event source delivers BlobCreated/BlobDeleted to /api/events" if with_feed else "")
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
