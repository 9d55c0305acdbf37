"""A spread job's job-wide limit is exact under every interleaving of writers, folds and limit changes.

The scheduler and the in-memory table of ``test_reads_interleaved`` run the product's own
``Indexer`` (writers in different partitions of a job spread over three, each with its own
escrow), its ``Compactor`` and its ``QuotaAdministration`` (a limit raised or lowered while
they write): every request waits for the scheduler and Hypothesis chooses the order. After every
transaction:

* no transaction that admits an output leaves more admitted than the limit in force (the grant
  row's, which a change only moves once every partition's escrows are back);

and at the end (creates only, so a rejection means the job was full):

* an output is rejected only if the job has no headroom left anywhere, i.e. the admitted total
  is at least the final limit (a grant, a reclaim and a limit change never strand headroom);
* the summary's usage and rejections equal the rows in the table, which equal the sum of every
  delta committed (usage is exact).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from shared.domain import keys
from shared.domain.layout import Layout
from shared.domain.planning import Op, Operation
from shared.domain.quotas import QuotaDefaults
from shared.domain.rows import LIVE, REJECTED, as_int
from shared.ingest.compactor import Compactor
from shared.ingest.indexer import Indexer
from shared.ingest.quota_admin import QuotaAdministration
from shared.read.paging import TokenCodec
from shared.read.query import QueryService
from shared.store.envelopes import parse_event
from shared.store.errors import ConflictError, StorageBusyError

from ..helpers import blob_event
from .test_reads_interleaved import CONTAINER, JOB, Scheduler, SteppedTable, Truth

PARTITIONS = 3
LAYOUT = Layout(CONTAINER, PARTITIONS)


def tasks_of_partition(index: int, count: int) -> list[str]:
    """Task IDs whose outputs the layout puts in partition ``index``."""
    found = (t for t in (f"t{n}" for n in itertools.count()) if LAYOUT.for_task(t) == LAYOUT.all()[index])
    return list(itertools.islice(found, count))


class LimitedTable(SteppedTable):
    """The stepped table, recording after every transaction the admitted total and the limit in force."""

    def __init__(self, scheduler: Scheduler, truth: Truth) -> None:
        super().__init__(scheduler, truth, 1000)
        self.steps: list[tuple[int, int, int]] = []  # (admitted before, admitted after, limit in force)

    async def submit(self, partition: str, operations: Sequence[Operation]) -> list[str | None]:
        before = sum(self.truth.tasks.values())
        etags = await super().submit(partition, operations)
        base = self.partitions.get(CONTAINER, {})
        grant, counter = base.get(keys.grant_key()), base.get(keys.counter_key()) or {}
        # A limit lifted (0) is lifted as soon as it is written; any other is in force once the
        # grant row holds it.
        lifted = counter.get("MaxOutputs") is not None and not as_int(counter.get("MaxOutputs"))
        limit = 0 if lifted or grant is None else as_int(grant.get("LimitOutputs"))
        self.steps.append((before, sum(self.truth.tasks.values()), limit))
        return etags

    async def insert_if_absent(self, entity: dict[str, Any]) -> bool:
        try:
            await self.submit(entity["PartitionKey"], [Operation(Op.CREATE, entity)])
        except ConflictError:
            return False
        return True


@dataclass
class World:
    scheduler: Scheduler = field(default_factory=Scheduler)
    truth: Truth = field(default_factory=Truth)
    store: LimitedTable = field(init=False)
    sequencers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.store = LimitedTable(self.scheduler, self.truth)
        job_row = {"RowKey": CONTAINER, "JobId": JOB, keys.PARTITIONS: PARTITIONS}
        self.store.partitions[keys.JOBS_PARTITION] = {CONTAINER: self.store._stored(keys.JOBS_PARTITION, job_row)}

    def indexer(self, name: str) -> Indexer:
        """One instance: its own escrows, limits cache and compactor (which never folds by itself)."""
        indexer = Indexer(self.store, QuotaDefaults(), writer=name, fold_delay=3600, flush_delay=3600)
        indexer.registry._known.add(CONTAINER)
        indexer.layouts.remember(LAYOUT)
        return indexer

    def events(self, tasks: list[str], per_task: int) -> list[dict[str, Any]]:
        return [blob_event(CONTAINER, f"{task}/$TaskOutput/o{n}.bin", sequencer=next(self.sequencers), size=10)
                for task in tasks for n in range(per_task)]

    async def write(self, name: str, deliveries: list[list[dict[str, Any]]]) -> None:
        """One instance ingesting deliveries; one handed back (storage busy) is delivered again."""
        indexer = self.indexer(name)
        for delivery in deliveries:
            events = [parse_event(e) for e in delivery]
            for _ in range(20):
                try:
                    await indexer.ingest(events)  # type: ignore[arg-type]
                    break
                except StorageBusyError:
                    continue
            else:
                raise AssertionError(f"{name}: a delivery kept being handed back")

    async def set_limit(self, max_outputs: int) -> None:
        await QuotaAdministration(self.indexer("admin")).set_limits(CONTAINER, {"max_outputs": max_outputs})

    async def fold(self, rounds: int) -> None:
        compactor = Compactor(self.store, "folder", delay=0)
        for _ in range(rounds):
            for partition in LAYOUT.all():
                await compactor.fold(partition)

    def rows(self, state: str) -> int:
        return sum(1 for partition in LAYOUT.all() for key, row in self.store.partitions.get(partition, {}).items()
                   if key.startswith("T|") and row.get("State") == state)


async def run(world: World, actors: dict[str, Awaitable[Any]], choose: Callable[[list[str]], str]) -> None:
    for name, work in actors.items():
        world.scheduler.start(name, work)
    while waiting := await world.scheduler.settle():
        world.scheduler.let_through(choose(waiting))
    for task in world.scheduler.actors.values():
        task.result()  # an actor's own failure fails the test
    world.scheduler.actors.clear()


def no_backoff() -> contextlib.AbstractContextManager[object]:
    """Backoffs after a lost race take no time (a turn of the loop), so that every actor is
    always at a request or done."""
    return mock.patch("random.uniform", return_value=0.0)


async def scenario(world: World, choose: Callable[[list[str]], str], *, first: int, then: int | None,
                   per_task: int, rounds: int) -> None:
    await run(world, {"setup": world.set_limit(first)}, lambda waiting: waiting[0])
    actors: dict[str, Awaitable[Any]] = {
        f"writer-{p}": world.write(f"writer-{p}", [world.events(tasks_of_partition(p, 2)[i:i + 1], per_task) for i in (0, 1)])
        for p in range(PARTITIONS)
    }
    # One instance writing to every partition in one delivery (a chunk per partition, at once).
    actors["writer-all"] = world.write("writer-all", [world.events([tasks_of_partition(p, 3)[2] for p in range(PARTITIONS)], 1)])
    actors["folder"] = world.fold(rounds)
    if then is not None:
        actors["admin"] = world.set_limit(then)
    await run(world, actors, choose)


def check(world: World, final_limit: int) -> None:
    for before, after, limit in world.store.steps:
        assert after <= before or not limit or after <= limit, f"{after} admitted under a limit of {limit}"
    admitted, rejected = world.rows(LIVE), world.rows(REJECTED)
    assert admitted == sum(world.truth.tasks.values())
    assert rejected == 0 or admitted >= final_limit, f"{rejected} rejected with {admitted} of {final_limit} admitted"

    async def summary() -> dict[str, Any]:
        query = QueryService(world.store, QuotaDefaults(), TokenCodec("model"), "http://blobs")
        found = await query.job_summary(JOB)
        assert found is not None
        return found

    async def read() -> dict[str, Any]:
        holder: dict[str, Any] = {}

        async def reader() -> None:
            holder["summary"] = await summary()

        await run(world, {"reader": reader()}, lambda waiting: waiting[0])
        return holder["summary"]

    body = asyncio.run(read())
    assert body["usage"]["outputs"] == admitted
    assert body["rejections"]["outputs"] == rejected
    assert body["quota"]["maxOutputs"] == final_limit


LIMITS = st.sampled_from([(5, None), (3, None), (4, 9), (8, 3), (6, 0), (40, 3), (2, 40), (30, 5)])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(data=st.data(), limits=LIMITS, per_task=st.integers(1, 3), rounds=st.integers(0, 2))
def test_a_spread_jobs_limit_holds_under_every_interleaving(data: st.DataObject, limits: tuple[int, int | None],
                                                            per_task: int, rounds: int) -> None:
    """Four writers over three partitions, a folder, and perhaps a limit change, in any order."""
    first, then = limits
    world = World()
    with no_backoff():
        asyncio.run(scenario(world, lambda waiting: data.draw(st.sampled_from(waiting)), first=first, then=then,
                             per_task=per_task, rounds=rounds))
        check(world, first if then is None else then)


@pytest.mark.parametrize("first,then", [(4, None), (2, 7), (9, 2)], ids=["grant-reclaim", "raised", "lowered"])
def test_writers_in_turn_then_a_change(first: int, then: int | None) -> None:
    """Step by step: each writer's requests in turn (so each partition is granted, then the
    later ones must reclaim the earlier ones' unused allotment), the change last."""
    world = World()

    def in_turn(waiting: list[str]) -> str:
        for name in ("writer-0", "writer-1", "writer-2", "writer-all", "folder", "admin"):
            mine = [label for label in waiting if label.startswith(f"{name}#")]
            if mine:
                return mine[0]
        return waiting[0]

    with no_backoff():
        asyncio.run(scenario(world, in_turn, first=first, then=then, per_task=2, rounds=1))
        check(world, first if then is None else then)
    if then is None:
        assert world.rows(LIVE) == first  # 15 outputs wanted: the limit is reached exactly
