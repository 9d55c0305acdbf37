"""What ingest did, as metrics and as per-job counts of events that wrote no output.

* **Per job**, events skipped (``not-a-convention-path``, ``unindexable``) and events handed
  back (storage busy or misconfigured, so Event Grid redelivers them) write no output and so
  no delta. They are counted in this process and flushed a few seconds later as one *created*
  delta row per job (``Delta.skipped``, ``Delta.handed_back``), folded like any delta: no shared
  row is rewritten and no storage request is made per event. Counts still in memory when a
  process dies are lost, so the job's figures are a lower bound; an event handed back and
  redelivered counts once per hand-back. Only jobs already in the registry are counted, so a
  container holding nothing but unconventional blobs does not turn into a job.
* **Per process**, OpenTelemetry instruments (``batch_outputs.index.events`` by outcome and
  reason, ``batch_outputs.index.lag`` in seconds): no-ops until an OpenTelemetry SDK is
  configured (the Azure Monitor distro under the Functions host, see docs/operations.md), and
  one ``ingest metrics`` log record a minute while events arrive, with the same figures as its
  attributes, which the Functions host sends to Application Insights with its default logging.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter
from typing import Any

from opentelemetry import metrics

from shared.domain import keys
from shared.domain.lag import LagHistogram, summary, upper_bound
from shared.domain.ledger import Delta
from shared.domain.planning import IngestReport, Op, Operation
from shared.store.errors import IndexStoreError
from shared.store.table import TableStore

from .compactor import Compactor
from .registry import JobRegistry

log = logging.getLogger(__name__)

#: Seconds after the first uncounted event that a process writes its per-job counts.
FLUSH_DELAY = 5.0
#: Seconds between two ``ingest metrics`` log records (while events arrive).
LOG_EVERY = 60.0

_meter = metrics.get_meter("batch_outputs.index")
EVENTS = _meter.create_counter(
    "batch_outputs.index.events", unit="{event}",
    description="Events by outcome (indexed, unchanged, rejected, skipped, handed_back) and skip reason")
LAG = _meter.create_histogram(
    "batch_outputs.index.lag", unit="s", description="Seconds from an event's eventTime to its output indexed")


class IngestTelemetry:
    def __init__(self, store: TableStore, registry: JobRegistry, compactor: Compactor, *,
                 delay: float = FLUSH_DELAY, log_every: float = LOG_EVERY) -> None:
        self.store = store
        self.registry = registry
        self.compactor = compactor
        self.delay = delay
        self.log_every = log_every
        self._skipped: dict[str, Counter[str]] = {}
        self._handed_back: Counter[str] = Counter()
        self._flusher: asyncio.Task[None] | None = None
        self._logger: asyncio.Task[None] | None = None
        self._period = IngestReport()
        self._period_handed_back = 0
        self._period_lag = LagHistogram()
        self._last_log = time.monotonic()

    # -- what happened ---------------------------------------------------------------------

    def delivered(self, report: IngestReport) -> None:
        """A delivery (or group commit) durable: its outcome counts."""
        for outcome, count in (("indexed", report.indexed), ("unchanged", report.unchanged), ("rejected", report.rejected)):
            if count:
                EVENTS.add(count, {"outcome": outcome})
        for reason, count in report.skipped.items():
            EVENTS.add(count, {"outcome": "skipped", "reason": reason})
        self._period.add(report)
        self._activity()

    def lag(self, histogram: LagHistogram) -> None:
        """The lag of one committed transaction's events (each recorded at its bucket's bound)."""
        for bucket, count in histogram.counts.items():
            value = min(upper_bound(bucket), histogram.max)
            for _ in range(count):
                LAG.record(value)
        self._period_lag.merge(histogram)

    def skipped_in_job(self, container: str, reason: str, count: int = 1) -> None:
        """Events of a job container skipped by the indexer (counted overall by ``delivered``)."""
        self._skipped.setdefault(container, Counter())[reason] += count
        self._schedule_flush()

    def handed_back(self, container: str, count: int) -> None:
        """Events of a job handed back: its chunk failed, Event Grid redelivers them."""
        EVENTS.add(count, {"outcome": "handed_back"})
        self._handed_back[container] += count
        self._period_handed_back += count
        self._schedule_flush()
        self._activity()

    # -- flushing ---------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._later(self.delay, self.flush))

    def _activity(self) -> None:
        if self._logger is None or self._logger.done():
            wait = max(0.0, self.log_every - (time.monotonic() - self._last_log))
            self._logger = asyncio.get_running_loop().create_task(self._later(wait, self._log_metrics))

    @staticmethod
    async def _later(delay: float, action: Any) -> None:
        await asyncio.sleep(delay)
        await action()

    async def flush(self) -> int:
        """Write each registered job's uncounted events as one delta row; the rows written."""
        containers = set(self._skipped) | set(self._handed_back)
        written = 0
        for container in sorted(containers):
            skipped, handed_back = self._skipped.pop(container, Counter()), self._handed_back.pop(container, 0)
            try:
                if not await self.registry.exists(container):
                    continue
                delta = Delta(keys.delta_key(uuid.uuid4().hex), skipped=skipped, handed_back=handed_back)
                await self.store.submit(container, [Operation(Op.CREATE, delta.entity())])
            except IndexStoreError as exc:
                # Storage is busy or misconfigured: keep the counts for the next flush.
                self._skipped.setdefault(container, Counter()).update(skipped)
                self._handed_back[container] += handed_back
                log.debug("event counts of %s not written yet: %s", container, exc)
                self._schedule_flush()
                continue
            written += 1
            self.compactor.schedule(container)
        return written

    def _metrics(self) -> dict[str, Any]:
        period = self._period
        lag = summary(self._period_lag)
        return {
            "indexed": period.indexed, "unchanged": period.unchanged, "rejected": period.rejected,
            "skipped": sum(period.skipped.values()), "skippedByReason": dict(period.skipped),
            "handedBack": self._period_handed_back,
            "lagEvents": lag["events"], "lagP50": lag["p50"], "lagP95": lag["p95"], "lagMax": lag["max"],
        }

    async def _log_metrics(self) -> None:
        figures = self._metrics()
        seconds = round(time.monotonic() - self._last_log)
        self._period, self._period_handed_back, self._period_lag = IngestReport(), 0, LagHistogram()
        self._last_log = time.monotonic()
        flat = {k: v for k, v in figures.items() if not isinstance(v, dict)}
        log.info("ingest metrics over %d s: %s", seconds, json.dumps(figures, separators=(",", ":")),
                 extra={"ingest_" + k: v for k, v in flat.items() if v is not None})

    async def drain(self) -> None:
        """Write what is counted now, and log the period (shutdown, tests)."""
        for task in (self._flusher, self._logger):
            if task is not None and not task.done():
                task.cancel()
        await self.flush()
        if self._period.indexed or self._period.unchanged or self._period.rejected or self._period.skipped \
                or self._period_handed_back:
            await self._log_metrics()
