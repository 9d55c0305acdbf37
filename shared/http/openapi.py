"""``GET /api/openapi.json`` (under the key, like every route but health), and the document's
parts FastAPI cannot infer: how a caller presents the key."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi

#: The Functions convention: a function key as a header or as ``?code=``.
SECURITY_SCHEMES = {
    "functionKeyHeader": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
    "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code"},
}


def document_security(app: FastAPI, public_paths: Iterable[str]) -> None:
    """Declare the key schemes, required everywhere but on ``public_paths``."""
    public = frozenset(public_paths)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            doc.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            doc["security"] = [{name: []} for name in SECURITY_SCHEMES]
            for path, item in doc.get("paths", {}).items():
                if path in public:
                    for operation in item.values():
                        operation["security"] = []
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


router = APIRouter(include_in_schema=False)


@router.get("/api/openapi.json")
async def openapi_document(request: Request) -> dict[str, Any]:
    """The OpenAPI document of every route."""
    document: dict[str, Any] = request.app.openapi()
    return document
