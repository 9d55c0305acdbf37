"""The last lines of an output blob (a ``TaskLog``), read server-side with a bounded range read.

The browser could fetch the blob's ``downloadUrl`` with a ``Range`` header itself, but that is a
cross-origin request to the blob endpoint and needs a CORS rule on the outputs account, which a
Batch storage account rarely has (and the indexer never changes the outputs account). Reading
the range here works against any account, with the same identity that signs download links.
"""

from __future__ import annotations

from dataclasses import dataclass

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient

DEFAULT_TAIL_BYTES = 8 * 1024
MAX_TAIL_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class LogTail:
    """The end of a blob: ``text`` starts at byte ``start`` of a blob of ``size`` bytes."""

    text: str
    start: int
    size: int
    etag: str | None

    @property
    def truncated(self) -> bool:
        return self.start > 0


class TailChangingError(Exception):
    """The blob changed on every attempt to read its tail (a very busy log)."""


def tail_text(data: bytes, start: int) -> tuple[str, int]:
    """Decode a tail; when it starts mid-blob, drop the partial first line (and split UTF-8)."""
    if start > 0:
        newline = data.find(b"\n")
        if 0 <= newline < len(data) - 1:
            start += newline + 1
            data = data[newline + 1:]
    return data.decode("utf-8", errors="replace"), start


async def read_tail(blobs: BlobServiceClient, container: str, blob_name: str, max_bytes: int) -> LogTail | None:
    """The last ``max_bytes`` (at most) of a blob, cut to whole lines; ``None`` if it is gone."""
    blob = blobs.get_blob_client(container, blob_name)
    for _ in range(3):  # the blob may shrink between the two reads (overwritten): read again
        try:
            properties = await blob.get_blob_properties()
            size = int(properties.size or 0)
            if size == 0:
                return LogTail("", 0, 0, properties.etag)
            start = max(0, size - max_bytes)
            download = await blob.download_blob(offset=start, length=size - start, etag=properties.etag,
                                                 match_condition=MatchConditions.IfNotModified)
            data = await download.readall()
        except ResourceNotFoundError:
            return None
        except HttpResponseError as exc:
            if exc.status_code in (412, 416):  # changed since the size was read
                continue
            raise
        text, start = tail_text(data, start)
        return LogTail(text, start, size, properties.etag)
    raise TailChangingError(f"{container}/{blob_name} kept changing while its tail was read")

