"""Any legal blob name and any kind give a valid Table key (pure)."""

from __future__ import annotations

import pytest

from shared.domain import keys


@pytest.mark.parametrize("path", ["a" * 1000, "é" * 1000, "😀" * 300, "%#?/\\" * 200, "x" * 470])
@pytest.mark.parametrize("kind", ["TaskOutput", "K" * 2000])
def test_output_keys_fit_table_storage(path: str, kind: str) -> None:
    for key in (keys.job_output_key(kind, path), keys.task_output_key(kind, "task-1", path)):
        assert keys.utf16_units(key) <= keys.MAX_KEY_UNITS
        assert not any(ch in key for ch in "/\\#?") and all(ord(ch) >= 0x20 for ch in key)


def test_long_keys_stay_unique_and_keep_their_start() -> None:
    a = keys.task_output_key("TaskOutput", "t1", "p" * 600 + "a")
    b = keys.task_output_key("TaskOutput", "t1", "p" * 600 + "b")
    assert a != b
    assert a.startswith(keys.task_outputs_prefix("TaskOutput", "t1", "p" * 100))


def test_short_keys_are_unchanged() -> None:
    assert keys.task_output_key("TaskPreview", "t1", "a b/c.png") == "T|TaskPreview|t1|a b%2Fc.png"
    # A task ID with capitals keeps the task's key range and adds its exact spelling.
    assert keys.task_output_key("TaskPreview", "T1", "a b/c.png") == "T|TaskPreview|t1|a b%2Fc.png|cT1"


def test_a_cut_never_splits_an_escape() -> None:
    key = keys.job_output_key("TaskOutput", "/" * 600)
    body = key.rsplit("|h", 1)[0]
    assert body.endswith("%2F")


def test_clip_prefix() -> None:
    short = keys.task_outputs_prefix("TaskOutput", "t1", "abc")
    assert keys.clip_prefix(short) == (short, False)
    long_prefix = keys.task_outputs_prefix("TaskOutput", "t1", "p" * 600)
    clipped, was_clipped = keys.clip_prefix(long_prefix)
    assert was_clipped and long_prefix.startswith(clipped)
    assert keys.task_output_key("TaskOutput", "t1", "p" * 700).startswith(clipped)
