"""Dead letters without storage: Event Grid's blob format, the local event source giving up as
Event Grid does, and the CLI's ``--since`` (``shared.domain.deadletters``, ``devtools.event_feed``)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from batch_outputs._cli_config import CliError
from batch_outputs._cli_index import parse_since
from devtools.event_feed import DeadLettered, EventFeed, HandedBack
from shared.domain.deadletters import (
    DELIVERY_FIELDS,
    DeadLetterFormatError,
    ReplayReport,
    dead_letter_blob,
    dead_lettered,
    dead_lettered_at,
    read_dead_letters,
)

from ..helpers import blob_event

#: A dead-letter blob as Event Grid writes it: the events as published, each with its delivery record.
EVENT_GRID_BLOB = [
    {**blob_event("job-a", "t1/$TaskOutput/x.bin", sequencer=5), "deadLetterReason": "MaxDeliveryAttemptsExceeded",
     "deliveryAttempts": 30, "lastDeliveryOutcome": "GenericError", "lastHttpStatusCode": 500,
     "publishTime": "2026-11-22T10:00:00.1234567Z", "lastDeliveryAttemptTime": "2026-11-23T09:58:11.0000000Z"},
    {**blob_event("job-a", "t2/$TaskOutput/y.bin", sequencer=6), "deadLetterReason": "UndeliverableDueToHttpBadRequest",
     "deliveryAttempts": 1, "lastDeliveryOutcome": "BadRequest", "lastHttpStatusCode": 400,
     "publishTime": "2026-11-22T10:00:00Z", "lastDeliveryAttemptTime": "2026-11-22T10:00:01Z"},
]


def test_a_dead_letter_blob_splits_into_the_events_as_published_and_why() -> None:
    letters = read_dead_letters(json.dumps(EVENT_GRID_BLOB).encode())
    assert [(d.reason, d.attempts, d.outcome, d.status) for d in letters] == [
        ("MaxDeliveryAttemptsExceeded", 30, "GenericError", 500), ("UndeliverableDueToHttpBadRequest", 1, "BadRequest", 400)]
    for letter, raw in zip(letters, EVENT_GRID_BLOB, strict=True):
        assert not set(DELIVERY_FIELDS) & set(letter.event)
        assert letter.event == {k: v for k, v in raw.items() if k not in DELIVERY_FIELDS}


@pytest.mark.parametrize("body", [b"not json", b'["an event?"]', b"[" * 5000])
def test_a_blob_that_is_no_array_of_events_is_refused(body: bytes) -> None:
    with pytest.raises(DeadLetterFormatError):
        read_dead_letters(body)


def test_a_single_object_without_a_record_is_one_event_of_unknown_reason() -> None:
    (letter,) = read_dead_letters(json.dumps(blob_event("job-a", "t1/$TaskOutput/x")).encode())
    assert letter.reason == "Unknown" and letter.attempts is None


@pytest.mark.parametrize(("name", "expected"), [
    ("storageaccount1/INDEX-BATCH-OUTPUTS/2026/11/3/7/0c8e1a34-5c4b-4d2a-9f0e-7a1d2c3b4e5f.json", datetime(2026, 11, 3, 7, tzinfo=timezone.utc)),
    ("topic/SUB/2026/01/09/23/x.json", datetime(2026, 1, 9, 23, tzinfo=timezone.utc)),
    ("SUB/2026/2/30/1/x.json", None),  # no such day
    ("something-else.json", None),
])
def test_the_dead_letter_hour_is_read_from_the_blob_name(name: str, expected: datetime | None) -> None:
    assert dead_lettered_at(name) == expected


def test_names_and_records_are_written_as_event_grid_writes_them() -> None:
    at = datetime(2026, 3, 4, 5, 6, tzinfo=timezone.utc)
    name = dead_letter_blob("devstoreaccount1", "local-event-feed", at)
    assert name.startswith("devstoreaccount1/LOCAL-EVENT-FEED/2026/3/4/5/") and name.endswith(".json")
    assert dead_lettered_at(name) == at.replace(minute=0)
    event = blob_event("job-a", "t1/$TaskOutput/x")
    record = dead_lettered(event, reason="MaxDeliveryAttemptsExceeded", attempts=3, outcome="Busy", status=503,
                           published=at, last_attempt=at + timedelta(seconds=9))
    (letter,) = read_dead_letters(json.dumps([record]).encode())
    assert (letter.event, letter.reason, letter.attempts, letter.outcome, letter.status) == (
        event, "MaxDeliveryAttemptsExceeded", 3, "Busy", 503)
    assert record["lastDeliveryAttemptTime"] == "2026-03-04T05:06:09Z"


def test_a_replay_report_adds_up_per_reason() -> None:
    report, page = ReplayReport(), ReplayReport(listed=2, replayed=1, already_replayed=1)
    outcome = page.reason("TimeToLiveExceeded")
    outcome.received, outcome.indexed, outcome.unchanged = 3, 2, 1
    report.add(page)
    report.add(page)
    wire = report.as_dict()
    assert wire["blobs"] == {"listed": 4, "replayed": 2, "alreadyReplayed": 2, "beforeSince": 0, "unreadable": 0}
    assert wire["byReason"] == {"TimeToLiveExceeded": {"events": 6, "indexed": 4, "unchanged": 2, "rejected": 0,
                                                       "skipped": 0, "skippedByReason": {}}}
    assert wire["events"] == 6 and "nextMarker" not in wire


# -- the local event source gives up as Event Grid does ---------------------------------------------


def run_feed(deliver: Any, events: list[dict[str, Any]], **options: Any) -> tuple[EventFeed, list[list[dict[str, Any]]]]:
    letters: list[list[dict[str, Any]]] = []

    async def dead_letters(batch: list[dict[str, Any]]) -> None:
        letters.append(batch)

    async def main() -> EventFeed:
        feed = EventFeed(deliver, linger=0, first_backoff=0.001, max_backoff=0.002, dead_letters=dead_letters, **options)
        runner = asyncio.create_task(feed.run())
        for event in events:
            feed.publish(event)
        assert await feed.drain(10)
        runner.cancel()
        return feed

    return asyncio.run(main()), letters


def test_events_never_accepted_are_dead_lettered_after_max_attempts() -> None:
    attempts = 0

    async def busy(batch: list[dict[str, Any]]) -> None:
        nonlocal attempts
        attempts += 1
        raise HandedBack("503: busy", None, 503)

    events = [blob_event("job-a", f"t{i}/$TaskOutput/x", sequencer=i + 1) for i in range(3)]
    feed, letters = run_feed(busy, events, max_attempts=4)
    assert attempts == 4 and feed.dead_lettered == 3 and feed.delivered == 0
    (written,) = letters
    assert [e["id"] for e in written] == [e["id"] for e in events]  # in order, one blob
    assert {(e["deadLetterReason"], e["deliveryAttempts"], e["lastDeliveryOutcome"], e["lastHttpStatusCode"]) for e in written} == {
        ("MaxDeliveryAttemptsExceeded", 4, "Busy", 503)}


def test_a_400_is_dead_lettered_at_once_and_the_rest_still_delivered() -> None:
    delivered: list[dict[str, Any]] = []

    async def picky(batch: list[dict[str, Any]]) -> None:
        if any(e["subject"].endswith("bad") for e in batch):
            raise DeadLettered("400: InvalidEvents", 400)
        delivered.extend(batch)

    feed, letters = run_feed(picky, [blob_event("job-a", "t1/$TaskOutput/bad")], max_attempts=30)
    assert feed.dead_lettered == 1 and letters[0][0]["deadLetterReason"] == "UndeliverableDueToHttpBadRequest"
    assert letters[0][0]["deliveryAttempts"] == 1


def test_events_older_than_their_time_to_live_are_dead_lettered() -> None:
    async def down(batch: list[dict[str, Any]]) -> None:
        raise ConnectionRefusedError("the app is not up")

    _, letters = run_feed(down, [blob_event("job-a", "t1/$TaskOutput/x")], max_attempts=1000, time_to_live=0.0)
    assert letters[0][0]["deadLetterReason"] == "TimeToLiveExceeded"
    assert letters[0][0]["lastDeliveryOutcome"] == "GenericError" and "lastHttpStatusCode" not in letters[0][0]


# -- the CLI's --since ---------------------------------------------------------------------------------


def test_since_takes_an_iso_time_or_an_age() -> None:
    assert parse_since("2026-11-23T08:00:00Z") == "2026-11-23T08:00:00Z"
    assert parse_since("2026-11-23T10:00:00+02:00") == "2026-11-23T08:00:00Z"
    assert parse_since("2026-11-23") == "2026-11-23T00:00:00Z"
    before = datetime.now(timezone.utc)
    since = parse_since("24h")
    after = datetime.now(timezone.utc)
    assert since is not None
    assert before - timedelta(hours=24) <= datetime.fromisoformat(since.replace("Z", "+00:00")) <= after - timedelta(hours=24)
    assert parse_since(None) is None
    with pytest.raises(CliError):
        parse_since("yesterday")


def test_the_dead_letter_container_setting() -> None:
    from shared.settings import DEFAULT_DEADLETTER_CONTAINER, Settings, SettingsError

    base = {"OUTPUTS_STORAGE": "UseDevelopmentStorage=true", "INDEX_STORAGE": "UseDevelopmentStorage=true"}
    assert Settings.from_mapping(base).deadletter_container == DEFAULT_DEADLETTER_CONTAINER == "eventgrid-deadletter"
    assert Settings.from_mapping({**base, "DEADLETTER_CONTAINER": "ops-deadletters"}).deadletter_container == "ops-deadletters"
    for bad in ("Upper", "ab", "a--b", "-ab", "x" * 64):
        with pytest.raises(SettingsError):
            Settings.from_mapping({**base, "DEADLETTER_CONTAINER": bad})
    identity = Settings.from_mapping({"OUTPUTS_STORAGE": "x", "INDEX_STORAGE__tableServiceUri": "https://a.table.core.windows.net/",
                                      "INDEX_STORAGE__blobServiceUri": "https://a.blob.core.windows.net/"})
    assert identity.index_storage.blob_service_uri == "https://a.blob.core.windows.net/"
