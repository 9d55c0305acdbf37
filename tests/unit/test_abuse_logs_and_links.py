"""Logs without secrets or forged lines, download links that do not run script, settings for keys
by role and the public base URL (issue 14; no network)."""

from __future__ import annotations

import asyncio
import io
import logging
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.storage.blob.aio import BlobServiceClient

from shared.http import logs
from shared.settings import Settings, SettingsError
from shared.store.sas import SasIssuer, attachment, runs_in_a_browser

# -- logs ------------------------------------------------------------------------------------


def emitted(logger_name: str, formatter: logging.Formatter, msg: str, *args: object) -> str:
    """What a handler writes for one record made the way the logging module makes it."""
    logs.protect(["a-configured-key-1234"])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        logger.info(msg, *args)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_an_access_log_line_never_shows_a_key_or_a_signature() -> None:
    # uvicorn's access record: these args, positionally (its own formatter: tests/integration/test_abuse_http.py).
    line = emitted("uvicorn.access", logging.Formatter("%(message)s"),
                   '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET",
                   "/api/jobs?code=s3cret-function-key&x=1&sig=abc%2Fdef", "1.1", 200)
    assert "s3cret-function-key" not in line and "abc%2Fdef" not in line
    assert "code=***" in line and "sig=***" in line and "x=1" in line and " 200" in line


@pytest.mark.parametrize("text", [
    "headers {'x-functions-key': 'a-configured-key-1234'}",
    "x-functions-key: another-key-entirely",
    "https://acct.blob.core.windows.net/c/b?sv=2025&sig=Zm9vYmFy%3D&se=2026",
    "the key a-configured-key-1234 appeared",
])
def test_secrets_are_redacted_from_messages_and_args(text: str) -> None:
    for line in (emitted("abuse.logs", logging.Formatter("%(message)s"), text),
                 emitted("abuse.logs", logging.Formatter("%(message)s"), "value %s", text)):
        assert "a-configured-key-1234" not in line and "another-key-entirely" not in line and "Zm9vYmFy" not in line
        assert logs.REDACTED in line


def test_a_newline_in_an_event_id_cannot_forge_a_log_line() -> None:
    line = emitted("abuse.logs", logging.Formatter("%(levelname)s %(message)s"), "skipped event %s: %s",
                   "id\nCRITICAL forged: all outputs deleted\r", "foreign-account\u202e")
    assert line.count("\n") == 1 and "\r" not in line and "\u202e" not in line
    assert "\\x0aCRITICAL forged" in line and "\\u202e" in line


# -- download links --------------------------------------------------------------------------


@pytest.mark.parametrize(("content_type", "name", "active"), [
    ("text/html", "t/$TaskOutput/report.html", True),
    ("text/html; charset=utf-8", "a.bin", True),
    ("Application/XHTML+XML", "a", True),
    ("image/svg+xml", "thumb.svg", True),
    ("application/xml", "a", True),
    ("application/atom+xml", "a", True),
    ("text/javascript", "a", True),
    ("application/javascript", "a", True),
    (None, "page.HTML", True),
    ("application/octet-stream", "icon.svg", True),
    ("", "x.js", True),
    ("image/png", "thumb.png", False),
    ("text/plain", "stdout.txt", False),
    ("application/octet-stream", "movie.mp4", False),
    (None, "frames/a b#1.txt", False),
])
def test_what_a_browser_would_run(content_type: str | None, name: str, active: bool) -> None:
    assert runs_in_a_browser(content_type, name) is active


def test_the_attachment_names_the_file_safely() -> None:
    value = attachment('t1/$TaskOutput/a "b";ü\r\n.html')
    assert value.startswith('attachment; filename="a _b_____.html"')
    assert "filename*=UTF-8''a%20%22b%22%3B%C3%BC%0D%0A.html" in value
    assert "\r" not in value and "\n" not in value


def link(endpoint: str, content_type: str | None, name: str) -> dict[str, list[str]]:
    """The query of a link signed offline with an account key (no request is made)."""
    async def sign() -> str:
        client = BlobServiceClient(endpoint, credential={"account_name": "acct", "account_key": "a2V5a2V5a2V5a2V5"})
        async with client:
            return (await SasIssuer(client, 15, identity_based=False).read_link("job-x", name, content_type)).url
    return parse_qs(urlsplit(asyncio.run(sign())).query)


def test_links_to_active_content_download_and_others_pin_their_type() -> None:
    html = link("https://acct.blob.core.windows.net", "text/html", "t1/$TaskOutput/report.html")
    assert html["rscd"][0].startswith("attachment;") and "rsct" not in html
    png = link("https://acct.blob.core.windows.net", "image/png", "t1/$TaskPreview/thumb.png")
    assert png["rsct"] == ["image/png"] and "rscd" not in png
    generic = link("https://acct.blob.core.windows.net", "application/octet-stream", "t1/$TaskOutput/a.bin")
    assert "rsct" not in generic and "rscd" not in generic
    odd = link("https://acct.blob.core.windows.net", "text/plain\r\nX-Injected: 1", "t1/$TaskOutput/a.txt")
    assert odd["rscd"][0].startswith("attachment;") and "rsct" not in odd


def test_links_are_https_only_in_azure_but_not_against_azurites_http_endpoint() -> None:
    assert link("https://acct.blob.core.windows.net", "image/png", "a.png")["spr"] == ["https"]
    assert "spr" not in link("http://127.0.0.1:10000/acct", "image/png", "a.png")


# -- settings --------------------------------------------------------------------------------

BASE = {"OUTPUTS_STORAGE": "UseDevelopmentStorage=true", "INDEX_STORAGE": "UseDevelopmentStorage=true"}


def test_keys_by_role() -> None:
    settings = Settings.from_mapping({**BASE, "API_KEYS": "read-1, read-2", "EVENTS_KEYS": " post-1 ,"})
    assert settings.api_keys == ("read-1", "read-2") and settings.events_keys == ("post-1",)
    with pytest.raises(SettingsError, match="one role"):
        Settings.from_mapping({**BASE, "API_KEYS": "same,read", "EVENTS_KEYS": "same"})


@pytest.mark.parametrize(("value", "expected"), [
    ("https://outputs.contoso.com/", "https://outputs.contoso.com"),
    ("http://127.0.0.1:7071", "http://127.0.0.1:7071"),
    ("https://contoso.com/batch", "https://contoso.com/batch"),
    ("", None),
])
def test_public_base_url(value: str, expected: str | None) -> None:
    assert Settings.from_mapping({**BASE, "PUBLIC_BASE_URL": value}).public_base_url == expected


@pytest.mark.parametrize("value", ["outputs.contoso.com", "javascript:alert(1)", "https://a/?x=1", "https://user@a/", "https://a/#f"])
def test_a_public_base_url_that_is_no_base_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="PUBLIC_BASE_URL"):
        Settings.from_mapping({**BASE, "PUBLIC_BASE_URL": value})
