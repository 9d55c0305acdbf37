"""The output browser (``/ui/``): one HTML page whose script reads the API with the caller's key.

The page holds no data, so it is served without a key; its script sends the key (kept in the
tab's ``sessionStorage``) as ``x-functions-key`` on every API call. The stylesheet and script
are inlined into the one HTML answer: under the Functions host every request on the catch-all
route needs a function key, and a browser would not send one for ``<script src>``.
"""

from __future__ import annotations

import secrets
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "ui_static"


@cache
def _assets() -> tuple[str, str, str]:
    read = lambda name: (STATIC_DIR / name).read_text(encoding="utf-8")  # noqa: E731
    return read("index.html"), read("app.css"), read("app.js")


def render_page() -> tuple[str, str]:
    """The page with its stylesheet and script inlined under a fresh CSP nonce."""
    template, css, js = _assets()
    nonce = secrets.token_urlsafe(16)
    html = (template.replace("{{nonce}}", nonce)
            .replace("/*{{css}}*/", css)
            .replace("/*{{js}}*/", js))
    return html, nonce


def _page() -> HTMLResponse:
    html, nonce = render_page()
    return HTMLResponse(html, headers={
        # Images come from the blob endpoint through SAS links (any host: Azurite or Azure);
        # everything else from this origin only.
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "img-src 'self' data: https: http:; connect-src 'self'; form-action 'self'; "
            "base-uri 'none'; frame-ancestors 'none'"
        ),
        # The first request may carry ?code=<key>: never leak it to the blob endpoint.
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    })


#: Served without a key: the page and nothing else (it carries no data).
router = APIRouter(include_in_schema=False)


@router.get("/ui")
async def ui_root(request: Request) -> RedirectResponse:
    query = request.url.query
    return RedirectResponse("/ui/" + (f"?{query}" if query else ""), status_code=307)

@router.get("/ui/")
async def jobs_page() -> HTMLResponse:
    return _page()

@router.get("/ui/jobs/{job_id}")
async def job_page(job_id: str) -> HTMLResponse:
    return _page()

@router.get("/ui/jobs/{job_id}/tasks/{task_id}")
async def task_page(job_id: str, task_id: str) -> HTMLResponse:
    return _page()
