"""The change feed's read side: cursors, a page of changes, and waiting for the next change.

What is stored (``shared.domain.feed``): each change is committed in its transaction's delta
row; a fold writes each delta's changes to a sequenced feed row ``F|{seq}`` before deleting
it. So every committed change is, at any moment, in a pending delta, in the feed, or both.

A read (``FeedReader.read_tail``) takes two queries, in this order:

1. the ledger range ``S|`` in one response (one snapshot of the partition): ``S|00`` with the
   feed's next and oldest seq, and the pending deltas;
2. the feed rows from the cursor's seq on.

A page (``page``) is the feed rows from the cursor (those whose delta the cursor already got
pending are skipped, and forgotten once passed), then, once the feed is read to its end, the
pending deltas the feed rows did not hold, in an order that keeps every blob's changes in
sequencer order. A delta folded between the two queries is in the feed rows; one committed
after both is in the next read. Hence no change is missed, and none is returned twice to a
walk of cursors (a request retried with the same cursor gets the same changes again).

Waiting (``changes.ChangeFeed`` with ``wait``, ``waiting.py``) never polls storage per client: commits of this
process wake its waiters at once (``notify``); other instances' commits are found by one shared
poll per job per process (``CHANGE_FEED_POLL_SECONDS``), and the waiters of a job re-read
through one shared read (``JobWatch.shared_tail``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from shared.domain import keys
from shared.domain.feed import ChangeSet, FeedChange, FeedCursor, changes_of, counter_feed, order_deltas
from shared.domain.ledger import FoldRound
from shared.domain.rows import Entity
from shared.store.table import TableStore

log = logging.getLogger(__name__)


#: A cursor names at most this many deltas it received before they were sequenced; past that,
#: a page stops taking pending deltas (they come through the feed a fold later). Keeps a cursor
#: within a URL (a few KB).
MAX_DELIVERED = 200
#: Feed rows one read takes (a row holds one transaction's changes, up to 98).
READ_ROWS = 1000
MAX_WAIT_SECONDS = 60
#: Jobs whose latest read's deltas ``FeedReader`` keeps parsed.
PARSED_JOBS = 64


class CursorExpiredError(Exception):
    """A cursor older than the feed's retention, or of a job whose feed was removed (410)."""


@dataclass(slots=True)
class Tail:
    """One read of a job's feed: its ends, its pending deltas, its rows from ``start``."""

    next_seq: int
    oldest: int
    #: Deltas with changes not folded yet; ``None`` when the ledger took several responses
    #: (not one snapshot): such a read returns feed rows only.
    pending: list[ChangeSet] | None
    rows: list[ChangeSet]
    start: int
    complete: bool  # the rows reach the feed's end
    #: Deltas of the round in progress that already have their feed seqs (``None``: their rows
    #: are all written): not pending any more, though their rows are being written or they are
    #: being deleted.
    sequenced: dict[str, int | None] = field(default_factory=dict)
    _ordered: list[ChangeSet] | None = field(default=None, repr=False)
    _kept: dict[str, dict[tuple[str | None, str | None], tuple[int, ...]]] = field(default_factory=dict, repr=False)
    #: By filter key: the seqs of the rows with a change it keeps (ascending), and the pending
    #: deltas with one; ``None`` until a waiter asks (``nothing_for``).
    _rows_for: dict[tuple[str | None, str | None], list[int]] | None = field(default=None, repr=False)
    _pending_for: dict[tuple[str | None, str | None], list[str]] = field(default_factory=dict, repr=False)
    _contiguous: bool = field(default=False, repr=False)
    _pending_ids: frozenset[str] | None = field(default=None, repr=False)

    @property
    def pending_ids(self) -> frozenset[str]:
        # Once per read: every page and every woken waiter of the read asks.
        if self._pending_ids is None:
            self._pending_ids = frozenset(s.delta_id for s in self.pending or ())
        return self._pending_ids

    def still_ahead(self, delta_id: str, seq: int) -> bool:
        """Whether a delta received pending may still be met in the feed at or after ``seq``
        (so the cursor must remember it), as this read saw the ledger."""
        if delta_id in self.pending_ids:
            return True
        placed = self.sequenced.get(delta_id)
        return placed is not None and placed >= seq

    def ordered_pending(self) -> list[ChangeSet]:
        if self._ordered is None:
            self._ordered = order_deltas(self.pending or ())
        return self._ordered

    def kept(self, item: ChangeSet, where: Filter) -> tuple[int, ...]:
        """The indexes of ``item``'s changes that ``where`` keeps. Every change of the read is
        indexed once, by kind and task: a thousand waiters of one job, each with its own task and
        kind, share the read and must not each test every change of it."""
        index = self._kept.get(item.delta_id)
        if index is None:
            if not self._kept:
                for each in (*self.rows, *(self.pending or ())):
                    self._kept[each.delta_id] = _indexed(each)
            index = self._kept.get(item.delta_id) or _indexed(item)
        return index.get(where.key, ())

    def nothing_for(self, cursor: FeedCursor, where: Filter) -> bool:
        """Whether a page of this read for ``cursor`` and ``where`` is surely empty with no next
        page (``FeedReader.page`` would answer no change and ``more`` False), found without
        walking the read: by the rows and pending deltas that hold a change ``where`` keeps,
        indexed once per read. False whenever it cannot tell (then the page is computed).

        A fold wakes every waiter of the job (it may hold anyone's changes): a thousand waiters
        each for one task's outputs then look at one shared read, and most find nothing there;
        walking its rows and pending deltas for each of them was most of what waiting cost.
        """
        if cursor.offset or cursor.partial is not None or not self.complete:
            return False
        end = self.start + len(self.rows)
        if cursor.seq < self.oldest or cursor.seq < self.start or cursor.seq > end:
            return False  # an expired cursor, or one past what this read holds: the page tells
        if self._rows_for is None:
            self._index_filters()
        assert self._rows_for is not None
        if not self._contiguous:
            return False  # a row not visible yet: the page stops before it (``more``)
        key = where.key
        seqs = self._rows_for.get(key)
        if seqs and seqs[-1] >= cursor.seq:
            return False  # a row after the cursor holds a change of the filter
        if self.pending is None or end < self.next_seq:
            return True  # no pending delta is taken (not one snapshot, or not caught up)
        # Caught up: pending deltas the cursor did not receive would be taken.
        delivered = cursor.delivered
        return all(delta_id in delivered for delta_id in self._pending_for.get(key, ()))

    def _index_filters(self) -> None:
        rows_for: dict[tuple[str | None, str | None], list[int]] = {}
        contiguous = True
        for number, row in enumerate(self.rows):
            if row.seq != self.start + number:
                contiguous = False
            for key in self._kept_index(row):
                rows_for.setdefault(key, []).append(row.seq or 0)
        for item in self.pending or ():
            for key in self._kept_index(item):
                self._pending_for.setdefault(key, []).append(item.delta_id)
        self._contiguous = contiguous
        self._rows_for = rows_for

    def _kept_index(self, item: ChangeSet) -> dict[tuple[str | None, str | None], tuple[int, ...]]:
        index = self._kept.get(item.delta_id)
        if index is None:
            index = self._kept[item.delta_id] = _indexed(item)
        return index


