"""Unit tests of the File Conventions (no network)."""

from __future__ import annotations

import hashlib

import pytest

from shared.conventions import (
    ConventionError,
    OutputScope,
    blob_name,
    container_name,
    is_valid_job_id,
    job_id_from_container,
    parse_blob_path,
)


def test_worked_example_from_the_spec() -> None:
    assert container_name("my-_EVEN_MORE_-terrific-job") == (
        "job-my-even-more-te-68b05a7d8aa6aa65b9a6892c667a6c406a16ad65"
    )


@pytest.mark.parametrize(
    ("job_id", "expected"),
    [
        ("MyJob", "job-myjob"),
        ("job-1", "job-job-1"),
        ("a", "job-a"),
        ("x" * 59, "job-" + "x" * 59),
    ],
)
def test_plain_names_are_job_dash_lowercased_id(job_id: str, expected: str) -> None:
    assert container_name(job_id) == expected
    assert job_id_from_container(expected) == job_id.lower()


@pytest.mark.parametrize("job_id", ["x" * 60, "y" * 64, "under_score", "double--dash", "trailing-", "nightly:job-7"])
def test_names_that_are_not_valid_containers_are_hashed(job_id: str) -> None:
    name = container_name(job_id)
    digest = hashlib.sha1(job_id.lower().encode()).hexdigest()
    assert name.endswith("-" + digest)
    assert len(name) <= 63
    assert name == name.lower() and "--" not in name
    assert job_id_from_container(name) is None  # hashed names cannot be reversed


def test_hashed_names_cut_the_readable_part_to_15_characters() -> None:
    name = container_name("a" * 14 + "-" + "b" * 50)
    # cut at 15 leaves "aaaaaaaaaaaaaa-", whose trailing '-' is stripped again
    assert name.startswith("job-" + "a" * 14 + "-") and name.count("-") == 2


def test_job_schedule_ids_with_a_colon() -> None:
    assert is_valid_job_id("nightly:job-7")
    assert is_valid_job_id("NIGHTLY:JOB-7")  # Batch IDs are case-insensitive
    assert container_name("NIGHTLY:JOB-7") == container_name("nightly:job-7")
    name = container_name("nightly:job-7")
    assert name == "job-nightly-job-7-" + hashlib.sha1(b"nightly:job-7").hexdigest()


@pytest.mark.parametrize("bad", ["", "has space", "x" * 65, "a/b", "semi;colon", "job:7", "ü"])
def test_invalid_job_ids(bad: str) -> None:
    assert not is_valid_job_id(bad)


@pytest.mark.parametrize(
    ("name", "scope", "task", "kind", "path"),
    [
        ("$JobOutput/movie.mp4", OutputScope.JOB, None, "JobOutput", "movie.mp4"),
        ("$JobPreview/a/b/c.png", OutputScope.JOB, None, "JobPreview", "a/b/c.png"),
        ("task-1/$TaskOutput/frames/a b#1.txt", OutputScope.TASK, "task-1", "TaskOutput", "frames/a b#1.txt"),
        ("task-2/$TaskPreview/thumb ü%20.png", OutputScope.TASK, "task-2", "TaskPreview", "thumb ü%20.png"),
        ("t/$TaskLog/what?.txt", OutputScope.TASK, "t", "TaskLog", "what?.txt"),
        ("t_9/$MyCustomKind/deep/er/x", OutputScope.TASK, "t_9", "MyCustomKind", "deep/er/x"),
        ("$Custom Kind/x", OutputScope.JOB, None, "Custom Kind", "x"),
    ],
)
def test_parse_round_trips(name: str, scope: OutputScope, task: str | None, kind: str, path: str) -> None:
    parsed = parse_blob_path(name)
    assert parsed is not None
    assert (parsed.scope, parsed.task_id, parsed.kind, parsed.path) == (scope, task, kind, path)
    assert parsed.blob_name == name
    assert blob_name(kind, path, task) == name


@pytest.mark.parametrize(
    "name",
    ["movie.mp4", "task-1/output.txt", "$/x", "$JobOutput/", "task 1/$TaskOutput/x", "t/$TaskOutput/", "t/TaskOutput/x", "x" * 65 + "/$TaskOutput/a"],
)
def test_not_convention_paths(name: str) -> None:
    assert parse_blob_path(name) is None


def test_blob_name_rejects_bad_parts() -> None:
    with pytest.raises(ConventionError):
        blob_name("Task/Output", "x", "t")
    with pytest.raises(ConventionError):
        blob_name("TaskOutput", "", "t")
    with pytest.raises(ConventionError):
        blob_name("TaskOutput", "x", "bad id")


def test_foreign_containers_have_no_job() -> None:
    assert job_id_from_container("images") is None
    assert job_id_from_container("job-") is None
