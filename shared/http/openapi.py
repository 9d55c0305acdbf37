"""``GET /api/openapi.json`` (a reader's, like every GET but health), and the document's parts
FastAPI cannot infer: how a caller presents a key or an Entra token, and the 403 of a role."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi

#: The Functions convention: a key as a header or as ``?code=``; or a Microsoft Entra access token.
SECURITY_SCHEMES = {
    "functionKeyHeader": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
    "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code"},
    "entraBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                    "description": "A Microsoft Entra ID access token for ENTRA_AUDIENCE, with the app role "
                                   "Outputs.Read (reads) or Outputs.Admin (everything but the webhook)."},
}

#: The answer of a valid credential without the role an operation needs.
FORBIDDEN_RESPONSE = {"description": "The credential's role does not allow this operation",
                      "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}


def document_security(app: FastAPI, public_paths: Iterable[str]) -> None:
    """Declare the key schemes, required everywhere but on ``public_paths``."""
    public = frozenset(public_paths)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            doc.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            doc["security"] = [{name: []} for name in SECURITY_SCHEMES]
            for path, item in doc.get("paths", {}).items():
                for operation in item.values():
                    if path in public:
                        operation["security"] = []
                    elif path != "/api/events":  # the webhook: an events key, or 401
                        operation.setdefault("responses", {}).setdefault("403", FORBIDDEN_RESPONSE)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


router = APIRouter(include_in_schema=False)


@router.get("/api/openapi.json")
async def openapi_document(request: Request) -> dict[str, Any]:
    """The OpenAPI document of every route."""
    document: dict[str, Any] = request.app.openapi()
    return document
