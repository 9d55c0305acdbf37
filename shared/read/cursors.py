"""Change feed cursors: opaque, compact (binary, compressed) and tamper-evident.

A cursor holds the next feed seq, the changes of that row already returned, the ids of the
deltas returned before they were sequenced, and when the walk began; it is signed with
HMAC-SHA256 under ``TOKEN_SIGNING_KEY`` (like continuation tokens, ``paging.py``) and bound to
the job and filters it was issued for: altered, or sent with another job or filter, it is 400.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
import zlib

from shared.domain import keys
from shared.domain.feed import FeedCursor

from .paging import InvalidTokenError, Scope, scope_digest

_VERSION = 1
#: version, scope digest, issued, seq, offset, delivered count, has partial, partial offset.
_HEADER = struct.Struct(">B16sQQIHBI")
_HEX_ID = re.compile(r"^[0-9a-f]{32}$")


class InvalidCursorError(InvalidTokenError):
    """A cursor that was altered, or belongs to another job or filter (400)."""


def _packed_id(delta_id: str) -> bytes:
    tail = delta_id[len(keys.delta_prefix()):]
    if _HEX_ID.match(tail):  # the indexer's ids: 16 bytes instead of 32 characters
        return bytes([0x80 | 16]) + bytes.fromhex(tail)
    raw = tail.encode("utf-8")[:127]
    return bytes([len(raw)]) + raw


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    """Cursors: compact (binary, compressed), signed (HMAC-SHA256 with ``TOKEN_SIGNING_KEY``)
    and bound to the job and filters they were issued for."""

    def __init__(self, signing_key: str) -> None:
        self._key = (signing_key or secrets.token_hex(32)).encode("utf-8")

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._key, b"feed-cursor\x00" + body, hashlib.sha256).digest()[:16]

    def encode(self, scope: Scope, cursor: FeedCursor) -> str:
        ids = b"".join(_packed_id(d) for d in [*cursor.delivered, *([cursor.partial] if cursor.partial else [])])
        digest = bytes.fromhex(scope_digest(scope))
        body = zlib.compress(_HEADER.pack(_VERSION, digest, cursor.issued, cursor.seq, cursor.offset,
                                          len(cursor.delivered), cursor.partial is not None, cursor.partial_offset) + ids, 9)
        return f"{_b64(body)}.{_b64(self._sign(body))}"

    def decode(self, scope: Scope, token: str) -> FeedCursor:
        try:
            body_text, signature_text = token.split(".", 1)
            body, signature = _unb64(body_text), _unb64(signature_text)
        except (ValueError, UnicodeEncodeError) as exc:
            raise InvalidCursorError("cursor is malformed") from exc
        if not hmac.compare_digest(signature, self._sign(body)):
            raise InvalidCursorError("cursor was altered")
        try:
            raw = zlib.decompress(body)
            version, digest, issued, seq, offset, count, has_partial, partial_offset = _HEADER.unpack_from(raw)
            at = _HEADER.size
            delivered = []
            for _ in range(count + bool(has_partial)):
                head = raw[at]
                if head & 0x80:
                    delivered.append(keys.delta_key(raw[at + 1 : at + 17].hex()))
                    at += 17
                else:
                    delivered.append(keys.delta_key(raw[at + 1 : at + 1 + head].decode("utf-8")))
                    at += 1 + head
        except (zlib.error, struct.error, IndexError, UnicodeDecodeError) as exc:
            raise InvalidCursorError("cursor is malformed") from exc
        if version != _VERSION or digest != bytes.fromhex(scope_digest(scope)):
            raise InvalidCursorError("cursor belongs to another job or filter")
        partial = delivered.pop() if has_partial else None
        return FeedCursor(seq, offset, delivered, issued, partial, partial_offset)

