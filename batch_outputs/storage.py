"""``TaskOutputStorage`` and ``JobOutputStorage``: save, follow, list and get outputs by convention.

Blob names and container names come from ``shared.conventions`` (byte for byte the .NET
library's). Every client is built with the project's one blob retry policy, so throttling
(429/503) and dropped connections are retried with exponential backoff and jitter.
"""

from __future__ import annotations

import mimetypes
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobType, ContainerClient, ContentSettings

from shared.conventions import (
    ConventionError,
    blob_name,
    container_name,
    is_valid_job_id,
    is_valid_task_id,
    parse_blob_path,
)
from shared.settings import RetrySettings
from shared.store.clients import blob_retry_policy, development_storage

#: A tracked save stages what its file gained in blocks of at most this many bytes.
TRACKED_BLOCK_SIZE = 4 * 1024 * 1024
#: The name of ``TRACKED_BLOCK_SIZE`` when tracked saves wrote append blobs.
MAX_APPEND_BLOCK = TRACKED_BLOCK_SIZE
#: Azure's limit on the committed blocks of one block blob.
MAX_COMMITTED_BLOCKS = 50_000
#: When a tracked save's block list is full, runs of consecutive blocks are merged into blocks of
#: up to this many bytes (read back from the blob, so one merge holds at most this in memory).
COMPACTED_BLOCK_SIZE = 32 * 1024 * 1024
DEFAULT_FLUSH_INTERVAL = timedelta(seconds=5)
JOB_ID_VARIABLE = "AZ_BATCH_JOB_ID"
TASK_ID_VARIABLE = "AZ_BATCH_TASK_ID"


class OutputStorageError(Exception):
    """An output could not be saved, listed or read."""


class OutputNotFoundError(OutputStorageError, LookupError):
    """No output of that kind and path."""


def container_client(storage: str, job_id: str, *, retry: RetrySettings | None = None, credential: Any = None) -> ContainerClient:
    """The client of ``job_id``'s output container.

    ``storage`` is a connection string (``UseDevelopmentStorage=true`` for Azurite) or a blob
    account URL, used with ``credential`` (default: ``DefaultAzureCredential``).
    """
    if not is_valid_job_id(job_id):
        raise ConventionError(f"invalid job ID {job_id!r}")
    policy = blob_retry_policy(retry or RetrySettings(), asynchronous=False)
    name = container_name(job_id)
    if storage.lower().startswith(("http://", "https://")):
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        return ContainerClient(storage.rstrip("/"), name, credential=credential, retry_policy=policy)
    return ContainerClient.from_connection_string(development_storage(storage), name, retry_policy=policy)


