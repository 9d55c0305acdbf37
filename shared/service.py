"""The core's composition: one set of clients, one indexer, one query service per process.

Both entry points (the Event Grid trigger and the HTTP app) share it, created lazily on
first use so it binds to the event loop the host runs them on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.domain import keys
from shared.domain.deadletters import ReplayReport
from shared.domain.events import EventBatch
from shared.domain.planning import IngestReport
from shared.domain.sources import outputs_account
from shared.ingest.group_commit import GroupCommit
from shared.ingest.indexer import Indexer
from shared.ingest.layouts import JobLayouts
from shared.ingest.namespace import NamespaceIndexer
from shared.ingest.operations import ReindexOperations
from shared.ingest.quota_admin import QuotaAdministration
from shared.ingest.reconcile import Reconciler
from shared.ingest.reindex import Reindexer
from shared.ingest.replay import DEFAULT_MAX_BLOBS, DeadLetterReplayer
from shared.ingest.sweep import JobSweep
from shared.read.changes import ChangeFeed
from shared.read.paging import TokenCodec
from shared.read.query import QueryService
from shared.settings import Settings
from shared.store.blobs import OutputsAccount
from shared.store.clients import blob_service_client, table_client
from shared.store.deadletters import DeadLetterContainer, dead_letter_account
from shared.store.errors import IndexStoreError, StorageAccessError, StorageBusyError
from shared.store.health import IndexAccess
from shared.store.publisher import OutputEventsPublisher, QuotaExceededPublisher
from shared.store.sas import SasIssuer
from shared.store.table import TableStore
from shared.store.throttle import AdaptiveLimiter

log = logging.getLogger(__name__)


def read_concurrency(max_concurrency: int) -> int:
    """Storage requests in flight for listings: a quarter of ingest's (``STORAGE_MAX_CONCURRENCY``), at least 2."""
    return max(2, max_concurrency // 4)


@dataclass
class Service:
    settings: Settings
    store: TableStore
    indexer: Indexer
    quotas: QuotaAdministration
    query: QueryService
    blobs: OutputsAccount
    sas: SasIssuer
    publisher: QuotaExceededPublisher | None = None
    feed: ChangeFeed | None = None
    output_events: OutputEventsPublisher | None = None

    @classmethod
    async def create(cls, settings: Settings, access: IndexAccess | None = None) -> Service:
        """``access``: where both table stores report a misconfiguration (the holder keeps it,
        so it is known even when this fails)."""
        access = access or IndexAccess()
        limiter = AdaptiveLimiter(settings.max_concurrency)
        store = TableStore(table_client(settings, limiter), limiter, access)
        try:
            await store.ensure_table()
        except BaseException:
            await store.close()
            raise
        indexer = Indexer(store, settings.quota)
        blobs = blob_service_client(settings)
        # Reads get their own client and a quarter of the concurrency budget: listings cannot
        # take the connections and storage slots ingest needs, and however many readers there
        # are, storage serves at most this many of their requests at once (ingest cannot starve
        # reads either: the budgets are apart).
        read_limiter = AdaptiveLimiter(read_concurrency(settings.max_concurrency))
        read_store = TableStore(table_client(settings, read_limiter), read_limiter, access)
        query = QueryService(read_store, settings.quota, TokenCodec(settings.token_signing_key), blobs.url)
        if not settings.token_signing_key:
            log.warning("TOKEN_SIGNING_KEY is not set: continuation tokens work only within this process")
        sas = SasIssuer(blobs, settings.sas_ttl_minutes, identity_based=settings.outputs_storage.identity_based)
        publisher = QuotaExceededPublisher.from_settings(settings, indexer.registry.job_id_of)
        if publisher is not None:
            indexer.crossings.listeners.append(publisher)
        feed = ChangeFeed(read_store, settings.token_signing_key, retention_hours=settings.change_feed_retention_hours,
                          poll_seconds=settings.change_feed_poll_seconds, blob_url=query.blob_url)
        indexer.change_listeners.append(lambda container, _delta: feed.notify(container))
        # Output events go out per fold round, batched, once the changes are in the feed.
        output_events = OutputEventsPublisher.from_settings(settings, indexer.registry.job_id_of, query.blob_url)
        if output_events is not None:
            indexer.compactor.round_listeners.append(output_events)
        return cls(settings, store, indexer, QuotaAdministration(indexer), query, blobs, sas, publisher, feed, output_events)

    def reindexer(self) -> Reindexer:
        return Reindexer(self.indexer, self.quotas, self.blobs)

    @functools.cached_property
    def layouts(self) -> JobLayouts:
        """Each job's partitions, chosen by an admin when the job is registered."""
        return JobLayouts(self.store, self.indexer.layouts, self.settings.quota)

    @functools.cached_property
    def group_commit(self) -> GroupCommit:
        """Concurrent trigger invocations of this process commit together."""
        return GroupCommit(self.ingest)

    def namespace(self) -> NamespaceIndexer:
        return NamespaceIndexer(self.reindexer())

    async def ingest(self, batch: EventBatch) -> IngestReport:
        """Index a decoded delivery: its blob events, then its Data Lake namespace events."""
        report = await self.indexer.ingest(batch.blob_events)
        if batch.namespace_events:
            namespace = await self.namespace().apply(batch.namespace_events)
            report.received += namespace.received
            report.add(namespace)
        report.received += len(batch.skipped)
        report.skipped.update(s.reason.value for s in batch.skipped)
        self.indexer.telemetry.delivered(report)
        return report

    def outputs_account(self) -> str | None:
        """The account events must come from (``None``: its endpoint names none)."""
        return outputs_account(self.blobs.url, self.blobs.account_name)

    async def replay_dead_letters(self, *, since: datetime | None = None, dry_run: bool = False,
                                  max_blobs: int = DEFAULT_MAX_BLOBS, marker: str | None = None) -> ReplayReport:
        """Re-ingest what Event Grid dead-lettered (``shared.ingest.replay``)."""
        container = DeadLetterContainer(dead_letter_account(self.settings), self.settings.deadletter_container)
        try:
            replayer = DeadLetterReplayer(container, self.ingest, self.outputs_account())
            return await replayer.run(since=since, dry_run=dry_run, max_blobs=max_blobs, marker=marker)
        finally:
            await container.close()

    async def probe(self) -> None:
        """One point read of the index: refreshes what ``store.access`` knows."""
        await self.store.get(keys.JOBS_PARTITION, "~health")

    def sweep(self) -> JobSweep:
        """Bounded slices of a job's comparison with its container (the reconciler, long reindexes)."""
        return JobSweep(self.reindexer(), self.quotas, self.blobs, asyncio.Semaphore(self.settings.reconcile.blob_concurrency))

    @functools.cached_property
    def operations(self) -> ReindexOperations:
        """Long-running reindexes (``202`` + ``Operation-Location``), persisted in the index table."""
        limits = self.settings.reconcile
        return ReindexOperations(self.store, self.sweep, limits.sweep_rows, limits.sweep_blobs)

    def reconciler(self) -> Reconciler:
        window = timedelta(hours=self.settings.reconcile_window_hours)
        return Reconciler(self.store, self.blobs, self.sweep(), self.indexer.compactor, window, self.settings.reconcile,
                          resume_operations=self.operations.resume_stale,
                          feed_retention=timedelta(hours=self.settings.change_feed_retention_hours))

    async def close(self) -> None:
        if "operations" in self.__dict__:
            await self.operations.drain()  # each saved where it stood: the reconciler resumes it
        try:
            # Counts and deltas not written now are written by whoever comes next (deltas: the
            # next fold; counts: lost with the process, docs say a lower bound).
            for drain in (self.indexer.telemetry.drain, self.indexer.compactor.drain):
                try:
                    await drain()
                except IndexStoreError as exc:
                    log.warning("shutting down with index storage failing: %s", exc)
        finally:
            await self.store.close()
            await self.query.store.close()
            await self.blobs.close()
            for publisher in (self.publisher, self.output_events):
                if publisher is not None:
                    await publisher.close()


class ServiceHolder:
    """Creates the ``Service`` once, on first use."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings
        self._service: Service | None = None
        self._lock: asyncio.Lock | None = None
        #: What the index store learned about its access, kept even while ``get`` fails.
        self.access = IndexAccess()

    async def get(self) -> Service:
        if self._service is None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self._service is None:
                    self._service = await Service.create(self._settings or Settings.load(), self.access)
        return self._service

    async def health(self) -> dict[str, Any]:
        """The detailed health: whether the index is reachable and rightly configured, and if not,
        what to fix (``GET /api/health?detail=true``)."""
        settings = self._settings or Settings.load()
        index: dict[str, Any] = {"table": settings.index_table}
        try:
            service = await self.get()
            await service.probe()
        except StorageAccessError:
            pass  # in self.access, with what to fix
        except StorageBusyError as exc:
            index.update(status="unavailable", message=str(exc))
        if "status" not in index:
            index.update(self.access.as_wire())
        return {"status": index["status"], "index": index, "deadLetterContainer": settings.deadletter_container}

    async def close(self) -> None:
        if self._service is not None:
            await self._service.close()
            self._service = None
        self._lock = None  # bound to this event loop; the next one makes its own
