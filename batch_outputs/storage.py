"""``TaskOutputStorage`` and ``JobOutputStorage``: save, follow, list and get outputs by convention.

Blob and container names come from ``batch_outputs.conventions`` (byte for byte the .NET
library's). Every client retries throttling (429/503) and dropped connections with
exponential backoff and jitter (``batch_outputs.clients``).
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Optional, Union

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobType, ContainerClient, ContentSettings

from . import environment
from .clients import container_client, from_container_url
from .conventions import (
    ConventionError,
    blob_name,
    destination_path,
    is_valid_job_id,
    is_valid_task_id,
    job_id_from_container,
    kind_prefix,
    node_path,
    parse_blob_path,
)
from .errors import ContainerNotFoundError, OutputNotFoundError, OutputStorageError
from .sas import DEFAULT_SAS_EXPIRY, Expiry, container_sas_url
from .tracked import DEFAULT_FLUSH_INTERVAL, WRITER_METADATA, FlushErrorHandler, TrackedFile

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class OutputFile:
    """One stored output."""

    job_id: Optional[str]
    task_id: Optional[str]
    kind: str
    path: str
    blob_name: str
    url: str
    size: int
    etag: Optional[str]
    last_modified: Optional[datetime]
    _container: ContainerClient

    def read(self) -> bytes:
        return self._container.download_blob(self.blob_name).readall()

    def download_to(self, destination: PathLike) -> Path:
        """Write the output to ``destination`` (a file, or a directory to put it in)."""
        target = Path(destination)
        if target.is_dir():
            target = target / Path(self.path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as handle:
            self._container.download_blob(self.blob_name).readinto(handle)
        return target


def _content_settings(path: str, given: Optional[str]) -> ContentSettings:
    return ContentSettings(content_type=given or mimetypes.guess_type(path)[0] or "application/octet-stream")


def _leased(exc: HttpResponseError) -> bool:
    return exc.status_code == 412 and "lease" in (getattr(exc, "error_code", None) or "").lower()


class _OutputStorage:
    def __init__(self, container: ContainerClient, job_id: Optional[str], task_id: Optional[str], *,
                 node_id: Optional[str] = None, writer: Optional[str] = None) -> None:
        if job_id is not None and not is_valid_job_id(job_id):
            raise ConventionError(f"invalid job ID {job_id!r}")
        if task_id is not None and not is_valid_task_id(task_id):
            raise ConventionError(f"invalid task ID {task_id!r}")
        if node_id is not None:
            node_path(node_id, "x")  # validates
        self.container = container
        self.job_id = job_id
        self.task_id = task_id
        #: The node folder saves go into (one file per node), or None.
        self.node_id = node_id
        #: The node stamped on saved blobs, for tasks whose ID several nodes share.
        self.writer = writer

    def output_storage_path(self, kind: str) -> str:
        """Where outputs of ``kind`` go, relative to the container (.NET's ``GetOutputStoragePath``):
        ``{taskId}/${kind}`` or ``${kind}`` (plus ``/{nodeId}`` when saving one file per node).

        With ``container_sas_url()`` it makes a Batch ``OutputFile`` destination that the index
        lists under this task and kind: ``path=f"{storage.output_storage_path(kind)}/{name}"``.
        """
        prefix = kind_prefix(kind, self.task_id)
        return f"{prefix}/{self.node_id}" if self.node_id else prefix

    def container_sas_url(self, expiry: Expiry = DEFAULT_SAS_EXPIRY) -> str:
        """The job container's URL with a SAS for writing outputs (.NET's ``GetOutputStorageContainerUrl``):
        add, create, list, read and write, until ``expiry`` (a timedelta from now or a datetime;
        default 7 days). Signed with the account key, or a user delegation key with an identity."""
        return container_sas_url(self.container, expiry)

    def blob_name(self, kind: str, path: str) -> str:
        if not path:
            raise ConventionError("an output path must not be empty")
        return blob_name(kind, node_path(self.node_id, path) if self.node_id else path, self.task_id)

    def prepare(self) -> bool:
        """Create the job's container (``CloudJob.PrepareOutputStorageAsync``); True if created."""
        try:
            self.container.create_container()
        except ResourceExistsError:
            return False
        return True

    def save(self, kind: str, source: PathLike, destination: Optional[str] = None,
             *, content_type: Optional[str] = None, progress_hook: Any = None) -> OutputFile:
        """Upload a file as an output of ``kind`` (``SaveAsync``); returns what was stored.

        Without ``destination`` the file is saved under its relative path as .NET does
        (``destination_path``: ``..\\logs\\a.txt`` becomes ``logs/a.txt``; a rooted path is
        refused). ``progress_hook(current, total)`` is called as the upload proceeds.
        """
        target = destination or destination_path(os.fspath(source))
        with open(source, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            return self._upload(kind, target, handle, size, content_type, progress_hook)

    def save_text(self, kind: str, text: str, destination: str, *,
                  content_type: Optional[str] = "text/plain; charset=utf-8") -> OutputFile:
        """Store ``text`` (UTF-8) as an output of ``kind`` (``SaveTextAsync``)."""
        data = text.encode("utf-8")
        return self._upload(kind, destination, data, len(data), content_type)

    def _upload(self, kind: str, destination: str, data: Union[bytes, BinaryIO], size: int, content_type: Optional[str],
                progress_hook: Any = None) -> OutputFile:
        name = self.blob_name(kind, destination)
        blob = self.container.get_blob_client(name)
        try:
            # No read-back: a SAS that may only write is enough to save.
            response = blob.upload_blob(data, overwrite=True, length=size, progress_hook=progress_hook,
                                        metadata={WRITER_METADATA: self.writer} if self.writer else None,
                                        content_settings=_content_settings(destination, content_type))
        except ResourceNotFoundError as exc:
            raise ContainerNotFoundError(f"container {self.container.container_name} does not exist: prepare the job first") from exc
        except HttpResponseError as exc:
            if _leased(exc):
                raise OutputStorageError(f"{name}: a tracked save is following this blob (it holds its lease)") from exc
            raise
        output = parse_blob_path(name)
        assert output is not None  # a conventional name by construction
        return OutputFile(job_id=self.job_id, task_id=output.task_id, kind=output.kind, path=output.path, blob_name=name,
                          url=blob.url.split("?", 1)[0], size=size, etag=(response.get("etag") or "").strip('"') or None,
                          last_modified=response.get("last_modified"), _container=self.container)

    def save_tracked(self, kind: str, source: PathLike, destination: Optional[str] = None, *,
                     interval: timedelta = DEFAULT_FLUSH_INTERVAL, on_error: Optional[FlushErrorHandler] = None) -> TrackedFile:
        """Follow a growing file (a log) into a block blob until the returned object is closed
        (``SaveTrackedAsync``): the first flush at once, then every ``interval`` (default one
        minute, as .NET), each announced by Azure with the new size, so the index follows the log.
        A failed flush goes to ``on_error`` and ``TrackedFile.errors``; the final one raises.
        Use it as a context manager around the work that writes the file."""
        path = Path(source)
        name = self.blob_name(kind, destination or destination_path(os.fspath(source)))
        return TrackedFile(self.container, name, path, interval, on_error=on_error, owner=self.writer).start()

    def _file(self, blob: Any) -> Optional[OutputFile]:
        output = parse_blob_path(blob.name)
        if output is None:
            return None
        return OutputFile(
            job_id=self.job_id,
            task_id=output.task_id,
            kind=output.kind,
            path=output.path,
            blob_name=blob.name,
            url=self.container.get_blob_client(blob.name).url.split("?", 1)[0],
            size=blob.size or 0,
            etag=(blob.etag or "").strip('"') or None,
            last_modified=blob.last_modified,
            _container=self.container,
        )

    def list(self, kind: str) -> Iterator[OutputFile]:
        """Outputs of ``kind``, by prefix listing (as the .NET library lists them)."""
        prefix = self.output_storage_path(kind) + "/"
        try:
            for blob in self.container.list_blobs(name_starts_with=prefix):
                item = self._file(blob)
                if item is not None and blob.blob_type in (BlobType.BLOCKBLOB, BlobType.APPENDBLOB, BlobType.PAGEBLOB):
                    yield item
        except ResourceNotFoundError:
            return

    def get(self, kind: str, path: str) -> OutputFile:
        """One output by kind and path; ``OutputNotFoundError`` when absent."""
        name = self.blob_name(kind, path)
        try:
            props = self.container.get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError as exc:
            raise OutputNotFoundError(f"no {kind} output {path!r}") from exc
        item = self._file(props)
        assert item is not None  # a conventional name by construction
        return item


class TaskOutputStorage(_OutputStorage):
    """A task's outputs: blobs ``{taskId}/${kind}/{path}`` in the job's container, or
    ``{taskId}/${kind}/{nodeId}/{path}`` when saving one file per node."""

    def __init__(self, container: ContainerClient, job_id: Optional[str], task_id: str, *,
                 node_id: Optional[str] = None, writer: Optional[str] = None) -> None:
        super().__init__(container, job_id, task_id, node_id=node_id, writer=writer)

    @classmethod
    def connect(cls, storage: str, job_id: str, task_id: str, *, node_id: Optional[str] = None, **kwargs: Any) -> TaskOutputStorage:
        """``storage``: a connection string, a blob account URL or the job container's SAS URL."""
        return cls(container_client(storage, job_id, **kwargs), job_id, task_id, node_id=node_id)

    @classmethod
    def from_container_url(cls, url: str, task_id: str, *, job_id: Optional[str] = None, node_id: Optional[str] = None,
                           **kwargs: Any) -> TaskOutputStorage:
        """A task's storage from the job container's URL with its SAS (.NET's
        ``TaskOutputStorage(Uri, taskId)``), e.g. ``container_sas_url()`` handed to the task."""
        container = from_container_url(url, **kwargs)
        return cls(container, job_id or job_id_from_container(container.container_name), task_id, node_id=node_id)

    @classmethod
    def from_environment(cls, storage: Optional[str] = None, *, per_node: Optional[bool] = None, **kwargs: Any) -> TaskOutputStorage:
        """On a compute node: job and task from ``AZ_BATCH_JOB_ID`` / ``AZ_BATCH_TASK_ID``, storage
        from ``BATCH_OUTPUTS_STORAGE`` unless given.

        ``per_node``: save one file per node (``{taskId}/${kind}/{AZ_BATCH_NODE_ID}/{path}``).
        ``None`` (the default) does so for the tasks whose ID Batch shares across nodes: the job
        preparation and release tasks and multi-instance tasks."""
        job_id, task_id = os.environ.get(environment.JOB_ID_VARIABLE), os.environ.get(environment.TASK_ID_VARIABLE)
        storage = storage or os.environ.get(environment.STORAGE_VARIABLE)
        if not (job_id and task_id and storage):
            raise OutputStorageError(f"set {environment.JOB_ID_VARIABLE}, {environment.TASK_ID_VARIABLE} "
                                     f"and {environment.STORAGE_VARIABLE}")
        try:
            node_id = environment.node_for(task_id, per_node)
        except environment.NodeIdMissingError as exc:
            raise OutputStorageError(str(exc)) from exc
        writer = os.environ.get(environment.NODE_ID_VARIABLE) if environment.shares_task_id(task_id) else None
        return cls(container_client(storage, job_id, **kwargs), job_id, task_id, node_id=node_id, writer=writer or None)


class JobOutputStorage(_OutputStorage):
    """A job's own outputs: blobs ``${kind}/{path}`` in the job's container."""

    def __init__(self, container: ContainerClient, job_id: Optional[str]) -> None:
        super().__init__(container, job_id, None)

    @classmethod
    def connect(cls, storage: str, job_id: str, **kwargs: Any) -> JobOutputStorage:
        return cls(container_client(storage, job_id, **kwargs), job_id)

    @classmethod
    def from_container_url(cls, url: str, *, job_id: Optional[str] = None, **kwargs: Any) -> JobOutputStorage:
        """A job's storage from its container's URL with a SAS (.NET's ``JobOutputStorage(Uri)``)."""
        container = from_container_url(url, **kwargs)
        return cls(container, job_id or job_id_from_container(container.container_name))

    def list(self, kind: str) -> Iterator[OutputFile]:
        """The job's own outputs of ``kind`` (``JobOutput``, ``JobPreview`` or a custom job kind).

        A task kind (``Task...``) is an error, not ``[]``: task outputs live under each task's
        folder, which a prefix listing of the job cannot reach (in .NET the types forbid it).
        Every task's outputs of a kind are the index's question:
        ``OutputIndexClient(endpoint, credential).list_outputs(job_id, kind="TaskPreview")``."""
        if kind.startswith("Task"):
            raise ConventionError(f"{kind} is a task kind: a JobOutputStorage lists the job's own outputs only. List one task's "
                                  f"with TaskOutputStorage, or every task's with OutputIndexClient.list_outputs(job_id, kind={kind!r})")
        return super().list(kind)
