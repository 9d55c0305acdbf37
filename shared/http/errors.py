"""API errors: ``{"error": {"code", "message"}}`` with the right status (SPEC §6)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.read.cursors import InvalidCursorError
from shared.read.feed import CursorExpiredError
from shared.read.paging import InvalidTokenError
from shared.store.errors import StorageAccessError, StorageBusyError

from .schemas import ErrorBody

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 10


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def error_statuses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries: these statuses answer an ``ErrorBody``."""
    return {status: {"model": ErrorBody} for status in statuses}


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    log.info("%s %s -> %d %s: %s", request.method, request.url.path, exc.status, exc.code, exc.message)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body",)) or "request"
    message = f"{where}: {first.get('msg', 'invalid')}"
    log.info("%s %s -> 400 InvalidRequest: %s", request.method, request.url.path, message)
    return error_response(400, "InvalidRequest", message)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "NotFound", 405: "MethodNotAllowed"}
    return error_response(exc.status_code, codes.get(exc.status_code, "Error"), str(exc.detail), getattr(exc, "headers", None))


async def _bad_token(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s -> 400 InvalidContinuationToken: %s", request.method, request.url.path, exc)
    return error_response(400, "InvalidContinuationToken", str(exc))


async def _bad_cursor(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s -> 400 InvalidCursor: %s", request.method, request.url.path, exc)
    return error_response(400, "InvalidCursor", str(exc))


async def _expired_cursor(request: Request, exc: Exception) -> JSONResponse:
    log.info("%s %s -> 410 CursorExpired: %s", request.method, request.url.path, exc)
    return error_response(410, "CursorExpired", f"{exc}: list the outputs again, then follow the feed from=now.")


async def _busy(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StorageBusyError)
    status = 429 if exc.status == 429 else 503
    log.warning("%s %s -> %d: storage busy: %s", request.method, request.url.path, status, exc)
    return error_response(status, "StorageBusy", "Index storage is busy; retry later.",
                          {"Retry-After": str(RETRY_AFTER_SECONDS)})


async def _misconfigured(request: Request, exc: Exception) -> JSONResponse:
    # 500, not 503: Event Grid retries it on its schedule and then dead-letters, and the
    # dead letters are replayed once the cause is fixed. Logged once, with the fix, by the store.
    assert isinstance(exc, StorageAccessError)
    log.debug("%s %s -> 500: index storage misconfigured: %s", request.method, request.url.path, exc)
    return error_response(500, "IndexStorageMisconfigured", f"{exc}. Fix: {exc.fix} (setting {exc.setting}).")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(InvalidTokenError, _bad_token)
    app.add_exception_handler(InvalidCursorError, _bad_cursor)
    app.add_exception_handler(CursorExpiredError, _expired_cursor)
    app.add_exception_handler(StorageBusyError, _busy)
    app.add_exception_handler(StorageAccessError, _misconfigured)