@dataclass(frozen=True, slots=True)
class OutputFile:
    """One stored output."""

    job_id: str
    task_id: str | None
    kind: str
    path: str
    blob_name: str
    url: str
    size: int
    etag: str | None
    last_modified: datetime | None
    _container: ContainerClient

    def read(self) -> bytes:
        return self._container.download_blob(self.blob_name).readall()

    def download_to(self, destination: str | os.PathLike[str]) -> Path:
        """Write the output to ``destination`` (a file, or a directory to put it in)."""
        target = Path(destination)
        if target.is_dir():
            target = target / Path(self.path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as handle:
            self._container.download_blob(self.blob_name).readinto(handle)
        return target


def _content_settings(path: str, given: str | None) -> ContentSettings:
    return ContentSettings(content_type=given or mimetypes.guess_type(path)[0] or "application/octet-stream")


def default_destination(source: Path) -> str:
    """Where ``SaveAsync(kind, path)`` puts a file: its path relative to the working directory
    when it lies below it, else its name."""
    try:
        relative = source.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return source.name
    return relative.as_posix()


class TrackedFile:
    """Follows a growing file into a block blob until closed (``SaveTrackedAsync``).

    A background thread flushes what the file gained every ``interval``: it stages the new bytes
    as blocks (Put Block) and commits the whole block list so far (Put Block List). Azure raises
    ``BlobCreated`` with the blob's new size for every commit, and nothing at all for Append
    Block, so the index follows a tracked log without waiting for the reconciler. A flush with no
    new bytes commits nothing. Closing stops the thread and flushes the rest, so the blob ends
    equal to the file even if the writer finished just now.

    Starting replaces whatever the target held (an earlier run's blob, or an append blob of an
    earlier version of this library) with an empty block blob, and the file is followed from its
    first byte, as creating the append blob did. Readers see the bytes committed so far,
    ``text/plain``, as before.

    A block blob commits at most 50,000 blocks (``MAX_COMMITTED_BLOCKS``). When the list is full,
    runs of consecutive blocks are merged into blocks of up to ``COMPACTED_BLOCK_SIZE`` (their
    bytes read back from the blob and staged again), which the next commit puts in their place:
    the content is unchanged. If merging cannot free a tenth of the list (a log of several hundred
    GiB), the flush fails with ``OutputStorageError``; what was committed stays readable.
    """

    def __init__(self, container: ContainerClient, blob: str, source: Path, interval: timedelta, *,
                 max_blocks: int = MAX_COMMITTED_BLOCKS, block_size: int = TRACKED_BLOCK_SIZE,
                 compacted_block_size: int = COMPACTED_BLOCK_SIZE) -> None:
        if not 2 <= max_blocks <= MAX_COMMITTED_BLOCKS:
            raise ValueError(f"max_blocks must be 2..{MAX_COMMITTED_BLOCKS}")
        self._blob = container.get_blob_client(blob)
        self._source = source
        self._interval = interval.total_seconds()
        self._settings = _content_settings(str(source), "text/plain")
        self._max_blocks = max_blocks
        self._block_size = block_size
        self._compacted_block_size = max(compacted_block_size, block_size)
        self._offset = 0
        self._blocks: list[tuple[str, int]] = []  # the block list: (ID, size), committed or staged
        self._uncommitted = False  # blocks were staged since the last commit
        self._next_block = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.blob_name = blob

    def start(self) -> TrackedFile:
        # Put Blob replaces any blob of the name, of any type: BlobCreated with size 0, as before.
        self._blob.upload_blob(b"", overwrite=True, content_settings=self._settings)
        self._thread = threading.Thread(target=self._run, name=f"track {self._source.name}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.flush()
            except (OSError, AzureError, OutputStorageError) as exc:  # the final flush reports it
                self._error = exc

    def flush(self) -> int:
        """Stage what the file gained since the last flush and commit it; returns those bytes.

        Commits nothing when nothing was gained (except blocks a failed commit left staged).
        """
        with self._lock:
            added = 0
            if self._source.exists():
                with open(self._source, "rb") as handle:
                    handle.seek(self._offset)
                    while chunk := handle.read(self._block_size):
                        self._stage(chunk)
                        self._offset += len(chunk)
                        added += len(chunk)
            if self._uncommitted:
                self._commit(self._blocks)
            return added

    def _block_id(self) -> str:
        # Every block ID of a blob has the same length; the SDK base64-encodes it.
        block_id = f"{self._next_block:012d}"
        self._next_block += 1
        return block_id

    def _stage(self, data: bytes) -> None:
        if len(self._blocks) >= self._max_blocks:
            if self._uncommitted:
                self._commit(self._blocks)
            self._compact()
        block_id = self._block_id()
        self._blob.stage_block(block_id, data, length=len(data))
        self._blocks.append((block_id, len(data)))
        self._uncommitted = True

    def _commit(self, blocks: list[tuple[str, int]]) -> None:
        # Put Block List clears the content settings it is not given: give them every time.
        self._blob.commit_block_list([BlobBlock(block_id) for block_id, _ in blocks], content_settings=self._settings)
        self._blocks = blocks
        self._uncommitted = False

    def _compact(self) -> None:
        """Merge runs of consecutive committed blocks so the list has room again."""
        groups: list[list[tuple[str, int]]] = []
        group_size = 0
        for block in self._blocks:
            if groups and group_size + block[1] <= self._compacted_block_size:
                groups[-1].append(block)
                group_size += block[1]
            else:
                groups.append([block])
                group_size = block[1]
        room = max(1, self._max_blocks // 10)
        if len(groups) > self._max_blocks - room:
            raise OutputStorageError(
                f"{self.blob_name}: {len(self._blocks)} blocks of {sum(size for _, size in self._blocks)} bytes "
                f"reach the block blob limit of {self._max_blocks} committed blocks and cannot be merged further "
                f"(blocks of up to {self._compacted_block_size} bytes)")
        merged: list[tuple[str, int]] = []
        start = 0
        for group in groups:
            size = sum(block_size for _, block_size in group)
            if len(group) == 1:
                merged.append(group[0])
            else:
                data = self._blob.download_blob(offset=start, length=size).readall()
                if len(data) != size:
                    raise OutputStorageError(f"{self.blob_name} changed while its blocks were merged")
                block_id = self._block_id()
                self._blob.stage_block(block_id, data, length=size)
                merged.append((block_id, size))
            start += size
        self._commit(merged)

    def close(self) -> None:
        """Stop following and flush the rest (the guaranteed final flush)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.flush()
        except (OSError, AzureError, OutputStorageError) as exc:
            raise OutputStorageError(f"final flush of {self._source} failed: {exc}") from exc

    def __enter__(self) -> TrackedFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class _OutputStorage:
    def __init__(self, container: ContainerClient, job_id: str, task_id: str | None) -> None:
        if not is_valid_job_id(job_id):
            raise ConventionError(f"invalid job ID {job_id!r}")
        if task_id is not None and not is_valid_task_id(task_id):
            raise ConventionError(f"invalid task ID {task_id!r}")
        self.container = container
        self.job_id = job_id
        self.task_id = task_id

    def blob_name(self, kind: str, path: str) -> str:
        return blob_name(kind, path, self.task_id)

    def prepare(self) -> bool:
        """Create the job's container (``CloudJob.PrepareOutputStorageAsync``); True if created."""
        try:
            self.container.create_container()
        except ResourceExistsError:
            return False
        return True

    def save(self, kind: str, source: str | os.PathLike[str], destination: str | None = None,
             *, content_type: str | None = None, progress_hook: Any = None) -> OutputFile:
        """Upload a file as an output of ``kind`` (``SaveAsync``); returns what was stored.

        ``progress_hook(current, total)`` is called as the upload proceeds.
        """
        path = Path(source)
        target = destination or default_destination(path)
        with open(path, "rb") as handle:
            return self._upload(kind, target, handle, content_type, progress_hook)

    def save_text(self, kind: str, text: str, destination: str, *, content_type: str | None = "text/plain; charset=utf-8") -> OutputFile:
        """Store ``text`` (UTF-8) as an output of ``kind`` (``SaveTextAsync``)."""
        return self._upload(kind, destination, text.encode("utf-8"), content_type)

    def _upload(self, kind: str, destination: str, data: bytes | BinaryIO, content_type: str | None,
                progress_hook: Any = None) -> OutputFile:
        name = self.blob_name(kind, destination)
        try:
            self.container.upload_blob(name, data, overwrite=True, progress_hook=progress_hook,
                                       content_settings=_content_settings(destination, content_type))
        except ResourceNotFoundError as exc:
            raise OutputStorageError(f"container {self.container.container_name} does not exist: prepare the job first") from exc
        return self.get(kind, destination)

    def save_tracked(self, kind: str, source: str | os.PathLike[str], destination: str | None = None,
                     *, interval: timedelta = DEFAULT_FLUSH_INTERVAL) -> TrackedFile:
        """Follow a growing file (a log) into a block blob until the returned object is closed.

        Every ``interval`` what the file gained is committed as new blocks, which Azure announces
        (``BlobCreated`` with the new size), so the index stays exact while the log grows. Use it
        as a context manager around the work that writes the file.
        """
        path = Path(source)
        name = self.blob_name(kind, destination or default_destination(path))
        return TrackedFile(self.container, name, path, interval).start()

    def _file(self, blob: Any) -> OutputFile | None:
        output = parse_blob_path(blob.name)
        if output is None:
            return None
        return OutputFile(
            job_id=self.job_id,
            task_id=output.task_id,
            kind=output.kind,
            path=output.path,
            blob_name=blob.name,
            url=self.container.get_blob_client(blob.name).url,
            size=blob.size or 0,
            etag=(blob.etag or "").strip('"') or None,
            last_modified=blob.last_modified,
            _container=self.container,
        )

    def list(self, kind: str) -> Iterator[OutputFile]:
        """Outputs of ``kind``, by prefix listing (as the .NET library lists them)."""
        prefix = self.blob_name(kind, "x")[:-1]
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
    """A task's outputs: blobs ``{taskId}/${kind}/{path}`` in the job's container."""

    def __init__(self, container: ContainerClient, job_id: str, task_id: str) -> None:
        super().__init__(container, job_id, task_id)

    @classmethod
    def connect(cls, storage: str, job_id: str, task_id: str, **kwargs: Any) -> TaskOutputStorage:
        return cls(container_client(storage, job_id, **kwargs), job_id, task_id)

    @classmethod
    def from_environment(cls, storage: str | None = None, **kwargs: Any) -> TaskOutputStorage:
        """On a compute node: job and task from ``AZ_BATCH_JOB_ID`` / ``AZ_BATCH_TASK_ID``,
        storage from ``BATCH_OUTPUTS_STORAGE`` unless given."""
        job_id, task_id = os.environ.get(JOB_ID_VARIABLE), os.environ.get(TASK_ID_VARIABLE)
        storage = storage or os.environ.get("BATCH_OUTPUTS_STORAGE")
        if not (job_id and task_id and storage):
            raise OutputStorageError(f"set {JOB_ID_VARIABLE}, {TASK_ID_VARIABLE} and BATCH_OUTPUTS_STORAGE")
        return cls.connect(storage, job_id, task_id, **kwargs)


class JobOutputStorage(_OutputStorage):
    """A job's own outputs: blobs ``${kind}/{path}`` in the job's container."""

    def __init__(self, container: ContainerClient, job_id: str) -> None:
        super().__init__(container, job_id, None)

    @classmethod
    def connect(cls, storage: str, job_id: str, **kwargs: Any) -> JobOutputStorage:
        return cls(container_client(storage, job_id, **kwargs), job_id)
