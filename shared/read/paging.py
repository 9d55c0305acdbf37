"""Continuation tokens: opaque, tamper-evident, bound to the query they came from.

A token is ``base64url(json) + "." + base64url(HMAC-SHA256)`` keyed with
``TOKEN_SIGNING_KEY``. Its body names the query's scope (route, job, task, filters) and where
the next page starts; a token that was altered, or is replayed against another job, route or
filter, fails verification and the request is answered 400.

A scope is given as its fields (``("job-outputs", container, kind, prefix)``) and hashed as a
JSON array, so it is unambiguous: a missing kind (``null``) is not the kind ``"None"``, and a
``|`` inside a kind or prefix cannot shift one field into the next. (A scope given as one
string is hashed as that string, for callers that build it themselves.)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Marks a compressed token body (a plain one is JSON, which starts with ``{``).
_COMPRESSED = b"z"
#: A query's scope: its fields in order (``None`` for a filter not given), or one string.
Scope = str | Sequence[str | None]

#: Items a page holds when the caller does not say (``maxpagesize``), and at most.
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 5000


def default_page_size(partitions: int) -> int:
    """The page a listing across a job's ``partitions`` holds when the caller does not say.

    A page merged in key order over ``N`` partitions costs about one query per partition (each
    query returns one partition's rows), so pages of 1,000 would cost ``N`` queries per 1,000
    results. A spread job's default page is 1,000 per partition (at most 5,000): about one
    query per 1,000 results, as on one partition. An explicit ``maxpagesize`` is kept as asked.
    """
    return min(MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE * max(1, partitions))


class InvalidTokenError(ValueError):
    """A continuation token that was altered or belongs to another query."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where a listing resumes: the sub-query (e.g. one kind) and the last row key returned."""

    part: int = 0
    after: str | None = None
    #: A listing merged over a job's partitions: where each partition stands (``merged.py``),
    #: as ``[state, key]`` pairs; ``None`` for a listing of one partition.
    heads: tuple[tuple[str, str | None], ...] | None = None


def scope_digest(scope: Scope) -> str:
    """What a token stores of its scope: a hash of the fields, encoded as a JSON array."""
    text = scope if isinstance(scope, str) else json.dumps(list(scope), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenCodec:
    def __init__(self, signing_key: str) -> None:
        # Without a configured key, tokens still work but only within this process.
        self._key = (signing_key or secrets.token_hex(32)).encode("utf-8")

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()

    def encode(self, scope: Scope, position: Position) -> str:
        data: dict[str, Any] = {"s": scope_digest(scope), "p": position.part, "a": position.after}
        body = json.dumps(data, separators=(",", ":")).encode("utf-8")
        if position.heads is not None:
            # One key per partition, mostly sharing their starts: compressed, a token of a job
            # over 16 partitions stays a few hundred characters for keys of usual lengths.
            data["h"] = [list(head) for head in position.heads]
            body = _COMPRESSED + zlib.compress(json.dumps(data, separators=(",", ":")).encode("utf-8"), 9)
        return f"{_b64(body)}.{_b64(self._sign(body))}"

    def decode(self, scope: Scope, token: str) -> Position:
        try:
            body_text, signature_text = token.split(".", 1)
            body, signature = _unb64(body_text), _unb64(signature_text)
        except (ValueError, UnicodeEncodeError) as exc:
            raise InvalidTokenError("continuation token is malformed") from exc
        if not hmac.compare_digest(signature, self._sign(body)):
            raise InvalidTokenError("continuation token was altered")
        try:
            data: Any = json.loads(zlib.decompress(body[1:]) if body.startswith(_COMPRESSED) else body)
        except (ValueError, zlib.error) as exc:
            raise InvalidTokenError("continuation token is malformed") from exc
        if not isinstance(data, dict) or data.get("s") != scope_digest(scope):
            raise InvalidTokenError("continuation token belongs to another query")
        after = data.get("a")
        part = data.get("p")
        if not isinstance(part, int) or part < 0 or not (after is None or isinstance(after, str)):
            raise InvalidTokenError("continuation token is malformed")
        heads = data.get("h")
        if heads is None:
            return Position(part=part, after=after)
        if not isinstance(heads, list) or not all(
            isinstance(h, list) and len(h) == 2 and isinstance(h[0], str) and (h[1] is None or isinstance(h[1], str))
            for h in heads
        ):
            raise InvalidTokenError("continuation token is malformed")
        return Position(part=part, after=after, heads=tuple((h[0], h[1]) for h in heads))