def _indexed(item: ChangeSet) -> dict[tuple[str | None, str | None], tuple[int, ...]]:
    """``item``'s change indexes under every filter that keeps them: (kind, task), (kind, any),
    (any, task), (any, any)."""
    found: dict[tuple[str | None, str | None], list[int]] = {}
    for number, change in enumerate(item.changes):
        task = (change.task_id or "").lower()
        for key in ((change.kind, task), (change.kind, None), (None, task), (None, None)):
            found.setdefault(key, []).append(number)
    return {key: tuple(numbers) for key, numbers in found.items()}


@dataclass(frozen=True, slots=True)
class Filter:
    kind: str | None = None
    task_id: str | None = None

    @property
    def key(self) -> tuple[str | None, str | None]:
        """What ``Tail.kept`` looks the filter up by."""
        return self.kind, self.task_id.lower() if self.task_id is not None else None

    def keeps(self, change: FeedChange) -> bool:
        if self.kind is not None and change.kind != self.kind:
            return False
        return self.task_id is None or (change.task_id or "").lower() == self.task_id.lower()


@dataclass(slots=True)
class FeedPage:
    changes: list[tuple[FeedChange, datetime | None]]
    cursor: FeedCursor
    more: bool  # a next page is ready now (``nextLink``)


class FeedReader:
    """Reads a job's feed (two queries) and answers pages from what it read."""

    def __init__(self, store: TableStore) -> None:
        self.store = store
        #: The pending deltas of each job's latest read, parsed, by row key and ETag: a delta
        #: row is written once (its key is new) and then only deleted, so a job's next read
        #: (every second while clients wait on a busy job) parses only the deltas new since.
        self._parsed: dict[str, dict[tuple[str, str | None], ChangeSet]] = {}
        #: The feed rows of each job whose waiters read it lately, parsed, by row key and ETag
        #: (``_feed_rows``).
        self._rows: dict[str, dict[tuple[str, str | None], ChangeSet]] = {}

    def _delta(self, parsed: dict[tuple[str, str | None], ChangeSet], row: Entity) -> ChangeSet:
        known = parsed.get((str(row["RowKey"]), row.get("__etag")))
        return known if known is not None else ChangeSet(str(row["RowKey"]), row.get("LastIndexedAt"), tuple(changes_of(row)))

    async def read_tail(self, container: str, start: int, rows: int = READ_ROWS, *, shared: bool = False) -> Tail:
        """One read of the job's feed from ``start``; ``shared``: a read that waiters of the job
        repeat (``_feed_rows``)."""
        low, high = keys.prefix_range(keys.shard_prefix())
        ledger, whole = await self.store.query_response(container, low, high)
        counter = next((r for r in ledger if r["RowKey"] == keys.counter_key()), None)
        next_seq, oldest = counter_feed(counter)
        pending: list[ChangeSet] | None = None
        sequenced: dict[str, int | None] = {}
        if whole:
            parsed = self._parsed.pop(container, {})
            rows_of = {str(r["RowKey"]): r for r in ledger if str(r["RowKey"]).startswith(keys.delta_prefix())}
            deltas = {key: self._delta(parsed, r) for key, r in rows_of.items()}
            self._parsed[container] = {(key, rows_of[key].get("__etag")): d for key, d in deltas.items()}
            while len(self._parsed) > PARSED_JOBS:
                del self._parsed[next(iter(self._parsed))]  # the job read longest ago
            round_row = next((r for r in ledger if r["RowKey"] == keys.fold_round_key()), None)
            sequenced = _sequenced(round_row, counter, deltas)
            pending = [d for key, d in deltas.items() if d.changes and key not in sequenced]
        found, complete = await self._feed_rows(container, start, rows, shared)
        return Tail(next_seq, oldest, pending, found, start, complete, sequenced)

    async def _feed_rows(self, container: str, start: int, rows: int, shared: bool) -> tuple[list[ChangeSet], bool]:
        """The feed rows from ``start`` (at most ``rows``), and whether they reach the feed's end.

        A feed row is written once with its content (a round taken over writes the same) and
        then only deleted, so rows already parsed are known by key and ETag. A ``shared`` read
        of a job this process has read lately asks for the rows' keys only (their ETags come
        with them), then for the rows from the first one it does not know: the waiters of a
        busy job re-read it every second from the oldest cursor among them (often where they
        began), and every such read carried, and parsed, the whole feed since then again. Other
        reads (a walk, page by page) take the rows in one query, as they are seldom read twice.
        """
        _, feed_high = keys.prefix_range(keys.feed_prefix())
        known = self._rows.pop(container, None) if shared else None
        if known is None:
            read = [row async for row in self.store.query_range(container, keys.feed_key(start), feed_high, limit=rows)]
            found = [ChangeSet.of_feed_row(row) for row in read]
            complete = len(found) < rows
            if not shared:
                return found, complete
            names = [(str(row["RowKey"]), row.get("__etag")) for row in read]
        else:
            heads = [row async for row in self.store.query_range(container, keys.feed_key(start), feed_high,
                                                                 select=("RowKey",), limit=rows)]
            complete = len(heads) < rows
            fresh = [(str(h["RowKey"]), h.get("__etag")) for h in heads]
            unknown = next((n for n, name in enumerate(fresh) if name not in known), None)
            if unknown is not None:
                last = keys.feed_key(keys.feed_seq(fresh[-1][0]) + 1)
                async for row in self.store.query_range(container, fresh[unknown][0], last, limit=len(fresh) - unknown):
                    known[(str(row["RowKey"]), row.get("__etag"))] = ChangeSet.of_feed_row(row)
            found, names = [], []
            for name in fresh:
                item = known.get(name)
                if item is None:  # rewritten or deleted between the two queries: stop before it
                    complete = False
                    break
                found.append(item)
                names.append(name)
        # What this read holds (at most ``rows``): the next read of the job's waiters starts
        # there or later.
        self._rows[container] = dict(zip(names, found, strict=True))
        while len(self._rows) > PARSED_JOBS:
            del self._rows[next(iter(self._rows))]  # the job read longest ago
        return found, complete

    @staticmethod
    def page(tail: Tail, cursor: FeedCursor, where: Filter, size: int) -> FeedPage:
        """The changes after ``cursor`` in ``tail`` (at most ``size``) and the cursor after them.

        Raises ``CursorExpiredError`` when the rows the cursor needs were purged (or the job's
        feed was removed with its container): never skip them silently.
        """
        if cursor.seq < tail.oldest or cursor.seq > max(tail.next_seq, tail.start + len(tail.rows)):
            raise CursorExpiredError(f"cursor at {cursor.seq} is outside the feed kept ({tail.oldest}..{tail.next_seq})")
        paging = _Paging(tail, cursor, where, size)
        reached_end = paging.feed_rows(tail) and tail.complete
        # Pending deltas only once the rows read reach the feed's end as the ledger showed it:
        # seqs allocated there whose rows are not written yet (a round between its job fold and
        # its feed rows, or whose instance died there) may hold earlier changes of their blobs.
        caught_up = paging.cursor.seq >= tail.next_seq
        if reached_end and caught_up and not paging.full and tail.pending is not None:
            paging.pending(tail)
        return FeedPage(paging.out, paging.cursor, paging.full or not reached_end)

    @staticmethod
    def now_cursor(tail: Tail, where: Filter, issued: int) -> FeedCursor:
        """A cursor at the feed's current end: every change committed so far is behind it.

        With more pending deltas than a cursor names, it names a prefix of their order: those
        left out come again once sequenced, and as every blob's remembered changes precede its
        forgotten ones, what comes again is the end of each blob's history (a replay converges;
        naming the newest instead would bring back a ``created`` without the ``deleted`` after it).
        """
        pending = [s.delta_id for s in tail.ordered_pending() if tail.kept(s, where)]
        return FeedCursor(tail.next_seq, 0, pending[:MAX_DELIVERED], issued)


