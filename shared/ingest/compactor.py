"""Folding usage deltas into the job's and tasks' counters (the round is in ``ledger.py``).

Ingest creates one delta row per transaction; folding keeps their number small so summaries
read few rows. A writer schedules a fold of a job a moment after it wrote deltas there, so one
round folds many transactions' worth; the reconciler folds every active job too. The round
row doubles as a lease: while one instance's round is fresh, others leave the job alone, so
instances do not race each other for the counters. Any step may fail or crash; the next fold
resumes the round where it stopped (every step is idempotent, see ``ledger``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from shared.domain import keys
from shared.domain.feed import AT, FEED_NEXT, FEED_OLDEST, ChangeSet, counter_feed, order_deltas
from shared.domain.lag import LagWindows
from shared.domain.ledger import (
    FOLDS,
    HANDED_BACK,
    LAG_WINDOWS,
    LISTED,
    MAX_ROUND_DELTAS,
    SKIPPED,
    Delta,
    FoldRound,
    JobView,
    TaskPart,
    counts_text,
)
from shared.domain.planning import MAX_BATCH_OPERATIONS, Op, Operation, guard, write
from shared.domain.rows import KINDS, Entity, Int64, Usage, as_int, is_text_part
from shared.store.errors import ConflictError, StorageBusyError, StorageUnavailableError
from shared.store.table import TIMESTAMP, TableStore

log = logging.getLogger(__name__)

#: How long after its first delta a job is folded by the writer that wrote it.
FOLD_DELAY = 2.0
#: A round not renewed for this long is taken over by any instance.
ROUND_LEASE = timedelta(seconds=30)
MAX_FOLD_ATTEMPTS = 8
#: A batch transaction's payload is at most 4 MiB: feed rows are cut into batches of at most
#: this many characters of changes (well under it, UTF-8 and the batch's own framing included).
FEED_BATCH_CHARS = 1_000_000
_KEPT = ("__etag", TIMESTAMP, "PartitionKey")
MAX_PUBLISH_ATTEMPTS = 4


def _kept(row: Entity | None) -> Entity:
    """What a rewritten usage row keeps of the old one: all but its ETag, partition and ``Kinds``
    parts (the new usage writes its own, perhaps fewer)."""
    return {k: v for k, v in (row or {}).items() if k not in _KEPT and not is_text_part(KINDS, k)}


#: The ``~jobs`` row property holding a job's figures per partition when it has several.
PARTS = "PartFigures"


def job_parts(job: Entity) -> dict[int, list[Any]] | None:
    """A several-partition job's figures per partition (``None`` for a job of one): partition
    number -> [outputs, bytes, tasks, rejected outputs, last indexed (ISO), folds]."""
    if as_int(job.get(keys.PARTITIONS)) <= 1:
        return None
    return {int(k): v for k, v in json.loads(job.get(PARTS) or "{}").items()}


def _with_parts(job: Entity, parts: dict[int, list[Any]]) -> Entity:
    """The ``~jobs`` row carrying ``parts`` and, as its listed figures, their sum (a task lives
    in one partition, so tasks add up too)."""
    entity = {k: v for k, v in job.items() if k not in _KEPT and k not in LISTED}
    sums = [sum(as_int(p[i]) for p in parts.values()) for i in range(4)]
    times = [datetime.fromisoformat(p[4]) for p in parts.values() if p[4]]
    entity.update({PARTS: json.dumps({str(k): v for k, v in sorted(parts.items())}, separators=(",", ":")),
                   "Outputs": Int64(sums[0]), "Bytes": Int64(sums[1]), "Tasks": sums[2], "RejOutputs": Int64(sums[3]),
                   FOLDS: Int64(sum(as_int(p[5]) for p in parts.values()))})
    if times:
        entity["LastIndexedAt"] = max(times)
    return entity


def _latest(*times: datetime | None) -> datetime | None:
    return max((t for t in times if t is not None), default=None)


def _folded_events(counter: Entity | None, deltas: list[Delta], now: datetime) -> Entity:
    """``S|00``'s lag windows (trimmed to the last hour) and event counts, with ``deltas`` added."""
    view = JobView(counters=[counter] if counter else [])
    windows = LagWindows.parse((counter or {}).get(LAG_WINDOWS))
    skipped = view.skipped()
    handed_back = as_int((counter or {}).get(HANDED_BACK))
    for delta in deltas:
        if delta.at is not None:
            windows.add(delta.at, delta.lag)
        skipped.update(delta.skipped)
        handed_back += delta.handed_back
    return {LAG_WINDOWS: windows.trimmed(now).text(), SKIPPED: counts_text(skipped), HANDED_BACK: Int64(handed_back)}


