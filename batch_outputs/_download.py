"""Bulk downloads: many outputs into a folder, in parallel, resumable, never outside it.

The layout keeps the conventions' folders: ``{taskId}/{kind}/{path}`` for task outputs and
``{kind}/{path}`` for job outputs. A manifest in the destination (``.batch-outputs.json``)
records the ETag and size of every file written; a file already there with the size and ETag
the index lists is skipped, so a second run transfers nothing. Each file is written to a
``.part`` beside it and renamed once its length is verified: an interrupted run leaves no
half file under the final name.

A path is refused, never written, when any segment is empty, ``.`` or ``..``, holds a
backslash, NUL or (on Windows) a drive colon, or when the folder it would land in resolves
(symbolic links included) outside the destination.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional, Union

from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline import AsyncPipeline, Pipeline
from azure.core.pipeline.policies import AsyncRetryPolicy, HttpLoggingPolicy, RetryPolicy, UserAgentPolicy
from azure.core.pipeline.transport import AsyncioRequestsTransport, RequestsTransport
from azure.core.rest import HttpRequest

from ._models import DownloadReport, OutputItem
from ._shared import USER_AGENT

MANIFEST = ".batch-outputs.json"
_CHUNK = 1024 * 1024
PathOrStream = Union[str, "os.PathLike[str]", BinaryIO]
ProgressHook = Callable[[int, int], None]


class LengthMismatchError(AzureError):
    """Storage sent fewer or more bytes than it announced: the file is not kept."""


def relative_parts(item: OutputItem) -> Optional[list[str]]:
    """The output's place under the destination, as path segments; None when a segment is unsafe."""
    parts = ([item.task_id] if item.task_id is not None else []) + [item.kind, *item.path.split("/")]
    for part in parts:
        if part in ("", ".", "..") or "\\" in part or "\x00" in part or (os.name == "nt" and ":" in part):
            return None
    return parts


def local_target(dest: Path, item: OutputItem) -> Optional[tuple[str, Path]]:
    """``(relative name, file)`` of an output under ``dest``; None when it would escape ``dest``."""
    parts = relative_parts(item)
    if parts is None:
        return None
    root = os.path.realpath(dest)
    target = Path(root).joinpath(*parts)
    # The folder is resolved as it is on disk now: a symbolic link inside dest cannot lead out.
    parent = os.path.realpath(target.parent)
    if parent != root and not parent.startswith(root + os.sep):
        return None
    return "/".join(parts), Path(parent) / parts[-1]


def bare_etag(etag: Optional[str]) -> Optional[str]:
    """An ETag without its quotes: storage quotes it in headers, events may or may not."""
    return etag.strip('"') if etag else None


@dataclass
class Manifest:
    """ETag and size of every file a download wrote, by relative name (``.batch-outputs.json``)."""

    path: Path
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, dest: Path) -> Manifest:
        path = dest / MANIFEST
        try:
            files = json.loads(path.read_text("utf-8")).get("files") or {}
        except (OSError, ValueError, AttributeError):
            files = {}
        return cls(path, {k: v for k, v in files.items() if isinstance(v, dict)})

    def is_current(self, name: str, file: Path, item: OutputItem) -> bool:
        """The file is there with the size and ETag the index lists for it."""
        known = self.files.get(name)
        if not known or not item.etag or known.get("etag") != bare_etag(item.etag) or known.get("size") != item.size:
            return False
        try:
            return file.is_file() and file.stat().st_size == item.size
        except OSError:
            return False

    def record(self, name: str, etag: Optional[str], size: int) -> None:
        with self.lock:
            self.files[name] = {"etag": bare_etag(etag), "size": size}

    def save(self) -> None:
        with self.lock:
            data = json.dumps({"version": 1, "files": self.files}, indent=0, sort_keys=True)
        part = self.path.with_name(self.path.name + ".part")
        part.write_text(data, "utf-8")
        os.replace(part, self.path)


