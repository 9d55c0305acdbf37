"""Safe downloads (issue 14): a downloadUrl for content a browser would run (HTML, SVG, XML,
JavaScript) downloads instead of rendering in the storage origin; other links pin the indexed
type; answers carrying links are not cached. Fetched from Azurite with the link itself."""

from __future__ import annotations

from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from azure.storage.blob import BlobServiceClient, ContentSettings

from shared.conventions import blob_name, container_name

from ..helpers import blob_event
from ..support.stack import RunningApp

JOB = "DownloadJob"
C = container_name(JOB)


def saved(app: RunningApp, blob_service: BlobServiceClient, path: str, data: bytes, stored_type: str,
          indexed_type: str | None = None) -> httpx.Response:
    """Upload a task output with ``stored_type``, index it as its event says (``indexed_type``), fetch its downloadUrl."""
    container = blob_service.get_container_client(C)
    if not container.exists():
        container.create_container()
    name = blob_name("TaskOutput", path, "t1")
    container.upload_blob(name, data, overwrite=True, content_settings=ContentSettings(content_type=stored_type))
    event = blob_event(C, name, size=len(data), sequencer=1, content_type=indexed_type or stored_type)
    assert app.post_events([event]).json()["indexed"] == 1
    response = app.get(f"/api/jobs/{JOB}/tasks/t1/outputs/TaskOutput/{quote(path)}")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return response


PAGE = b"<html><body><script>fetch('/?stolen='+document.cookie)</script></body></html>"


@pytest.mark.parametrize(("path", "stored_type"), [
    ("report.html", "text/html"),
    ("page.xhtml", "application/xhtml+xml"),
    ("thumb.svg", "image/svg+xml"),
    ("feed.xml", "application/xml"),
    ("app.js", "text/javascript"),
    ("no-type.html", "application/octet-stream"),
    ("NO-TYPE.SVG", ""),
])
def test_active_content_downloads_instead_of_rendering(app: RunningApp, blob_service: BlobServiceClient, path: str, stored_type: str) -> None:
    url = saved(app, blob_service, path, PAGE, stored_type).json()["downloadUrl"]
    assert parse_qs(urlsplit(url).query)["rscd"][0].startswith("attachment;")
    download = httpx.get(url)
    assert download.status_code == 200 and download.content == PAGE
    assert download.headers["content-disposition"].startswith("attachment;")
    assert f'filename="{path}"' in download.headers["content-disposition"]


def test_an_image_opens_inline_with_its_indexed_type_pinned(app: RunningApp, blob_service: BlobServiceClient) -> None:
    # The blob's stored type says HTML (changed after the event, which Azure does not announce):
    # the link still serves the type the index holds, so a browser cannot render it as a page.
    url = saved(app, blob_service, "thumb.png", PAGE, "text/html", indexed_type="image/png").json()["downloadUrl"]
    download = httpx.get(url)
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/png"
    assert "attachment" not in download.headers.get("content-disposition", "")


def test_azurites_http_endpoint_is_not_forced_to_https(app: RunningApp, blob_service: BlobServiceClient) -> None:
    url = saved(app, blob_service, "log.txt", b"hello\n", "text/plain").json()["downloadUrl"]
    assert "spr" not in parse_qs(urlsplit(url).query)  # HTTPS-only links: against https endpoints (tests/unit)
    assert httpx.get(url).content == b"hello\n"
