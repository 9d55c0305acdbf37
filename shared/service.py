"""The core's composition: one set of clients, one indexer, one query service per process.

Both entry points (the Event Grid trigger and the HTTP app) share it, created lazily on
first use so it binds to the event loop the host runs them on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from datetime import timedelta

from shared.domain.events import EventBatch
from shared.domain.planning import IngestReport
from shared.ingest.group_commit import GroupCommit
from shared.ingest.indexer import Indexer
from shared.ingest.namespace import NamespaceIndexer
from shared.ingest.quota_admin import QuotaAdministration
from shared.ingest.reconcile import Reconciler
from shared.ingest.reindex import Reindexer
from shared.read.paging import TokenCodec
from shared.read.query import QueryService
from shared.settings import Settings
from shared.store.blobs import OutputsAccount
from shared.store.clients import blob_service_client, table_client
from shared.store.publisher import QuotaExceededPublisher
from shared.store.sas import SasIssuer
from shared.store.table import TableStore
from shared.store.throttle import AdaptiveLimiter

log = logging.getLogger(__name__)


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

    @classmethod
    async def create(cls, settings: Settings) -> Service:
        limiter = AdaptiveLimiter(settings.max_concurrency)
        store = TableStore(table_client(settings, limiter), limiter)
        try:
            await store.ensure_table()
        except BaseException:
            await store.close()
            raise
        indexer = Indexer(store, settings.quota)
        blobs = blob_service_client(settings)
        # Reads get their own client and concurrency budget: listings cannot take the
        # connections and storage slots ingest needs (and ingest cannot starve reads).
        read_limiter = AdaptiveLimiter(settings.max_concurrency)
        read_store = TableStore(table_client(settings, read_limiter), read_limiter)
        query = QueryService(read_store, settings.quota, TokenCodec(settings.token_signing_key), blobs.url)
        if not settings.token_signing_key:
            log.warning("TOKEN_SIGNING_KEY is not set: continuation tokens work only within this process")
        sas = SasIssuer(blobs, settings.sas_ttl_minutes, identity_based=settings.outputs_storage.identity_based)
        publisher = QuotaExceededPublisher.from_settings(settings, indexer.registry.job_id_of)
        if publisher is not None:
            indexer.crossings.listeners.append(publisher)
        return cls(settings, store, indexer, QuotaAdministration(indexer), query, blobs, sas, publisher)

    def reindexer(self) -> Reindexer:
        return Reindexer(self.indexer, self.quotas, self.blobs)

    @functools.cached_property
    def group_commit(self) -> GroupCommit:
        """Concurrent trigger invocations of this process commit together."""
        return GroupCommit(self.ingest)

    def namespace(self) -> NamespaceIndexer:
        return NamespaceIndexer(self.indexer, self.blobs)

    async def ingest(self, batch: EventBatch) -> IngestReport:
        """Index a decoded delivery: its blob events, then its Data Lake namespace events."""
        report = await self.indexer.ingest(batch.blob_events)
        if batch.namespace_events:
            namespace = await self.namespace().apply(batch.namespace_events)
            report.received += namespace.received
            report.add(namespace)
        report.received += len(batch.skipped)
        report.skipped.update(s.reason.value for s in batch.skipped)
        return report

    def reconciler(self) -> Reconciler:
        window = timedelta(hours=self.settings.reconcile_window_hours)
        return Reconciler(self.store, self.blobs, self.reindexer(), window)

    async def close(self) -> None:
        await self.indexer.compactor.drain()
        await self.store.close()
        await self.query.store.close()
        await self.blobs.close()
        if self.publisher is not None:
            await self.publisher.close()


class ServiceHolder:
    """Creates the ``Service`` once, on first use."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings
        self._service: Service | None = None
        self._lock: asyncio.Lock | None = None

    async def get(self) -> Service:
        if self._service is None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self._service is None:
                    self._service = await Service.create(self._settings or Settings.load())
        return self._service

    async def close(self) -> None:
        if self._service is not None:
            await self._service.close()
            self._service = None
        self._lock = None  # bound to this event loop; the next one makes its own
