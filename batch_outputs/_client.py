"""``OutputIndexClient``: the index's HTTP API as an Azure SDK-shaped client (sync).

``batch_outputs.aio.OutputIndexClient`` mirrors it method for method; both send the requests
``_shared`` builds.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, TypeVar

from azure.core import PipelineClient
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.paging import ItemPaged
from azure.core.pipeline.policies import BearerTokenCredentialPolicy, RetryPolicy
from azure.core.rest import HttpRequest

from . import _shared
from ._download import PathOrStream, ProgressHook, SasFetcher, download_items, write_stream
from ._models import (
    DownloadReport,
    JobItem,
    JobSummary,
    OutputChange,
    OutputChangeBatch,
    OutputItem,
    Quota,
    ReindexResult,
    TaskItem,
)

T = TypeVar("T")
#: Changes that make an output readable (``wait_for_output`` returns on these).
LANDED = ("created", "updated", "admitted")


class OutputIndexClient:
    """A client of the Batch Output Index's HTTP API.

    :param str endpoint: the API's base URL, e.g. ``https://myapp.azurewebsites.net`` (no ``/api``).
    :param credential: an ``azure.core.credentials.AzureKeyCredential`` (sent as the
        ``x-functions-key`` header) or a ``TokenCredential`` such as
        ``azure.identity.DefaultAzureCredential`` (sent as ``Authorization: Bearer``).
    :keyword str audience: the API's application ID URI for tokens (scope ``{audience}/.default``);
        defaults to the endpoint.
    :keyword: any other keyword goes to the azure-core pipeline (``retry_total``,
        ``retry_backoff_factor``, ``transport``, ``user_agent``, ``connection_timeout``, ...).

    Every listing returns an ``ItemPaged`` that reads pages as it is iterated; errors are
    ``azure.core.exceptions``: ``ResourceNotFoundError`` (404), ``ClientAuthenticationError``
    (401/403) and ``HttpResponseError`` with the API's error code in ``.error.code``.
    """

    def __init__(self, endpoint: str, credential: Any, **kwargs: Any) -> None:
        if not endpoint.lower().startswith(("https://", "http://")):
            raise ValueError("endpoint must be an http(s) URL, e.g. https://myapp.azurewebsites.net")
        self._endpoint = endpoint.rstrip("/")
        audience = kwargs.pop("audience", None) or self._endpoint
        self._retry_kwargs = {k: v for k, v in kwargs.items() if k.startswith("retry_")}
        self._client: PipelineClient[Any, Any] = PipelineClient(
            self._endpoint, policies=_shared.policies(credential, audience, RetryPolicy(**kwargs), BearerTokenCredentialPolicy, **kwargs),
            **kwargs)
        self._options = _shared.request_options(self._endpoint, credential)

    # -- plumbing -------------------------------------------------------------------------

    def _send(self, request: HttpRequest) -> Any:
        if request.url.startswith("/"):  # a route: formatted here, as names may hold braces format_url would read
            request.url = self._endpoint + request.url
        return self._client.send_request(request, **self._options)

    def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        return _shared.json_of(self._send(HttpRequest(method, url, **kwargs)))

    def _paged(self, urls: list[str], model: Callable[[dict[str, Any]], T]) -> ItemPaged[T]:
        # The continuation token is "{listing index}:{url}": list_outputs may read two listings in turn.
        def get_next(token: Optional[str]) -> Any:
            phase, _, url = (token or f"0:{urls[0]}").partition(":")
            return int(phase), self._json("GET", url)

        def extract(answer: Any) -> tuple[Optional[str], Any]:
            phase, body = answer
            link = body.get("nextLink")
            if link:
                token: Optional[str] = f"{phase}:{_shared.resolve_next_link(self._endpoint, link)}"
            else:
                token = f"{phase + 1}:{urls[phase + 1]}" if phase + 1 < len(urls) else None
            return token, iter([model(raw) for raw in body.get("value") or []])

        return ItemPaged(get_next, extract)

    def close(self) -> None:
        """Close the pipeline's connections."""
        self._client.close()

    def __enter__(self) -> OutputIndexClient:
        self._client.__enter__()
        return self

    def __exit__(self, *args: Any) -> None:
        self._client.__exit__(*args)

    # -- jobs and tasks -------------------------------------------------------------------

    def list_jobs(self, *, results_per_page: Optional[int] = None) -> ItemPaged[JobItem]:
        """Every indexed job, with its counts and last indexed time."""
        return self._paged([f"/api/jobs?maxpagesize={results_per_page or _shared.DEFAULT_PAGE_SIZE}"], JobItem.from_dict)

    def get_job(self, job_id: str) -> JobSummary:
        """A job's summary; ``ResourceNotFoundError`` when nothing of it was ever indexed."""
        return JobSummary.from_dict(self._json("GET", _shared.job_route(job_id)))

    def list_tasks(self, job_id: str, *, results_per_page: Optional[int] = None) -> ItemPaged[TaskItem]:
        """The job's tasks that have outputs, with their counts per kind."""
        return self._paged([f"{_shared.job_route(job_id)}/tasks?maxpagesize={results_per_page or _shared.DEFAULT_PAGE_SIZE}"], TaskItem.from_dict)

    def register_job(self, job_id: str) -> JobSummary:
        """Register a job ID, so a hashed container shows it (the job's container is created with
        storage credentials, e.g. ``JobOutputStorage.prepare()``). Needs an admin credential."""
        return JobSummary.from_dict(self._json("PUT", _shared.job_route(job_id)))

    def send_request(self, request: HttpRequest, *, stream: bool = False, **kwargs: Any) -> Any:
        """Send any request of the API through the client's pipeline (credential, retries,
        logging); a relative URL (``/api/...``) is resolved against the endpoint. The answer is
        returned as it is, errors included (``azure.core.rest.HttpResponse``)."""
        if request.url.startswith("/"):
            request.url = self._endpoint + request.url
        return self._client.send_request(request, stream=stream, **{**self._options, **kwargs})

    # -- outputs --------------------------------------------------------------------------

    def list_outputs(self, job_id: str, *, task_id: Optional[str] = None, kind: Optional[str] = None,
                     prefix: Optional[str] = None, results_per_page: Optional[int] = None) -> ItemPaged[OutputItem]:
        """Outputs of a job: one task's (``task_id``), a job kind's (``JobOutput``...), every
        task's of a task kind (one indexed query), or, with neither, the job's own outputs then
        every task's. ``prefix`` keeps paths starting with it."""
        return self._paged(_shared.output_listings(job_id, task_id, kind, prefix, results_per_page or _shared.DEFAULT_PAGE_SIZE), OutputItem.from_dict)

    def get_output(self, job_id: str, kind: str, path: str, *, task_id: Optional[str] = None) -> OutputItem:
        """One output, with ``download_url`` (a read-only SAS of its blob); a job output when ``task_id`` is None."""
        return OutputItem.from_dict(self._json("GET", _shared.output_route(job_id, kind, path, task_id)))

    def download_output(self, job_id: str, kind: str, path: str, destination: PathOrStream, *,
                        task_id: Optional[str] = None, progress_hook: Optional[ProgressHook] = None) -> OutputItem:
        """Download one output through its ``download_url`` to a file path (written whole or not
        at all, its length verified) or into a writable binary stream; returns the output."""
        item = self.get_output(job_id, kind, path, task_id=task_id)
        fetcher = SasFetcher(**self._retry_kwargs)
        try:
            write_stream(fetcher(item.download_url or ""), destination, progress_hook)
        finally:
            fetcher.close()
        return item

    def download_outputs(self, job_id: str, dest: PathOrStream, *, kind: Optional[str] = None, task_id: Optional[str] = None,
                         prefix: Optional[str] = None, max_concurrency: int = 8,
                         progress_hook: Optional[ProgressHook] = None) -> DownloadReport:
        """Download every output ``list_outputs`` lists into the folder ``dest``, ``max_concurrency``
        transfers at a time, through each output's read-only SAS link (asked with the listing, one
        request a page; from the single-output route when the API gives none or a link has
        expired): ``{taskId}/{kind}/{path}`` (job outputs
        ``{kind}/{path}``). Files already there with the same size and ETag are skipped (a second
        run transfers nothing); a path that would escape ``dest`` is refused. ``progress_hook``
        is called with (bytes done, bytes to do) for the whole transfer."""
        items = list(self._paged(_shared.output_listings(job_id, task_id, kind, prefix, download_urls=True), OutputItem.from_dict))
        fetcher = SasFetcher(max_concurrency, **self._retry_kwargs)

        def link(item: OutputItem) -> tuple[OutputItem, str]:
            # The listing's link, or (an older API, or one that expired) the single-output route's.
            return item, item.download_url or self.get_output(job_id, item.kind, item.path, task_id=item.task_id).download_url or ""

        def fetch(source: tuple[OutputItem, str]) -> Any:
            item, url = source
            try:
                return fetcher(url)
            except HttpResponseError as exc:
                if exc.status_code != 403 or not item.download_url:
                    raise
                return fetcher(self.get_output(job_id, item.kind, item.path, task_id=item.task_id).download_url or "")

        try:
            return download_items(items, dest, fetch, max_concurrency=max_concurrency, progress_hook=progress_hook, resolve=link)
        finally:
            fetcher.close()

    def list_rejections(self, job_id: str, *, results_per_page: Optional[int] = None) -> ItemPaged[OutputItem]:
        """Outputs the job's quota rejected (``reason`` says which limit)."""
        return self._paged([f"{_shared.job_route(job_id)}/rejections?maxpagesize={results_per_page or _shared.DEFAULT_PAGE_SIZE}"], OutputItem.from_dict)

    # -- administration -------------------------------------------------------------------

    def get_quota(self, job_id: str) -> Quota:
        """The job's limits (0 = no limit)."""
        return Quota.from_dict(self._json("GET", f"{_shared.job_route(job_id)}/quota"))

    def set_quota(self, job_id: str, *, max_outputs: Optional[int] = None, max_bytes: Optional[int] = None,
                  max_outputs_per_task: Optional[int] = None) -> Quota:
        """Change the limits given (0 = no limit); raising one admits rejected outputs at once. Needs an admin credential."""
        body = _shared.quota_body(max_outputs, max_bytes, max_outputs_per_task)
        return Quota.from_dict(self._json("PUT", f"{_shared.job_route(job_id)}/quota", json=body))

    def reindex(self, job_id: str, *, polling_interval: float = 1.0,
                progress: Optional[Callable[[dict[str, Any]], None]] = None) -> ReindexResult:
        """Rebuild the job's index from its container and report what changed. When the API
        answers 202 with ``Operation-Location`` (a long reindex), the operation is polled until it
        ends; ``progress`` is called with every status the operation answers (the 202's too).
        Needs an admin credential."""
        response = self._send(HttpRequest("POST", f"{_shared.job_route(job_id)}/reindex"))
        body = _shared.json_of(response)
        location = response.headers.get("Operation-Location")
        if response.status_code != 202 or not location:
            return ReindexResult.from_dict(body)
        url = _shared.resolve_next_link(self._endpoint, location)
        if progress is not None:
            progress(body)
        while True:
            answer = self._send(HttpRequest("GET", url))
            operation = _shared.json_of(answer)
            if progress is not None:
                progress(operation)
            if operation.get("status") != "running":
                return _shared.operation_result(operation, ReindexResult.from_dict)
            time.sleep(_shared.poll_delay(answer, polling_interval))

    # -- the change feed ------------------------------------------------------------------

    def changes(self, job_id: str, *, cursor: Optional[str] = None, start: str = "now", kind: Optional[str] = None,
                task_id: Optional[str] = None, wait: Optional[float] = None, max_page_size: Optional[int] = None) -> OutputChangeBatch:
        """One read of the job's change feed: from ``cursor``, or without one from the ``start``
        of the feed's retention or from ``now``. ``wait`` (at most 60 s) long-polls when nothing
        is new. Read on with the batch's ``cursor``. A cursor older than the retention raises
        ``HttpResponseError`` with ``.error.code == "CursorExpired"`` (410)."""
        request = _shared.changes_request(job_id, cursor=cursor, start=start, kind=kind, task_id=task_id, wait=wait,
                                          max_page_size=max_page_size)
        return _shared.change_batch(_shared.json_of(self._send(request)), cursor)

    def wait_for_output(self, job_id: str, kind: str, path: Optional[str] = None, *, task_id: Optional[str] = None,
                        timeout: Optional[float] = None) -> OutputItem:
        """The output once it is indexed (without ``path``: the first output of that kind).
        Takes the feed's cursor first, then checks the index, then follows the feed, so an
        output indexed in between is never missed. ``TimeoutError`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        cursor = self.changes(job_id, start="now", kind=kind, task_id=task_id).cursor
        found = self._first_indexed(job_id, kind, path, task_id)
        while found is None:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"no {kind} output {path or ''} of job {job_id} indexed within {timeout} s")
            wait = _shared.long_poll_seconds(remaining)
            try:
                batch = self.changes(job_id, cursor=cursor, kind=kind, task_id=task_id, wait=wait)
            except HttpResponseError as exc:
                if exc.status_code != 410:
                    raise
                # The cursor expired: start again from now, and look at the index once more.
                cursor = self.changes(job_id, start="now", kind=kind, task_id=task_id).cursor
                found = self._first_indexed(job_id, kind, path, task_id)
                continue
            found = _shared.landed(batch.changes, kind, path, task_id)
            cursor = batch.cursor
        return found

    def _first_indexed(self, job_id: str, kind: str, path: Optional[str], task_id: Optional[str]) -> Optional[OutputItem]:
        try:
            for item in self.list_outputs(job_id, task_id=task_id, kind=kind, prefix=path):
                if path is None or item.path == path:
                    return item
        except ResourceNotFoundError:
            return None
        return None


__all__ = ["OutputChange", "OutputIndexClient"]
