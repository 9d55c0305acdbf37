"""Job-wide limits on a job spread over several partitions: grants, releases, limit changes.

The arithmetic and why it is exact are in ``shared.domain.allotment`` (and docs/quotas.md). Here
the three moves, each one partition's transaction:

* **grant** (``G``'s partition): a partition short of allotment is granted from the limit no
  partition holds, ``G`` rewritten on its ETag (grants are serialized there);
* **release** (partition ``q``'s): near the limit, a partition short of allotment zeroes the
  escrows of the others and gives their unused allotment back (``released[q]`` raised on
  ``q``'s ``S|00``, guarded on its ETag and every escrow's, like a reclaim), then asks again;
* **limit change**: ``G`` is closed with its target (no grant is made while it is), every
  partition starts the next epoch at its usage (its escrows zeroed), and ``G`` opens in that
  epoch with the target limits. Whoever finds ``G`` closed, or not matching the job's limits,
  does the rest (roll forward): a change that crashed midway is completed by the next writer.

A writer in a partition admits only from its escrow there, exactly as on a one-partition job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timezone

from shared.domain import keys
from shared.domain.allotment import (
    RELEASED,
    Amount,
    GrantRow,
    PartitionState,
    Released,
    any_left,
    by_index,
    epochs_agree,
    job_free,
    limited,
    share,
    short,
)
from shared.domain.layout import Layout
from shared.domain.ledger import Escrow, JobView
from shared.domain.planning import MAX_BATCH_OPERATIONS, Operation, guard, write
from shared.domain.quotas import Limits, QuotaDefaults
from shared.domain.rows import Entity
from shared.store.errors import ConflictError
from shared.store.table import TableStore

log = logging.getLogger(__name__)

#: A grant takes at most this share of what is free beyond what it needs (as ``escrow.GRANT_SHARE``).
GRANT_SHARE = 8
#: A partition is granted what it lacks plus this share of the rest: its writers take an eighth
#: of that in turn, and a partition holding more is released first near the limit.
PARTITION_SHARE = 4
#: Decisions a writer makes again after freeing or being granted headroom, before it backs off.
MAX_STEPS = 16
#: A release of a busy partition is tried again this often on a fresh read before giving up.
RELEASE_ATTEMPTS = 6


def _counter_with(counter: Entity | None, released: Released) -> Entity:
    kept = {k: v for k, v in (counter or {}).items() if not k.startswith("__") and k != "PartitionKey"}
    return {**kept, "RowKey": keys.counter_key(), RELEASED: released.text()}


def _held(view: JobView, except_writer: str | None = None) -> list[Escrow]:
    return [e for w, e in view.escrows.items() if w != except_writer and (e.outputs or e.bytes)]


def _total(escrows: list[Escrow]) -> Amount:
    return Amount(sum(e.outputs for e in escrows), sum(e.bytes for e in escrows))


async def _all(*work: Awaitable[object]) -> list[object]:
    """Await every one (none is left running unobserved); the first failure is raised."""
    results = await asyncio.gather(*work, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise failures[0]
    return results


def _total_free(grant: GrantRow, states: list[PartitionState]) -> Amount:
    total = Amount()
    for state in states:
        total = total.plus(state.free(grant).most(Amount()))
    return total


def _enough(grant: GrantRow, others: list[PartitionState], lacking: Amount, limits: Limits, *,
            zero: bool) -> list[PartitionState]:
    """The fewest partitions (most to give back first) whose release covers what the job lacks,
    else all of them: each released partition's writers must ask again, so disturb few."""
    def gives(state: PartitionState) -> Amount:
        return state.returnable(grant) if zero else state.free(grant).most(Amount())

    chosen: list[PartitionState] = []
    got = Amount()
    for state in sorted(others, key=lambda s: (gives(s).outputs, gives(s).bytes), reverse=True):
        if chosen and not short(got, lacking, limits):
            break
        chosen.append(state)
        got = got.plus(gives(state))
    return chosen


