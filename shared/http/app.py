"""The HTTP API (SPEC §6): one ASGI app, served by uvicorn locally and by the Functions host.

Routes carry their ``/api`` prefix themselves (host.json sets ``routePrefix`` to ``""``), so
paths are the same under both hosts.

Nothing the app answers is built from the request's ``Host`` header: ``nextLink`` comes from
``PUBLIC_BASE_URL`` or is relative, and there are no trailing-slash redirects. API answers are
``Cache-Control: no-store`` (they carry outputs' SAS links), and every log record is scrubbed of
keys and signatures (``shared.http.logs``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.runtime import settle_collector
from shared.service import ServiceHolder
from shared.settings import Settings

from . import logs, openapi
from .dependencies import Access, require_api_key, require_events_key
from .errors import install_error_handlers
from .openapi import document_security
from .routes import admin, changes, events, health, jobs, outputs, quota, ui

log = logging.getLogger(__name__)

#: Served without a key: liveness and the browser page (which carries no data).
PUBLIC_PATHS = frozenset({"/api/health", "/ui"})


class NoStore:
    """``Cache-Control: no-store`` on every ``/api/`` answer that sets no caching itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/api/"):
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = list(message.get("headers", []))
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_no_store)


def create_app(settings: Settings | None = None, *, check_keys: bool = True) -> FastAPI:
    """The API. ``check_keys=False`` under the Functions host, which checks function keys itself
    (on every route but the webhook, whose events keys the app checks under both hosts)."""
    logs.protect()
    holder = ServiceHolder(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        settle_collector()  # served: everything imported so far lives as long as the process
        yield
        await holder.close()

    app = FastAPI(
        lifespan=lifespan,
        title="Batch Output Index",
        version="1.0.0",
        description="Finds the outputs of Azure Batch jobs (Batch File Conventions) in one indexed query.",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        # A trailing-slash redirect would build its Location from the Host header.
        redirect_slashes=False,
    )
    app.state.services = holder
    app.state.access = Access(settings, check_api_keys=check_keys)
    if check_keys:
        app.state.access.load()  # served directly: a settings error stops the server at start

    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(ui.router)
    app.include_router(events.router, dependencies=[Depends(require_events_key)])
    for module in (jobs, outputs, changes, quota, admin, openapi):
        app.include_router(module.router, dependencies=[Depends(require_api_key)])
    document_security(app, PUBLIC_PATHS)
    app.add_middleware(NoStore)
    return app
