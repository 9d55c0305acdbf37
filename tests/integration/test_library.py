"""The Python File Conventions library against Azurite: names equal the .NET library's."""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from batch_outputs import JobOutputKind, JobOutputStorage, OutputNotFoundError, OutputStorageError, TaskOutputKind, TaskOutputStorage
from batch_outputs.conventions import ConventionError, container_name
from devtools.azurite import Azurite


@pytest.fixture
def job() -> str:
    return f"lib:job-{uuid.uuid4().int % 10**9}"  # a schedule job: hashed container


@pytest.fixture
def task_storage(azurite: Azurite, job: str) -> TaskOutputStorage:
    storage = TaskOutputStorage.connect(azurite.connection_string, job, "task-7")
    assert storage.prepare() is True
    assert storage.prepare() is False  # idempotent
    return storage


def test_save_file_text_and_custom_kinds_under_convention_names(
    task_storage: TaskOutputStorage, job: str, blob_service: BlobServiceClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    image = tmp_path / "thumb ü #1.png"
    image.write_bytes(b"\x89PNG...")
    saved = task_storage.save(TaskOutputKind.PREVIEW, "thumb ü #1.png")
    assert saved.blob_name == "task-7/$TaskPreview/thumb ü #1.png"
    assert (saved.kind, saved.path, saved.task_id, saved.size) == ("TaskPreview", "thumb ü #1.png", "task-7", 7)
    task_storage.save(TaskOutputKind.OUTPUT, image, "frames/100%/a?.png")
    task_storage.save_text(TaskOutputKind.custom("Metrics"), '{"loss": 0.1}', "metrics.json")
    names = {b.name for b in blob_service.get_container_client(container_name(job)).list_blobs()}
    assert names == {"task-7/$TaskPreview/thumb ü #1.png", "task-7/$TaskOutput/frames/100%/a?.png", "task-7/$Metrics/metrics.json"}
    props = blob_service.get_blob_client(container_name(job), "task-7/$TaskPreview/thumb ü #1.png").get_blob_properties()
    assert props.content_settings.content_type == "image/png"


def test_list_and_get_by_kind_task_and_path(azurite: Azurite, task_storage: TaskOutputStorage, job: str, tmp_path: Path) -> None:
    other_task = TaskOutputStorage.connect(azurite.connection_string, job, "task-70")
    job_storage = JobOutputStorage.connect(azurite.connection_string, job)
    for n in range(3):
        task_storage.save_text(TaskOutputKind.OUTPUT, f"out {n}", f"dir/{n}.txt")
    task_storage.save_text(TaskOutputKind.LOG, "log", "stdout.txt")
    other_task.save_text(TaskOutputKind.OUTPUT, "other", "x.txt")  # "task-70" starts with "task-7"
    job_storage.save_text(JobOutputKind.OUTPUT, "summary", "summary.txt")

    assert sorted(f.path for f in task_storage.list(TaskOutputKind.OUTPUT)) == ["dir/0.txt", "dir/1.txt", "dir/2.txt"]
    assert [f.path for f in task_storage.list(TaskOutputKind.LOG)] == ["stdout.txt"]
    assert list(task_storage.list(TaskOutputKind.PREVIEW)) == []
    assert [f.blob_name for f in job_storage.list(JobOutputKind.OUTPUT)] == ["$JobOutput/summary.txt"]

    found = task_storage.get(TaskOutputKind.OUTPUT, "dir/1.txt")
    assert found.read() == b"out 1"
    target = found.download_to(tmp_path)
    assert target == tmp_path / "1.txt" and target.read_bytes() == b"out 1"
    with pytest.raises(OutputNotFoundError):
        task_storage.get(TaskOutputKind.OUTPUT, "dir/9.txt")


def test_save_tracked_follows_a_growing_log_and_flushes_at_the_end(task_storage: TaskOutputStorage, job: str,
                                                                    blob_service: BlobServiceClient, tmp_path: Path) -> None:
    log = tmp_path / "stdout.txt"
    blob = blob_service.get_blob_client(container_name(job), "task-7/$TaskLog/stdout.txt")
    seen_while_running: list[int] = []

    log.write_text("", encoding="utf-8")
    with task_storage.save_tracked(TaskOutputKind.LOG, log, "stdout.txt", interval=timedelta(milliseconds=50)) as tracked:
        assert tracked.blob_name == "task-7/$TaskLog/stdout.txt"
        with open(log, "a", encoding="utf-8") as handle:
            handle.write("line 0\n")
            handle.flush()
            # the blob grows while the writer still runs (bounded wait, not a timing assertion)
            for _ in range(400):
                size = blob.get_blob_properties().size
                if size:
                    seen_while_running.append(size)
                    break
                time.sleep(0.025)
            for n in range(1, 2000):
                handle.write(f"line {n}\n")
        # the writer stops; nothing waits for the next interval
    assert seen_while_running == [len("line 0\n")]
    props = blob.get_blob_properties()
    assert props.blob_type == "BlockBlob"  # was AppendBlob: tracked saves commit blocks now (issue 11)
    assert blob.download_blob().readall() == log.read_bytes()


def test_save_tracked_of_a_file_written_at_once_still_lands(task_storage: TaskOutputStorage, tmp_path: Path) -> None:
    log = tmp_path / "late.txt"
    with task_storage.save_tracked(TaskOutputKind.LOG, log, "late.txt", interval=timedelta(hours=1)):
        log.write_bytes(b"x" * (5 * 1024 * 1024 + 3))  # more than one append block, never flushed before close
    assert task_storage.get(TaskOutputKind.LOG, "late.txt").size == 5 * 1024 * 1024 + 3


def test_invalid_ids_kinds_and_missing_container(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConventionError):
        TaskOutputStorage.connect(azurite.connection_string, "bad job!", "t1")
    with pytest.raises(ConventionError):
        TaskOutputStorage.connect(azurite.connection_string, "ok", "bad task")
    with pytest.raises(ConventionError):
        TaskOutputKind.custom("a/b")
    unprepared = TaskOutputStorage.connect(azurite.connection_string, f"never-{uuid.uuid4().hex[:8]}", "t1")
    with pytest.raises(OutputStorageError, match="prepare the job first"):
        unprepared.save_text(TaskOutputKind.OUTPUT, "x", "x.txt")
    assert list(unprepared.list(TaskOutputKind.OUTPUT)) == []

    monkeypatch.setenv("AZ_BATCH_JOB_ID", "env-job")
    monkeypatch.setenv("AZ_BATCH_TASK_ID", "env-task")
    monkeypatch.setenv("BATCH_OUTPUTS_STORAGE", azurite.connection_string)
    from_env = TaskOutputStorage.from_environment()
    assert (from_env.job_id, from_env.task_id, from_env.container.container_name) == ("env-job", "env-task", "job-env-job")
    monkeypatch.delenv("AZ_BATCH_TASK_ID")
    with pytest.raises(OutputStorageError):
        TaskOutputStorage.from_environment()
    assert os.environ["AZ_BATCH_JOB_ID"] == "env-job"
