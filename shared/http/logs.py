"""What reaches the logs: no keys, no SAS signatures, no forged lines.

Every log record made in the process passes through ``scrub`` (a log record factory, so the
uvicorn access log under ``make run``, the app's own records and the SDKs' are all covered,
whatever handler writes them):

* secrets are replaced by ``***``: a ``code=`` or ``sig=`` query parameter (function keys,
  SAS signatures), an ``x-functions-key`` header value, and the literal keys the app checks;
* the values interpolated into a message (its ``args``, where event IDs, blob names and request
  paths go) have control and bidi-override characters escaped (``\\n`` becomes ``\\x0a``), so
  a newline in an event ID cannot start a forged log line and ``\\u202e`` cannot reverse one.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

REDACTED = "***"
#: A key is redacted literally only when this long (a short one would blank ordinary words).
MIN_LITERAL_SECRET = 8

_SECRET_PARAMETER = re.compile(r"(?i)(?<![\w-])((?:code|sig)=)[^&\s\"'#<>]+")
_KEY_HEADER = re.compile(r"(?i)(x-functions-key[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}&]+")
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")

_secrets: set[str] = set()
_lock = threading.Lock()


def escape(text: str) -> str:
    """``text`` with control and bidi characters written as escapes (``\\x0a``, ``\\u202e``)."""
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) <= 0xFF else f"\\u{ord(m.group()):04x}", text)


def redact(text: str) -> str:
    """``text`` without secrets: key and signature parameters, key headers, the app's keys."""
    if "=" in text or ":" in text:
        text = _SECRET_PARAMETER.sub(rf"\g<1>{REDACTED}", text)
        text = _KEY_HEADER.sub(rf"\g<1>{REDACTED}", text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _clean(value: Any) -> Any:
    return escape(redact(value)) if isinstance(value, str) else value


def scrub(record: logging.LogRecord) -> logging.LogRecord:
    """Redact ``record``'s message and args, and escape its args (in place)."""
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(_clean(a) for a in record.args)
    elif isinstance(record.args, Mapping):
        record.args = {k: _clean(v) for k, v in record.args.items()}
    return record


class _ScrubbingFactory:
    """A log record factory that scrubs every record the previous factory makes."""

    def __init__(self, previous: Callable[..., logging.LogRecord]) -> None:
        self.previous = previous

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        return scrub(self.previous(*args, **kwargs))


def protect(secrets: Iterable[str] = ()) -> None:
    """Scrub every log record of this process from now on; ``secrets`` are redacted literally."""
    with _lock:
        _secrets.update(s for s in secrets if len(s) >= MIN_LITERAL_SECRET)
        if not isinstance(logging.getLogRecordFactory(), _ScrubbingFactory):
            logging.setLogRecordFactory(_ScrubbingFactory(logging.getLogRecordFactory()))