@dataclass
class _Plan:
    dest: Path
    manifest: Manifest
    todo: list[tuple[str, Path, OutputItem]]
    skipped: list[str]
    refused: list[str]


def plan(items: Iterable[OutputItem], dest: PathOrStream) -> _Plan:
    """What to fetch, what is already there and what is refused."""
    root = Path(os.fspath(dest))  # type: ignore[arg-type]
    root.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.load(root)
    todo: list[tuple[str, Path, OutputItem]] = []
    skipped: list[str] = []
    refused: list[str] = []
    for item in items:
        target = local_target(root, item)
        if target is None:
            refused.append("/".join(filter(None, [item.task_id, item.kind, item.path])))
            continue
        name, file = target
        if manifest.is_current(name, file, item):
            skipped.append(name)
        else:
            todo.append((name, file, item))
    return _Plan(root, manifest, todo, skipped, refused)


class _Progress:
    """Bytes done of the whole transfer, reported to the caller's hook from any thread."""

    def __init__(self, total: int, hook: Optional[ProgressHook]) -> None:
        self.total, self.done, self.hook, self.lock = total, 0, hook, threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.done += n
            done = self.done
        if self.hook is not None:
            self.hook(done, self.total)


@dataclass(frozen=True)
class Fetched:
    """An open download: what storage announced, and the bytes."""

    etag: Optional[str]
    length: Optional[int]
    chunks: Iterator[bytes]
    close: Callable[[], None]


def write_verified(fetched: Fetched, file: Path, progress: _Progress) -> int:
    """Stream into ``file.part``, check the length, rename; the bytes written."""
    file.parent.mkdir(parents=True, exist_ok=True)
    part = file.with_name(file.name + ".part")
    written = 0
    try:
        with open(part, "wb") as handle:
            for chunk in fetched.chunks:
                handle.write(chunk)
                written += len(chunk)
                progress.add(len(chunk))
        if fetched.length is not None and written != fetched.length:
            raise LengthMismatchError(f"received {written} bytes of {fetched.length}")
        os.replace(part, file)
    finally:
        fetched.close()
        if part.exists():
            part.unlink()
    return written


def finish(p: _Plan, downloaded: list[str], failed: list[tuple[str, str]], transferred: int) -> DownloadReport:
    p.manifest.save()
    return DownloadReport(downloaded=tuple(sorted(downloaded)), skipped=tuple(sorted(p.skipped)), refused=tuple(sorted(p.refused)),
                          failed=tuple(sorted(failed)), bytes=transferred)


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text


def download_items(items: Iterable[OutputItem], dest: PathOrStream, fetch: Callable[[Any], Fetched], *,
                   max_concurrency: int, progress_hook: Optional[ProgressHook],
                   resolve: Optional[Callable[[OutputItem], Any]] = None) -> DownloadReport:
    """Fetch every output not already there: at most ``max_concurrency`` transfers at a time
    (threads). ``resolve`` turns an output into what ``fetch`` takes (its SAS link, from the
    API); it runs outside the transfer limit, so the next links are ready as transfers end and
    a transfer never waits on the API."""
    p = plan(items, dest)
    progress = _Progress(sum(item.size for _, _, item in p.todo), progress_hook)
    downloaded: list[str] = []
    failed: list[tuple[str, str]] = []
    transferred = [0]
    lock = threading.Lock()
    transfers = threading.BoundedSemaphore(max(1, max_concurrency))

    def one(entry: tuple[str, Path, OutputItem]) -> None:
        name, file, item = entry
        try:
            source = resolve(item) if resolve is not None else item
            with transfers:
                fetched = fetch(source)
                written = write_verified(fetched, file, progress)
        except (AzureError, OSError) as exc:
            with lock:
                failed.append((name, _reason(exc)))
            return
        p.manifest.record(name, fetched.etag or item.etag, written)
        with lock:
            downloaded.append(name)
            transferred[0] += written

    if p.todo:
        workers = max(1, max_concurrency) * (2 if resolve is not None else 1)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batch-outputs-download") as pool:
            list(pool.map(one, p.todo))
    return finish(p, downloaded, failed, transferred[0])


