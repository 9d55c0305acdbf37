"""A listing of a job spread over several partitions: the partitions merged in key order.

A task's outputs live in one partition, so a key is in exactly one partition, and the merge of
the partitions' key ranges is the one-partition listing's order, page for page. The page's
continuation token (signed like any, ``paging.py``) holds where each partition stands:

* ``["h", key]``: its next row is ``key`` (read past the page's end, so known exactly);
* ``["a", key]``: its next row, if any, is after ``key`` (``null``: from the range's start);
* ``["x", null]``: it has no more rows.

A page reads a partition only when its next row may be the smallest one not returned yet: a
partition whose next row is known to lie past the page is not read at all. Its first read in a
page asks for its share of what the page still needs (the partitions' rows interleave when
tasks are small: a render farm's), with a quarter to spare, plus one row to learn its next
key; a partition read again in the same page holds a long run, and is asked for all the page
still needs (one response, 1,000 rows, when its share fits in one). So a page costs about one
query per partition holding rows of it, and reads about 1.25 rows per result where the
partitions interleave finely, one where a run fills the page.
A page of ``n`` results finely interleaved over ``N`` partitions cannot cost fewer than ``N``
queries: each returns one partition's rows only; that is why a spread job's default page is
1,000 rows per partition (``paging.default_page_size``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from shared.domain.rows import Entity
from shared.store.table import MAX_QUERY_PAGE, TableStore

from .listings import Listing
from .paging import InvalidTokenError, Position, TokenCodec

KNOWN, AFTER, DONE = "h", "a", "x"
#: A partition's first read in a page asks for its share of the rows still needed, times this.
SPARE = 1.25


async def merged_page(
    store: TableStore, codec: TokenCodec, partitions: Sequence[str], listing: Listing, page_size: int, token: str | None
) -> tuple[list[Entity], str | None]:
    """One page of ``listing`` (one key range) over ``partitions``, in key order, and the next token."""
    if len(listing.parts) != 1:
        raise ValueError("a merged listing reads one key range")
    low, high = listing.parts[0]
    if token:
        position = codec.decode(listing.scope, token)
        if position.heads is None or len(position.heads) != len(partitions):
            raise InvalidTokenError("continuation token belongs to another query")
        heads = [(state, key) for state, key in position.heads]
        if any(state not in (KNOWN, AFTER, DONE) or (state == KNOWN and key is None) for state, key in heads):
            raise InvalidTokenError("continuation token is malformed")
    else:
        heads = [(AFTER, None)] * len(partitions)
    buffers: list[deque[Entity]] = [deque() for _ in partitions]
    read_before: set[int] = set()
    out: list[Entity] = []

    def floor(i: int) -> tuple[int, str]:
        """Sorts partition ``i`` by the least key its next row may have (unknown start first)."""
        if buffers[i]:
            return 1, buffers[i][0]["RowKey"]
        _, key = heads[i]
        return (0, "") if key is None else (1, key)

    while len(out) < page_size:
        live = [i for i in range(len(partitions)) if buffers[i] or heads[i][0] != DONE]
        if not live:
            break
        i = min(live, key=floor)
        if buffers[i]:
            out.append(buffers[i].popleft())
            continue
        state, key = heads[i]
        remaining = page_size - len(out)
        if i in read_before:
            ask = remaining + 1
        else:
            need = remaining / sum(1 for state, _ in heads if state != DONE)
            share = math.ceil(need * SPARE)
            if need <= MAX_QUERY_PAGE:
                # One response (the service's largest) when the share fits in it but its spare
                # does not: a second query for the spare costs more than a rare read again.
                share = min(share, MAX_QUERY_PAGE - 1)
            ask = min(remaining, share) + 1
            read_before.add(i)
        if state == KNOWN:
            rows, more = await store.read_page(partitions[i], key, high, limit=ask, where=listing.where, select=listing.select)
        else:
            rows, more = await store.read_page(partitions[i], low, high, limit=ask, after=key, where=listing.where,
                                               select=listing.select)
        last = rows[-1]["RowKey"] if rows else key
        kept = [r for r in rows if listing.keep is None or listing.keep(r)]
        buffers[i] = deque(kept)
        heads[i] = (AFTER, last) if more else (DONE, None)
        if not kept and more:
            continue  # only rows the check drops: read on from the last one
    following = [(KNOWN, buffers[i][0]["RowKey"]) if buffers[i] else heads[i] for i in range(len(partitions))]
    if all(state == DONE for state, _ in following):
        return out, None
    return out, codec.encode(listing.scope, Position(0, out[-1]["RowKey"] if out else None, tuple(following)))
