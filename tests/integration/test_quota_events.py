"""``Batch.Outputs.QuotaExceeded`` published with azure-eventgrid to a local receiver (SPEC §4).

The receiver is a plain HTTP server started by the test; the real ``EventGridPublisherClient``
(aio) posts to it with the ``aeg-sas-key`` header of ``AzureKeyCredential`` (key auth does not
require https, unlike bearer tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from shared.conventions import container_name
from shared.settings import Settings
from shared.store.publisher import QUOTA_EXCEEDED

from ..helpers import blob_event
from ..support.eventsink import EventSink
from ..support.stack import RunningApp, settings_for

JOB = "notify-job"
C = container_name(JOB)
TOPIC_KEY = "topic-key-for-tests"


@pytest.fixture
def sink() -> Iterator[EventSink]:
    receiver = EventSink(only_type=QUOTA_EXCEEDED).start()  # output events are test_output_events.py's
    yield receiver
    receiver.stop()


@pytest.fixture
def topic_settings(azurite, sink: EventSink) -> Settings:
    return settings_for(azurite, EVENTS_TOPIC_ENDPOINT=sink.endpoint, EVENTS_TOPIC_KEY=TOPIC_KEY)


def outputs(first: int, count: int) -> list[dict]:
    return [blob_event(C, f"t{i % 4}/$TaskOutput/o{i}.bin", sequencer=i + 1, size=5) for i in range(first, first + count)]


def test_one_event_when_max_outputs_50_receives_80(serve: Callable[..., RunningApp], topic_settings: Settings, sink: EventSink) -> None:
    app, other_instance = serve(topic_settings), serve(topic_settings)
    assert app.client.put(f"/api/jobs/{JOB}", json={}).status_code == 200  # registers the job ID
    assert app.client.put(f"/api/jobs/{JOB}/quota", json={"maxOutputs": 50}).status_code == 200
    assert app.post_events(outputs(0, 40)).status_code == 200
    assert sink.posts == []  # under the limit: nothing said
    assert app.post_events(outputs(40, 40)).json()["rejected"] == 30
    # More rejections, from this and another instance, are the same crossing: no new event.
    assert other_instance.post_events(outputs(80, 5)).json()["rejected"] == 5
    assert app.post_events(outputs(85, 5)).json()["rejected"] == 5

    assert len(sink.posts) == 1
    post = sink.posts[0]
    assert post.headers["aeg-sas-key"] == TOPIC_KEY
    assert post.headers["content-type"].startswith("application/cloudevents-batch+json")
    (event,) = post.body
    assert event["type"] == QUOTA_EXCEEDED
    assert event["specversion"] == "1.0"
    assert event["subject"] == f"/jobs/{JOB}"
    assert event["data"]["jobId"] == JOB
    assert event["data"]["container"] == C
    assert event["data"]["limit"] == "maxOutputs"
    assert event["data"]["quota"] == {"maxOutputs": 50, "maxBytes": 0, "maxOutputsPerTask": 0}
    assert event["data"]["blobName"].startswith("t")

    # Raising the limit admits everything and ends the crossing; crossing again is a new one.
    assert app.client.put(f"/api/jobs/{JOB}/quota", json={"maxOutputs": 100}).status_code == 200
    assert app.get(f"/api/jobs/{JOB}").json()["usage"]["outputs"] == 90
    assert len(sink.posts) == 1
    assert app.post_events(outputs(90, 15)).json()["rejected"] == 5
    assert len(sink.delivered) == 2
    assert sink.delivered[1]["id"] != sink.delivered[0]["id"]


def test_a_failed_publication_is_retried_once_with_the_same_id(
    serve: Callable[..., RunningApp], topic_settings: Settings, sink: EventSink
) -> None:
    app = serve(topic_settings)
    assert app.client.put(f"/api/jobs/{JOB}/quota", json={"maxOutputs": 3}).status_code == 200
    sink.fail_with = 500
    # The topic is down: indexing still succeeds (the outputs are durable and rejected).
    response = app.post_events(outputs(0, 5))
    assert response.status_code == 200
    assert response.json()["rejected"] == 2
    assert sink.posts and sink.delivered == []
    failed_ids = {post.body[0]["id"] for post in sink.posts}
    assert len(failed_ids) == 1  # the SDK's own retries of one publication

    sink.fail_with = None
    assert app.post_events(outputs(5, 1)).json()["rejected"] == 1  # the next crossing attempt
    assert [e["id"] for e in sink.delivered] == list(failed_ids)
    app.post_events(outputs(6, 3))
    assert len(sink.delivered) == 1  # published: never again for this crossing
    assert app.get(f"/api/jobs/{JOB}").json()["rejections"]["outputs"] == 6


def test_not_published_when_the_endpoint_is_unset(serve: Callable[..., RunningApp], azurite, sink: EventSink) -> None:
    app = serve(settings_for(azurite, EVENTS_TOPIC_KEY=TOPIC_KEY))
    assert app.client.put(f"/api/jobs/{JOB}/quota", json={"maxOutputs": 1}).status_code == 200
    assert app.post_events(outputs(0, 3)).json()["rejected"] == 2
    assert sink.posts == []
    # Turning the topic on later does not replay old crossings, but announces new ones.
    app2 = serve(settings_for(azurite, INDEX_TABLE=app.settings.index_table,
                              EVENTS_TOPIC_ENDPOINT=sink.endpoint, EVENTS_TOPIC_KEY=TOPIC_KEY))
    assert app2.post_events(outputs(3, 1)).json()["rejected"] == 1
    assert sink.posts == []
    assert app2.client.put(f"/api/jobs/{JOB}/quota", json={"maxOutputs": 10}).status_code == 200
    app2.post_events(outputs(4, 10))
    assert len(sink.delivered) == 1
