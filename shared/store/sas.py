"""Read-only SAS links for one output blob (``downloadUrl``).

A link grants ``read`` on exactly one blob and expires within ``SAS_TTL_MINUTES``. It is signed
with the account key when the outputs connection is a connection string that has one (Azurite,
keyed accounts), and with a *user delegation key* when the connection is identity-based (Azure,
shared-key access off). A delegation key costs a round trip to storage, so one is cached and
replaced before it could outlive the links it signs.

Outputs are written by Batch tasks, so their content is not ours to trust: a link to something a
browser would run (HTML, XHTML, SVG, XML, JavaScript, by content type or, when the type is
missing or generic, by extension) carries ``rscd=attachment``, so it downloads instead of running
script in the storage account's origin. Any other link pins the indexed content type
(``rsct``), so a type changed on the blob since cannot turn it into a page. Against an
``https`` endpoint (Azure) links are HTTPS-only (``spr=https``); Azurite's is plain http.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import PurePosixPath
from urllib.parse import quote

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.storage.blob import BlobSasPermissions, UserDelegationKey, generate_blob_sas
from azure.storage.blob.aio import BlobServiceClient

#: How long one user delegation key lives (storage allows up to 7 days).
DELEGATION_KEY_LIFETIME = timedelta(hours=6)
#: Links start slightly in the past: a client whose clock runs behind storage's still gets in.
CLOCK_SKEW = timedelta(minutes=5)


#: Media types a browser renders as a document that can run script (or as script itself).
ACTIVE_TYPES = frozenset({
    "text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml", "text/xsl",
    "text/javascript", "application/javascript", "application/x-javascript", "application/ecmascript",
    "text/ecmascript", "text/jscript", "application/json+javascript", "multipart/x-mixed-replace",
})
#: Extensions of the same, for blobs stored without a type or with a generic one.
ACTIVE_EXTENSIONS = frozenset({
    ".html", ".htm", ".shtml", ".xhtml", ".xht", ".mht", ".mhtml", ".svg", ".svgz", ".xml", ".xsl",
    ".xslt", ".js", ".mjs", ".cjs", ".hta",
})
GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/unknown", "unknown/unknown"})
#: A content type safe to echo back as ``rsct``: ``type/subtype`` and plain parameters.
_PINNABLE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(\s*;\s*[A-Za-z0-9_.-]+=[A-Za-z0-9_.\"-]+)*")


def media_type(content_type: str | None) -> str:
    """``text/html`` of ``Text/HTML; charset=utf-8``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def runs_in_a_browser(content_type: str | None, blob_name: str) -> bool:
    """True when a browser opening this blob would render it as a page or run it as script."""
    kind = media_type(content_type)
    if kind in ACTIVE_TYPES or kind.endswith("+xml"):
        return True
    return kind in GENERIC_TYPES and PurePosixPath(blob_name).suffix.lower() in ACTIVE_EXTENSIONS


def attachment(blob_name: str) -> str:
    """``Content-Disposition: attachment`` naming the blob's file (RFC 6266, RFC 5987)."""
    filename = PurePosixPath(blob_name).name or "download"
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\;%' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


class SasError(Exception):
    """A link could not be signed (no account key, or the delegation key was refused)."""


@dataclass(frozen=True, slots=True)
class SignedLink:
    url: str
    expires_at: datetime


class SasIssuer:
    """Signs read-only links for single blobs of the outputs account."""

    def __init__(self, blobs: BlobServiceClient, ttl_minutes: int, *, identity_based: bool) -> None:
        self._blobs = blobs
        self._ttl = timedelta(minutes=ttl_minutes)
        self._identity_based = identity_based
        self._delegation_key: UserDelegationKey | None = None
        self._delegation_expiry: datetime | None = None
        self._lock = asyncio.Lock()

    def _account_key(self) -> str | None:
        return getattr(self._blobs.credential, "account_key", None)

    async def _user_delegation_key(self, now: datetime) -> UserDelegationKey:
        # Replace the key while it still outlives every link it may sign (TTL plus slack).
        async with self._lock:
            fresh_enough = self._delegation_expiry is not None and self._delegation_expiry - now > self._ttl + CLOCK_SKEW
            if self._delegation_key is None or not fresh_enough:
                expiry = now + DELEGATION_KEY_LIFETIME
                try:
                    self._delegation_key = await self._blobs.get_user_delegation_key(now - CLOCK_SKEW, expiry)
                except (HttpResponseError, ServiceRequestError, ServiceResponseError) as exc:
                    raise SasError(f"storage refused a user delegation key: {exc}") from exc
                self._delegation_expiry = expiry
            return self._delegation_key

    async def read_link(self, container: str, blob_name: str, content_type: str | None = None) -> SignedLink:
        """A URL that reads ``container/blob_name`` (and nothing else) until it expires.

        ``content_type`` is the indexed type: it decides between a download (``attachment``)
        and a link that may open in the browser with that type pinned.
        """
        now = datetime.now(timezone.utc)
        expires_at = (now + self._ttl).replace(microsecond=0)
        signing: dict[str, object] = {}
        account_key = self._account_key()
        if account_key and not self._identity_based:
            signing["account_key"] = account_key
        elif self._identity_based:
            signing["user_delegation_key"] = await self._user_delegation_key(now)
        else:
            raise SasError("the outputs connection has no account key to sign links with")
        generic = media_type(content_type) in GENERIC_TYPES
        if runs_in_a_browser(content_type, blob_name) or not (generic or _PINNABLE.fullmatch(content_type or "")):
            signing["content_disposition"] = attachment(blob_name)
        elif not generic:
            signing["content_type"] = content_type
        base = self._blobs.url.split("?", 1)[0].rstrip("/")
        if base.lower().startswith("https://"):
            signing["protocol"] = "https"
        token = generate_blob_sas(
            account_name=self._blobs.account_name or "",
            container_name=container,
            blob_name=blob_name,
            permission=BlobSasPermissions(read=True),
            expiry=expires_at,
            start=now - CLOCK_SKEW,
            **signing,  # type: ignore[arg-type]
        )
        return SignedLink(f"{base}/{container}/{quote(blob_name, safe='/')}?{token}", expires_at)
