"""Property tests of bad input for the parser (hypothesis): it either decodes or refuses with
``EventPayloadError``, never anything else (the webhook and the API under the same input are in
tests/integration/test_hostile_input.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from shared.domain.events import EventBatch, EventPayloadError, decode_body
from shared.store.envelopes import parse_events

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
