"""What route handlers get through ``Depends``: the service, who may call what, checked IDs, paging.

Roles (SPEC §11), under both hosts (the app checks every credential itself; under the Functions
host every HTTP function is anonymous to the host):

* **reader**: every ``GET`` of the API (and the UI, which only reads). ``READ_KEYS``, or an Entra
  token with the app role ``Outputs.Read``.
* **admin**: a reader's rights plus every other method (quota ``PUT``, registration, reindex,
  replay) and every route under ``ADMIN_PATH_PREFIXES`` whatever its method (the detailed health,
  long operations' status). ``API_KEYS``, or a token with ``Outputs.Admin``.
* **events**: the webhook only (``EVENTS_KEYS``; no token grants it). An events key is no
  credential anywhere else, and no other credential opens the webhook.

The rule is by method and path, not by route, so a route added later inherits it: a new ``GET``
is a reader's, anything else an admin's. No credential, a wrong key or an invalid token: ``401``;
a valid credential without the role: ``403``. Neither says why (the log does).
"""

from __future__ import annotations

import asyncio
import enum
import hmac
import logging
import threading
from collections.abc import Awaitable
from typing import Annotated, TypeVar
from urllib.parse import quote, urlencode

from fastapi import Depends, Path, Query, Request

from shared.domain.conventions import is_valid_job_id, is_valid_kind, is_valid_task_id
from shared.read.paging import DEFAULT_PAGE_SIZE as DEFAULT_PAGE_SIZE  # the routes' default page
from shared.read.paging import MAX_PAGE_SIZE
from shared.read.query import Page
from shared.service import Service, ServiceHolder
from shared.settings import Settings

from . import logs
from .entra import AppRole, EntraValidator, TokenError
from .errors import ApiError

log = logging.getLogger(__name__)


#: Routes an admin's whatever their method (a GET there tells about the deployment or a long
#: operation, not about a job's outputs).
ADMIN_PATH_PREFIXES = ("/api/admin/", "/api/operations/")
#: Methods that only read.
READ_METHODS = frozenset({"GET", "HEAD"})


class Role(enum.Enum):
    READER = "reader"
    ADMIN = "admin"
    EVENTS = "events"


T = TypeVar("T")


