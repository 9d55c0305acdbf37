"""What the sync and the aio ``OutputIndexClient`` share: the pipeline's policies, the requests of
every route, paging links, and the mapping of the API's errors to ``azure.core.exceptions``.

Nothing here does I/O: the two clients send what these functions build, so they cannot drift.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union
from urllib.parse import quote, urljoin, urlsplit

from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.core.pipeline.policies import (
    AzureKeyCredentialPolicy,
    ContentDecodePolicy,
    CustomHookPolicy,
    HeadersPolicy,
    HttpLoggingPolicy,
    ProxyPolicy,
    RequestIdPolicy,
    UserAgentPolicy,
)
from azure.core.rest import HttpRequest

from . import __version__

#: The header the Functions host (and the app served directly) reads an API key from.
KEY_HEADER = "x-functions-key"
USER_AGENT = f"batch-outputs/{__version__}"
#: Page size asked of every listing (the API's largest is 5000; 1000 is its default).
DEFAULT_PAGE_SIZE = 1000
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def job_route(job_id: str) -> str:
    """``/api/jobs/{jobId}``, the ID escaped (schedule jobs carry a ``:``)."""
    return f"/api/jobs/{quote(job_id, safe='')}"


def output_route(job_id: str, kind: str, path: str, task_id: Optional[str]) -> str:
    """The single-output route of a job output (``task_id`` None) or a task output."""
    owner = job_route(job_id) + (f"/tasks/{quote(task_id, safe='')}" if task_id is not None else "")
    return f"{owner}/outputs/{quote(kind, safe='')}/{quote(path, safe='/')}"


def is_job_kind(kind: str) -> bool:
    """Job kinds (``JobOutput``, ``JobPreview``) name outputs of the job itself; every other kind is a task's."""
    return kind.startswith("Job")


def output_listings(job_id: str, task_id: Optional[str], kind: Optional[str], prefix: Optional[str],
                    page_size: int = DEFAULT_PAGE_SIZE, download_urls: bool = False) -> list[str]:
    """The listing URLs ``list_outputs`` reads, in order.

    * ``task_id`` given: that task's outputs (``/tasks/{taskId}/outputs``);
    * a job kind (``Job...``): the job's own outputs (``/outputs``);
    * a task kind: every task's outputs of that kind, one indexed query (``/task-outputs``);
    * no kind: the job's own outputs, then every task's.

    ``download_urls`` asks each item's read-only link with the listing (``downloadUrls=true``).
    """
    query = f"?maxpagesize={page_size}" + ("&downloadUrls=true" if download_urls else "")
    if kind:
        query += f"&kind={quote(kind, safe='')}"
    if prefix:
        query += f"&prefix={quote(prefix, safe='')}"
    if task_id is not None:
        return [f"{job_route(job_id)}/tasks/{quote(task_id, safe='')}/outputs{query}"]
    if kind and is_job_kind(kind):
        return [f"{job_route(job_id)}/outputs{query}"]
    if kind:
        return [f"{job_route(job_id)}/task-outputs{query}"]
    return [f"{job_route(job_id)}/outputs{query}", f"{job_route(job_id)}/task-outputs{query}"]


def changes_request(job_id: str, *, cursor: Optional[str], start: str, kind: Optional[str], task_id: Optional[str],
                    wait: Optional[float], max_page_size: Optional[int]) -> HttpRequest:
    """``GET /api/jobs/{jobId}/changes`` with the feed's query."""
    params: dict[str, Any] = {}
    if cursor:
        params["cursor"] = cursor
    else:
        if start not in ("start", "now"):
            raise ValueError("start must be 'start' or 'now'")
        params["from"] = start
    if kind:
        params["kind"] = kind
    if task_id is not None:
        params["taskId"] = task_id
    if wait is not None:
        params["wait"] = max(0.0, min(60.0, float(wait)))
    if max_page_size is not None:
        params["maxpagesize"] = max_page_size
    return HttpRequest("GET", f"{job_route(job_id)}/changes", params=params)


def quota_body(max_outputs: Optional[int], max_bytes: Optional[int], max_outputs_per_task: Optional[int]) -> dict[str, int]:
    """The ``PUT .../quota`` body: only the limits given change."""
    return {name: value for name, value in (("maxOutputs", max_outputs), ("maxBytes", max_bytes),
                                            ("maxOutputsPerTask", max_outputs_per_task)) if value is not None}


# -- links -----------------------------------------------------------------------------------


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, the port made explicit."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme, 0)


def resolve_next_link(endpoint: str, link: str) -> str:
    """The URL of a ``nextLink`` (or ``Operation-Location``): relative links resolve against the
    endpoint; a link to another origin is refused (``HttpResponseError``), so the credential is
    never sent anywhere but the configured API."""
    resolved = urljoin(endpoint.rstrip("/") + "/", link)
    if origin(resolved) != origin(endpoint):
        scheme, host, port = origin(resolved)
        raise HttpResponseError(message=f"refusing to follow a link to another origin ({scheme}://{host}:{port}, not the API at "
                                        f"{endpoint}): the credential is sent to the configured API only")
    return resolved


