"""``TrackedFile``: follow a growing file (a log) into a block blob (``SaveTrackedAsync``).

Azure raises ``BlobCreated`` for Put Blob and Put Block List and nothing for Append Block, so a
tracked save stages what the file gained as blocks and commits the block list so far: the index
sees every flush. One writer at a time: the save holds a lease on its blob while it runs.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Callable, Optional

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobLeaseClient, ContainerClient, ContentSettings

from .errors import ContainerNotFoundError, OutputStorageError, WriterConflictError

#: A tracked save stages what its file gained in blocks of at most this many bytes.
TRACKED_BLOCK_SIZE = 4 * 1024 * 1024
#: Azure's limit on the committed blocks of one block blob.
MAX_COMMITTED_BLOCKS = 50_000
#: When the block list is full, runs of consecutive blocks are merged into blocks of up to this
#: many bytes (read back from the blob, so one merge holds at most this in memory).
COMPACTED_BLOCK_SIZE = 32 * 1024 * 1024
#: .NET's ``TrackedFile.DefaultFlushInterval``.
DEFAULT_FLUSH_INTERVAL = timedelta(minutes=1)
#: The lease a tracked save holds on its blob (Azure allows 15-60 s, renewed well before expiry).
LEASE_SECONDS = 60
#: Blob metadata naming the compute node that wrote a blob of a task whose ID nodes share.
WRITER_METADATA = "batch_outputs_node"

FlushErrorHandler = Callable[[BaseException], None]
_FLUSH_ERRORS = (OSError, AzureError, OutputStorageError)


class TrackedFile:
    """Follows a growing file into a block blob until closed.

    Starting takes a lease on the blob (waiting up to ``lease_wait`` for another writer's lease
    to lapse, else ``WriterConflictError``), replaces what the blob held (an earlier run's log)
    with an empty ``text/plain`` block blob and commits what the file already holds: the first
    flush. A background thread then flushes every ``interval`` (.NET's default: one minute):
    the bytes the file gained are staged as blocks (Put Block) and the whole list so far
    committed (Put Block List), which Azure announces with the blob's new size. A flush with no
    new bytes commits nothing. A failed flush is kept in ``errors`` and passed to ``on_error``
    (.NET's ``FlushError``); the next flush picks up where it failed. Closing stops the thread,
    flushes the rest (raising ``OutputStorageError`` if that fails) and releases the lease.

    ``owner`` (a node ID) is for tasks whose ID several nodes share: the blob is stamped with it,
    and a blob stamped by another node (or not stamped) is never replaced.

    A block blob commits at most 50,000 blocks (``MAX_COMMITTED_BLOCKS``). When the list is full,
    runs of consecutive blocks are merged into blocks of up to ``COMPACTED_BLOCK_SIZE`` and the
    shorter list committed: the content is unchanged. If merging cannot free a tenth of the list
    (a log of several hundred GiB), the flush fails with ``OutputStorageError``.
    """

    def __init__(self, container: ContainerClient, blob: str, source: Path, interval: timedelta = DEFAULT_FLUSH_INTERVAL, *,
                 max_blocks: int = MAX_COMMITTED_BLOCKS, block_size: int = TRACKED_BLOCK_SIZE,
                 compacted_block_size: int = COMPACTED_BLOCK_SIZE, on_error: Optional[FlushErrorHandler] = None,
                 owner: Optional[str] = None, lease_wait: float = LEASE_SECONDS + 5) -> None:
        if not 2 <= max_blocks <= MAX_COMMITTED_BLOCKS:
            raise ValueError(f"max_blocks must be 2..{MAX_COMMITTED_BLOCKS}")
        if interval <= timedelta(0):
            raise ValueError("the flush interval must be positive")
        self._blob = container.get_blob_client(blob)
        self._source = source
        self._interval = interval.total_seconds()
        self._settings = ContentSettings(content_type="text/plain")
        self._metadata = {WRITER_METADATA: owner} if owner else None
        self._owner = owner
        self._lease_wait = lease_wait
        self._lease: Optional[BlobLeaseClient] = None
        self._max_blocks = max_blocks
        self._block_size = block_size
        self._compacted_block_size = max(compacted_block_size, block_size)
        self._offset = 0
        self._blocks: list[tuple[str, int]] = []  # the block list: (ID, size), committed or staged
        self._uncommitted = False  # blocks were staged since the last commit
        self._next_block = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._on_error = on_error
        self.errors: list[BaseException] = []
        self._thread: Optional[threading.Thread] = None
        self.blob_name = blob

    # -- owning the blob -------------------------------------------------------------------

    def start(self) -> TrackedFile:
        """Take the blob (see the class), commit what the file holds, start following."""
        try:
            self._take_blob()
        except ResourceNotFoundError as exc:
            raise ContainerNotFoundError(f"container {self._blob.container_name} does not exist: prepare the job first") from exc
        try:
            self.flush()
        except _FLUSH_ERRORS as exc:
            self._failed(exc)
        self._thread = threading.Thread(target=self._run, name=f"track {self._source.name}", daemon=True)
        self._thread.start()
        return self

    def _take_blob(self) -> None:
        deadline = time.monotonic() + self._lease_wait
        while True:
            try:
                # Create only: never replaces a blob another writer may be following.
                self._blob.upload_blob(b"", overwrite=False, content_settings=self._settings, metadata=self._metadata)
                created = True
            except ResourceExistsError:
                created = False
            try:
                self._lease = self._blob.acquire_lease(lease_duration=LEASE_SECONDS)
            except HttpResponseError as exc:
                if exc.status_code != 409 or (getattr(exc, "error_code", None) or "") not in ("LeaseAlreadyPresent", ""):
                    raise
                if time.monotonic() >= deadline:
                    raise WriterConflictError(f"{self.blob_name}: another writer is following this blob (it holds its lease); "
                                              "save under another name or wait until it ends") from exc
                time.sleep(1.0)
                continue
            except ResourceNotFoundError:
                continue  # deleted between the two calls: create it again
            break
        if created:
            return
        try:
            if self._owner is not None:
                self._check_owner()
            # Put Blob replaces any blob of the name, of any type: BlobCreated with size 0.
            self._blob.upload_blob(b"", overwrite=True, content_settings=self._settings, metadata=self._metadata, lease=self._lease)
        except BaseException:
            self._release()
            raise

    def _check_owner(self) -> None:
        writer = (self._blob.get_blob_properties().metadata or {}).get(WRITER_METADATA)
        if writer != self._owner:
            by = f"node {writer}" if writer else "another writer"
            raise WriterConflictError(f"{self.blob_name} was written by {by}, not by this node ({self._owner}): "
                                      "it is left as it is; save one file per node (--per-node) or under another name")

    def _release(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            try:
                lease.release()
            except AzureError:
                pass  # it lapses within LEASE_SECONDS anyway

    # -- following -------------------------------------------------------------------------

    def _run(self) -> None:
        renew_every = LEASE_SECONDS / 3
        next_flush = time.monotonic() + self._interval
        next_renew = time.monotonic() + renew_every
        while not self._stop.wait(max(0.0, min(next_flush, next_renew) - time.monotonic())):
            now = time.monotonic()
            if now >= next_renew:
                next_renew = now + renew_every
                try:
                    if self._lease is not None:
                        self._lease.renew()
                except AzureError as exc:
                    self._failed(OutputStorageError(f"{self.blob_name}: renewing the lease failed: {exc}"))
            if now >= next_flush:
                next_flush = now + self._interval
                try:
                    self.flush()
                except _FLUSH_ERRORS as exc:
                    self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self.errors.append(exc)
        if self._on_error is not None:
            self._on_error(exc)

    def flush(self) -> int:
        """Stage what the file gained since the last flush and commit it; returns those bytes.

        Commits nothing when nothing was gained (except blocks a failed commit left staged).
        """
        with self._lock:
            added = 0
            try:
                with open(self._source, "rb") as handle:
                    handle.seek(self._offset)
                    chunk = handle.read(self._block_size)
                    while chunk:
                        self._stage(chunk)
                        self._offset += len(chunk)
                        added += len(chunk)
                        chunk = handle.read(self._block_size)
            except FileNotFoundError:
                pass  # not there (yet, or while it is rotated): nothing gained
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
        self._blob.stage_block(block_id, data, length=len(data), lease=self._lease)
        self._blocks.append((block_id, len(data)))
        self._uncommitted = True

    def _commit(self, blocks: list[tuple[str, int]]) -> None:
        # Put Block List clears the content settings and metadata it is not given: give them every time.
        self._blob.commit_block_list([BlobBlock(block_id) for block_id, _ in blocks], content_settings=self._settings,
                                     metadata=self._metadata, lease=self._lease)
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
                merged.append((self._merge(start, size), size))
            start += size
        self._commit(merged)

    def _merge(self, start: int, size: int) -> str:
        data = self._blob.download_blob(offset=start, length=size).readall()
        if len(data) != size:
            raise OutputStorageError(f"{self.blob_name} changed while its blocks were merged")
        block_id = self._block_id()
        self._blob.stage_block(block_id, data, length=size, lease=self._lease)
        return block_id

    # -- ending ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop following, flush the rest (the guaranteed final flush) and release the blob."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.flush()
        except _FLUSH_ERRORS as exc:
            raise OutputStorageError(f"final flush of {self._source} failed: {exc}") from exc
        finally:
            self._release()

    def __enter__(self) -> TrackedFile:
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.close()
