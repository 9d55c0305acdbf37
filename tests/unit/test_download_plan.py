"""Where ``download_outputs`` puts each output, what it refuses, and what it skips (no network)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batch_outputs import OutputItem
from batch_outputs._download import MANIFEST, Manifest, local_target, plan


def item(path: str, task_id: str | None = "t1", kind: str = "TaskOutput", size: int = 3, etag: str | None = '"0x1"') -> OutputItem:
    return OutputItem.from_dict({"taskId": task_id, "kind": kind, "path": path, "size": size, "etag": etag})


@pytest.mark.parametrize(("task_id", "kind", "path", "expected"), [
    ("t1", "TaskOutput", "a.txt", "t1/TaskOutput/a.txt"),
    ("t1", "TaskPreview", "deep/er/b.png", "t1/TaskPreview/deep/er/b.png"),
    (None, "JobOutput", "movie.mp4", "JobOutput/movie.mp4"),
    ("t1", "TaskOutput", "spaces and #?%.txt", "t1/TaskOutput/spaces and #?%.txt"),
])
def test_the_convention_folders_are_kept(tmp_path: Path, task_id: str | None, kind: str, path: str, expected: str) -> None:
    target = local_target(tmp_path, item(path, task_id, kind))
    assert target is not None and target[0] == expected
    assert target[1] == Path(os.path.realpath(tmp_path)) / expected


@pytest.mark.parametrize("path", ["../x", "a/../../x", "./x", "a//b", "", "a/", "back\\slash", "nul\x00", "..", "a/.."])
def test_hostile_paths_are_refused(tmp_path: Path, path: str) -> None:
    assert local_target(tmp_path, item(path)) is None


@pytest.mark.parametrize("task_id", ["..", ".", ""])
def test_hostile_task_ids_and_kinds_are_refused(tmp_path: Path, task_id: str) -> None:
    assert local_target(tmp_path, item("x", task_id=task_id)) is None
    assert local_target(tmp_path, item("x", kind=task_id)) is None


def test_a_file_with_the_listed_size_and_etag_is_skipped_quoted_or_not(tmp_path: Path) -> None:
    (tmp_path / "t1/TaskOutput").mkdir(parents=True)
    (tmp_path / "t1/TaskOutput/a.txt").write_bytes(b"abc")
    manifest = Manifest.load(tmp_path)
    manifest.record("t1/TaskOutput/a.txt", '"0x1"', 3)  # storage's header quotes it
    manifest.save()
    assert (tmp_path / MANIFEST).is_file()
    skipped = plan([item("a.txt", etag="0x1")], tmp_path)  # the event's may not
    assert (skipped.skipped, skipped.todo) == (["t1/TaskOutput/a.txt"], [])
    changed = plan([item("a.txt", etag="0x2")], tmp_path)
    assert [name for name, _, _ in changed.todo] == ["t1/TaskOutput/a.txt"]
    grown = plan([item("a.txt", size=4, etag="0x1")], tmp_path)
    assert len(grown.todo) == 1
    no_etag = plan([item("a.txt", etag=None)], tmp_path)
    assert len(no_etag.todo) == 1  # nothing to compare: fetched again


def test_a_broken_manifest_means_fetch_everything(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text("{not json")
    assert len(plan([item("a.txt")], tmp_path).todo) == 1
