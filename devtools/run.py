"""``make run``: Azurite, the app on http://127.0.0.1:7071 and the local event feed. Ctrl-C stops all."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from azure.storage.blob import BlobServiceClient

from devtools.azurite import Azurite, AzuriteError, port_open
from devtools.event_feed import EventFeed
from shared.settings import LOCAL_SETTINGS_FILE, PROJECT_ROOT, Settings
from shared.store.clients import development_storage

APP_PORT = 7071


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDK logs every request at INFO
    log = logging.getLogger("make-run")
    settings = Settings.load()
    values = json.loads(LOCAL_SETTINGS_FILE.read_text(encoding="utf-8")).get("Values", {})
    azurite = Azurite(location=PROJECT_ROOT / "azurite-data", blob_port=10000, queue_port=10001, table_port=10002)
    if port_open(APP_PORT):
        log.error("port %d is already in use: is another 'make run' up?", APP_PORT)
        return 1
    try:
        azurite.start()
    except AzuriteError as exc:
        log.error("%s", exc)
        return 1
    log.info("Azurite up: blob 10000, queue 10001, table 10002 (data in azurite-data/)")
    env = {**os.environ, **{k: str(v) for k, v in values.items() if k not in os.environ}}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "shared.http.app:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(APP_PORT), "--log-level", "info"],
        cwd=PROJECT_ROOT, env=env,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    key = settings.api_keys[0] if settings.api_keys else None
    blobs = BlobServiceClient.from_connection_string(development_storage(settings.outputs_storage.connection_string or ""))
    feed = EventFeed(blobs, f"http://127.0.0.1:{APP_PORT}/api/events", key)
    feed_thread = threading.Thread(target=feed.run, args=(stop,), daemon=True, name="event-feed")
    feed_thread.start()
    log.info("API on http://127.0.0.1:%d/api (key: x-functions-key or ?code= from API_KEYS); event feed watching job-* containers", APP_PORT)
    log.info("Ctrl-C stops everything")
    try:
        while not stop.is_set():
            if server.poll() is not None:
                log.error("the app exited with code %s", server.returncode)
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        feed_thread.join(timeout=5)
        feed.close()
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
