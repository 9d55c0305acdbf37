"""Quota administration: a job's limit overrides, and re-admitting what they rejected (SPEC §4)."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Mapping
from datetime import datetime, timezone

from shared.domain import keys
from shared.domain.layout import Layout
from shared.domain.ledger import JobView
from shared.domain.planning import MAX_BATCH_OPERATIONS, IngestReport, Operation, write
from shared.domain.quotas import OVERRIDE_PROPERTIES
from shared.domain.rows import REJECTED, Entity, Int64
from shared.store.errors import ConflictError, StorageUnavailableError

from .indexer import MAX_ATTEMPTS, ContentionError, Indexer


class QuotaAdministration:
    def __init__(self, indexer: Indexer) -> None:
        self.indexer = indexer
        self.store = indexer.store

    async def set_limits(self, container: str, limits: Mapping[str, int]) -> None:
        """Store a job's limit overrides on its counter row, and return every escrow, atomically.

        Writers holding escrow granted under the old limits fail their next transaction on
        their escrow row and ask again under the new ones. A job spread over several
        partitions has its grant row brought to the new limits (``allotments.py``). Rejected
        outputs are then re-admitted up to the limits.
        """
        await self.indexer.registry.register(container)
        layout = await self.indexer.layouts.get(container)
        for attempt in range(MAX_ATTEMPTS):
            try:
                held = await self._write_limits(container, limits, spread=layout.spread)
            except (ConflictError, StorageUnavailableError):
                await asyncio.sleep(random.uniform(0, 0.05 * 2**attempt))
                continue
            if held < MAX_BATCH_OPERATIONS:
                break
        else:
            raise ContentionError(f"could not update the limits of {container}")
        if layout.spread:
            await self._converge(layout)
        self.indexer.forget_limits(container)
        await self.readmit_rejected(container)

    async def _write_limits(self, container: str, limits: Mapping[str, int], *, spread: bool) -> int:
        """One attempt: the overrides on ``S|00``, with every escrow zeroed (one partition only:
        a spread job's are zeroed by the change of epoch); how many escrows were held."""
        low, high = keys.prefix_range(keys.shard_prefix())
        view = JobView.of([row async for row in self.store.query_range(container, low, high)])
        counter = view.counter
        entity = {k: v for k, v in (counter or {"RowKey": keys.counter_key()}).items() if k not in ("__etag", "PartitionKey")}
        for field_name, prop in OVERRIDE_PROPERTIES.items():
            if field_name in limits:
                entity[prop] = Int64(limits[field_name])
        now = datetime.now(timezone.utc)
        held = [] if spread else [e for e in view.escrows.values() if e.outputs or e.bytes]
        ops: list[Operation] = [write(entity, counter)]
        ops += [write(e.entity(0, 0, now), e.row) for e in held[: MAX_BATCH_OPERATIONS - 1]]
        await self.store.submit(container, ops)
        return len(held)

    async def _converge(self, layout: Layout) -> None:
        """A spread job's grant row brought to the limits just written (or a change in progress
        completed first); retried while it loses races."""
        for attempt in range(MAX_ATTEMPTS):
            try:
                await self.indexer.escrows.allotments.converge(layout)
                return
            except (ConflictError, StorageUnavailableError):
                await asyncio.sleep(random.uniform(0, 0.05 * 2**attempt))
        raise ContentionError(f"could not bring the limits of {layout.container} into force")

    async def rejected_rows(self, container: str) -> list[Entity]:
        """The job's rejected outputs, in every partition of its layout."""
        low, high = keys.outputs_span()
        layout = await self.indexer.layouts.get(container)
        return [row for partition in layout.all()
                async for row in self.store.query_range(partition, low, high, where={"State": REJECTED})]

    async def readmit_rejected(self, container: str) -> IngestReport:
        """Re-evaluate the job's rejected outputs, oldest first, against its current limits.

        On a spread job under a job-wide limit, each partition's run of consecutive rejected
        outputs is re-admitted before the next run, so oldest first holds across partitions."""
        rows = await self.rejected_rows(container)
        now = datetime.now(timezone.utc)
        rows.sort(key=lambda r: (r.get("EventTime") or now, r["Seq"]))
        layout = await self.indexer.layouts.get(container)
        if layout.spread and rows and (await self.indexer.limits(container, fresh=True)).limits_job:
            report = IngestReport(received=len(rows))
            for _, run in itertools.groupby(rows, key=lambda r: r.get("PartitionKey")):
                report.add(await self.indexer.readmit(container, list(run)))
        else:
            report = await self.indexer.readmit(container, rows)
        if not await self.rejected_rows(container):
            await self.indexer.crossings.reset(container)
        return report