# -- SAS links -------------------------------------------------------------------------------


def _etag(headers: Any) -> Optional[str]:
    value = headers.get("ETag")
    return value.strip('"') if value else None


def _length(headers: Any) -> Optional[int]:
    value = headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


class SasFetcher:
    """GETs of read-only SAS links, through a pipeline of their own: retries, a user agent,
    logging with the ``sig`` redacted, and no API credential (it never goes to storage)."""

    def __init__(self, max_concurrency: int = 8, **kwargs: Any) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        # One pooled connection per worker: more workers than the pool would reconnect each time.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(10, max_concurrency + 2))
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        self.pipeline: Pipeline[Any, Any] = Pipeline(
            transport=RequestsTransport(session=session, session_owner=True),
            policies=[UserAgentPolicy(base_user_agent=USER_AGENT), RetryPolicy(**kwargs), HttpLoggingPolicy()])

    def __call__(self, url: str) -> Fetched:
        response = self.pipeline.run(HttpRequest("GET", url), stream=True).http_response
        if response.status_code != 200:
            response.read()
            raise HttpResponseError(message=f"storage answered {response.status_code} to the download", response=response)
        return Fetched(_etag(response.headers), _length(response.headers), response.iter_bytes(chunk_size=_CHUNK), response.close)

    def close(self) -> None:
        self.pipeline.__exit__()


def write_stream(fetched: Fetched, destination: PathOrStream, progress_hook: Optional[ProgressHook] = None) -> int:
    """One download to a path (``.part`` then rename, length verified) or to a binary stream."""
    progress = _Progress(fetched.length or 0, progress_hook)
    if isinstance(destination, (str, os.PathLike)):
        return write_verified(fetched, Path(os.fspath(destination)), progress)
    written = 0
    try:
        for chunk in fetched.chunks:
            destination.write(chunk)
            written += len(chunk)
            progress.add(len(chunk))
    finally:
        fetched.close()
    if fetched.length is not None and written != fetched.length:
        raise LengthMismatchError(f"received {written} bytes of {fetched.length}")
    return written


# -- the async side --------------------------------------------------------------------------


@dataclass(frozen=True)
class AsyncFetched:
    etag: Optional[str]
    length: Optional[int]
    chunks: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]


class AsyncSasFetcher:
    """The async twin of ``SasFetcher`` (asyncio over requests: the wheel needs no aiohttp)."""

    def __init__(self, max_concurrency: int = 8, **kwargs: Any) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(10, max_concurrency + 2))
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        self.pipeline: AsyncPipeline[Any, Any] = AsyncPipeline(
            transport=AsyncioRequestsTransport(session=session, session_owner=True),
            policies=[UserAgentPolicy(base_user_agent=USER_AGENT), AsyncRetryPolicy(**kwargs), HttpLoggingPolicy()])

    async def __call__(self, url: str) -> AsyncFetched:
        response = (await self.pipeline.run(HttpRequest("GET", url), stream=True)).http_response
        if response.status_code != 200:
            await response.read()
            raise HttpResponseError(message=f"storage answered {response.status_code} to the download", response=response)
        return AsyncFetched(_etag(response.headers), _length(response.headers), response.iter_bytes(), response.close)

    async def close(self) -> None:
        await self.pipeline.__aexit__()


