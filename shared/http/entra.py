"""Microsoft Entra ID bearer tokens (SPEC §11): validate an access token, map its app roles.

A token is accepted only when PyJWT verifies all of it: an RS256 signature by one of the issuer's
published signing keys, the configured issuer and audience, ``exp`` and ``nbf`` (with a small
leeway for clock skew). ``alg: none`` and the HMAC algorithms are refused before any key is
looked at: an HS256 token "signed" with the public key is the classic confusion attack.

The signing keys come from the issuer's OpenID configuration (``jwks_uri``) or ``ENTRA_JWKS_URL``,
fetched with aiohttp so a fetch never blocks the event loop, kept for ``KEYS_MAX_AGE`` and
fetched again early when a token names a key (``kid``) not in the set: Entra rolls its keys
and announces the new one before signing with it. Unknown kids trigger at most one fetch per
``UNKNOWN_KID_REFETCH_INTERVAL``, so a flood of forged kids cannot make the app hammer the issuer.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt

from shared.settings import EntraSettings

log = logging.getLogger(__name__)

#: Entra's access tokens are signed RS256; nothing else is accepted.
ALGORITHMS = ("RS256",)
#: Clock skew tolerated on ``exp`` and ``nbf``.
LEEWAY_SECONDS = 60
#: The key set is fetched again after this long even if every kid is known.
KEYS_MAX_AGE = 24 * 3600.0
#: At most one fetch per this many seconds because of a kid not in the set.
UNKNOWN_KID_REFETCH_INTERVAL = 60.0
#: After a failed fetch, the next is tried no sooner than this (an issuer that is down is not
#: asked once per request).
FAILED_FETCH_RETRY_SECONDS = 10.0
#: A header larger than this is no Entra token (they are a few kB); refused before parsing.
MAX_TOKEN_LENGTH = 16_384
FETCH_TIMEOUT_SECONDS = 10.0


class AppRole(enum.Enum):
    """The app roles an app registration declares, and the role each grants here."""

    READ = "Outputs.Read"
    ADMIN = "Outputs.Admin"


class TokenError(Exception):
    """The token is not valid (never shown to the caller: they only see 401)."""


@dataclass(frozen=True)
class TokenIdentity:
    """Who a valid token speaks for: its app roles (ours only) and a name for the log."""

    roles: frozenset[AppRole]
    subject: str


class SigningKeys:
    """The issuer's published RSA signing keys, by kid, fetched lazily, cached and refreshed."""

    def __init__(self, issuer: str, jwks_url: str | None, *, clock: Any = time.monotonic) -> None:
        self._issuer = issuer
        self._jwks_url = jwks_url
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._last_unknown_fetch: float | None = None
        self._retry_after: float | None = None
        self._lock: asyncio.Lock | None = None
        #: How many times the key set was fetched (tests and logs).
        self.fetches = 0

    async def key(self, kid: str) -> jwt.PyJWK:
        """The key named ``kid``; fetches the set when it is stale or (rate-limited) lacks ``kid``."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            now = self._clock()
            if self._retry_after is not None and now < self._retry_after:
                pass  # the last fetch failed a moment ago: serve with what we have
            elif self._fetched_at is None or now - self._fetched_at > KEYS_MAX_AGE:
                await self._fetch()
            elif kid not in self._keys and (
                self._last_unknown_fetch is None or now - self._last_unknown_fetch >= UNKNOWN_KID_REFETCH_INTERVAL
            ):
                self._last_unknown_fetch = now
                await self._fetch()
            found = self._keys.get(kid)
        if found is None:
            raise TokenError(f"no signing key {kid!r} among the issuer's keys")
        return found

    async def _fetch(self) -> None:
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_SECONDS)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                jwks_url = self._jwks_url or await self._discover(session)
                keys = _rsa_signing_keys(await _get_json(session, jwks_url))
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            # Keep serving with the keys we have: a blip at the issuer must not lock everyone out.
            log.warning("could not fetch the Entra signing keys (keeping %d known): %s", len(self._keys), exc)
            self._retry_after = self._clock() + FAILED_FETCH_RETRY_SECONDS
            return
        self._keys = keys
        self._fetched_at = self._clock()
        self._retry_after = None
        self.fetches += 1
        log.info("fetched %d Entra signing keys", len(keys))

    async def _discover(self, session: aiohttp.ClientSession) -> str:
        config = await _get_json(session, f"{self._issuer}/.well-known/openid-configuration")
        if config.get("issuer") != self._issuer:
            raise ValueError(f"the OpenID configuration is for issuer {config.get('issuer')!r}, not {self._issuer!r}")
        jwks_uri = config.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise ValueError("the OpenID configuration has no jwks_uri")
        return jwks_uri


async def _get_json(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url, allow_redirects=False) as response:
        if response.status != 200:
            raise ValueError(f"GET {url} answered {response.status}")
        body = await response.json(content_type=None)
    if not isinstance(body, dict):
        raise ValueError(f"GET {url} is not a JSON object")
    return body


def _rsa_signing_keys(jwks: Mapping[str, Any]) -> dict[str, jwt.PyJWK]:
    """The RSA signature keys of a JWKS, by kid (others are skipped: we verify RS256 only)."""
    found: dict[str, jwt.PyJWK] = {}
    entries = jwks.get("keys")
    if not isinstance(entries, list):
        raise ValueError("the JWKS has no keys")
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str):
            continue
        try:
            found[kid] = jwt.PyJWK(entry, algorithm="RS256")
        except jwt.PyJWTError as exc:
            log.warning("skipped signing key %r: %s", kid, exc)
    return found


class EntraValidator:
    """Validates Entra access tokens for one audience (or a few spellings of it) and issuer."""

    def __init__(self, settings: EntraSettings) -> None:
        self._audiences = list(settings.audiences)
        self._issuer = settings.issuer
        self._keys = SigningKeys(settings.issuer, settings.jwks_url)

    @property
    def signing_keys(self) -> SigningKeys:
        return self._keys

    async def validate(self, token: str) -> TokenIdentity:
        """The identity of a valid token; ``TokenError`` (with the reason, for the log) otherwise."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenError("token too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError(f"malformed token: {exc}") from exc
        if header.get("alg") not in ALGORITHMS:
            raise TokenError(f"algorithm {header.get('alg')!r} refused")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenError("no kid in the token's header")
        key = await self._keys.key(kid)
        try:
            claims = jwt.decode(
                token, key, algorithms=list(ALGORITHMS), audience=self._audiences, issuer=self._issuer,
                leeway=LEEWAY_SECONDS, options={"require": ["exp", "nbf", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise TokenError(f"{type(exc).__name__}: {exc}") from exc
        return TokenIdentity(roles=frozenset(_app_roles(claims.get("roles"))),
                             subject=str(claims.get("oid") or claims.get("sub") or "?"))


def _app_roles(raw: object) -> Iterable[AppRole]:
    if not isinstance(raw, list):
        return
    known = {role.value: role for role in AppRole}
    for value in raw:
        if isinstance(value, str) and value in known:
            yield known[value]
