"""API errors: ``{"error": {"code", "message"}}`` with the right status (SPEC §6)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from shared.read.cursors import InvalidCursorError
from shared.read.feed import CursorExpiredError
from shared.read.paging import InvalidTokenError
from shared.settings import SettingsError
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


#: The methods a 405's ``Allow`` may name (every one the API serves somewhere).
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this request's path. Starlette's own ``Allow`` names
    only the first route that matched the path (``PUT`` for ``/api/jobs/{jobId}``, which
    ``GET`` serves too), so a 405 lists them all (RFC 9110 section 15.5.6): each method is
    tried against the app's routes as the router itself matches them."""
    routes = request.app.router.routes
    return [method for method in _METHODS
            if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)]


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "NotFound", 405: "MethodNotAllowed"}
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request)) or headers.get("Allow", "")
    return error_response(exc.status_code, codes.get(exc.status_code, "Error"), str(exc.detail), headers or None)


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


async def _bad_settings(request: Request, exc: Exception) -> JSONResponse:
    # Under the Functions host settings are read on the first request: a key in two roles, or
    # Entra settings that cannot be trusted, refuse every request until fixed. The reason names
    # settings, never their values.
    log.error("%s %s -> 500: the app's settings are invalid: %s", request.method, request.url.path, exc)
    return error_response(500, "SettingsInvalid", "The app's settings are invalid; its log says which.")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(InvalidTokenError, _bad_token)
    app.add_exception_handler(InvalidCursorError, _bad_cursor)
    app.add_exception_handler(CursorExpiredError, _expired_cursor)
    app.add_exception_handler(StorageBusyError, _busy)
    app.add_exception_handler(StorageAccessError, _misconfigured)
    app.add_exception_handler(SettingsError, _bad_settings)