class Compactor:
    def __init__(self, store: TableStore, writer: str, *, delay: float = FOLD_DELAY) -> None:
        self.store = store
        self.writer = writer
        self.delay = delay
        self._scheduled: dict[str, asyncio.Task[None]] = {}
        self.rounds = 0  # rounds this instance completed (for tests and metrics)
        #: Called with a round's changes once they are in the feed, before its deltas are deleted
        #: (output events): a round resumed after a crash calls them again (at least once).
        self.round_listeners: list[Callable[[str, Sequence[ChangeSet]], Awaitable[None]]] = []

    # -- scheduling ------------------------------------------------------------------------

    def schedule(self, container: str) -> None:
        """Fold ``container`` soon (once, however many deltas this writer adds meanwhile)."""
        task = self._scheduled.get(container)
        if task is None or task.done():
            self._scheduled[container] = asyncio.get_running_loop().create_task(self._later(container))

    async def _later(self, container: str) -> None:
        await asyncio.sleep(self.delay)
        try:
            await self.fold(container)
        except (StorageBusyError, ConflictError) as exc:
            log.warning("fold of %s postponed (the next write or the reconciler folds it): %s", container, exc)

    async def drain(self) -> None:
        """Run every scheduled fold now (shutdown, tests, benchmarks). A round another instance
        holds is left to it: instances draining together must not fight over one round."""
        pending = [c for c, t in self._scheduled.items() if not t.done()]
        for task in self._scheduled.values():
            task.cancel()
        self._scheduled.clear()
        for container in pending:
            await self.fold(container)

    # -- a round ---------------------------------------------------------------------------

    async def _view(self, container: str) -> tuple[JobView, dict[str, datetime] | None]:
        """The job's ledger and, when it took several query responses (each its own snapshot,
        read at its own moment), every row's commit ``Timestamp``; ``None`` when it came in one
        response (one snapshot of the partition: what it holds is consistent)."""
        low, high = keys.prefix_range(keys.shard_prefix())
        rows: list[Entity] = []
        responses = 0
        async for response in self.store.query_responses(container, low, high):
            rows.extend(response)
            responses += 1
        stamps = {str(r["RowKey"]): r[TIMESTAMP] for r in rows if isinstance(r.get(TIMESTAMP), datetime)}
        return JobView.of(rows), stamps if responses > 1 else None

    async def fold(self, container: str, *, force: bool = False) -> int:
        """Fold the job's deltas; the number folded. ``force`` resumes another's fresh round."""
        folded = 0
        for attempt in range(MAX_FOLD_ATTEMPTS):
            view, stamps = await self._view(container)
            now = datetime.now(timezone.utc)
            fold = view.fold
            if fold is None:
                if not view.deltas:
                    return folded
                try:  # the round row first, before any step adds to it
                    opened = await (self._open(container, view, now) if stamps is None else self._open_cut(container, now))
                except ConflictError:
                    continue  # another instance started a round just now
                if opened is None:
                    continue  # nothing committed before the cut (folded meanwhile): read again
                view, fold = opened
            elif fold.holder != self.writer and fold.expires is not None and fold.expires > now and not force:
                return folded
            try:
                folded += await self._run(container, view, fold, now)
            except (ConflictError, StorageUnavailableError) as exc:
                log.debug("fold of %s re-read after %s (attempt %d)", container, exc, attempt + 1)
                await asyncio.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))
                continue
            self.rounds += 1
            if len(view.deltas) <= len(fold.deltas):
                return folded
        raise StorageBusyError(f"fold of {container} lost {MAX_FOLD_ATTEMPTS} races")

    async def _open(self, container: str, view: JobView, now: datetime) -> tuple[JobView, FoldRound]:
        """A new round over a ledger read in one response (one snapshot): its first deltas in
        the feed's order, every blob's changes in sequencer order. A prefix of that order holds
        every earlier change of the blobs it holds (the cap takes a prefix).

        The round row is created with ``S|00`` rewritten unchanged on the ETag read: another
        instance's whole round between the read and this create (its row created and deleted
        again, so the create alone succeeds) folded these very deltas, and would have them
        added to the task rows twice; every round rewrites ``S|00`` before deleting a delta.
        """
        ordered = order_deltas(d.change_set() for d in view.deltas)
        fold = FoldRound(uuid.uuid4().hex, [c.delta_id for c in ordered[:MAX_ROUND_DELTAS]], 0,
                         self.writer, now + ROUND_LEASE)
        counter = guard(keys.counter_key(), view.counter)
        etags = await self.store.submit(container, [Operation(Op.CREATE, fold.entity()), counter])
        fold.row = {**fold.entity(), "__etag": etags[0]}
        rewritten = {**counter.entity, "__etag": etags[1]}  # as the job step must find it
        view.counters = [rewritten] + [r for r in view.counters if r["RowKey"] != keys.counter_key()]
        return view, fold

    async def _open_cut(self, container: str, now: datetime) -> tuple[JobView, FoldRound] | None:
        """A new round over a ledger too long for one query response; ``None`` if it has nothing
        to fold.

        The responses are reads at different moments: a blob's change committed between two of
        them can be read without the earlier change it replaced (whose key was in a response
        already read), and a round holding the later without the earlier would sequence them
        out of order. So the round row is created first, naming nothing: from then on no other
        round deletes a delta, so every delta committed before the row is in every later read.
        The ledger is read again and the round takes only the deltas committed before its row,
        by the partition's own commit ``Timestamp``s (strictly before: a tick may hold
        several commits): a blob's earlier change was committed before its later one (the
        later replaced its row on the ETag), so it is there too, and the cap takes a prefix of
        the feed's order. Costs a write and a ledger read, only for such a long ledger.
        """
        claim = FoldRound(uuid.uuid4().hex, [], 0, self.writer, now + ROUND_LEASE)
        await self.store.submit(container, [Operation(Op.CREATE, claim.entity())])
        view, stamps = await self._view(container)
        mine = view.fold
        if mine is None or mine.round_id != claim.round_id:
            raise ConflictError("the new round was taken over")
        if stamps is None:  # read again in one response: a snapshot, whole
            before = view.deltas
        else:  # a row without a Timestamp (never from the service) is left to a later round
            cut = stamps.get(keys.fold_round_key())
            before = [d for d in view.deltas if cut is not None and d.key in stamps and stamps[d.key] < cut]
        ordered = order_deltas(d.change_set() for d in before)
        fold = FoldRound(claim.round_id, [c.delta_id for c in ordered[:MAX_ROUND_DELTAS]], 0, self.writer, now + ROUND_LEASE)
        fold.row = mine.row
        if not fold.deltas:
            assert mine.row is not None
            await self.store.submit(container, [Operation(Op.DELETE, {"RowKey": keys.fold_round_key()}, mine.row["__etag"])])
            return None
        await self._submit_with_round(container, [], fold, now)  # the round row names its deltas
        return view, fold

    def _claim(self, fold: FoldRound, now: datetime) -> Operation:
        """The round row rewritten on its ETag: renews this instance's lease, and fails the
        step if anyone else moved the round meanwhile."""
        assert fold.row is not None
        fold.holder, fold.expires = self.writer, now + ROUND_LEASE
        return Operation(Op.REPLACE, fold.entity(), fold.row["__etag"])

    async def _submit_with_round(self, container: str, ops: list[Operation], fold: FoldRound, now: datetime) -> None:
        ops.append(self._claim(fold, now))
        etags = await self.store.submit(container, ops)
        fold.row = {**fold.entity(), "__etag": etags[-1]}

    async def _run(self, container: str, view: JobView, fold: FoldRound, now: datetime) -> int:
        place = {key: index for index, key in enumerate(fold.deltas)}
        deltas = sorted((d for d in view.deltas if fold.names(d)), key=lambda d: place[d.key])
        counter = view.counter
        if counter is None or counter.get("LastFold") != fold.round_id:
            await self._fold_tasks(container, deltas, fold, now)
            counter = await self._fold_job(container, counter, deltas, fold, now)
        if not fold.feed_written and fold.feed_base is not None:
            await self._write_feed(container, deltas, fold, now)
        sets = [d.change_set() for d in deltas if d.changes]
        for listener in self.round_listeners if sets else ():
            try:
                await listener(keys.container_of(container), sets)
            except Exception:  # a listener never holds the fold back
                log.exception("round listener failed for %s", container)
        await self._delete(container, deltas, fold)
        assert counter is not None  # the job step wrote it, or had already
        try:
            await self.publish(container, counter, [r for r in view.counters if r is not view.counter])
        except (ConflictError, StorageBusyError, StorageUnavailableError) as exc:
            # The listing shows the previous fold's figures until the next fold: not worth
            # failing a fold whose counters are already right.
            log.warning("job figures of %s not listed yet: %s", container, exc)
        return len(deltas)

    async def _write_feed(self, container: str, deltas: list[Delta], fold: FoldRound, now: datetime) -> None:
        """The round's feed rows, before any of its deltas is deleted: a change is always in a
        delta or in the feed. Upserts of rows computed from the round alone, so a resumed or
        taken-over round writes the same rows again; each batch renews the lease on the round
        row's ETag, so a holder that lost the round writes nothing."""
        assert fold.feed_base is not None
        rows = [d.change_set().feed_entity(fold.feed_base + i) for i, d in enumerate(x for x in deltas if x.changes)]
        batch: list[Operation] = []
        size = 0
        for index, row in enumerate(rows):
            batch.append(Operation(Op.UPSERT, row))
            size += sum(len(v) for v in row.values() if isinstance(v, str))
            last = index == len(rows) - 1
            if last or len(batch) >= MAX_BATCH_OPERATIONS - 1 or size >= FEED_BATCH_CHARS:
                fold.feed_written = last
                await self._submit_with_round(container, batch, fold, now)
                batch, size = [], 0
        if not rows:
            fold.feed_written = True

    async def publish(self, container: str, counter: Entity, legacy: Iterable[Entity] = ()) -> None:
        """Copy the figures ``GET /api/jobs`` shows onto the job's ``~jobs`` row, so a page of
        jobs is one query, not a ledger read per job. They are the job's as of this fold
        (``counter`` as written, plus the counter rows of an older version, ``legacy``). A
        row that is gone (a removed job) stays gone; a row already carrying a later fold's
        figures is left alone (folds of one job are sequential, their copies need not be)."""
        usage = Usage.of(counter)
        for row in legacy:
            usage = usage.plus(Usage.of(row))
        folds = as_int(counter.get(FOLDS))
        partition, container = container, keys.container_of(container)
        for _ in range(MAX_PUBLISH_ATTEMPTS):
            job = await self.store.get(keys.JOBS_PARTITION, container)
            if job is None:
                return
            parts = job_parts(job)
            if parts is not None:
                # A job over several partitions: each partition's figures, as of its own last
                # fold, kept apart on the row; the row's figures are their sum.
                index = keys.partition_index(partition)
                if as_int(parts.get(index, [0] * 6)[5]) >= folds:
                    return
                at = counter.get("LastIndexedAt")
                parts[index] = [usage.outputs, usage.bytes, usage.tasks, usage.rejected_outputs,
                                at.isoformat() if isinstance(at, datetime) else None, folds]
                entity = _with_parts(job, parts)
            else:
                if FOLDS in job and as_int(job[FOLDS]) >= folds:
                    return
                entity = {k: v for k, v in job.items() if k not in _KEPT and k not in LISTED}
                entity.update({"RowKey": container, "Outputs": Int64(usage.outputs), "Bytes": Int64(usage.bytes),
                               "Tasks": usage.tasks, "RejOutputs": Int64(usage.rejected_outputs), FOLDS: Int64(folds)})
                if counter.get("LastIndexedAt") is not None:
                    entity["LastIndexedAt"] = counter["LastIndexedAt"]
            try:  # on its ETag: a registration or the reconciler's stamp in between is kept
                await self.store.submit(keys.JOBS_PARTITION, [Operation(Op.REPLACE, entity, job["__etag"])])
                return
            except ConflictError:
                continue

    async def fold_job(self, partitions: Iterable[str], *, force: bool = False) -> int:
        """Fold every partition of a job (one, or a hot job's several); the deltas folded."""
        folded = 0
        for partition in partitions:
            folded += await self.fold(partition, force=force)
        return folded

    async def _fold_tasks(self, container: str, deltas: list[Delta], fold: FoldRound, now: datetime) -> None:
        parts: dict[str, TaskPart] = {}
        for delta in deltas:
            for task_row, part in delta.tasks.items():
                total = parts.setdefault(task_row, TaskPart(part.task_id))
                total.usage = total.usage.plus(part.usage)
        rows = await self.store.get_rows(container, parts)  # one range query, not a read per task
        todo = [t for t in parts if (rows.get(t) or {}).get("LastFold") != fold.round_id]
        room = MAX_BATCH_OPERATIONS - 1
        for start in range(0, len(todo), room):
            ops: list[Operation] = []
            for task_row in todo[start : start + room]:
                row = rows.get(task_row)
                before, after = Usage.of(row), Usage.of(row).plus(parts[task_row].usage)
                fold.tasks_delta += (after.outputs > 0) - (before.outputs > 0)
                entity = {**_kept(row), "RowKey": task_row, "TaskId": (row or {}).get("TaskId") or parts[task_row].task_id,
                          **after.properties(), "LastIndexedAt": _latest(*(d.at for d in deltas)) or now,
                          "LastFold": fold.round_id}
                ops.append(write(entity, row))
            await self._submit_with_round(container, ops, fold, now)

    async def _fold_job(self, container: str, counter: Entity | None, deltas: list[Delta], fold: FoldRound, now: datetime) -> Entity:
        usage = Usage.of(counter)
        for delta in deltas:
            usage = usage.plus(delta.job)
        usage.tasks += fold.tasks_delta
        # The round's feed seqs are allocated with the fold itself: the round row (rewritten in
        # this same transaction) records the first, so whoever resumes the round reuses them.
        fold.feed_base, _ = counter_feed(counter)
        entity = {**_kept(counter), "RowKey": keys.counter_key(), **usage.properties(),
                  **_folded_events(counter, deltas, now), "LastFold": fold.round_id,
                  FEED_NEXT: Int64(fold.feed_base + sum(1 for d in deltas if d.changes)),
                  FOLDS: Int64(as_int((counter or {}).get(FOLDS)) + 1)}
        last = _latest((counter or {}).get("LastIndexedAt"), *(d.at for d in deltas))
        if last is not None:  # a round of flushed counts only indexed nothing
            entity["LastIndexedAt"] = last
        await self._submit_with_round(container, [write(entity, counter)], fold, now)
        return entity

    async def _delete(self, container: str, deltas: Iterable[Delta], fold: FoldRound) -> None:
        """Delete the folded deltas, and the round row with the last of them."""
        remaining = list(deltas)
        room = MAX_BATCH_OPERATIONS - 1
        while True:
            piece, remaining = remaining[:room], remaining[room:]
            ops = [Operation(Op.DELETE, {"RowKey": d.key}, d.etag) for d in piece]
            if not remaining:
                assert fold.row is not None
                ops.append(Operation(Op.DELETE, {"RowKey": keys.fold_round_key()}, fold.row["__etag"]))
            await self.store.submit(container, ops)
            if not remaining:
                return

    async def purge_feed(self, container: str, cutoff: datetime, *, keep_from: int | None = None) -> int:
        """Delete feed rows indexed before ``cutoff`` (the newest row always stays, so the feed's
        end is known); the rows deleted. ``S|00`` records the oldest seq kept first, so a cursor
        older than that is answered ``CursorExpired`` rather than skipping what was purged.
        Rows from seq ``keep_from`` on stay whatever their age: the tombstone purge
        (``tombstones.py``) has not read them yet."""
        counter = await self.store.get(container, keys.counter_key())
        if counter is None:
            return 0
        _, oldest = counter_feed(counter)
        _, high = keys.prefix_range(keys.feed_prefix())
        if keep_from is not None:
            high = min(high, keys.feed_key(keep_from + 1))  # the row at keep_from is read, as the newest
        rows = [row async for row in self.store.query_range(container, keys.feed_key(oldest), high, select=("RowKey", AT))]
        old = [row for row in rows[:-1] if (row.get(AT) or cutoff) < cutoff]
        if not old:
            return 0
        kept = keys.feed_seq(str(old[-1]["RowKey"])) + 1
        entity = {k: v for k, v in counter.items() if k not in _KEPT}
        try:
            await self.store.submit(container, [write({**entity, FEED_OLDEST: Int64(kept)}, counter)])
        except ConflictError:
            return 0  # the counter moved (a fold, a grant): the next pass purges
        for start in range(0, len(old), MAX_BATCH_OPERATIONS):
            await self.store.submit(container, [Operation(Op.DELETE, {"RowKey": r["RowKey"]}, r["__etag"])
                                                for r in old[start : start + MAX_BATCH_OPERATIONS]])
        return len(old)
