"""The reconciler under ``make run``: the same loop the timer trigger runs in Azure, on the same
``RECONCILE_SCHEDULE`` (NCRONTAB with seconds), in a background thread of the dev server."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import datetime, timezone

from devtools.ncrontab import next_run
from shared.service import Service
from shared.settings import Settings
from shared.store.errors import IndexStoreError

log = logging.getLogger("devtools.reconcile")


class ReconcileLoop:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reconcile", daemon=True)

    def start(self) -> ReconcileLoop:
        next_run(self.settings.reconcile_schedule, datetime.now(timezone.utc))  # fail early on a bad schedule
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        service: Service | None = None
        try:
            while not self._stop.is_set():
                now = datetime.now(timezone.utc)
                due = next_run(self.settings.reconcile_schedule, now)
                if self._stop.wait((due - now).total_seconds()):
                    return
                try:
                    service = service or await Service.create(self.settings)
                    await service.reconciler().run()  # logs its own report
                except IndexStoreError as exc:  # busy or misconfigured (the store logged the cause once)
                    log.warning("reconcile run skipped, index storage failing: %s", exc)
                except Exception:  # a failed run is retried at the next one, as the timer would
                    log.exception("reconcile run failed")
        finally:
            if service is not None:
                await service.close()