async def _client_left(request: Request) -> None:
    """Return once the client has gone (ASGI ``http.disconnect``).

    After the request's body, the server's ``receive`` waits until the connection closes
    (uvicorn); under the Functions host it waits until the answer is sent, so there it never
    cuts work short."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result, or its storage requests cancelled as soon as the client goes away
    (a listing of thousands of jobs is many requests nobody would read); then ``499``."""
    job = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_client_left(request))
    finished = False
    try:
        await asyncio.wait({job, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finished = job.done()
    finally:
        watcher.cancel()
        if not job.done():
            job.cancel()
    if not finished:
        log.info("%s %s: the client went away, its storage work stopped", request.method, request.url.path)
        raise ApiError(499, "ClientClosedRequest", "The client closed the request.")
    return job.result()


class Access:
    """Who may call what (keys by role, Entra tokens), and where clients reach the app (``PUBLIC_BASE_URL``).

    Read from settings on first use under the Functions host: the app is built at import time,
    before a request proves the settings are there. Served directly, ``create_app`` loads it at
    once, so a bad setting (a key in two roles) stops the server at start.
    """

    def __init__(self, settings: Settings | None) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._loaded = False
        self.keys: dict[Role, tuple[bytes, ...]] = dict.fromkeys(Role, ())
        self.validator: EntraValidator | None = None
        self.public_base_url: str | None = None

    def load(self) -> Access:
        with self._lock:
            if not self._loaded:
                settings = self._settings or Settings.load()
                self.keys = {
                    Role.READER: tuple(k.encode("utf-8") for k in settings.read_keys),
                    Role.ADMIN: tuple(k.encode("utf-8") for k in settings.api_keys),
                    Role.EVENTS: tuple(k.encode("utf-8") for k in settings.events_keys),
                }
                self.validator = EntraValidator(settings.entra) if settings.entra else None
                if not (settings.api_keys or settings.read_keys or settings.entra):
                    log.warning("API_KEYS, READ_KEYS and ENTRA_AUDIENCE are empty: every route but /api/health and the webhook answers 401")
                if not settings.events_keys:
                    log.warning("EVENTS_KEYS is empty: POST /api/events answers 401")
                self.public_base_url = settings.public_base_url
                logs.protect([*settings.api_keys, *settings.read_keys, *settings.events_keys])
                self._loaded = True
        return self

    def key_roles(self, presented: list[bytes]) -> set[Role]:
        """The roles of the presented keys that are known (every key compared in constant time)."""
        return {role for role, keys in self.keys.items() if _matches(presented, keys)}


async def service(request: Request) -> Service:
    """The process's one ``Service``, created on first use."""
    holder: ServiceHolder = request.app.state.services
    return await holder.get()


def _presented_keys(request: Request) -> list[bytes]:
    presented = [v for k, v in request.scope.get("headers", []) if k == b"x-functions-key"]
    presented += [v.encode("utf-8") for k, v in request.query_params.multi_items() if k == "code"]
    return presented


def _bearer_tokens(request: Request) -> list[str]:
    tokens = []
    for name, value in request.scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            # Another scheme (Basic, ...) is no credential of ours: as if absent.
            if scheme.lower() == "bearer":
                tokens.append(token.strip())
    return tokens


def _matches(presented: list[bytes], keys: tuple[bytes, ...]) -> bool:
    return any(hmac.compare_digest(p, key) for p in presented for key in keys)


def _unauthorized(request: Request, why: str) -> ApiError:
    log.warning("401 for %s %s: %s", request.method, request.url.path, why)
    return ApiError(401, "Unauthorized", "A valid key is required.")


def _forbidden(request: Request, why: str) -> ApiError:
    log.warning("403 for %s %s: %s", request.method, request.url.path, why)
    return ApiError(403, "Forbidden", "The credential presented does not allow this.")


def required_role(method: str, path: str) -> Role:
    """The role a request needs (the webhook aside): a reader's for a read, else an admin's."""
    if method.upper() in READ_METHODS and not path.startswith(ADMIN_PATH_PREFIXES):
        return Role.READER
    return Role.ADMIN


async def caller_roles(request: Request) -> set[Role]:
    """The reader/admin roles the request's keys and bearer token give (an admin is also a
    reader). 401 when it presents no credential of those roles, or an invalid token."""
    access: Access = request.app.state.access.load()
    roles = access.key_roles(_presented_keys(request)) - {Role.EVENTS}
    tokens = _bearer_tokens(request)
    if len(tokens) > 1:
        raise _unauthorized(request, "more than one bearer token")
    if tokens:
        if access.validator is None:
            raise _unauthorized(request, "a bearer token, and ENTRA_AUDIENCE is not set")
        try:
            identity = await access.validator.validate(tokens[0])
        except TokenError as exc:
            raise _unauthorized(request, f"invalid token: {exc}") from None
        if AppRole.READ in identity.roles:
            roles.add(Role.READER)
        if AppRole.ADMIN in identity.roles:
            roles.add(Role.ADMIN)
        # Who read what: a token names its caller (a key only its role), so each use is logged.
        log.info("%s %s by Entra object %s (app roles %s)", request.method, request.url.path, identity.subject,
                 ",".join(sorted(r.value for r in identity.roles)) or "none")
        if not roles:
            # A valid token that carries none of our app roles: known, but allowed nothing.
            raise _forbidden(request, f"token {identity.subject} has no Outputs.* app role")
    elif not roles:
        raise _unauthorized(request, "missing or wrong key")
    if Role.ADMIN in roles:
        roles.add(Role.READER)
    return roles


async def require_role(request: Request) -> None:
    """The one check of every API route but health and the webhook: ``required_role`` of the
    request's method and path, or 401/403."""
    needed = required_role(request.method, request.scope["path"])
    if needed not in await caller_roles(request):
        raise _forbidden(request, f"needs the {needed.value} role")


async def require_admin(request: Request) -> None:
    """401/403 unless the caller is an admin (the detailed health on ``/api/health``)."""
    if Role.ADMIN not in await caller_roles(request):
        raise _forbidden(request, "needs the admin role")


#: The name routers were guarded with before roles (SPEC §10): the same generic check.
require_api_key = require_role


async def require_events_key(request: Request) -> None:
    """401 unless the request presents an ``EVENTS_KEYS`` key (served directly and under the host)."""
    access: Access = request.app.state.access.load()
    if not _matches(_presented_keys(request), access.keys[Role.EVENTS]):
        raise _unauthorized(request, "missing or wrong events key")


#: What the API accepts, documented in the OpenAPI document (checked by ``_job_id``/``_task_id``
#: for their own error codes): Batch's rules, 1-64 characters, plus ``:job-{n}`` for schedule jobs.
JOB_ID_SCHEMA = {"pattern": r"^[A-Za-z0-9_-]{1,64}(:[jJ][oO][bB]-[0-9]{1,19})?$", "minLength": 1, "maxLength": 88}
TASK_ID_SCHEMA = {"pattern": r"^[A-Za-z0-9_-]{1,64}$", "minLength": 1, "maxLength": 64}


# The ID and kind checks are ``async def``: FastAPI runs a plain ``def`` dependency in its thread
# pool, a thread hop per request for a string check (a thousand long-polls re-asking at once).
async def _job_id(job_id: Annotated[str, Path(description="Batch job ID: 1-64 letters, digits, '-' or '_' "
                                        "(schedule jobs: {scheduleId}:job-{n})",
                                        json_schema_extra=JOB_ID_SCHEMA, examples=["nightly:job-7"])]) -> str:
    if not is_valid_job_id(job_id):
        raise ApiError(400, "InvalidJobId", "A job ID is 1-64 letters, digits, '-' or '_' ({scheduleId}:job-{n} for schedule jobs).")
    return job_id


async def _task_id(task_id: Annotated[str, Path(description="Batch task ID: 1-64 letters, digits, '-' or '_'",
                                          json_schema_extra=TASK_ID_SCHEMA, examples=["t1"])]) -> str:
    if not is_valid_task_id(task_id):
        raise ApiError(400, "InvalidTaskId", "A task ID is 1-64 letters, digits, '-' or '_'.")
    return task_id


def check_kind(kind: str | None) -> str | None:
    if kind is not None and not is_valid_kind(kind):
        raise ApiError(400, "InvalidKind", "An output kind is non-empty printable text without '/' or '\\'.")
    return kind


async def _kind_filter(kind: Annotated[str | None, Query(description="output kind, e.g. TaskPreview", max_length=1024)] = None) -> str | None:
    return check_kind(kind)


ServiceDep = Annotated[Service, Depends(service)]
JobId = Annotated[str, Depends(_job_id)]
TaskId = Annotated[str, Depends(_task_id)]
KindFilter = Annotated[str | None, Depends(_kind_filter)]
Prefix = Annotated[str, Query(description="path prefix", max_length=1024)]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="items per page (1-5000)")]
#: A listing across every task of a job: its default page grows with the job's partitions
#: (``paging.default_page_size``), so a spread job's page still costs about a query per 1,000.
SpreadPageSize = Annotated[int | None, Query(ge=1, le=MAX_PAGE_SIZE, description=(
    "items per page (1-5000; default 1000, or 1000 per partition up to 5000 for a job spread over several partitions)"))]
Token = Annotated[str | None, Query(alias="continuationToken", max_length=4096, description="from nextLink")]


def next_link(request: Request, page: Page) -> str | None:
    """The URL of the next page: this request's path and query, with the new token and without
    the key. Built on ``PUBLIC_BASE_URL`` when set, else relative (``/api/...``): never from the
    request's ``Host`` header, which the caller chooses."""
    if not page.next_token:
        return None
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("continuationToken", "code")]
    params.append(("continuationToken", page.next_token))
    access: Access = request.app.state.access.load()
    path = quote(request.scope["path"], safe="/:@!$&'()*+,;=-._~")
    return f"{access.public_base_url or ''}{path}?{urlencode(params)}"
