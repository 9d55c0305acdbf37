"""Announcing quota crossings: one ``Batch.Outputs.QuotaExceeded`` per job and crossing (SPEC §4).

The ``Q|limit`` marker row is written *before* publishing, with ``Published`` false, and set
true after; a crossing whose publication failed (or whose publisher died, after
``CROSSING_CLAIM_SECONDS``) is retried by the next rejection of that job, with the same
CloudEvent ID. The outputs are indexed already: a failure here is logged, never handed back
(a redelivery would find nothing new to reject and announce nothing).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone

from shared.domain import keys
from shared.domain.planning import Op, Operation
from shared.domain.quotas import Limits, QuotaCrossing, RejectReason
from shared.domain.rows import Entity
from shared.store.errors import ConflictError, StorageBusyError
from shared.store.table import TableStore

log = logging.getLogger(__name__)

#: Called once per job and crossing; raising means "not published", retried on the next crossing.
CrossingListener = Callable[[QuotaCrossing], Awaitable[None]]
#: An unpublished crossing claimed by an instance that then died is retried after this long.
CROSSING_CLAIM_SECONDS = 60.0
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class CrossingAnnouncer:
    def __init__(self, store: TableStore) -> None:
        self.store = store
        self.listeners: list[CrossingListener] = []

    async def announce(self, container: str, crossings: Mapping[RejectReason, str], limits: Limits) -> None:
        """Tell listeners about limits crossed for the first time: once per job and crossing."""
        for reason, blob_name in crossings.items():
            try:
                await self._announce_one(container, reason, blob_name, limits)
            except StorageBusyError as exc:
                log.warning("quota crossing %s of %s not recorded (retried on the next): %s", reason.value, container, exc)

    async def reset(self, container: str) -> None:
        """Back under every limit: the next crossing is a new one and is announced again."""
        for reason in RejectReason:
            row = await self.store.get(container, keys.quota_crossing_key(reason.value))
            if row is not None:
                try:
                    await self.store.submit(container, [Operation(Op.DELETE, row, row["__etag"])])
                except ConflictError:
                    pass

    async def _claim(self, container: str, row_key: str, now: datetime) -> Entity | None:
        """The marker this instance may publish (created or taken over), or ``None``."""
        marker: Entity = {"PartitionKey": container, "RowKey": row_key, "At": now,
                          "EventId": str(uuid.uuid4()), "Published": not self.listeners}
        if await self.store.insert_if_absent(marker):
            return marker if self.listeners else None
        row = await self.store.get(container, row_key)
        if row is None or row.get("Published", True) or not self.listeners:
            return None
        claimed_at = row.get("At") or _EPOCH
        if (now - claimed_at).total_seconds() < CROSSING_CLAIM_SECONDS:
            return None  # another instance is publishing it right now
        marker = {k: v for k, v in row.items() if k != "__etag"} | {"At": now}
        try:
            await self.store.submit(container, [Operation(Op.REPLACE, marker, row["__etag"])])
        except ConflictError:
            return None  # another instance claimed it first
        return marker

    async def _announce_one(self, container: str, reason: RejectReason, blob_name: str, limits: Limits) -> None:
        row_key = keys.quota_crossing_key(reason.value)
        now = datetime.now(timezone.utc)
        marker = await self._claim(container, row_key, now)
        if marker is None:
            return
        crossing = QuotaCrossing(container, reason, limits, marker["EventId"], now, blob_name)
        published = True
        for listener in self.listeners:
            try:
                await listener(crossing)
            except Exception:  # a notification must never fail indexing
                published = False
                log.exception("quota crossing listener failed for %s", container)
        row = await self.store.get(container, row_key)
        if row is None or row.get("EventId") != marker["EventId"]:
            return
        update = {k: v for k, v in row.items() if k != "__etag"}
        # Published, or released at once (At = epoch) so the next crossing attempt retries.
        update.update({"Published": True} if published else {"At": _EPOCH})
        try:
            await self.store.submit(container, [Operation(Op.REPLACE, update, row["__etag"])])
        except ConflictError:
            pass
