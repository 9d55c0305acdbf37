"""``batch_outputs.aio.OutputIndexClient``: the sync client's twin on asyncio."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Optional, TypeVar

from azure.core import AsyncPipelineClient
from azure.core.async_paging import AsyncItemPaged, AsyncList
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.pipeline.policies import AsyncBearerTokenCredentialPolicy, AsyncRetryPolicy
from azure.core.pipeline.transport import AsyncioRequestsTransport
from azure.core.rest import HttpRequest

from .. import _shared
from .._download import AsyncSasFetcher, PathOrStream, ProgressHook, adownload_items, awrite_stream
from .._models import DownloadReport, JobItem, JobSummary, OutputChangeBatch, OutputItem, Quota, ReindexResult, TaskItem

T = TypeVar("T")


class OutputIndexClient:
    """The async client of the Batch Output Index's HTTP API (see ``batch_outputs.OutputIndexClient``).

    :param str endpoint: the API's base URL (no ``/api``).
    :param credential: an ``AzureKeyCredential`` or an async ``TokenCredential``
        (``azure.identity.aio.DefaultAzureCredential``).
    :keyword str audience: the API's application ID URI for tokens; defaults to the endpoint.
    :keyword: any other keyword goes to the azure-core pipeline.
    """

    def __init__(self, endpoint: str, credential: Any, **kwargs: Any) -> None:
        if not endpoint.lower().startswith(("https://", "http://")):
            raise ValueError("endpoint must be an http(s) URL, e.g. https://myapp.azurewebsites.net")
        self._endpoint = endpoint.rstrip("/")
        audience = kwargs.pop("audience", None) or self._endpoint
        self._retry_kwargs = {k: v for k, v in kwargs.items() if k.startswith("retry_")}
        transport = kwargs.pop("transport", None) or AsyncioRequestsTransport(**kwargs)
        self._client: AsyncPipelineClient[Any, Any] = AsyncPipelineClient(
            self._endpoint, transport=transport,
            policies=_shared.policies(credential, audience, AsyncRetryPolicy(**kwargs), AsyncBearerTokenCredentialPolicy, **kwargs),
            **kwargs)
        self._options = _shared.request_options(self._endpoint, credential)

    # -- plumbing -------------------------------------------------------------------------

    async def _send(self, request: HttpRequest) -> Any:
        if request.url.startswith("/"):  # a route: formatted here, as names may hold braces format_url would read
            request.url = self._endpoint + request.url
        return await self._client.send_request(request, **self._options)

    async def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        return _shared.json_of(await self._send(HttpRequest(method, url, **kwargs)))

    def _paged(self, urls: list[str], model: Callable[[dict[str, Any]], T]) -> AsyncItemPaged[T]:
        async def get_next(token: Optional[str]) -> Any:
            phase, _, url = (token or f"0:{urls[0]}").partition(":")
            return int(phase), await self._json("GET", url)

        async def extract(answer: Any) -> tuple[Optional[str], Any]:
            phase, body = answer
            link = body.get("nextLink")
            if link:
                token: Optional[str] = f"{phase}:{_shared.resolve_next_link(self._endpoint, link)}"
            else:
                token = f"{phase + 1}:{urls[phase + 1]}" if phase + 1 < len(urls) else None
            return token, AsyncList([model(raw) for raw in body.get("value") or []])

        return AsyncItemPaged(get_next, extract)

    async def close(self) -> None:
        """Close the pipeline's connections."""
        await self._client.close()

    async def __aenter__(self) -> OutputIndexClient:
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *args: Any) -> None:
        await self._client.__aexit__(*args)

    # -- jobs and tasks -------------------------------------------------------------------

    def list_jobs(self, *, results_per_page: Optional[int] = None) -> AsyncItemPaged[JobItem]:
        """Every indexed job, with its counts and last indexed time."""
        return self._paged([f"/api/jobs?maxpagesize={results_per_page or _shared.DEFAULT_PAGE_SIZE}"], JobItem.from_dict)

    async def get_job(self, job_id: str) -> JobSummary:
        """A job's summary; ``ResourceNotFoundError`` when nothing of it was ever indexed."""
        return JobSummary.from_dict(await self._json("GET", _shared.job_route(job_id)))

    def list_tasks(self, job_id: str, *, results_per_page: Optional[int] = None) -> AsyncItemPaged[TaskItem]:
        """The job's tasks that have outputs, with their counts per kind."""
        return self._paged([f"{_shared.job_route(job_id)}/tasks?maxpagesize={results_per_page or _shared.DEFAULT_PAGE_SIZE}"], TaskItem.from_dict)

    async def register_job(self, job_id: str) -> JobSummary:
        """Register a job ID, so a hashed container shows it (the job's container is created with
        storage credentials, e.g. ``JobOutputStorage.prepare()``). Needs an admin credential."""
        return JobSummary.from_dict(await self._json("PUT", _shared.job_route(job_id)))

    async def send_request(self, request: HttpRequest, *, stream: bool = False, **kwargs: Any) -> Any:
        """Send any request of the API through the client's pipeline (credential, retries,
        logging); a relative URL (``/api/...``) is resolved against the endpoint. The answer is
        returned as it is, errors included (``azure.core.rest.HttpResponse``)."""
        if request.url.startswith("/"):
            request.url = self._endpoint + request.url
        return await self._client.send_request(request, stream=stream, **{**self._options, **kwargs})

    # -- outputs --------------------------------------------------------------------------

    def list_outputs(self, job_id: str, *, task_id: Optional[str] = None, kind: Optional[str] = None,
                     prefix: Optional[str] = None, results_per_page: Optional[int] = None) -> AsyncItemPaged[OutputItem]:
        """Outputs of a job (see the sync client for which listing a filter reads)."""
        return self._paged(_shared.output_listings(job_id, task_id, kind, prefix, results_per_page or _shared.DEFAULT_PAGE_SIZE), OutputItem.from_dict)

    async def get_output(self, job_id: str, kind: str, path: str, *, task_id: Optional[str] = None) -> OutputItem:
        """One output, with ``download_url``; a job output when ``task_id`` is None."""
        return OutputItem.from_dict(await self._json("GET", _shared.output_route(job_id, kind, path, task_id)))

    async def download_output(self, job_id: str, kind: str, path: str, destination: PathOrStream, *,
                              task_id: Optional[str] = None, progress_hook: Optional[ProgressHook] = None) -> OutputItem:
        """Download one output to a file path (whole or not at all) or a writable binary stream."""
        item = await self.get_output(job_id, kind, path, task_id=task_id)
        fetcher = AsyncSasFetcher(**self._retry_kwargs)
        try:
            await awrite_stream(await fetcher(item.download_url or ""), destination, progress_hook)
        finally:
            await fetcher.close()
        return item

    async def download_outputs(self, job_id: str, dest: PathOrStream, *, kind: Optional[str] = None, task_id: Optional[str] = None,
                               prefix: Optional[str] = None, max_concurrency: int = 8,
                               progress_hook: Optional[ProgressHook] = None) -> DownloadReport:
        """Download every listed output into ``dest`` (see the sync client: same layout, resume and guards)."""
        listings = _shared.output_listings(job_id, task_id, kind, prefix, download_urls=True)
        items = [item async for item in self._paged(listings, OutputItem.from_dict)]
        fetcher = AsyncSasFetcher(max_concurrency, **self._retry_kwargs)

        async def link(item: OutputItem) -> tuple[OutputItem, str]:
            # The listing's link, or (an older API, or one that expired) the single-output route's.
            return item, item.download_url or (await self.get_output(job_id, item.kind, item.path, task_id=item.task_id)).download_url or ""

        async def fetch(source: tuple[OutputItem, str]) -> Any:
            item, url = source
            try:
                return await fetcher(url)
            except HttpResponseError as exc:
                if exc.status_code != 403 or not item.download_url:
                    raise
                return await fetcher((await self.get_output(job_id, item.kind, item.path, task_id=item.task_id)).download_url or "")

        try:
            return await adownload_items(items, dest, fetch, max_concurrency=max_concurrency, progress_hook=progress_hook, resolve=link)
        finally:
            await fetcher.close()

    def list_rejections(self, job_id: str, *, results_per_page: Optional[int] = None) -> AsyncItemPaged[OutputItem]:
        """Outputs the job's quota rejected."""
        return self._paged([f"{_shared.job_route(job_id)}/rejections?maxpagesize={results_per_page or _shared.DEFAULT_PAGE_SIZE}"], OutputItem.from_dict)

    # -- administration -------------------------------------------------------------------

    async def get_quota(self, job_id: str) -> Quota:
        """The job's limits (0 = no limit)."""
        return Quota.from_dict(await self._json("GET", f"{_shared.job_route(job_id)}/quota"))

    async def set_quota(self, job_id: str, *, max_outputs: Optional[int] = None, max_bytes: Optional[int] = None,
                        max_outputs_per_task: Optional[int] = None) -> Quota:
        """Change the limits given (0 = no limit). Needs an admin credential."""
        body = _shared.quota_body(max_outputs, max_bytes, max_outputs_per_task)
        return Quota.from_dict(await self._json("PUT", f"{_shared.job_route(job_id)}/quota", json=body))

    async def reindex(self, job_id: str, *, polling_interval: float = 1.0,
                      progress: Optional[Callable[[dict[str, Any]], None]] = None) -> ReindexResult:
        """Rebuild the job's index from its container (a 202 operation is polled to its end;
        ``progress`` is called with every status it answers, the 202's too)."""
        response = await self._send(HttpRequest("POST", f"{_shared.job_route(job_id)}/reindex"))
        body = _shared.json_of(response)
        location = response.headers.get("Operation-Location")
        if response.status_code != 202 or not location:
            return ReindexResult.from_dict(body)
        url = _shared.resolve_next_link(self._endpoint, location)
        if progress is not None:
            progress(body)
        while True:
            answer = await self._send(HttpRequest("GET", url))
            operation = _shared.json_of(answer)
            if progress is not None:
                progress(operation)
            if operation.get("status") != "running":
                return _shared.operation_result(operation, ReindexResult.from_dict)
            await asyncio.sleep(_shared.poll_delay(answer, polling_interval))

    # -- the change feed ------------------------------------------------------------------

    async def changes(self, job_id: str, *, cursor: Optional[str] = None, start: str = "now", kind: Optional[str] = None,
                      task_id: Optional[str] = None, wait: Optional[float] = None,
                      max_page_size: Optional[int] = None) -> OutputChangeBatch:
        """One read of the job's change feed (see the sync client)."""
        request = _shared.changes_request(job_id, cursor=cursor, start=start, kind=kind, task_id=task_id, wait=wait,
                                          max_page_size=max_page_size)
        return _shared.change_batch(_shared.json_of(await self._send(request)), cursor)

    async def wait_for_output(self, job_id: str, kind: str, path: Optional[str] = None, *, task_id: Optional[str] = None,
                              timeout: Optional[float] = None) -> OutputItem:
        """The output once it is indexed (see the sync client); ``TimeoutError`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        cursor = (await self.changes(job_id, start="now", kind=kind, task_id=task_id)).cursor
        found = await self._first_indexed(job_id, kind, path, task_id)
        while found is None:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"no {kind} output {path or ''} of job {job_id} indexed within {timeout} s")
            wait = _shared.long_poll_seconds(remaining)
            try:
                batch = await self.changes(job_id, cursor=cursor, kind=kind, task_id=task_id, wait=wait)
            except HttpResponseError as exc:
                if exc.status_code != 410:
                    raise
                cursor = (await self.changes(job_id, start="now", kind=kind, task_id=task_id)).cursor
                found = await self._first_indexed(job_id, kind, path, task_id)
                continue
            found = _shared.landed(batch.changes, kind, path, task_id)
            cursor = batch.cursor
        return found

    async def _first_indexed(self, job_id: str, kind: str, path: Optional[str], task_id: Optional[str]) -> Optional[OutputItem]:
        try:
            async for item in self.list_outputs(job_id, task_id=task_id, kind=kind, prefix=path):
                if path is None or item.path == path:
                    return item
        except ResourceNotFoundError:
            return None
        return None
