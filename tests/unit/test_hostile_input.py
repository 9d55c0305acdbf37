"""Property tests of bad input for the parser (hypothesis): it either decodes or refuses with
``EventPayloadError``, never anything else (the webhook and the API under the same input are in
tests/integration/test_hostile_input.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from shared.domain.events import EventBatch, EventPayloadError, decode_body
from shared.domain.sources import MAX_BLOB_BYTES, foreign_source, is_azure_sequencer
from shared.store.envelopes import parse_events

from ..helpers import LOCAL_ACCOUNT
from ..support.hostile import JSON, hostile_events


@hsettings(max_examples=300, deadline=None)
@given(st.one_of(JSON, st.lists(hostile_events(), max_size=5), hostile_events()))
def test_parser_decodes_or_refuses_cleanly(payload: object) -> None:
    try:
        batch = parse_events(payload)
    except EventPayloadError:
        return
    assert isinstance(batch, EventBatch)
    for event in batch.blob_events:
        assert isinstance(event.container, str) and isinstance(event.blob_name, str)
        assert isinstance(event.sequencer, str) and event.sequencer
        assert event.size is None or (isinstance(event.size, int) and event.size >= 0)


@hsettings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_body_decoder_refuses_non_json_cleanly(body: bytes) -> None:
    try:
        decode_body(body)
    except EventPayloadError:
        pass


@hsettings(max_examples=300, deadline=None)
@given(st.one_of(JSON, st.lists(hostile_events(), max_size=5), hostile_events()))
def test_what_the_parser_lets_through_is_of_azures_shape_and_from_the_outputs_account(payload: object) -> None:
    """Issue 14: with the outputs account given, only its events, with Azure's sequencers and sizes."""
    try:
        batch = parse_events(payload, LOCAL_ACCOUNT)
    except EventPayloadError:
        return
    for event in batch.blob_events:
        assert is_azure_sequencer(event.sequencer)
        assert event.size is None or 0 <= event.size <= MAX_BLOB_BYTES
        assert len(event.blob_name) <= 1024 and len(event.event_id) <= 512
        assert foreign_source(event.raw, event.raw.get("data"), LOCAL_ACCOUNT) is None
    for skipped in batch.skipped:
        assert len(skipped.detail) < 400 and (skipped.event_id is None or len(skipped.event_id) <= 512)
