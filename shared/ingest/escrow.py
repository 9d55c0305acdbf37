"""Job-wide quotas without a hot row: each writer admits from headroom it holds in escrow.

A job with ``maxOutputs`` or ``maxBytes`` needs one consistent view of its usage to stay
exact, but routing every write through one entity would serialize all instances. Instead a
writer is *granted* a share of the job's headroom (``S|e|{writer}``) and admits from it
alone: its ingest transactions rewrite only its own escrow row (so they never contend), and
``usage + every escrow`` never exceeds the limit. A grant reads the ledger and rewrites
``S|00`` unchanged on its ETag, so grants (and limit changes, which zero every escrow) are
serialized; deltas moving meanwhile change usage and escrow by the same amount.

Near the limit the headroom left is too small to share: a writer that needs more than it can
be granted reclaims every other escrow first (one transaction), then takes all that is left,
and others wait for theirs. That is the only time writers of one job serialize.

A job spread over several partitions keeps the same scheme inside each partition, with the
partition's allotment in place of the job's limit (``allotments.py``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timezone

from shared.domain import keys
from shared.domain.allotment import Amount
from shared.domain.layout import Layout
from shared.domain.ledger import Escrow, JobView
from shared.domain.planning import MAX_BATCH_OPERATIONS, Operation, guard, write
from shared.domain.quotas import Limits, QuotaDefaults
from shared.store.errors import ConflictError, StorageBusyError, StorageUnavailableError
from shared.store.table import TableStore

from .allotments import Allotments

log = logging.getLogger(__name__)

#: A grant takes at most this share of the free headroom (plus what the chunk needs), so
#: instances that join later still find some.
GRANT_SHARE = 8
MAX_GRANT_ATTEMPTS = 12


@dataclass(frozen=True, slots=True)
class Need:
    """The most a chunk can consume: every create admitted as new."""

    outputs: int
    bytes: int


def _headroom(limit: int, used: int, held: int) -> int | None:
    return None if not limit else limit - used - held


def _grant(want: int, free: int | None) -> int:
    """What to add to an escrow that lacks ``want`` when ``free`` is unclaimed (None: no limit)."""
    if free is None:
        return 0
    if free <= want:
        return max(free, 0)
    return want + (free - want) // GRANT_SHARE


class EscrowKeeper:
    """This writer's escrows, one per partition of a job with job-wide limits."""

    def __init__(self, store: TableStore, writer: str, quota_defaults: QuotaDefaults) -> None:
        self.store = store
        self.writer = writer
        self.quota_defaults = quota_defaults
        self.allotments = Allotments(store, writer, quota_defaults)
        self._held: dict[str, tuple[Escrow, Limits]] = {}

    def forget(self, container: str) -> None:
        """Drop what this writer holds of the job, in every partition."""
        for partition in [p for p in self._held if keys.container_of(p) == container]:
            del self._held[partition]

    def remember(self, partition: str, escrow: Escrow, limits: Limits) -> None:
        self._held[partition] = (escrow, limits)

    async def allowance(self, container: str, need: Need, *, layout: Layout | None = None,
                        partition: str | None = None, desired: Limits | None = None) -> tuple[Escrow, Limits]:
        """An escrow covering ``need`` if the job's headroom allows, else all the headroom left.

        For a spread job (``layout``), the escrow is in ``partition`` and comes out of its
        allotment (``desired``: the job's limits as this process last read them)."""
        spread = layout is not None and layout.spread and partition is not None and desired is not None
        key = partition if spread and partition is not None else container
        held = self._held.get(key)
        if held is not None and self._covers(held[0], held[1], need):
            return held
        for attempt in range(MAX_GRANT_ATTEMPTS):
            try:
                if spread:
                    assert layout is not None and desired is not None
                    granted = await self.allotments.grant(layout, key, Amount(need.outputs, need.bytes), desired)
                else:
                    granted = await self._grant_once(container, need)
            except (ConflictError, StorageUnavailableError):
                await asyncio.sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))
                continue
            self._held[key] = granted
            return granted
        raise StorageBusyError(f"no quota escrow for {container} after {MAX_GRANT_ATTEMPTS} attempts")

    @staticmethod
    def _covers(escrow: Escrow, limits: Limits, need: Need) -> bool:
        return (not limits.max_outputs or escrow.outputs >= need.outputs) and (
            not limits.max_bytes or escrow.bytes >= need.bytes
        )

    async def _grant_once(self, container: str, need: Need) -> tuple[Escrow, Limits]:
        low, high = keys.prefix_range(keys.shard_prefix())
        view = JobView.of([row async for row in self.store.query_range(container, low, high)])
        limits = Limits.effective(view.carrier, self.quota_defaults)
        mine = view.escrows.get(self.writer) or Escrow(self.writer)
        if not limits.limits_job:
            return mine, limits
        usage = view.job_usage()
        held_outputs, held_bytes = view.escrowed(except_writer=self.writer)
        free_outputs = _headroom(limits.max_outputs, usage.outputs, held_outputs + mine.outputs)
        free_bytes = _headroom(limits.max_bytes, usage.bytes, held_bytes + mine.bytes)
        want_outputs = max(need.outputs - mine.outputs, 0) if limits.max_outputs else 0
        want_bytes = max(need.bytes - mine.bytes, 0) if limits.max_bytes else 0
        short = (free_outputs is not None and free_outputs < want_outputs) or (
            free_bytes is not None and free_bytes < want_bytes
        )
        others = [e for w, e in view.escrows.items() if w != self.writer and (e.outputs > 0 or e.bytes > 0)]
        now = datetime.now(timezone.utc)
        if short and others:
            await self._reclaim(container, view, others, now)
            return await self._grant_once(container, need)
        escrow = mine.entity(
            mine.outputs + _grant(want_outputs, free_outputs), mine.bytes + _grant(want_bytes, free_bytes), now
        )
        ops = [guard(keys.counter_key(), view.counter), write(escrow, mine.row)]
        etags = await self.store.submit(container, ops)
        granted = Escrow.of({**escrow, "__etag": etags[-1]})
        log.debug("escrow of %s for %s: %d outputs, %d bytes", self.writer, container, granted.outputs, granted.bytes)
        return granted, limits

    async def _reclaim(self, container: str, view: JobView, others: list[Escrow], now: datetime) -> None:
        """Return other writers' escrows to the job (near the limit): they ask again."""
        room = MAX_BATCH_OPERATIONS - 1
        for start in range(0, len(others), room):
            ops: list[Operation] = [guard(keys.counter_key(), view.counter)]
            ops += [write(e.entity(0, 0, now), e.row) for e in others[start : start + room]]
            await self.store.submit(container, ops)
            low, high = keys.prefix_range(keys.shard_prefix())
            view = JobView.of([row async for row in self.store.query_range(container, low, high)])
        log.info("reclaimed %d escrows of %s: near its limit, writers serialize", len(others), container)
