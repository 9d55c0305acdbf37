"""Unit tests of the row key layout (no network)."""

from __future__ import annotations

from shared.domain import keys


def test_encoded_keys_hold_no_forbidden_characters() -> None:
    for path in ["a/b\\c#d?e", "ctl\x01\x1f\x7f", "100%", "pipe|x", "ü ñ 日本"]:
        key = keys.task_output_key("TaskOutput", "T-1", path)
        assert not set("/\\#?") & set(key)
        assert all(ord(c) >= 0x20 and not 0x7F <= ord(c) <= 0x9F for c in key)


def test_distinct_paths_get_distinct_keys() -> None:
    paths = ["a%2Fb", "a/b", "a|b", "a%7Cb", "a b", "a+b"]
    assert len({keys.job_output_key("JobOutput", p) for p in paths}) == len(paths)


def test_prefixes_are_key_ranges() -> None:
    key = keys.task_output_key("TaskPreview", "Task-7", "frames/001.png")
    low, high = keys.prefix_range(keys.task_outputs_prefix("TaskPreview"))
    assert low <= key < high
    low, high = keys.prefix_range(keys.task_outputs_prefix("TaskPreview", "task-7", "frames/"))
    assert low <= key < high
    low, high = keys.prefix_range(keys.task_outputs_prefix("TaskPreview", "task-70"))
    assert not low <= key < high
    low, high = keys.prefix_range(keys.task_outputs_prefix("TaskOutput"))
    assert not low <= key < high


def test_task_ids_are_case_insensitive_in_keys() -> None:
    assert keys.task_usage_key("Task-A") == keys.task_usage_key("task-a")


def test_long_paths_stay_within_key_limits_and_distinct() -> None:
    a = keys.job_output_key("JobOutput", "d/" * 400 + "a")
    b = keys.job_output_key("JobOutput", "d/" * 400 + "b")
    assert a != b
    assert len(a.encode()) < 1024
