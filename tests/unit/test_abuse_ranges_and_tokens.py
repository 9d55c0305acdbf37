"""Key ranges for any prefix (U+10FFFF answered 500) and continuation-token scopes that cannot be
confused (a token minted without a kind was accepted with one) (issue 14; pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from shared.domain import keys
from shared.read.paging import InvalidTokenError, Position, TokenCodec

# Characters around every boundary of UTF-16 order, and any other.
EDGES = st.sampled_from(["\U0010ffff", "\uffff", "\ufffe", "\ud7ff", "\ue000", "\U00010000", "\U0001ffff", "\x00", "|", "~", "a"])
CHARS = st.one_of(EDGES, st.characters(blacklist_categories=["Cs"]))
TEXT = st.text(alphabet=CHARS, max_size=6)


def utf16(text: str) -> bytes:
    """Table storage's (and Azurite's) key order: UTF-16 code units."""
    return text.encode("utf-16-be", "surrogatepass")


@hsettings(max_examples=500, deadline=None)
@given(prefix=TEXT.filter(bool), suffix=TEXT, other=TEXT)
def test_a_prefix_range_holds_exactly_the_keys_that_start_with_it(prefix: str, suffix: str, other: str) -> None:
    low, high = keys.prefix_range(prefix)
    high.encode("utf-8")  # sendable in a filter: no lone surrogate
    assert utf16(low) <= utf16(prefix + suffix) < utf16(high)
    if not other.startswith(prefix):
        assert not utf16(low) <= utf16(other) < utf16(high)


@pytest.mark.parametrize("prefix", ["\U0010ffff", "T|TaskOutput|t1|\U0010ffff", "J|k|\uffff\uffff", "J|k|\ud7ff"])
def test_the_prefixes_that_answered_500(prefix: str) -> None:
    low, high = keys.prefix_range(prefix)
    assert utf16(low) < utf16(high)
    high.encode("utf-8")


def test_no_range_above_a_prefix_of_u_ffff_only() -> None:
    with pytest.raises(ValueError):
        keys.prefix_range("\uffff\uffff")


CODEC = TokenCodec("signing-key")


@pytest.mark.parametrize(("minted", "replayed"), [
    (("job-outputs", "job-x", None, ""), ("job-outputs", "job-x", "None", "")),
    (("job-outputs", "job-x", "None", ""), ("job-outputs", "job-x", None, "")),
    (("job-outputs", "job-x", "a|b", ""), ("job-outputs", "job-x", "a", "b|")),
    (("task-outputs", "job-x", "t1", None, ""), ("task-outputs", "job-x", "t1", "", "")),
])
def test_a_token_is_refused_for_a_scope_that_only_reads_alike(minted: tuple, replayed: tuple) -> None:
    token = CODEC.encode(minted, Position(0, "T|x"))
    assert CODEC.decode(minted, token) == Position(0, "T|x")
    with pytest.raises(InvalidTokenError):
        CODEC.decode(replayed, token)


@hsettings(max_examples=200, deadline=None)
@given(a=st.lists(st.one_of(st.none(), st.text(max_size=5)), max_size=4),
       b=st.lists(st.one_of(st.none(), st.text(max_size=5)), max_size=4))
def test_tokens_of_distinct_scopes_never_cross(a: list, b: list) -> None:
    token = CODEC.encode(a, Position(1, None))
    if a == b:
        assert CODEC.decode(b, token) == Position(1, None)
    else:
        with pytest.raises(InvalidTokenError):
            CODEC.decode(b, token)
