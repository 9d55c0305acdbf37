"""The webhook under hostile deliveries (issue 14): forged sources and sequencers, sizes and
lengths Azure never sends, a validation event beside blob events. Each answers 200 with the
event counted as skipped (or 4xx), never 5xx, and leaves unrelated jobs unchanged."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shared.conventions import container_name
from shared.domain.sources import MAX_BLOB_BYTES

from ..helpers import LOCAL_ACCOUNT, LOCAL_TOPIC, blob_event, load_events
from ..support.stack import RunningApp
from ..support.workload import index_state

JOB = "AbusedJob"
C = container_name(JOB)
SENTINEL = "UntouchedJob"
NAME = "t1/$TaskOutput/keep.txt"


@pytest.fixture
def seeded(app: RunningApp) -> tuple[RunningApp, tuple]:
    events = [blob_event(C, NAME, sequencer=5, size=10), blob_event(container_name(SENTINEL), "t9/$TaskLog/log.txt", sequencer=5, size=3)]
    assert app.post_events(events).json()["indexed"] == 2
    return app, index_state(app, SENTINEL)


def post(app: RunningApp, events: list[dict]) -> dict:
    response = app.post_events(events)
    assert response.status_code == 200, response.text
    return response.json()


def listed(app: RunningApp) -> dict[str, int]:
    return {i["blobName"]: i["size"] for i in app.all_pages(f"/api/jobs/{JOB}/task-outputs")}


def test_a_forged_delete_from_another_account_hides_nothing(seeded) -> None:
    app, sentinel = seeded
    forged = blob_event(C, NAME, deleted=True, sequencer="f" * 32)
    forged["topic"] = LOCAL_TOPIC.replace(LOCAL_ACCOUNT, "attacker")
    by_url = blob_event(C, NAME, deleted=True, sequencer="f" * 32)
    by_url["data"]["url"] = f"https://attacker.blob.core.windows.net/{C}/t1/%24TaskOutput/keep.txt"
    body = post(app, [forged, by_url])
    assert body["skippedByReason"] == {"foreign-account": 2} and body["indexed"] == 0
    assert listed(app) == {NAME: 10}
    assert index_state(app, SENTINEL) == sentinel


@pytest.mark.parametrize("sequencer", ["~" * 32, "z" * 40, "f" * 1000, "\U0010ffff" * 8])
def test_a_sequencer_not_of_azures_shape_is_never_stored(seeded, sequencer: str) -> None:
    app, sentinel = seeded
    body = post(app, [blob_event(C, NAME, deleted=True, sequencer=sequencer)])
    assert body["skippedByReason"] == {"malformed-event": 1}
    assert listed(app) == {NAME: 10}
    # The next genuine event still applies: nothing pinned the row.
    assert post(app, [blob_event(C, NAME, sequencer=6, size=11)])["indexed"] == 1
    assert post(app, [blob_event(C, NAME, deleted=True, sequencer=7)])["indexed"] == 1
    assert listed(app) == {}
    assert index_state(app, SENTINEL) == sentinel


def test_sizes_whose_sum_overflows_int64_are_skipped(seeded) -> None:
    app, sentinel = seeded
    huge = [blob_event(C, f"t1/$TaskOutput/huge-{n}.bin", sequencer=9, size=2**62 + n) for n in range(2)]
    body = post(app, huge)
    assert body["skippedByReason"] == {"malformed-event": 2}
    largest = [blob_event(C, f"t1/$TaskOutput/largest-{n}.bin", sequencer=9, size=MAX_BLOB_BYTES) for n in range(2)]
    assert post(app, largest)["indexed"] == 2
    assert app.get(f"/api/jobs/{JOB}").json()["usage"] == {"outputs": 3, "bytes": 10 + 2 * MAX_BLOB_BYTES}
    assert index_state(app, SENTINEL) == sentinel


LONG = "x" * 40_000


@pytest.mark.parametrize("field", ["id", "subject", "url", "contentType", "eTag", "blobType", "api", "eventType", "topic"])
def test_40000_character_fields_are_skipped_not_500(seeded, field: str) -> None:
    app, sentinel = seeded
    event = blob_event(C, "t1/$TaskOutput/long.txt", sequencer=8)
    if field in ("id", "eventType", "topic"):
        event[field] = LONG
    elif field == "subject":
        event["subject"] += LONG
    else:
        event["data"][field] = LONG
    body = post(app, [event, blob_event(C, "t1/$TaskOutput/fine.txt", sequencer=8)])
    assert body["indexed"] == 1 and body["skipped"] == 1, body
    assert index_state(app, SENTINEL) == sentinel


def test_a_validation_event_with_blob_events_answers_the_handshake_and_indexes_them(app: RunningApp) -> None:
    validation = load_events("subscription_validation.json")[0]
    events = [blob_event(C, "t1/$TaskOutput/a.txt", sequencer=1), validation, blob_event(C, "t2/$TaskOutput/b.txt", sequencer=1)]
    body = post(app, events)
    assert body["validationResponse"] == validation["data"]["validationCode"]
    assert body["indexed"] == 2 and body["received"] == 2
    assert set(listed(app)) == {"t1/$TaskOutput/a.txt", "t2/$TaskOutput/b.txt"}
    assert post(app, [validation]) == {"validationResponse": validation["data"]["validationCode"]}


def test_a_flood_of_foreign_events_is_counted_not_logged_one_by_one(app: RunningApp, caplog: pytest.LogCaptureFixture) -> None:
    forged = []
    for n in range(500):
        event = blob_event(C, f"t1/$TaskOutput/{n}.txt", sequencer=n + 1)
        event["topic"] = LOCAL_TOPIC.replace(LOCAL_ACCOUNT, "attacker")
        forged.append(event)
    with caplog.at_level("WARNING", logger="shared.http.routes.events"):
        body = post(app, forged)
    assert body["skippedByReason"] == {"foreign-account": 500}
    assert len([r for r in caplog.records if r.name == "shared.http.routes.events"]) <= 11


@pytest.mark.parametrize("prefix", ["\U0010ffff", "a\U0010ffff", "\uffff", "\ud7ff", "\ue000", "\U00010000"])
def test_prefixes_at_the_edges_of_unicode_list_empty_not_500(seeded, prefix: str) -> None:
    app, _ = seeded
    for path in (f"/api/jobs/{JOB}/outputs", f"/api/jobs/{JOB}/task-outputs", f"/api/jobs/{JOB}/tasks/t1/outputs"):
        for params in ({"prefix": prefix}, {"prefix": prefix, "kind": "TaskOutput"}):
            response = app.get(path, params=params)
            assert response.status_code == 200, (path, params, response.text)
            assert response.json()["value"] == []


def test_the_raw_prefix_of_the_report(serve: Callable[..., RunningApp], settings) -> None:
    app = serve(settings)
    response = app.client.get(f"/api/jobs/{JOB}/task-outputs?kind=TaskOutput&prefix=%F4%8F%BF%BF")
    assert response.status_code == 200, response.text