def is_loopback(endpoint: str) -> bool:
    """A local API (``make run``), where plain HTTP may carry a token."""
    return (urlsplit(endpoint).hostname or "").lower() in _LOOPBACK


# -- errors ----------------------------------------------------------------------------------

_ERRORS: dict[int, type[HttpResponseError]] = {
    401: ClientAuthenticationError,
    403: ClientAuthenticationError,
    404: ResourceNotFoundError,
    409: ResourceExistsError,
}


def raise_for_status(response: Any) -> None:
    """Raise the ``azure.core.exceptions`` error of a failed answer; ``.error.code`` is the API's code."""
    if response.status_code < 400:
        return
    error_type = _ERRORS.get(response.status_code, HttpResponseError)
    raise error_type(response=response)


def json_of(response: Any) -> Any:
    """The JSON body of a successful answer; ``HttpResponseError`` when it is not JSON."""
    raise_for_status(response)
    try:
        return response.json()
    except ValueError as exc:
        raise HttpResponseError(message=f"the API answered {response.status_code} with no JSON", response=response) from exc


# -- pipeline --------------------------------------------------------------------------------

Credential = Union[AzureKeyCredential, Any]


def scope_for(audience: str) -> str:
    """The token scope of the API's audience (its application ID URI)."""
    return audience if audience.endswith("/.default") else audience.rstrip("/") + "/.default"


def auth_policy(credential: Credential, audience: str, bearer_policy: Callable[..., Any]) -> Any:
    """``AzureKeyCredential`` as the function-key header, or a ``TokenCredential`` as a bearer token."""
    if isinstance(credential, AzureKeyCredential):
        return AzureKeyCredentialPolicy(credential, KEY_HEADER)
    if hasattr(credential, "get_token"):
        return bearer_policy(credential, scope_for(audience))
    raise TypeError("credential must be an azure.core.credentials.AzureKeyCredential or a TokenCredential "
                    f"(e.g. azure.identity.DefaultAzureCredential), not {type(credential).__name__}")


def policies(credential: Credential, audience: str, retry_policy: Any, bearer_policy: Callable[..., Any],
             **kwargs: Any) -> list[Any]:
    """The pipeline, in the order the Azure SDKs use. ``HttpLoggingPolicy`` redacts every header
    and query parameter not on its allow list, so the key (``x-functions-key``, ``code``) and a
    bearer token are logged as ``REDACTED``; there is no network-trace policy that would log them."""
    return [
        RequestIdPolicy(**kwargs),
        HeadersPolicy(**kwargs),
        UserAgentPolicy(base_user_agent=USER_AGENT, **kwargs),
        ProxyPolicy(**kwargs),
        ContentDecodePolicy(**kwargs),
        retry_policy,
        auth_policy(credential, audience, bearer_policy),
        CustomHookPolicy(**kwargs),
        HttpLoggingPolicy(**kwargs),
    ]


def request_options(endpoint: str, credential: Credential) -> dict[str, Any]:
    """Per-request options: a token may travel over plain HTTP to a loopback API only (the
    bearer policy consumes the option; a key credential has no such policy to read it)."""
    return {"enforce_https": False} if is_loopback(endpoint) and not isinstance(credential, AzureKeyCredential) else {}


# -- answers ---------------------------------------------------------------------------------


def operation_result(operation: dict[str, Any], model: Callable[[dict[str, Any]], Any]) -> Any:
    """The result of a finished long-running operation (``GET /api/operations/{id}``)."""
    if operation.get("status") == "succeeded":
        return model(operation.get("result") or {})
    error = operation.get("error") or {}
    message = error.get("message") if isinstance(error, dict) else str(error)
    raise HttpResponseError(message=f"the operation {operation.get('id', '')} failed: {message or operation.get('status')}")


def poll_delay(response: Any, default: float) -> float:
    """Seconds before polling again: the answer's ``Retry-After`` when it gives one."""
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value else default
    except ValueError:
        return default


def change_batch(body: dict[str, Any], cursor: Optional[str]) -> Any:
    """The model of one read of the change feed."""
    from ._models import OutputChange, OutputChangeBatch

    return OutputChangeBatch(changes=tuple(OutputChange.from_dict(raw) for raw in body.get("value") or []),
                             cursor=str(body.get("cursor") or cursor or ""), more=bool(body.get("nextLink")))


def long_poll_seconds(remaining: Optional[float]) -> float:
    """The ``wait`` of a waiter's next long-poll with ``remaining`` seconds to its deadline
    (``None``: no deadline): never past the deadline (the route takes fractions of a second),
    so a wait with a timeout ends on time."""
    if remaining is None:
        return 60.0
    return max(0.0, min(60.0, remaining))


def landed(changes: Any, kind: str, path: Optional[str], task_id: Optional[str]) -> Any:
    """The first output of ``changes`` that became readable and is the one awaited, or None."""
    for change in changes:
        output = change.output
        if change.change in ("created", "updated", "admitted") and output.kind == kind \
                and (task_id is None or output.task_id == task_id) and (path is None or output.path == path):
            return output
    return None
