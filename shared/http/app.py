"""The HTTP API (SPEC §6): one ASGI app, served by uvicorn locally and by the Functions host.

Routes carry their ``/api`` prefix themselves (host.json sets ``routePrefix`` to ``""``), so
paths are the same under both hosts.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI

from shared.service import ServiceHolder
from shared.settings import Settings

from . import openapi
from .dependencies import require_key
from .errors import install_error_handlers
from .openapi import document_security
from .routes import events, health, jobs, outputs, quota, ui

log = logging.getLogger(__name__)

#: Served without a key: liveness and the browser page (which carries no data).
PUBLIC_PATHS = frozenset({"/api/health", "/ui"})


def create_app(settings: Settings | None = None, *, check_keys: bool = True) -> FastAPI:
    """The API. ``check_keys=False`` under the Functions host, which checks function keys itself."""
    holder = ServiceHolder(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
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
    )
    app.state.services = holder
    app.state.api_keys = None
    if check_keys:
        keys = (settings or Settings.load()).api_keys
        if not keys:
            log.warning("API_KEYS is empty: every route but /api/health answers 401")
        app.state.api_keys = tuple(k.encode("utf-8") for k in keys)

    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(ui.router)
    keyed = [Depends(require_key)]
    for module in (events, jobs, outputs, quota, openapi):
        app.include_router(module.router, dependencies=keyed)
    document_security(app, PUBLIC_PATHS)
    return app
