"""Quota administration: a job's limit overrides, and re-admitting what they rejected (SPEC §4)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from datetime import datetime, timezone

from shared.domain import keys
from shared.domain.ledger import JobView
from shared.domain.planning import MAX_BATCH_OPERATIONS, IngestReport, Operation, write
from shared.domain.quotas import OVERRIDE_PROPERTIES
from shared.domain.rows import REJECTED, Entity, Int64
from shared.store.errors import ConflictError, StorageUnavailableError

from .indexer import MAX_ATTEMPTS, ContentionError, Indexer
from .layouts import SPREAD_LIMIT_MESSAGE, SpreadLimitError


class QuotaAdministration:
    def __init__(self, indexer: Indexer) -> None:
        self.indexer = indexer
        self.store = indexer.store

    async def set_limits(self, container: str, limits: Mapping[str, int]) -> None:
        """Store a job's limit overrides on its counter row, and return every escrow, atomically.

        Writers holding escrow granted under the old limits fail their next transaction on
        their escrow row and ask again under the new ones. Rejected outputs are then
        re-admitted up to the limits.
        """
        await self.indexer.registry.register(container)
        layout = await self.indexer.layouts.get(container)
        if layout.spread and any(limits.get(f) for f in ("max_outputs", "max_bytes")):
            raise SpreadLimitError(SPREAD_LIMIT_MESSAGE)
        for attempt in range(MAX_ATTEMPTS):
            low, high = keys.prefix_range(keys.shard_prefix())
            view = JobView.of([row async for row in self.store.query_range(container, low, high)])
            counter = view.counter
            entity = {k: v for k, v in (counter or {"RowKey": keys.counter_key()}).items() if k not in ("__etag", "PartitionKey")}
            for field_name, prop in OVERRIDE_PROPERTIES.items():
                if field_name in limits:
                    entity[prop] = Int64(limits[field_name])
            now = datetime.now(timezone.utc)
            held = [e for e in view.escrows.values() if e.outputs or e.bytes]
            ops: list[Operation] = [write(entity, counter)]
            ops += [write(e.entity(0, 0, now), e.row) for e in held[: MAX_BATCH_OPERATIONS - 1]]
            try:
                await self.store.submit(container, ops)
            except (ConflictError, StorageUnavailableError):
                await asyncio.sleep(random.uniform(0, 0.05 * 2**attempt))
                continue
            if len(held) < MAX_BATCH_OPERATIONS:
                self.indexer.forget_limits(container)
                break
        else:
            raise ContentionError(f"could not update the limits of {container}")
        await self.readmit_rejected(container)

    async def rejected_rows(self, container: str) -> list[Entity]:
        """The job's rejected outputs, in every partition of its layout."""
        low, high = keys.outputs_span()
        layout = await self.indexer.layouts.get(container)
        return [row for partition in layout.all()
                async for row in self.store.query_range(partition, low, high, where={"State": REJECTED})]

    async def readmit_rejected(self, container: str) -> IngestReport:
        """Re-evaluate the job's rejected outputs, oldest first, against its current limits."""
        rows = await self.rejected_rows(container)
        now = datetime.now(timezone.utc)
        rows.sort(key=lambda r: (r.get("EventTime") or now, r["Seq"]))
        report = await self.indexer.readmit(container, rows)
        if not await self.rejected_rows(container):
            await self.indexer.crossings.reset(container)
        return report
