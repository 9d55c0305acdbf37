"""Unit tests of issue 20's pure parts: event times and texts the index could not read back,
the bounds a delivery's bytes are checked against before parsing, repairs that supersede a
row, and stored times the SDK's parser refuses (no network)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from shared.domain.conventions import OutputPath, OutputScope
from shared.domain.events import (
    MAX_EVENT_TIME,
    MAX_EVENTS_PER_REQUEST,
    MAX_NESTING,
    MIN_EVENT_TIME,
    BlobAction,
    EventPayloadError,
    PayloadTooLargeError,
    SkippedEvent,
    decode_body,
    event_time,
)
from shared.domain.planning import is_stale
from shared.domain.rows import Change
from shared.store.envelopes import parse_event
from shared.store.values import LENIENT_DATETIMES, lenient_datetime

from ..helpers import blob_event

UTC = timezone.utc


@pytest.mark.parametrize("when", [datetime(1, 1, 1, tzinfo=UTC), MIN_EVENT_TIME - timedelta(microseconds=1),
                                  datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),
                                  datetime(9999, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-1)))])
def test_a_time_table_storage_cannot_hold_is_a_reason(when: datetime) -> None:
    assert isinstance(event_time(when), str)


@pytest.mark.parametrize(("when", "utc"), [
    (MIN_EVENT_TIME, MIN_EVENT_TIME), (MAX_EVENT_TIME, MAX_EVENT_TIME),
    (datetime(2026, 12, 5, 12, tzinfo=timezone(timedelta(hours=2))), datetime(2026, 12, 5, 10, tzinfo=UTC)),
    (datetime(2026, 12, 5, 12), datetime(2026, 12, 5, 12, tzinfo=UTC)),
])
def test_a_storable_time_is_read_in_utc(when: datetime, utc: datetime) -> None:
    at = event_time(when)
    assert at == utc and isinstance(at, datetime) and at.tzinfo is UTC


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
def test_a_cloudevent_or_grid_time_keeps_its_offset(schema: str) -> None:
    event = blob_event("job-x", "t1/$TaskOutput/a", schema=schema)
    event["eventTime" if schema == "eventgrid" else "time"] = "2026-12-05T12:00:00+02:00"
    parsed = parse_event(event)
    assert not isinstance(parsed, SkippedEvent)
    assert parsed.event_time == datetime(2026, 12, 5, 10, tzinfo=UTC)


@pytest.mark.parametrize(("where", "value"), [("subject", "\ud800"), ("contentType", "a\udfff"), ("url", "\udc00")])
def test_a_lone_surrogate_is_malformed(where: str, value: str) -> None:
    event = blob_event("job-x", "t1/$TaskOutput/a")
    if where == "subject":
        event["subject"] += value
    else:
        event["data"][where] += value
    skipped = parse_event(event)
    assert isinstance(skipped, SkippedEvent) and "surrogate" in skipped.detail


def test_a_subject_without_its_leading_slash_names_the_blob() -> None:
    event = blob_event("job-x", "t1/$TaskOutput/a b", schema="cloudevents")
    event["subject"] = event["subject"].lstrip("/")
    parsed = parse_event(event)
    assert not isinstance(parsed, SkippedEvent) and (parsed.container, parsed.blob_name) == ("job-x", "t1/$TaskOutput/a b")


@pytest.mark.parametrize(("body", "error"), [
    (b"[" + b",".join([b"{}"] * 100_000) + b"]", PayloadTooLargeError),
    (b"[" + b",".join([b"1"] * 700_000) + b"]", PayloadTooLargeError),
    (b'["' + b'","'.join([b"a"] * 700_000) + b'"]', PayloadTooLargeError),
    (json.dumps([{}] * (MAX_EVENTS_PER_REQUEST + 1)).encode(), PayloadTooLargeError),
    (b"[" * 2000 + b"]" * 2000, EventPayloadError),
    (("[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1)).encode(), EventPayloadError),
    (b'[{"a": NaN}]', EventPayloadError),
    (b'{"a": -Infinity}', EventPayloadError),
])
def test_a_body_no_delivery_can_be_is_refused(body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error) as raised:
        decode_body(body)
    assert type(raised.value) is error


def test_the_largest_delivery_and_its_deepest_event_decode() -> None:
    events = [blob_event("job-x", f"t1/$TaskOutput/{n}", sequencer=n) for n in range(MAX_EVENTS_PER_REQUEST)]
    assert len(decode_body(json.dumps(events).encode())) == MAX_EVENTS_PER_REQUEST
    nested = "[" * MAX_NESTING + "]" * MAX_NESTING
    assert decode_body(nested.encode()) == json.loads(nested)


def _change(sequencer: str, supersedes: str | None = None) -> Change:
    output = OutputPath(OutputScope.TASK, "TaskOutput", "a", task_id="t1")
    return Change("job-x", "o|a", output, BlobAction.CREATED, sequencer, datetime(2026, 1, 1, tzinfo=UTC), supersedes=supersedes)


def test_a_repair_supersedes_the_row_it_read_whatever_the_order() -> None:
    forged = {"Seq": "f" * 64, "State": "deleted"}
    assert is_stale(_change("0"), forged)
    assert not is_stale(_change("0", supersedes="f" * 64), forged)
    # The row moved since the repair read it: the repair is ordered like any event, and loses.
    assert is_stale(_change("0", supersedes="f" * 64), {"Seq": "0" * 31 + "9", "State": "live"})
    # After the repair the blob's next genuine event applies.
    assert not is_stale(_change("0" * 31 + "1"), {"Seq": "0", "State": "live"})


@pytest.mark.parametrize(("stored", "read"), [
    ("1-01-01T00:00:00.000000Z", datetime(1, 1, 1, tzinfo=UTC)),
    ("999-12-31T23:59:59.1234567Z", datetime(999, 12, 31, 23, 59, 59, 123456, tzinfo=UTC)),
    ("2026-12-05T10:00:00Z", datetime(2026, 12, 5, 10, tzinfo=UTC)),
    ("not a time", None),
    ("2026-13-45T10:00:00Z", None),
])
def test_a_stored_time_the_sdk_refuses_is_read_leniently(stored: str, read: datetime | None) -> None:
    assert lenient_datetime(stored) == read


def test_the_sdk_reads_stored_times_through_the_lenient_reader() -> None:
    from azure.data.tables import EdmType
    from azure.data.tables._deserialize import _convert_to_entity

    assert LENIENT_DATETIMES
    entity = _convert_to_entity({"PartitionKey": "p", "RowKey": "r", "At@odata.type": EdmType.DATETIME.value,
                                 "At": "1-01-01T00:00:00.000000Z"})
    assert entity["At"] == datetime(1, 1, 1, tzinfo=UTC)
