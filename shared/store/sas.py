"""Read-only SAS links for one output blob (``downloadUrl``).

A link grants ``read`` on exactly one blob and expires within ``SAS_TTL_MINUTES``. It is signed
with the account key when the outputs connection is a connection string that has one (Azurite,
keyed accounts), and with a *user delegation key* when the connection is identity-based (Azure,
shared-key access off). A delegation key costs a round trip to storage, so one is cached and
replaced before it could outlive the links it signs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.storage.blob import BlobSasPermissions, UserDelegationKey, generate_blob_sas
from azure.storage.blob.aio import BlobServiceClient

#: How long one user delegation key lives (storage allows up to 7 days).
DELEGATION_KEY_LIFETIME = timedelta(hours=6)
#: Links start slightly in the past: a client whose clock runs behind storage's still gets in.
CLOCK_SKEW = timedelta(minutes=5)


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

    async def read_link(self, container: str, blob_name: str) -> SignedLink:
        """A URL that reads ``container/blob_name`` (and nothing else) until it expires."""
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
        token = generate_blob_sas(
            account_name=self._blobs.account_name or "",
            container_name=container,
            blob_name=blob_name,
            permission=BlobSasPermissions(read=True),
            expiry=expires_at,
            start=now - CLOCK_SKEW,
            **signing,  # type: ignore[arg-type]
        )
        base = self._blobs.url.split("?", 1)[0].rstrip("/")
        return SignedLink(f"{base}/{container}/{quote(blob_name, safe='/')}?{token}", expires_at)
