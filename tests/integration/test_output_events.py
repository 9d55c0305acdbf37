"""``Batch.Outputs.OutputCreated`` / ``OutputDeleted`` published to a real HTTP receiver (SPEC §11).

The real ``EventGridPublisherClient`` posts to ``tests/support/eventsink.py``. Events go out per
fold round, in batches, once the round's changes are in the feed: at least once (a round
resumed after its instance died publishes again, with the same IDs), and a topic that keeps
failing never fails the fold or ingest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.azurite import Azurite
from shared.domain.conventions import container_name
from shared.ingest.compactor import Compactor
from shared.read.feed import Filter
from shared.service import Service
from shared.store.envelopes import parse_events
from shared.store.publisher import OUTPUT_CREATED, OUTPUT_DELETED

from ..helpers import blob_event
from ..support.eventsink import EventSink
from ..support.stack import settings_for

JOB = "events-job"
C = container_name(JOB)


@pytest.fixture
def sink() -> Iterator[EventSink]:
    receiver = EventSink().start()
    yield receiver
    receiver.stop()


def run(azurite: Azurite, sink: EventSink, body: Any, services: int = 1) -> None:
    settings = settings_for(azurite, EVENTS_TOPIC_ENDPOINT=sink.endpoint, EVENTS_TOPIC_KEY="topic-key")

    async def main() -> None:
        created = [await Service.create(settings) for _ in range(services)]
        try:
            for service in created:
                service.indexer.compactor.delay = 3600  # folds are driven by the test
            await created[0].indexer.registry.register(C, JOB)
            await body(*created)
        finally:
            for service in created:
                await service.close()

    asyncio.run(main())


async def ingest(service: Service, events: list[dict], batch: int = 100) -> None:
    for start in range(0, len(events), batch):
        await service.ingest(parse_events(events[start : start + batch]))


def test_one_event_per_indexed_output_batched_per_round_with_filterable_subjects(azurite: Azurite, sink: EventSink) -> None:
    creates = [blob_event(C, f"t{i % 5}/$TaskPreview/p{i}.png", sequencer=i + 1, size=i) for i in range(300)]
    creates.append(blob_event(C, "$JobOutput/movie.mp4", sequencer=999, size=7))

    async def body(service: Service) -> None:
        await ingest(service, creates)
        assert sink.posts == []  # nothing before the changes are durable in the feed
        await service.indexer.compactor.fold(C)
        created = [e for e in sink.delivered if e["type"] == OUTPUT_CREATED]
        assert len(created) == 301 and len({e["id"] for e in created}) == 301
        by_path = {e["data"]["output"]["path"]: e for e in created}
        event = by_path["p7.png"]
        assert event["subject"] == f"/jobs/{JOB}/tasks/t2/kinds/TaskPreview/outputs/p7.png"
        assert event["data"]["change"] == "created" and event["data"]["output"]["size"] == 7
        assert event["source"] == "/batch-output-index" and event["specversion"] == "1.0"
        assert by_path["movie.mp4"]["subject"] == f"/jobs/{JOB}/kinds/JobOutput/outputs/movie.mp4"
        assert len(sink.posts) <= 301 * 0.02, len(sink.posts)  # batched: at most 0.02 requests an output
        assert service.output_events is not None and service.output_events.requests == len(sink.posts)

        posts = len(sink.posts)
        # Overwrites are created again (the subscriber sees the new version); deletes are deleted;
        # duplicates and stale events publish nothing.
        await ingest(service, [blob_event(C, "t0/$TaskPreview/p0.png", sequencer=1000, size=70),
                               blob_event(C, "t1/$TaskPreview/p1.png", sequencer=1001, deleted=True),
                               blob_event(C, "t2/$TaskPreview/p2.png", sequencer=3, size=2)])
        await service.indexer.compactor.fold(C)
        later = [e for post in sink.posts[posts:] for e in post.body]
        assert sorted((e["type"], e["data"]["output"]["path"]) for e in later) == [
            (OUTPUT_CREATED, "p0.png"), (OUTPUT_DELETED, "p1.png")]
        deleted = next(e for e in later if e["type"] == OUTPUT_DELETED)
        assert deleted["subject"] == f"/jobs/{JOB}/tasks/t1/kinds/TaskPreview/outputs/p1.png"

    run(azurite, sink, body)


class DiesBeforeDeleting(Compactor):
    async def _delete(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("instance died")


def test_a_round_resumed_after_its_instance_died_publishes_again_with_the_same_ids(azurite: Azurite, sink: EventSink) -> None:
    async def body(first: Service, second: Service) -> None:
        await ingest(first, [blob_event(C, f"t1/$TaskOutput/o{i}.bin", sequencer=i + 1) for i in range(10)])
        dying = DiesBeforeDeleting(first.store, "dying")
        dying.round_listeners = first.indexer.compactor.round_listeners
        with pytest.raises(RuntimeError):
            await dying.fold(C)
        once = [e["id"] for e in sink.delivered]
        assert len(once) == 10
        await second.indexer.compactor.fold(C, force=True)
        assert [e["id"] for e in sink.delivered] == once + once  # at least once: same IDs again
        await second.indexer.compactor.fold(C, force=True)
        assert len(sink.delivered) == 20  # the round is over: never again

    run(azurite, sink, body, services=2)


def test_a_topic_that_keeps_failing_fails_neither_ingest_nor_the_fold(azurite: Azurite, sink: EventSink) -> None:
    sink.fail_with = 500

    async def body(service: Service) -> None:
        await ingest(service, [blob_event(C, f"t1/$TaskOutput/o{i}.bin", sequencer=i + 1) for i in range(10)])
        assert await service.indexer.compactor.fold(C) == 1
        publisher = service.output_events
        assert publisher is not None and publisher.failed == 10 and publisher.published == 0
        assert sink.posts and sink.delivered == []
        summary = await service.query.job_summary(JOB)
        assert summary is not None and summary["usage"]["outputs"] == 10
        assert service.feed is not None
        walk = await service.feed.changes(C, JOB, cursor=None, start=True, where=Filter(), size=100)
        assert len(walk["value"]) == 10  # the feed has them: it is the source of truth

    run(azurite, sink, body)


def test_a_spread_jobs_partitions_publish_their_outputs_under_the_job(azurite: Azurite, sink: EventSink) -> None:
    job = "events-spread"
    container = container_name(job)
    creates = [blob_event(container, f"t{i % 8}/$TaskPreview/p{i}.png", sequencer=i + 1, size=i) for i in range(80)]
    creates.append(blob_event(container, "$JobOutput/movie.mp4", sequencer=999, size=7))

    async def body(service: Service) -> None:
        await service.layouts.set(container, job, 4)
        await ingest(service, creates)
        assert sink.posts == []
        layout = await service.indexer.layouts.get(container)
        await service.indexer.compactor.fold_job(layout.all())
        created = [e for e in sink.delivered if e["type"] == OUTPUT_CREATED]
        assert len(created) == 81 and len({e["id"] for e in created}) == 81
        subjects = {e["subject"] for e in created}
        assert f"/jobs/{job}/tasks/t3/kinds/TaskPreview/outputs/p3.png" in subjects
        assert f"/jobs/{job}/kinds/JobOutput/outputs/movie.mp4" in subjects
        assert {e["data"]["output"]["container"] for e in created} == {container}  # not a partition's name

    run(azurite, sink, body)
