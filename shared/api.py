"""The HTTP API (SPEC §6): one ASGI app, served by uvicorn locally and by the Functions host.

Routes carry their ``/api`` prefix themselves (host.json sets ``routePrefix`` to ``""``), so
paths are the same under both hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from . import models
from .conventions import container_name, is_valid_job_id, is_valid_kind, is_valid_task_id
from .events import EventPayloadError, decode_body, parse_events
from .paging import InvalidTokenError
from .query import Page
from .quotas import Limits
from .service import Service, ServiceHolder
from .settings import Settings
from .table_store import StorageBusyError

log = logging.getLogger(__name__)

#: Event Grid waits 30 s for an answer; answer well within it (a late 503 is redelivered).
WEBHOOK_DEADLINE_SECONDS = 20.0
RETRY_AFTER_SECONDS = 10
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 5000
PUBLIC_PATHS = frozenset({"/api/health", "/ui"})
#: The output browser's page: no data in it, its script sends the key with every API call.
PUBLIC_PREFIXES = ("/ui/",)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class KeyAuthMiddleware:
    """Checks ``x-functions-key`` / ``?code=`` against ``API_KEYS`` when served directly."""

    def __init__(self, app: ASGIApp, keys: tuple[str, ...]) -> None:
        self.app = app
        self.keys = tuple(k.encode("utf-8") for k in keys)

    def _authorized(self, scope: Scope) -> bool:
        presented: list[bytes] = [v for k, v in scope.get("headers", []) if k == b"x-functions-key"]
        query = scope.get("query_string", b"").decode("latin-1")
        presented += [v.encode("utf-8") for k, v in parse_qsl(query) if k == "code"]
        return any(hmac.compare_digest(p, key) for p in presented for key in self.keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        log.warning("401 for %s %s: missing or wrong key", scope.get("method"), scope["path"])
        await error_response(401, "Unauthorized", "A valid key is required.")(scope, receive, send)


class QuotaUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    maxOutputs: int | None = Field(default=None, ge=0, le=2**53, description="0 = no limit")
    maxBytes: int | None = Field(default=None, ge=0, le=2**53, description="0 = no limit")
    maxOutputsPerTask: int | None = Field(default=None, ge=0, le=2**53, description="0 = no limit")


JobId = Annotated[str, Path(description="Batch job ID (schedule jobs: {scheduleId}:job-{n})", max_length=200,
                              examples=["nightly:job-7"])]
TaskId = Annotated[str, Path(description="Batch task ID", max_length=200, examples=["t1"])]
Kind = Annotated[str | None, Query(description="output kind, e.g. TaskPreview", max_length=256)]
Prefix = Annotated[str, Query(description="path prefix", max_length=1024)]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="items per page (1-5000)")]
Token = Annotated[str | None, Query(alias="continuationToken", max_length=4096, description="from nextLink")]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": models.ErrorBody} for status in statuses}


def check_job(job_id: str) -> str:
    if not is_valid_job_id(job_id):
        raise ApiError(400, "InvalidJobId", "A job ID is 1-64 letters, digits, '-' or '_' ({scheduleId}:job-{n} for schedule jobs).")
    return job_id


def check_task(task_id: str) -> str:
    if not is_valid_task_id(task_id):
        raise ApiError(400, "InvalidTaskId", "A task ID is 1-64 letters, digits, '-' or '_'.")
    return task_id


def check_kind(kind: str | None) -> str | None:
    if kind is not None and not is_valid_kind(kind):
        raise ApiError(400, "InvalidKind", "An output kind is non-empty printable text without '/' or '\\'.")
    return kind


def page_body(request: Request, page: Page) -> dict[str, Any]:
    body: dict[str, Any] = {"value": page.items}
    if page.next_token:
        params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("continuationToken", "code")]
        params.append(("continuationToken", page.next_token))
        body["nextLink"] = str(request.url.replace(query=urlencode(params)))
    return body


def create_app(settings: Settings | None = None, *, check_keys: bool = True) -> FastAPI:
    """The API. ``check_keys=False`` under the Functions host, which checks function keys itself."""
    holder = ServiceHolder(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        yield
        await holder.close()

    app = FastAPI(
        lifespan=lifespan,
        title="Batch Output Index",
        version="1.0.0",
        description="Finds the outputs of Azure Batch jobs (Batch File Conventions) in one indexed query.",
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = holder

    async def service() -> Service:
        return await holder.get()

    if check_keys:
        keys = (settings or Settings.load()).api_keys
        if not keys:
            log.warning("API_KEYS is empty: every route but /api/health answers 401")
        app.add_middleware(KeyAuthMiddleware, keys=keys)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        log.info("%s %s -> %d %s: %s", request.method, request.url.path, exc.status, exc.code, exc.message)
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body",)) or "request"
        message = f"{where}: {first.get('msg', 'invalid')}"
        log.info("%s %s -> 400 InvalidRequest: %s", request.method, request.url.path, message)
        return error_response(400, "InvalidRequest", message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "NotFound", 405: "MethodNotAllowed"}
        return error_response(exc.status_code, codes.get(exc.status_code, "Error"), str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(InvalidTokenError)
    async def _bad_token(request: Request, exc: InvalidTokenError) -> JSONResponse:
        log.warning("%s %s -> 400 InvalidContinuationToken: %s", request.method, request.url.path, exc)
        return error_response(400, "InvalidContinuationToken", str(exc))

    @app.exception_handler(StorageBusyError)
    async def _busy(request: Request, exc: StorageBusyError) -> JSONResponse:
        status = 429 if exc.status == 429 else 503
        log.warning("%s %s -> %d: storage busy: %s", request.method, request.url.path, status, exc)
        return error_response(status, "StorageBusy", "Index storage is busy; retry later.",
                              {"Retry-After": str(RETRY_AFTER_SECONDS)})

    # -- health ----------------------------------------------------------------------------

    @app.get("/api/health", response_model=models.Health, tags=["health"])
    async def health() -> dict[str, str]:
        """Liveness; anonymous; reveals nothing."""
        return {"status": "ok"}

    # -- events ----------------------------------------------------------------------------

    @app.post(
        "/api/events",
        tags=["events"],
        responses={200: {"model": models.IngestResult | models.ValidationResponse}, **_errors(400, 401, 413, 429, 503)},
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]}},
            "application/cloudevents+json": {"schema": {"type": "object"}},
            "application/cloudevents-batch+json": {"schema": {"type": "array", "items": {"type": "object"}}},
        }}},
    )
    async def events(request: Request) -> JSONResponse:
        """The Event Grid webhook: BlobCreated/BlobDeleted in either schema, one or an array."""
        body = await request.body()
        try:
            batch = parse_events(decode_body(body))
        except EventPayloadError as exc:
            raise ApiError(400, "InvalidEvents", str(exc)) from exc
        if batch.validation_code is not None:
            log.info("Event Grid subscription validation answered")
            return JSONResponse({"validationResponse": batch.validation_code})
        for skipped in batch.skipped:
            log.warning("skipped event %s: %s (%s)", skipped.event_id, skipped.reason.value, skipped.detail)
        svc = await service()
        try:
            report = await asyncio.wait_for(svc.indexer.ingest(batch.blob_events), WEBHOOK_DEADLINE_SECONDS)
        except TimeoutError as exc:
            raise StorageBusyError("delivery not indexed within the webhook deadline") from exc
        report.received += len(batch.skipped)
        report.skipped.update(s.reason.value for s in batch.skipped)
        return JSONResponse(report.as_dict())

    @app.options("/api/events", tags=["events"], status_code=200, response_class=Response)
    async def events_handshake(request: Request) -> Response:
        """CloudEvents 1.0 abuse-protection handshake (WebHook-Request-Origin)."""
        origin = request.headers.get("webhook-request-origin")
        if not origin:
            raise ApiError(400, "InvalidHandshake", "WebHook-Request-Origin header is required.")
        return Response(
            status_code=200,
            headers={"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*", "Allow": "POST, OPTIONS"},
        )

    # -- jobs ------------------------------------------------------------------------------

    @app.get("/api/jobs", tags=["jobs"], responses={200: {"model": models.JobList}, **_errors(400, 401)})
    async def list_jobs(request: Request, maxpagesize: PageSize = DEFAULT_PAGE_SIZE, token: Token = None) -> JSONResponse:
        """Indexed jobs: job ID (when known), container, counts, last indexed time."""
        page = await (await service()).query.list_jobs(maxpagesize, token)
        return JSONResponse(page_body(request, page))

    @app.put("/api/jobs/{job_id}", tags=["jobs"], responses={200: {"model": models.JobSummary}, **_errors(400, 401)})
    async def register_job(job_id: JobId) -> JSONResponse:
        """Registers a job ID, so a hashed container shows its job ID."""
        check_job(job_id)
        svc = await service()
        await svc.indexer.register_container(container_name(job_id), job_id)
        return JSONResponse(await svc.query.job_summary(job_id))

    @app.get("/api/jobs/{job_id}", tags=["jobs"], responses={200: {"model": models.JobSummary}, **_errors(400, 401, 404)})
    async def job_summary(job_id: JobId) -> JSONResponse:
        """Outputs and bytes per kind, task count, quota limits and usage, rejections."""
        check_job(job_id)
        summary = await (await service()).query.job_summary(job_id)
        if summary is None:
            raise ApiError(404, "JobNotFound", f"No output of job {job_id!r} was ever indexed.")
        return JSONResponse(summary)

    @app.get("/api/jobs/{job_id}/outputs", tags=["outputs"], responses={200: {"model": models.OutputList}, **_errors(400, 401)})
    async def job_outputs(
        request: Request, job_id: JobId, kind: Kind = None, prefix: Prefix = "",
        maxpagesize: PageSize = DEFAULT_PAGE_SIZE, token: Token = None,
    ) -> JSONResponse:
        """The job's own outputs (JobOutput, JobPreview, custom job kinds)."""
        check_job(job_id)
        check_kind(kind)
        page = await (await service()).query.job_outputs(job_id, kind, prefix, maxpagesize, token)
        return JSONResponse(page_body(request, page))

    @app.get("/api/jobs/{job_id}/tasks", tags=["tasks"], responses={200: {"model": models.TaskList}, **_errors(400, 401)})
    async def tasks(request: Request, job_id: JobId, maxpagesize: PageSize = DEFAULT_PAGE_SIZE, token: Token = None) -> JSONResponse:
        """Tasks that have outputs, with counts per kind."""
        check_job(job_id)
        page = await (await service()).query.tasks(job_id, maxpagesize, token)
        return JSONResponse(page_body(request, page))

    @app.get("/api/jobs/{job_id}/tasks/{task_id}/outputs", tags=["outputs"], responses={200: {"model": models.OutputList}, **_errors(400, 401)})
    async def task_outputs(
        request: Request, job_id: JobId, task_id: TaskId, kind: Kind = None, prefix: Prefix = "",
        maxpagesize: PageSize = DEFAULT_PAGE_SIZE, token: Token = None,
    ) -> JSONResponse:
        """One task's outputs."""
        check_job(job_id)
        check_task(task_id)
        check_kind(kind)
        page = await (await service()).query.task_outputs(job_id, task_id, kind, prefix, maxpagesize, token)
        return JSONResponse(page_body(request, page))

    @app.get("/api/jobs/{job_id}/task-outputs", tags=["outputs"], responses={200: {"model": models.OutputList}, **_errors(400, 401)})
    async def all_task_outputs(
        request: Request, job_id: JobId, kind: Kind = None, prefix: Prefix = "",
        maxpagesize: PageSize = DEFAULT_PAGE_SIZE, token: Token = None,
    ) -> JSONResponse:
        """Outputs of every task of the job, in one indexed query (e.g. every TaskPreview)."""
        check_job(job_id)
        check_kind(kind)
        page = await (await service()).query.all_task_outputs(job_id, kind, prefix, maxpagesize, token)
        return JSONResponse(page_body(request, page))

    @app.get("/api/jobs/{job_id}/rejections", tags=["quota"], responses={200: {"model": models.OutputList}, **_errors(400, 401)})
    async def rejections(request: Request, job_id: JobId, maxpagesize: PageSize = DEFAULT_PAGE_SIZE, token: Token = None) -> JSONResponse:
        """Outputs rejected by quota, with the limit each would have crossed."""
        check_job(job_id)
        page = await (await service()).query.rejections(job_id, maxpagesize, token)
        return JSONResponse(page_body(request, page))

    async def quota_body(svc: Service, job_id: str) -> dict[str, int]:
        _, carrier, _ = await svc.indexer.usage(container_name(job_id))
        limits = Limits.effective(carrier, svc.indexer.quota_defaults)
        return {"maxOutputs": limits.max_outputs, "maxBytes": limits.max_bytes,
                "maxOutputsPerTask": limits.max_outputs_per_task}

    @app.get("/api/jobs/{job_id}/quota", tags=["quota"], responses={200: {"model": models.Quota}, **_errors(400, 401)})
    async def get_quota(job_id: JobId) -> JSONResponse:
        """The job's limits (its overrides, else the settings' defaults); 0 = no limit."""
        check_job(job_id)
        return JSONResponse(await quota_body(await service(), job_id))

    @app.put("/api/jobs/{job_id}/quota", tags=["quota"], responses={200: {"model": models.Quota}, **_errors(400, 401, 429, 503)})
    async def put_quota(job_id: JobId, update: QuotaUpdate) -> JSONResponse:
        """Overrides the job's limits; raising one admits rejected outputs at once."""
        check_job(job_id)
        given = {
            field: value
            for field, value in (
                ("max_outputs", update.maxOutputs),
                ("max_bytes", update.maxBytes),
                ("max_outputs_per_task", update.maxOutputsPerTask),
            )
            if value is not None
        }
        svc = await service()
        await svc.indexer.set_limits(container_name(job_id), given)
        return JSONResponse(await quota_body(svc, job_id))

    # Imported here: these routers build on this module's checks and error helpers.
    from .api_document import document_security
    from .job_routes import job_router
    from .output_routes import output_router
    from .ui import ui_router

    app.include_router(output_router(service))
    app.include_router(job_router(service))
    app.include_router(ui_router())
    document_security(app, PUBLIC_PATHS)
    return app
