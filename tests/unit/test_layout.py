"""A job's layout (pure): which partition holds a task, and the partitions' names."""

from __future__ import annotations

from collections import Counter

import pytest

from shared.domain import keys
from shared.domain.layout import Layout, LayoutError, check_partitions
from shared.read.paging import InvalidTokenError, Position, TokenCodec


def test_a_job_of_one_partition_keeps_everything_in_its_container() -> None:
    layout = Layout("job-a")
    assert layout.all() == ["job-a"] and not layout.spread
    assert {layout.for_task(t) for t in ("t1", "T2", None, "")} == {"job-a"}


def test_a_spread_job_names_its_partitions_after_its_container_and_keeps_job_outputs_in_it() -> None:
    layout = Layout("job-a", 4)
    assert layout.all() == ["job-a", "job-a|1", "job-a|2", "job-a|3"]
    assert layout.for_task(None) == "job-a"
    for partition in layout.all():
        assert keys.container_of(partition) == "job-a"
        assert layout.all()[keys.partition_index(partition)] == partition


def test_a_task_is_in_one_partition_whatever_its_spelling_and_tasks_spread_evenly() -> None:
    layout = Layout("job-render", 4)
    assert layout.for_task("Frame-0007") == layout.for_task("frame-0007") == layout.for_task("FRAME-0007")
    counts = Counter(layout.for_task(f"render-{n:05d}") for n in range(4000))
    assert set(counts) == set(layout.all())
    assert max(counts.values()) / 4000 < 0.28  # about a quarter each
    # stable: the same slot in every process (a hash of the key, not Python's salted hash)
    assert keys.task_slot(keys.task_key("render-00001"), 4) == keys.task_slot("render-00001", 4)
    assert [keys.task_slot(keys.task_key(f"t{n}"), 7) for n in range(5)] == [keys.task_slot(f"t{n}", 7) for n in range(5)]


def test_a_layout_is_read_from_the_job_row_and_bounded() -> None:
    assert Layout.of("job-a", None).partitions == 1
    assert Layout.of("job-a", {keys.PARTITIONS: 4}).partitions == 4
    assert check_partitions(16) == 16
    for bad in (0, 17, -1):
        with pytest.raises(LayoutError):
            check_partitions(bad)


def test_a_merged_listings_token_is_compressed_signed_and_bound() -> None:
    codec = TokenCodec("key")
    heads = (("h", "T|TaskOutput|render-00412|frames/shot-01/frame-0007.exr"), ("a", None), ("x", None),
             ("a", "T|TaskOutput|render-00413|frames/shot-01/frame-0013.exr"))
    token = codec.encode(("all-task-outputs", "job-a", None, ""), Position(0, "T|x", heads))
    assert codec.decode(("all-task-outputs", "job-a", None, ""), token) == Position(0, "T|x", heads)
    with pytest.raises(InvalidTokenError):
        codec.decode(("all-task-outputs", "job-b", None, ""), token)
    body, signature = token.split(".")
    with pytest.raises(InvalidTokenError):
        codec.decode(("all-task-outputs", "job-a", None, ""), f"{body[:-1]}{'A' if body[-1] != 'A' else 'B'}.{signature}")
    with pytest.raises(InvalidTokenError):
        TokenCodec("other").decode(("all-task-outputs", "job-a", None, ""), token)
    # a one-partition listing's token is as before: no heads
    assert codec.decode("s", codec.encode("s", Position(1, "k"))) == Position(1, "k")