def _gives(free: Amount, deficit: Amount, limits: Limits) -> bool:
    """Whether ``free`` holds anything toward ``deficit`` in a limited dimension."""
    outputs, size = limited(limits)
    return (outputs and deficit.outputs > 0 and free.outputs > 0) or (size and deficit.bytes > 0 and free.bytes > 0)


class Allotments:
    """This writer's side of spread jobs' job-wide limits."""

    def __init__(self, store: TableStore, writer: str, quota_defaults: QuotaDefaults) -> None:
        self.store = store
        self.writer = writer
        self.quota_defaults = quota_defaults
        # This process's chunks of one job ask for more headroom one at a time (each partition's
        # chunks take turns already): near the limit they would only reclaim from each other.
        self._asking: dict[str, asyncio.Lock] = {}
        self._grants: dict[str, GrantRow] = {}

    # -- reads -----------------------------------------------------------------------------

    async def state(self, partition: str) -> PartitionState:
        low, high = keys.prefix_range(keys.shard_prefix())
        view = JobView.of([row async for row in self.store.query_range(partition, low, high)])
        return PartitionState.of(keys.partition_index(partition), view)

    async def survey(self, layout: Layout) -> list[PartitionState]:
        """Every partition's ledger, read at once (each is exact as of its own moment)."""
        return list(await asyncio.gather(*(self.state(p) for p in layout.all())))

    async def in_force(self, layout: Layout, desired: Limits) -> GrantRow | None:
        """The grant row, open and holding the job's limits (``desired``, as this writer last read
        them); a change found under way or due is completed first. ``None``: no job-wide limit."""
        grant = GrantRow.of(await self.store.get(layout.base, keys.grant_key()))
        if grant is not None and grant.matches(desired):
            return grant
        if grant is None and not desired.limits_job:
            return None
        return await self.converge(layout)

    # -- limit changes ---------------------------------------------------------------------

    async def converge(self, layout: Layout) -> GrantRow | None:
        """Bring the grant row to the job's limits (``S|00``'s overrides, else the defaults).

        Close ``G`` with the target (guarded on ``S|00``, so the target is the limits as they
        stand), start the next epoch in every partition at its usage, open ``G`` in it. Each
        step is idempotent and recognised when done, so anyone may complete a change another
        began. Raises ``ConflictError`` when a step lost a race (the caller tries again).
        """
        base = layout.base
        rows = await self.store.get_many(base, [keys.counter_key(), keys.grant_key()])
        counter = rows.get(keys.counter_key())
        desired = Limits.effective(counter, self.quota_defaults)
        grant = GrantRow.of(rows.get(keys.grant_key()))
        if grant is None and not desired.limits_job:
            return None
        if grant is not None and grant.matches(desired):
            return grant
        if grant is None or grant.target is None:
            closed = (grant or GrantRow()).closed(desired)
            entity = closed.entity(keys.grant_key())
            etags = await self.store.submit(base, [guard(keys.counter_key(), counter),
                                                   write(entity, grant.row if grant else None)])
            grant = replace(closed, row={**entity, "__etag": etags[-1]})
            log.info("limits of %s changing to %s: epoch %d", base, grant.target, grant.epoch + 1)
        assert grant.target is not None
        epoch = grant.target[0]
        await _all(*(self._settle(p, lambda s, kept: s.start_epoch(epoch, kept), until_epoch=epoch)
                     for p in layout.all()))
        opened = grant.opened()
        entity = opened.entity(keys.grant_key())
        etags = await self.store.submit(base, [write(entity, grant.row)])
        return replace(opened, row={**entity, "__etag": etags[-1]})

    async def _settle(self, partition: str, released_for: Callable[[PartitionState, Amount], Released], *,
                      state: PartitionState | None = None, until_epoch: int | None = None,
                      epoch: int | None = None, zero: bool = True) -> PartitionState:
        """Zero every escrow of ``partition`` and raise its ``released`` (from ``state`` as
        read, else read now) in one transaction, guarded on ``S|00`` and each escrow's ETag.
        More escrows than a transaction holds are zeroed first, a batch at a time. A busy
        partition's writers keep rewriting their escrow rows, so a lost race is tried again
        here on a fresh read (while the partition is in ``epoch``). The partition as it then
        stands (its ledger as read before)."""
        for _ in range(RELEASE_ATTEMPTS):
            state = state or await self.state(partition)
            if until_epoch is not None and state.released.epoch >= until_epoch:
                return state  # this partition is in the new epoch already
            if epoch is not None and state.released.epoch != epoch:
                raise ConflictError("the job's limits changed meanwhile")
            held = _held(state.view) if zero else []
            now = datetime.now(timezone.utc)
            try:
                if len(held) >= MAX_BATCH_OPERATIONS:
                    await self.store.submit(partition, [guard(keys.counter_key(), state.view.counter), *(
                        write(e.entity(0, 0, now), e.row) for e in held[: MAX_BATCH_OPERATIONS - 1])])
                    state = None
                    continue
                released = released_for(state, Amount())
                if released == state.released and not held:
                    return state
                await self.store.submit(partition, [write(_counter_with(state.view.counter, released), state.view.counter),
                                                    *(write(e.entity(0, 0, now), e.row) for e in held)])
            except ConflictError:
                state = None
                continue
            return replace(state, escrowed=Amount() if zero else state.escrowed, released=released)
        raise ConflictError(f"{partition} kept moving while it was released")

    # -- a writer's grant ------------------------------------------------------------------

    async def grant(self, layout: Layout, partition: str, need: Amount, desired: Limits) -> tuple[Escrow, Limits]:
        """An escrow in ``partition`` covering ``need`` if the job's limit allows, else all the
        headroom left anywhere; with the job-wide limits it was granted under. Raises
        ``ConflictError`` when a race was lost (the caller backs off and asks again)."""
        for _ in range(MAX_STEPS):
            granted = await self._grant_step(layout, partition, need, desired)
            if granted is not None:
                return granted
        raise ConflictError(f"no allotment settled for {partition} in {MAX_STEPS} steps")

    async def _grant_step(self, layout: Layout, partition: str, need: Amount,
                          desired: Limits) -> tuple[Escrow, Limits] | None:
        # The grant row as last read serves a grant inside the partition: ``granted`` only grows
        # within an epoch, so an older read grants less, and the epoch is checked against the
        # partition's. It is read afresh before asking it for more.
        cached = self._grants.get(layout.base)
        grant = cached if cached is not None and cached.matches(desired) else await self.in_force(layout, desired)
        per_task = Limits(max_outputs_per_task=desired.max_outputs_per_task)
        if grant is None:
            return Escrow(self.writer), per_task
        self._grants[layout.base] = grant
        limits = grant.limits(desired.max_outputs_per_task)
        state = await self.state(partition)
        if state.released.epoch != grant.epoch:
            self._grants.pop(layout.base, None)
            raise ConflictError("the job's limits changed meanwhile")
        mine = state.view.escrows.get(self.writer) or Escrow(self.writer)
        if not limits.limits_job:
            return mine, limits
        want = Amount(max(need.outputs - mine.outputs, 0), max(need.bytes - mine.bytes, 0))
        free = state.free(grant)
        if short(free, want, limits):
            if grant is cached:
                self._grants.pop(layout.base, None)
                return None  # decide again on a fresh read of the grant row
            async with self._asking.setdefault(layout.base, asyncio.Lock()):
                if await self._more(layout, grant, partition, want, limits):
                    return None  # granted or freed headroom: decide again on a fresh read
        given = share(want, free, limits, GRANT_SHARE)
        if mine.row is not None and not any_left(given, limits):
            return mine, limits  # nothing more anywhere: its commit is guarded on its escrow row
        now = datetime.now(timezone.utc)
        escrow = mine.entity(mine.outputs + given.outputs, mine.bytes + given.bytes, now)
        etags = await self.store.submit(partition, [guard(keys.counter_key(), state.view.counter), write(escrow, mine.row)])
        log.debug("escrow of %s in %s: %s", self.writer, partition, given)
        return Escrow.of({**escrow, "__etag": etags[-1]}), limits

    async def _more(self, layout: Layout, grant: GrantRow, partition: str, want: Amount, limits: Limits) -> bool:
        """More headroom for this writer in ``partition``: granted from what no partition holds,
        after freeing other writers' and partitions' unused headroom if too little is free.
        ``False``: there is none anywhere."""
        states = await self.survey(layout)
        if not epochs_agree(grant, states):
            raise ConflictError("the job's limits changed meanwhile")
        me = by_index(states)[keys.partition_index(partition)]
        if not short(me.free(grant), want, limits):
            return True  # freed meanwhile
        if short(job_free(grant, states), want.minus(me.free(grant)), limits):
            lacking = want.minus(me.free(grant)).minus(job_free(grant, states))
            # Allotment no writer holds is given back without disturbing anyone (its writers'
            # escrow rows untouched); only when that is not enough are escrows taken back too.
            idle = [s for s in states if s.index != me.index and any_left(s.free(grant), limits)]
            zero = short(_total_free(grant, idle), lacking, limits)
            candidates = [s for s in states if s.index != me.index and s.unused(grant, limits)] if zero else idle
            others = _enough(grant, candidates, lacking, limits, zero=zero)
            mine = _held(me.view, except_writer=self.writer) if zero else []
            if others or any_left(_total(mine), limits):
                # Grant from what the reclaim frees at once: waiting would let it be reclaimed back.
                states = await self._reclaim(layout, grant, me, others, mine, states, zero=zero)
                me = by_index(states)[me.index]
                if not short(me.free(grant), want, limits):
                    return True
        deficit, free = want.minus(me.free(grant)), job_free(grant, states)
        if not _gives(free, deficit, limits):
            return False
        await self._top_up(layout, grant, me, share(deficit, free, limits, PARTITION_SHARE))
        return True

    async def _top_up(self, layout: Layout, grant: GrantRow, me: PartitionState, extra: Amount) -> None:
        topped = grant.topped_up(me.index, me.held(grant).plus(extra), me.released)
        await self.store.submit(layout.base, [write(topped.entity(keys.grant_key()), grant.row)])

    async def _reclaim(self, layout: Layout, grant: GrantRow, me: PartitionState, others: list[PartitionState],
                       mine: list[Escrow], states: list[PartitionState], *, zero: bool) -> list[PartitionState]:
        """Near the limit: other partitions released to their usage (``zero``: escrows included),
        other writers' escrows here zeroed; every partition as it then stands."""
        partitions = layout.all()

        def to_usage(state: PartitionState, kept: Amount) -> Released:
            return state.release_to_usage(grant, kept if zero else state.escrowed)

        work: list[Awaitable[object]] = [self._settle(partitions[s.index], to_usage, state=s, epoch=grant.epoch,
                                                      zero=zero) for s in others]
        if mine:
            now = datetime.now(timezone.utc)
            ops: list[Operation] = [guard(keys.counter_key(), me.view.counter)]
            ops += [write(e.entity(0, 0, now), e.row) for e in mine[: MAX_BATCH_OPERATIONS - 1]]
            work.append(self.store.submit(partitions[me.index], ops))
        settled = {s.index: s for s in await _all(*work) if isinstance(s, PartitionState)}
        left = [e for e in me.view.escrows.values() if e not in mine[: MAX_BATCH_OPERATIONS - 1]]
        settled[me.index] = replace(me, escrowed=_total(left))
        log.info("reclaimed the unused allotment of %d partition(s) and %d escrow(s) of %s: near its limit",
                 len(others), len(mine), layout.base)
        return [settled.get(s.index, s) for s in states]
