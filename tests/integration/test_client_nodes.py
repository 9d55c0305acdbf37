"""The client on compute nodes (issue 13): one file per node where Batch shares a task ID, the
bridge to Batch's OutputFiles (.NET's GetOutputStoragePath / GetOutputStorageContainerUrl), and
tracked saves that never truncate another writer's blob. Real Azurite, the real SDK, no mocks."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient, ContainerClient

from batch_outputs import (
    ConventionError,
    JobOutputKind,
    JobOutputStorage,
    OutputStorageError,
    TaskOutputKind,
    TaskOutputStorage,
    TrackedFile,
    WriterConflictError,
)
from batch_outputs.conventions import container_name
from devtools.azurite import Azurite

from ..helpers import eventually, real_blob_event
from ..support.stack import RunningApp

NEVER = timedelta(hours=1)
BATCH_VARIABLES = ("AZ_BATCH_JOB_ID", "AZ_BATCH_TASK_ID", "AZ_BATCH_NODE_ID", "AZ_BATCH_IS_CURRENT_NODE_MASTER",
                   "AZ_BATCH_HOST_LIST", "AZ_BATCH_MASTER_NODE", "BATCH_OUTPUTS_STORAGE")


@pytest.fixture
def job() -> str:
    return f"nodes-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def node_env(monkeypatch: pytest.MonkeyPatch, azurite: Azurite, job: str) -> pytest.MonkeyPatch:
    for name in BATCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZ_BATCH_JOB_ID", job)
    monkeypatch.setenv("BATCH_OUTPUTS_STORAGE", azurite.connection_string)
    JobOutputStorage.connect(azurite.connection_string, job).prepare()
    return monkeypatch


def names(blob_service: BlobServiceClient, job: str) -> set[str]:
    return {b.name for b in blob_service.get_container_client(container_name(job)).list_blobs()}


def test_job_release_tasks_save_one_file_per_node(node_env: pytest.MonkeyPatch, blob_service: BlobServiceClient, job: str) -> None:
    node_env.setenv("AZ_BATCH_TASK_ID", "jobrelease")
    for node in ("tvm-1", "tvm-2"):
        node_env.setenv("AZ_BATCH_NODE_ID", node)
        storage = TaskOutputStorage.from_environment()
        assert storage.output_storage_path(TaskOutputKind.LOG) == f"jobrelease/$TaskLog/{node}"
        saved = storage.save_text(TaskOutputKind.LOG, f"logs of {node}", "logs.txt")
        assert (saved.task_id, saved.kind, saved.path) == ("jobrelease", "TaskLog", f"{node}/logs.txt")
        assert storage.get(TaskOutputKind.LOG, "logs.txt").read() == f"logs of {node}".encode()
        assert [f.path for f in storage.list(TaskOutputKind.LOG)] == [f"{node}/logs.txt"]  # this node's files
    TaskOutputStorage.from_environment(per_node=False).save_text(TaskOutputKind.LOG, "shared", "logs.txt")
    assert names(blob_service, job) == {"jobrelease/$TaskLog/tvm-1/logs.txt", "jobrelease/$TaskLog/tvm-2/logs.txt",
                                        "jobrelease/$TaskLog/logs.txt"}
    props = blob_service.get_blob_client(container_name(job), "jobrelease/$TaskLog/tvm-2/logs.txt").get_blob_properties()
    assert props.metadata == {"batch_outputs_node": "tvm-2"}  # who wrote it, for tasks whose ID nodes share


def test_preparation_and_multi_instance_tasks_too_and_ordinary_tasks_not(node_env: pytest.MonkeyPatch, job: str) -> None:
    node_env.setenv("AZ_BATCH_NODE_ID", "tvm-7")
    node_env.setenv("AZ_BATCH_TASK_ID", "jobpreparation")
    assert TaskOutputStorage.from_environment().blob_name(TaskOutputKind.LOG, "a.txt") == "jobpreparation/$TaskLog/tvm-7/a.txt"
    node_env.setenv("AZ_BATCH_TASK_ID", "mpi-task")
    assert TaskOutputStorage.from_environment().blob_name(TaskOutputKind.LOG, "a.txt") == "mpi-task/$TaskLog/a.txt"
    node_env.setenv("AZ_BATCH_IS_CURRENT_NODE_MASTER", "false")  # a multi-instance subtask
    node_env.setenv("AZ_BATCH_HOST_LIST", "10.0.0.4,10.0.0.5")
    assert TaskOutputStorage.from_environment().blob_name(TaskOutputKind.LOG, "a.txt") == "mpi-task/$TaskLog/tvm-7/a.txt"
    assert TaskOutputStorage.from_environment(per_node=False).blob_name(TaskOutputKind.LOG, "a.txt") == "mpi-task/$TaskLog/a.txt"
    node_env.delenv("AZ_BATCH_NODE_ID")
    with pytest.raises(OutputStorageError, match="AZ_BATCH_NODE_ID"):
        TaskOutputStorage.from_environment()


def test_a_container_sas_url_bridges_to_output_files_and_from_container_url(
    azurite: Azurite, blob_service: BlobServiceClient, job: str
) -> None:
    storage = TaskOutputStorage.connect(azurite.connection_string, job, "task-3")
    storage.prepare()
    assert storage.output_storage_path(TaskOutputKind.OUTPUT) == "task-3/$TaskOutput"  # GetOutputStoragePath
    assert JobOutputStorage.connect(azurite.connection_string, job).output_storage_path(JobOutputKind.PREVIEW) == "$JobPreview"

    asked = datetime.now(timezone.utc).replace(microsecond=0)
    url = storage.container_sas_url(timedelta(hours=2))
    answered = datetime.now(timezone.utc)
    base, query = url.split("?", 1)
    assert base == storage.container.url and "sig=" in query and "sp=racwl" in query
    expiry = datetime.strptime(dict(p.split("=", 1) for p in query.split("&"))["se"].replace("%3A", ":"), "%Y-%m-%dT%H:%M:%SZ")
    # The expiry is two hours after the call (to the second the SAS carries), not any other span.
    assert asked + timedelta(hours=2) <= expiry.replace(tzinfo=timezone.utc) <= answered + timedelta(hours=2)

    from_url = TaskOutputStorage.from_container_url(url, "task-4")
    assert (from_url.job_id, from_url.task_id) == (job, "task-4")  # a plain container name gives the job back
    saved = from_url.save_text(TaskOutputKind.PREVIEW, "via the SAS", "thumb.txt")
    assert saved.blob_name == "task-4/$TaskPreview/thumb.txt" and "sig=" not in saved.url
    assert [f.path for f in from_url.list(TaskOutputKind.PREVIEW)] == ["thumb.txt"]
    JobOutputStorage.from_container_url(url).save_text(JobOutputKind.OUTPUT, "job output", "summary.txt")
    assert names(blob_service, job) == {"task-4/$TaskPreview/thumb.txt", "$JobOutput/summary.txt"}

    with pytest.raises(HttpResponseError) as denied:  # a write SAS: no delete
        ContainerClient.from_container_url(url).delete_blob("$JobOutput/summary.txt")
    assert denied.value.status_code == 403
    with pytest.raises(OutputStorageError, match="sign"):
        from_url.container_sas_url()  # a SAS cannot sign another SAS
    with pytest.raises(ConventionError, match="saves to"):
        TaskOutputStorage.connect(url, "another-job", "t1")  # the URL of another job's container
    with pytest.raises(ValueError):
        storage.container_sas_url(timedelta(0))


def test_destination_paths_are_those_of_the_net_library(azurite: Azurite, job: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    storage = TaskOutputStorage.connect(azurite.connection_string, job, "t1")
    storage.prepare()
    work = tmp_path / "wd"
    (work / "sub").mkdir(parents=True)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.txt").write_text("above the working directory")
    (work / "sub" / "f.txt").write_text("below it")
    monkeypatch.chdir(work)
    assert storage.save(TaskOutputKind.LOG, "../logs/a.txt").blob_name == "t1/$TaskLog/logs/a.txt"
    assert storage.save(TaskOutputKind.OUTPUT, "sub/f.txt").blob_name == "t1/$TaskOutput/sub/f.txt"
    assert storage.save(TaskOutputKind.OUTPUT, "./sub/../sub/f.txt").blob_name == "t1/$TaskOutput/sub/f.txt"
    with pytest.raises(ConventionError, match="rooted"):
        storage.save(TaskOutputKind.OUTPUT, str(work / "sub" / "f.txt"))
    assert storage.save(TaskOutputKind.OUTPUT, str(work / "sub" / "f.txt"), "given/f.txt").blob_name == "t1/$TaskOutput/given/f.txt"


def test_output_files_built_with_the_bridge_are_indexed_under_their_task_and_kind(
    azurite: Azurite, app: RunningApp, blob_service: BlobServiceClient, job: str
) -> None:
    from azure.batch.models import (
        OutputFile,
        OutputFileBlobContainerDestination,
        OutputFileDestination,
        OutputFileUploadCondition,
        OutputFileUploadConfiguration,
    )

    storage = TaskOutputStorage.connect(azurite.connection_string, job, "render-7")
    storage.prepare()
    output_file = OutputFile(
        file_pattern="frames/thumb.png",
        destination=OutputFileDestination(container=OutputFileBlobContainerDestination(
            container_url=storage.container_sas_url(timedelta(hours=1)),
            path=f"{storage.output_storage_path(TaskOutputKind.PREVIEW)}/thumb.png")),
        upload_options=OutputFileUploadConfiguration(upload_condition=OutputFileUploadCondition.TASK_SUCCESS),
    )
    # What the Batch service does with it when the task succeeds: Put Blob at containerUrl + path.
    wire = output_file.as_dict()["destination"]["container"]
    ContainerClient.from_container_url(wire["containerUrl"]).upload_blob(wire["path"], b"\x89PNG frame")
    assert wire["path"] == "render-7/$TaskPreview/thumb.png"

    event = real_blob_event(blob_service, container_name(job), wire["path"], 1)
    assert app.post_events([event], headers={"x-functions-key": _events_key(app)}).status_code == 200
    listed = app.all_pages(f"/api/jobs/{job}/tasks/render-7/outputs", kind="TaskPreview")
    assert [(i["taskId"], i["kind"], i["path"], i["size"]) for i in listed] == [("render-7", "TaskPreview", "thumb.png", 10)]


def _events_key(app: RunningApp) -> str:
    keys = getattr(app.settings, "events_keys", ()) or app.settings.api_keys
    return keys[0]


def test_a_tracked_save_never_truncates_another_writer_s_blob(azurite: Azurite, job: str, tmp_path: Path) -> None:
    storage = TaskOutputStorage.connect(azurite.connection_string, job, "jobrelease")
    storage.prepare()
    name = "jobrelease/$TaskLog/logs.txt"
    first_log, second_log = tmp_path / "first.txt", tmp_path / "second.txt"
    first_log.write_bytes(b"node 1 writes\n")
    second_log.write_bytes(b"node 2 writes\n")
    blob = storage.container.get_blob_client(name)

    first = TrackedFile(storage.container, name, first_log, NEVER, owner="tvm-1").start()
    with pytest.raises(WriterConflictError, match="another writer is following"):  # live: it holds the lease
        TrackedFile(storage.container, name, second_log, NEVER, owner="tvm-1", lease_wait=0).start()
    with pytest.raises(OutputStorageError, match="tracked save is following"):  # a plain save cannot clobber it
        storage.save_text(TaskOutputKind.LOG, "overwrite", "logs.txt")
    first.close()
    assert blob.download_blob().readall() == b"node 1 writes\n"

    with pytest.raises(WriterConflictError, match="written by node tvm-1"):  # finished, but another node's
        TrackedFile(storage.container, name, second_log, NEVER, owner="tvm-2", lease_wait=0).start()
    assert blob.download_blob().readall() == b"node 1 writes\n"
    with TrackedFile(storage.container, name, second_log, NEVER, owner="tvm-1", lease_wait=0):  # its own earlier run
        pass
    assert blob.download_blob().readall() == b"node 2 writes\n"


def test_a_failed_flush_is_reported_and_the_next_one_catches_up(azurite: Azurite, job: str, tmp_path: Path) -> None:
    storage = TaskOutputStorage.connect(azurite.connection_string, job, "t1")
    storage.prepare()
    log = tmp_path / "stdout.txt"
    log.write_bytes(b"first\n")
    reported: list[BaseException] = []
    with storage.save_tracked(TaskOutputKind.LOG, log, "stdout.txt", interval=timedelta(milliseconds=20),
                              on_error=reported.append) as tracked:
        moved = tmp_path / "moved.txt"
        log.rename(moved)
        log.mkdir()  # the next background flush cannot read the file
        assert eventually(lambda: bool(tracked.errors))
        log.rmdir()
        moved.rename(log)
        with open(log, "ab") as handle:
            handle.write(b"second\n")
    assert tracked.errors and reported[: len(tracked.errors)] == tracked.errors
    assert isinstance(tracked.errors[0], OSError)
    assert storage.get(TaskOutputKind.LOG, "stdout.txt").read() == b"first\nsecond\n"

    # A final flush that fails raises; what was committed stays readable.
    log.write_bytes(b"again\n")
    tracked = storage.save_tracked(TaskOutputKind.LOG, log, "stdout.txt", interval=NEVER)
    with open(log, "ab") as handle:
        handle.write(b"lost\n")
    storage.container.delete_container()
    with pytest.raises(OutputStorageError, match="final flush"):
        tracked.close()