async def awrite_verified(fetched: AsyncFetched, file: Path, progress: _Progress) -> int:
    """``write_verified`` for an async download (the writes are small and local)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    part = file.with_name(file.name + ".part")
    written = 0
    try:
        with open(part, "wb") as handle:
            async for chunk in fetched.chunks:
                handle.write(chunk)
                written += len(chunk)
                progress.add(len(chunk))
        if fetched.length is not None and written != fetched.length:
            raise LengthMismatchError(f"received {written} bytes of {fetched.length}")
        os.replace(part, file)
    finally:
        await fetched.close()
        if part.exists():
            part.unlink()
    return written


async def awrite_stream(fetched: AsyncFetched, destination: PathOrStream, progress_hook: Optional[ProgressHook] = None) -> int:
    """``write_stream`` for an async download."""
    progress = _Progress(fetched.length or 0, progress_hook)
    if isinstance(destination, (str, os.PathLike)):
        return await awrite_verified(fetched, Path(os.fspath(destination)), progress)
    written = 0
    try:
        async for chunk in fetched.chunks:
            destination.write(chunk)
            written += len(chunk)
            progress.add(len(chunk))
    finally:
        await fetched.close()
    if fetched.length is not None and written != fetched.length:
        raise LengthMismatchError(f"received {written} bytes of {fetched.length}")
    return written


async def adownload_items(items: Iterable[OutputItem], dest: PathOrStream, fetch: Callable[[Any], Awaitable[AsyncFetched]], *,
                          max_concurrency: int, progress_hook: Optional[ProgressHook],
                          resolve: Optional[Callable[[OutputItem], Awaitable[Any]]] = None) -> DownloadReport:
    """``download_items`` on asyncio: at most ``max_concurrency`` transfers, links resolved ahead."""
    p = plan(items, dest)
    progress = _Progress(sum(item.size for _, _, item in p.todo), progress_hook)
    downloaded: list[str] = []
    failed: list[tuple[str, str]] = []
    transferred = 0
    queue = list(p.todo)
    transfers = asyncio.Semaphore(max(1, max_concurrency))

    async def worker() -> None:
        nonlocal transferred
        while queue:
            name, file, item = queue.pop()
            try:
                source = await resolve(item) if resolve is not None else item
                async with transfers:
                    fetched = await fetch(source)
                    written = await awrite_verified(fetched, file, progress)
            except (AzureError, OSError) as exc:
                failed.append((name, _reason(exc)))
                continue
            p.manifest.record(name, fetched.etag or item.etag, written)
            downloaded.append(name)
            transferred += written

    workers = max(1, max_concurrency) * (2 if resolve is not None else 1)
    await asyncio.gather(*(worker() for _ in range(min(workers, len(queue)))))
    return finish(p, downloaded, failed, transferred)


# -- straight from the container (a node with storage credentials and no API key) ------------


def container_items(container: Any, job_id: str, *, kind: Optional[str], task_id: Optional[str], prefix: Optional[str]) -> Iterator[OutputItem]:
    """The conventional blobs of a job's container as output items (a prefix listing, as the
    .NET library lists): for a node that can read the container but holds no API key."""
    from .conventions import parse_blob_path

    if task_id is not None:
        start = f"{task_id}/"
    elif kind and kind.startswith("Job"):
        start = f"${kind}/"
    else:
        start = ""
    for blob in container.list_blobs(name_starts_with=start or None):
        output = parse_blob_path(blob.name)
        if output is None or (task_id is not None and output.task_id != task_id) or (kind and output.kind != kind):
            continue
        if prefix and not output.path.startswith(prefix):
            continue
        raw = {"jobId": job_id, "taskId": output.task_id, "kind": output.kind, "path": output.path, "blobName": blob.name,
               "container": container.container_name, "url": container.get_blob_client(blob.name).url.split("?", 1)[0],
               "size": blob.size or 0, "etag": (blob.etag or "").strip('"') or None,
               "createdAt": blob.creation_time.isoformat() if getattr(blob, "creation_time", None) else None}
        yield OutputItem.from_dict(raw)


def blob_fetcher(container: Any) -> Callable[[OutputItem], Fetched]:
    """Fetch an output straight from its blob with the container client's own credentials."""

    def fetch(item: OutputItem) -> Fetched:
        downloader = container.get_blob_client(item.blob_name).download_blob(max_concurrency=1)
        etag = (downloader.properties.etag or "").strip('"') or None
        return Fetched(etag, downloader.size, downloader.chunks(), lambda: None)

    return fetch
