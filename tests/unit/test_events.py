"""Unit tests of event parsing (no network)."""

from __future__ import annotations

import json

import pytest

from shared.domain.events import BlobAction, BlobEvent, EventPayloadError, SkipReason, decode_body
from shared.store.envelopes import parse_events

from ..helpers import blob_event, load_events


@pytest.mark.parametrize("name", ["eventgrid_blob_created.json", "cloudevents_blob_created.json"])
def test_documented_created_samples(name: str) -> None:
    batch = parse_events(load_events(name))
    (event,) = batch.blob_events
    assert event.action is BlobAction.CREATED
    assert (event.container, event.blob_name) == ("test-container", "new-file.txt")
    assert event.size == 524288 and event.sequencer == "00000000000004420000000000028963"
    assert event.content_type == "text/plain" and event.etag == "0x8D4BCC2E4835CD0"
    assert event.event_time.year == 2017


@pytest.mark.parametrize("name", ["eventgrid_blob_deleted.json", "cloudevents_blob_deleted.json"])
def test_documented_deleted_samples(name: str) -> None:
    (event,) = parse_events(load_events(name)).blob_events
    assert event.action is BlobAction.DELETED
    assert event.blob_name == "file-to-delete.txt" and event.size is None


def test_single_object_is_accepted() -> None:
    batch = parse_events(load_events("cloudevents_blob_created.json")[0])
    assert len(batch.blob_events) == 1


def test_validation_handshake() -> None:
    batch = parse_events(load_events("subscription_validation.json"))
    assert batch.validation_code == "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
    assert not batch.blob_events


def test_data_lake_create_then_flush() -> None:
    created, flushed = parse_events(load_events("adls_create_then_flush.json")).blob_events
    assert (created.api, created.size) == ("CreateFile", 0)
    assert (flushed.api, flushed.size) == ("FlushWithClose", 4096)
    assert flushed.sequencer > created.sequencer
    assert "dfs.core.windows.net" in (flushed.url or "")


@pytest.mark.parametrize("name", ["a b#1.txt", "thumb ü%20.png", "q?x=1", "deep/er/%2F/x", "日本/語"])
def test_names_come_verbatim_from_subject(name: str) -> None:
    event = blob_event("job-x", f"t/$TaskOutput/{name}")
    (parsed,) = parse_events([event]).blob_events
    assert parsed.blob_name == f"t/$TaskOutput/{name}"


@pytest.mark.parametrize(
    "body",
    [b"not json", b"\xff\xfe", b"42", b'"text"', b"[]", b"[1, 2]", b'{"hello": "world"}', b'[{"eventType": 5}]', b"null"],
)
def test_bodies_that_are_not_events_are_refused(body: bytes) -> None:
    with pytest.raises(EventPayloadError):
        parse_events(decode_body(body))


def test_unusable_events_are_skipped_with_a_reason() -> None:
    good = blob_event("job-x", "t/$TaskOutput/a")
    no_sequencer = blob_event("job-x", "t/$TaskOutput/b")
    del no_sequencer["data"]["sequencer"]
    bad_subject = blob_event("job-x", "t/$TaskOutput/c")
    bad_subject["subject"] = "/not/a/blob"
    other_type = blob_event("job-x", "t/$TaskOutput/d")
    other_type["eventType"] = "Microsoft.Storage.BlobTierChanged"
    negative = blob_event("job-x", "t/$TaskOutput/e")
    negative["data"]["contentLength"] = -5
    batch = parse_events([good, no_sequencer, bad_subject, other_type, negative])
    assert [e.blob_name for e in batch.blob_events] == ["t/$TaskOutput/a"]
    assert [s.reason for s in batch.skipped] == [
        SkipReason.MALFORMED, SkipReason.MALFORMED, SkipReason.UNSUPPORTED_TYPE, SkipReason.MALFORMED
    ]


def test_raw_event_is_kept_for_logging() -> None:
    raw = blob_event("job-x", "t/$TaskOutput/a")
    (event,) = parse_events(json.loads(json.dumps([raw]))).blob_events
    assert isinstance(event, BlobEvent) and event.raw["id"] == raw["id"]


@pytest.mark.parametrize("when", ["", "Z", "1", "2017-06-26T18:41:00+0", "not a time"])
def test_unparseable_times_are_malformed_not_errors(when: str) -> None:
    event = load_events("cloudevents_blob_created.json")[0]
    event["time"] = when
    outcome = parse_events([event])
    assert len(outcome.blob_events) + len(outcome.skipped) == 1