def _sequenced(round_row: Entity | None, counter: Entity | None, deltas: dict[str, ChangeSet]) -> dict[str, int | None]:
    """The deltas of the round in progress that have feed seqs already: those of a round whose
    job fold (which allocates them) is done, in the round's order (``None`` once every row of
    the round is written: some of its deltas may be deleted already)."""
    if round_row is None or counter is None:
        return {}
    fold = FoldRound.of(round_row)
    if counter.get("LastFold") != fold.round_id or fold.feed_base is None:
        return {}
    if fold.feed_written:
        return dict.fromkeys(fold.deltas)
    placed: dict[str, int | None] = {}
    for name in fold.deltas:
        if name in deltas and deltas[name].changes:
            placed[name] = fold.feed_base + len(placed)
    return placed


class _Paging:
    """One page being filled, and the cursor after it."""

    def __init__(self, tail: Tail, cursor: FeedCursor, where: Filter, size: int) -> None:
        self.tail = tail
        self.cursor = FeedCursor(cursor.seq, cursor.offset, list(cursor.delivered), cursor.issued,
                                 cursor.partial, cursor.partial_offset)
        self.where, self.size = where, size
        self.out: list[tuple[FeedChange, datetime | None]] = []
        self.seen: set[str] = set()
        self.full = False

    def _take(self, item: ChangeSet, start: int) -> int | None:
        """Add ``item``'s changes from ``start`` that the filter keeps; the index of the first
        one that did not fit (``None``: all did)."""
        for index in self.tail.kept(item, self.where):
            if index < start:
                continue
            change = item.changes[index]
            if len(self.out) >= self.size:
                self.full = True
                return index
            self.out.append((change, item.at))
        return None

    def feed_rows(self, tail: Tail) -> bool:
        """Take the feed rows from the cursor on; False if it stopped before a row not visible yet."""
        cur = self.cursor
        expected = cur.seq
        for row in tail.rows:
            assert row.seq is not None
            if row.seq < cur.seq:
                continue
            if row.seq != expected:
                if expected == cur.seq and not self.seen:
                    raise CursorExpiredError(f"feed row {cur.seq} is gone")
                return False  # never skip a row: stop before it
            expected += 1
            self.seen.add(row.delta_id)
            if row.delta_id in cur.delivered:
                cur.delivered.remove(row.delta_id)  # received pending: passed now
                cur.seq, cur.offset = row.seq + 1, 0
                continue
            start = cur.offset
            if row.delta_id == cur.partial:  # partly received pending: the rest from here
                start, cur.partial, cur.partial_offset = max(start, cur.partial_offset), None, 0
            stopped = self._take(row, start)
            if stopped is not None:
                cur.offset = stopped
                return True
            cur.seq, cur.offset = row.seq + 1, 0
        return True

    def pending(self, tail: Tail) -> None:
        """Then the deltas not sequenced yet, in an order that keeps every blob's changes in
        sequencer order; stops at the first that does not fit (what follows may depend on it)."""
        cur = self.cursor
        # Received deltas no longer pending were sequenced before the ledger was read: their
        # rows are below the cursor (those above were just passed), so they never come again.
        cur.delivered = [d for d in cur.delivered if tail.still_ahead(d, cur.seq)]
        if cur.partial is not None and cur.partial not in self.seen and not tail.still_ahead(cur.partial, cur.seq):
            cur.partial, cur.partial_offset = None, 0
        for item in tail.ordered_pending():
            if item.delta_id in cur.delivered or item.delta_id in self.seen:
                continue
            if len(cur.delivered) >= MAX_DELIVERED:
                return  # the cursor is full: the rest comes through the feed, a fold later
            start = cur.partial_offset if item.delta_id == cur.partial else 0
            stopped = self._take(item, start)
            if stopped is not None:
                cur.partial, cur.partial_offset = item.delta_id, stopped
                return
            if item.delta_id == cur.partial:
                cur.partial, cur.partial_offset = None, 0
            if self.tail.kept(item, self.where):
                cur.delivered.append(item.delta_id)
