"""Cutting a log's tail to whole lines (pure; the range read itself is tested in tests/e2e/test_ui.py)."""

from __future__ import annotations

from shared.store.log_tail import tail_text


def test_a_tail_from_the_start_keeps_everything() -> None:
    assert tail_text(b"first\nsecond\n", 0) == ("first\nsecond\n", 0)


def test_a_tail_from_mid_blob_drops_the_partial_first_line() -> None:
    assert tail_text(b"rst line\nsecond\nthird\n", 100) == ("second\nthird\n", 109)


def test_a_split_utf8_character_in_the_cut_line_is_dropped_with_it() -> None:
    data = "€ cut\nnext ü\n".encode()[1:]  # starts inside the three bytes of '€'
    assert tail_text(data, 7) == ("next ü\n", 7 + len("€ cut\n".encode()) - 1)


def test_one_long_line_without_a_newline_is_kept_not_emptied() -> None:
    text, start = tail_text(b"\xa0tail of one very long line", 50)
    assert text.endswith("tail of one very long line") and start == 50
