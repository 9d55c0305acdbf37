"""Which events the index trusts: from the outputs account, of the shape Azure gives them.

Only the Event Grid subscription on the outputs account (or, locally, the event source in front
of Azurite) should deliver events, and only holders of an events key can post them; still, an
event is believed only as far as Azure itself would have written it:

* its ``topic`` (Event Grid schema) or ``source`` (CloudEvents) is the resource ID of the
  configured outputs account, and every URL it carries (``data.url``, ``sourceUrl``,
  ``destinationUrl``) names that account: host-style ``{account}.blob.core.windows.net`` in Azure,
  path-style ``http://127.0.0.1:10000/{account}/...`` on Azurite;
* its ``sequencer`` looks like Azure's: hex digits, 16 to 64 of them (Azure sends 32 or 48,
  e.g. ``00000000000004420000000000028963``; the local event source sends 32 decimal digits).
  Anything else (``~``, letters past ``f``, a thousand characters) would compare above every
  genuine sequencer and pin the blob's row for good, so it is never stored;
* its sizes are within Azure's largest blob, and its texts within what Azure ever sends.

Pure functions, no I/O.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from batch_outputs.endpoints import is_path_style

#: Azure's largest blob: a block blob of 50,000 blocks of 4,000 MiB (about 190.7 TiB). Page
#: blobs (8 TiB) and append blobs (about 195 GiB) are smaller. A larger size is not from Azure.
MAX_BLOB_BYTES = 50_000 * 4000 * 1024 * 1024
#: A blob name is at most 1,024 characters; a container name 3-63.
MAX_BLOB_NAME_CHARS = 1024
MAX_CONTAINER_CHARS = 63
#: Longest text kept from an event, per field: generous bounds on what Azure sends (a URL is a
#: 1,024-character name percent-encoded, up to 9 bytes a character, plus the endpoint).
MAX_FIELD_CHARS: Mapping[str, int] = {
    "id": 512,
    "url": 16 * 1024,
    "sourceUrl": 16 * 1024,
    "destinationUrl": 16 * 1024,
    "contentType": 1024,
    "eTag": 256,
    "blobType": 64,
    "api": 128,
}
URL_FIELDS = ("url", "sourceUrl", "destinationUrl")

#: A lone surrogate cannot be encoded in UTF-8: no name or header Azure sends holds one.
_SURROGATE = re.compile("[\ud800-\udfff]")
_SEQUENCER = re.compile(r"[0-9A-Fa-f]{16,64}")
_DNS_ZONE = re.compile(r"z[0-9]{1,3}")
_ACCOUNT_ID = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Storage/storageAccounts/([^/]+)$",
                         re.IGNORECASE)


def shown(value: Any, limit: int = 120) -> str:
    """``repr`` of an event's value for a skip reason or a log: escaped, and cut when long."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def is_azure_sequencer(value: Any) -> bool:
    """True for a sequencer of the shape Azure (or the local event source) sends."""
    return isinstance(value, str) and _SEQUENCER.fullmatch(value) is not None


@functools.lru_cache(maxsize=256)  # a few topics: parsed once, not per event
def account_of_resource(resource_id: str) -> str | None:
    """The storage account a ``topic``/``source`` resource ID names, or None when it names none."""
    match = _ACCOUNT_ID.match(resource_id.strip())
    return match.group(1).lower() if match else None


def account_of_url(url: str) -> str | None:
    """The storage account a blob or dfs URL names (host-style in Azure, path-style on Azurite)."""
    # The scheme, host and first path segment decide it, and a delivery's URLs share a few of
    # those: ``scheme://host/segment/`` is parsed once (the segment plain, so the same parse).
    head = url.split("/", 4)
    start = "/".join(head[:4])
    if len(head) == 5 and not head[1] and head[3] and "?" not in start and "#" not in start:
        return _account_of_head(start + "/")
    return _parse_account(url)


@functools.lru_cache(maxsize=1024)
def _account_of_head(head: str) -> str | None:
    return _parse_account(head)


def _parse_account(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host:
        return None
    if is_path_style(host):
        account = parts.path.lstrip("/").split("/", 1)[0]
        return account.lower() or None
    # {account}.blob.core.windows.net (and other clouds), {account}.dfs..., the DNS-zone form
    # {account}.z01.blob.storage.azure.net, Azurite's host-style {account}.blob.localhost.
    labels = [label for label in host.split(".") if label != "privatelink"]  # {account}.privatelink.blob...
    service = labels[2] if len(labels) > 2 and _DNS_ZONE.fullmatch(labels[1]) else labels[1]
    return labels[0] if service in ("blob", "dfs") and labels[0] else None


def outputs_account(endpoint: str, sdk_account_name: str | None) -> str | None:
    """The outputs account's name from its blob endpoint (or the SDK's reading of it): what
    events must name. None when neither says (an emulator host the SDK cannot read)."""
    return account_of_url(endpoint) or (sdk_account_name or None)


def foreign_source(item: Mapping[str, Any], data: Any, account: str) -> str | None:
    """Why an event is not from ``account`` (its topic/source or a URL names another), else None."""
    expected = account.lower()
    origin = item.get("topic") if "topic" in item else item.get("source")
    if not isinstance(origin, str):
        return "the event names no source account (topic/source missing)"
    named = account_of_resource(origin)
    if named != expected:
        return f"topic/source {shown(origin)} is not the outputs account {account!r}"
    if isinstance(data, dict):
        for key in URL_FIELDS:
            url = data.get(key)
            if url is not None and (not isinstance(url, str) or account_of_url(url) != expected):
                return f"data.{key} {shown(url)} is not in the outputs account {account!r}"
    return None


def oversized_field(item: Mapping[str, Any], data: Any) -> str | None:
    """Why an event holds a text longer than Azure ever sends, else None."""
    for key, limit in MAX_FIELD_CHARS.items():
        value = item.get(key) if key == "id" else data.get(key) if isinstance(data, dict) else None
        if isinstance(value, str) and len(value) > limit:
            return f"{key} is {len(value)} characters (at most {limit})"
    return None


def unencodable_field(subject: Any, data: Any) -> str | None:
    """Why an event's subject or a text it carries cannot be UTF-8 (a lone surrogate, which
    JSON can escape but no blob name or header holds), else None."""
    texts = [("subject", subject)]
    if isinstance(data, dict):
        texts += [(key, data.get(key)) for key in MAX_FIELD_CHARS if key != "id"]
    for key, value in texts:
        if isinstance(value, str) and _SURROGATE.search(value) is not None:
            return f"{key} holds a lone surrogate, which no UTF-8 text can"
    return None
