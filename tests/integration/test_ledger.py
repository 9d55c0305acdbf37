"""The usage ledger against a real Azurite: writers of one job share no row, folds are exact.

Two ``Service`` instances (as two Function instances would be) ingest one job; the summary is
exact before any fold, while folds run concurrently, after a fold is cut short by dropped
connections, and once everything is folded, when the deltas are gone.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterator

import pytest

from devtools.azurite import Azurite
from shared.domain import keys
from shared.domain.conventions import container_name
from shared.domain.events import EventBatch
from shared.service import Service
from shared.store.envelopes import parse_events

from ..helpers import blob_event
from ..support.faultproxy import FaultProxy
from ..support.stack import settings_for

JOB = "ledger-job"
CONTAINER = container_name(JOB)


def workload(count: int, seed: int) -> tuple[list[dict], dict[str, int]]:
    """Creates, overwrites and deletes over 40 tasks; the truly live blobs and their sizes."""
    rng = random.Random(seed)
    events, live = [], {}
    for sequencer in range(1, count + 1):
        name = f"task-{rng.randrange(40):02d}/${rng.choice(['TaskOutput', 'TaskPreview', 'TaskLog'])}/f{rng.randrange(60)}.bin"
        if name in live and rng.random() < 0.2:
            events.append(blob_event(CONTAINER, name, deleted=True, sequencer=sequencer))
            del live[name]
        else:
            size = rng.randrange(1, 5000)
            events.append(blob_event(CONTAINER, name, sequencer=sequencer, size=size))
            live[name] = size
    return events, live


def expected(live: dict[str, int]) -> tuple[dict[str, int], int, dict[str, dict[str, int]]]:
    kinds: dict[str, dict[str, int]] = {}
    for name, size in live.items():
        entry = kinds.setdefault(name.split("/")[1][1:], {"outputs": 0, "bytes": 0})
        entry["outputs"] += 1
        entry["bytes"] += size
    return {"outputs": len(live), "bytes": sum(live.values())}, len({n.split("/")[0] for n in live}), dict(sorted(kinds.items()))


async def ledger_rows(service: Service) -> list[str]:
    low, high = keys.prefix_range(keys.shard_prefix())
    return [row["RowKey"] async for row in service.store.query_range(CONTAINER, low, high)]


async def assert_exact(service: Service, live: dict[str, int]) -> None:
    usage, tasks, kinds = expected(live)
    summary = await service.query.job_summary(JOB)
    assert summary is not None
    assert (summary["usage"], summary["tasks"], summary["kinds"]) == (usage, tasks, kinds)


async def ingest(service: Service, events: list[dict]) -> None:
    for start in range(0, len(events), 100):
        batch: EventBatch = parse_events(events[start : start + 100])
        await service.ingest(batch)


@pytest.fixture
def proxy(azurite: Azurite) -> Iterator[FaultProxy]:
    instance = FaultProxy(f"http://127.0.0.1:{azurite.table_port}", seed=5, faults=("drop", "drop_after")).start()
    yield instance
    instance.stop()


def test_two_writers_share_no_row_and_every_fold_step_keeps_usage_exact(azurite: Azurite, proxy: FaultProxy) -> None:
    settings = settings_for(azurite)
    faulty = settings_for(azurite, INDEX_STORAGE=proxy.connection_string(azurite.connection_string, azurite.table_port),
                          INDEX_TABLE=settings.index_table, STORAGE_RETRY_TOTAL="0")
    events, live = workload(1200, seed=21)

    async def run() -> None:
        first_, second_, checker_ = [await Service.create(settings) for _ in range(3)]
        try:
            # Folds are left to this test: nothing folds behind its back.
            for service in (first_, second_):
                service.indexer.compactor.delay = 3600
            await asyncio.gather(ingest(first_, events[0::2]), ingest(second_, events[1::2]))
            rows = await ledger_rows(checker_)
            deltas = [r for r in rows if r.startswith(keys.delta_prefix())]
            assert deltas and not any(r == keys.counter_key() for r in rows), rows[:5]
            await assert_exact(checker_, live)  # counters hold nothing yet: deltas alone

            # A fold cut short by dropped connections leaves a round that the next fold resumes.
            broken = await Service.create(faulty)
            try:
                proxy.rate = 0.35
                for _ in range(3):
                    try:
                        await broken.indexer.compactor.fold(CONTAINER, force=True)
                    except Exception:  # the round stops part-way: that is the point
                        pass
                    await assert_exact(checker_, live)
            finally:
                proxy.rate = 0.0
                await broken.close()

            # Two instances folding at once: still exact, and nothing is folded twice.
            await asyncio.gather(first_.indexer.compactor.fold(CONTAINER, force=True),
                                 second_.indexer.compactor.fold(CONTAINER, force=True))
            await first_.indexer.compactor.fold(CONTAINER, force=True)
            rows = await ledger_rows(checker_)
            assert rows == [keys.counter_key()], rows[:5]
            await assert_exact(checker_, live)
        finally:
            for service in (first_, second_, checker_):
                await service.close()

    asyncio.run(run())
    assert proxy.injected, "no fault was injected: the resumption proves nothing"


def test_the_task_listing_is_exact_and_read_only_with_tasks_that_have_no_row_yet(azurite: Azurite) -> None:
    """Tasks folded, tasks with a row and unfolded deltas, and tasks only in unfolded deltas (no
    row yet) are listed once each, in key order, on every page size; listing folds nothing."""
    events, live = workload(900, seed=7)
    half = len(events) // 2
    early = [e for e in events[:half] if int(e["subject"].split("/blobs/task-")[1][:2]) < 20]
    rest = [e for e in events if e not in early]  # every blob's events stay in order
    per_task: dict[str, dict] = {}
    for name, size in live.items():
        task, kind = name.split("/")[0], name.split("/")[1][1:]
        entry = per_task.setdefault(task, {"outputs": 0, "bytes": 0, "kinds": {}})
        entry["outputs"] += 1
        entry["bytes"] += size
        counts = entry["kinds"].setdefault(kind, {"outputs": 0, "bytes": 0})
        counts["outputs"] += 1
        counts["bytes"] += size

    async def listed(service: Service, page_size: int) -> list[dict]:
        items, token = [], None
        while True:
            page = await service.query.tasks(JOB, page_size, token)
            assert len(page.items) <= page_size
            items += page.items
            if page.next_token is None:
                return items
            token = page.next_token

    async def run() -> None:
        service = await Service.create(settings_for(azurite))
        try:
            service.indexer.compactor.delay = 3600  # folds are left to this test
            await ingest(service, early)
            await service.indexer.compactor.fold(CONTAINER, force=True)
            await ingest(service, rest)
            rows_before = await ledger_rows(service)
            task_rows = {r["RowKey"] async for r in service.store.query_range(CONTAINER, *keys.prefix_range(keys.task_usage_prefix()))}
            rowless = {t for t in per_task if keys.task_usage_key(t) not in task_rows}
            assert rowless and len(rowless) < len(per_task)  # both kinds of task are listed
            for page_size in (1, 3, 7, 100):
                items = await listed(service, page_size)
                assert [i["taskId"] for i in items] == sorted(per_task), page_size  # each once, in key order
                assert {i["taskId"]: {"outputs": i["outputs"], "bytes": i["bytes"], "kinds": i["kinds"]} for i in items} == per_task
                assert all(i["lastIndexedAt"] for i in items)
            assert await ledger_rows(service) == rows_before  # listing folded nothing
        finally:
            await service.close()

    asyncio.run(run())


def test_a_job_of_many_long_kinds_is_indexed_folded_and_summarized_exactly(azurite: Azurite) -> None:
    """98 kinds of 900 characters: ~90K characters of kind counts, past Table storage's 64 KiB
    string property (which Azurite enforces too), in a delta, the task row and the counters."""
    job = "many-long-kinds"
    container = container_name(job)
    kinds = [f"{i:02d}-" + "k" * 900 for i in range(98)]
    events = [blob_event(container, f"t1/${kind}/f.bin", sequencer=i + 1, size=i + 1) for i, kind in enumerate(kinds)]
    expected_kinds = {kind: {"outputs": 1, "bytes": i + 1} for i, kind in enumerate(kinds)}

    async def summary(service: Service) -> tuple[dict, dict, dict]:
        job_summary = await service.query.job_summary(job)
        assert job_summary is not None
        tasks = {t["taskId"]: t for t in (await service.query.tasks(job, 100, None)).items}
        return job_summary["usage"], job_summary["kinds"], tasks["t1"]["kinds"]

    async def run() -> None:
        service = await Service.create(settings_for(azurite))
        try:
            service.indexer.compactor.delay = 3600
            report = await service.ingest(parse_events(events))
            assert report.indexed == 98, report.as_dict()  # one transaction: one delta row with all of them
            await service.indexer.compactor.fold(container, force=True)
            low, high = keys.prefix_range(keys.shard_prefix())
            assert [r["RowKey"] async for r in service.store.query_range(container, low, high)] == [keys.counter_key()]
            usage, job_kinds, task_kinds = await summary(service)
            assert usage["outputs"] == 98 and job_kinds == task_kinds == expected_kinds

            # fewer kinds again: the rewritten rows keep none of the longer text
            deleted = [blob_event(container, f"t1/${kind}/f.bin", deleted=True, sequencer=200 + i) for i, kind in enumerate(kinds[1:])]
            await service.ingest(parse_events(deleted))
            await service.indexer.compactor.fold(container, force=True)
            usage, job_kinds, task_kinds = await summary(service)
            assert usage["outputs"] == 1 and job_kinds == task_kinds == {kinds[0]: {"outputs": 1, "bytes": 1}}
        finally:
            await service.close()

    asyncio.run(run())


def test_a_delivery_of_500_trigger_invocations_logs_a_few_records(settings, caplog: pytest.LogCaptureFixture,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """At the default level: no per-request azure-core lines, no per-event lines."""
    from devtools.worker_binding import trigger_argument
    from functions import blob_events

    container = container_name("quiet-job")
    events = [trigger_argument(blob_events.index_blob_event, blob_event(container, f"t{i % 9}/$TaskOutput/{i}")) for i in range(500)]
    monkeypatch.setattr(blob_events.services, "_settings", settings)
    caplog.set_level(logging.INFO)

    async def run() -> None:
        try:
            await asyncio.gather(*(blob_events.index_blob_event(e) for e in events))
        finally:
            await blob_events.services.close()

    asyncio.run(run())
    records = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert not [r for r in records if r.name.startswith("azure.core")], "azure-core logged requests at INFO"
    assert len(records) < 500 * 0.1, [r.getMessage()[:100] for r in records[:20]]
