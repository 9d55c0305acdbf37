"""The change feed's pure parts: what a change is, the order a fold gives deltas, cursors."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from shared.domain import keys
from shared.domain.conventions import parse_blob_path
from shared.domain.events import BlobAction
from shared.domain.feed import ChangeSet, FeedChange, FeedCursor, order_deltas, output_subject
from shared.domain.planning import change_type
from shared.domain.rows import DELETED, LIVE, REJECTED, Change
from shared.read.cursors import CursorCodec, InvalidCursorError
from shared.read.feed import FeedReader, Filter, Tail

T0 = datetime(2026, 12, 5, tzinfo=timezone.utc)


def change(action: BlobAction = BlobAction.CREATED, *, readmit: bool = False) -> Change:
    output = parse_blob_path("t1/$TaskOutput/a.txt")
    assert output is not None
    return Change("job-x", keys.output_key("TaskOutput", "a.txt", "t1"), output, action, "0002", T0, readmit=readmit)


@pytest.mark.parametrize(("old", "action", "state", "readmit", "expected"), [
    (None, BlobAction.CREATED, LIVE, False, "created"),
    (DELETED, BlobAction.CREATED, LIVE, False, "created"),
    (LIVE, BlobAction.CREATED, LIVE, False, "updated"),
    (REJECTED, BlobAction.CREATED, LIVE, True, "admitted"),
    (None, BlobAction.CREATED, REJECTED, False, "rejected"),
    (LIVE, BlobAction.CREATED, REJECTED, False, "rejected"),
    (REJECTED, BlobAction.CREATED, REJECTED, True, None),  # re-evaluated, still rejected: nothing changed
    (LIVE, BlobAction.DELETED, DELETED, False, "deleted"),
    (REJECTED, BlobAction.DELETED, DELETED, False, "deleted"),
    (None, BlobAction.DELETED, DELETED, False, None),  # a tombstone of a blob never listed: nothing to say
    (DELETED, BlobAction.DELETED, DELETED, False, None),
])
def test_what_a_change_says(old: str | None, action: BlobAction, state: str, readmit: bool, expected: str | None) -> None:
    row = {"State": old, "Seq": "0001", "Kind": "TaskOutput", "Size": 5} if old else None
    kind = change_type(change(action, readmit=readmit), row, state)
    assert (kind.value if kind else None) == expected


def feed_change(path: str, seq: str, kind: str = "created") -> FeedChange:
    return FeedChange(kind, seq, "t1", "TaskOutput", path, f"t1/$TaskOutput/{path}")


def test_a_fold_orders_deltas_so_every_blob_keeps_its_sequencer_order() -> None:
    """Deltas whose times and ids sort against their blobs' order: any shuffle, one order that
    puts every blob's versions in sequencer order; unrelated deltas keep their indexed time."""
    rng = random.Random(4)
    sets = []
    for n in range(40):
        path = f"b{n % 6}"
        # later versions get earlier times and ids: only the blob order can put them right
        sets.append(ChangeSet(f"S|d|{99 - n:02d}", T0 - timedelta(seconds=n), (feed_change(path, f"{n:04d}"),)))
    for _ in range(5):
        rng.shuffle(sets)
        ordered = order_deltas(sets)
        assert sorted(s.delta_id for s in ordered) == sorted(s.delta_id for s in sets)
        for blob in range(6):
            seqs = [c.seq for s in ordered for c in s.changes if c.path == f"b{blob}"]
            assert seqs == sorted(seqs)
    a_then_admitted = [ChangeSet("S|d|2", T0, (feed_change("x", "0007", "admitted"),)),
                       ChangeSet("S|d|1", T0 + timedelta(seconds=1), (feed_change("x", "0007", "rejected"),))]
    assert [s.changes[0].change for s in order_deltas(a_then_admitted)] == ["rejected", "admitted"]


def test_cursors_round_trip_compactly_and_refuse_tampering_and_other_scopes() -> None:
    codec = CursorCodec("key")
    scope = ("changes", "job-x", None, None)
    ids = [keys.delta_key(f"{n:032x}") for n in range(200)]
    cursor = FeedCursor(123456, 7, ids, 1_700_000_000, keys.delta_key("f" * 32), 3)
    token = codec.encode(scope, cursor)
    assert codec.decode(scope, token) == cursor
    assert len(token) < 5000  # 200 received deltas still fit in a URL
    with pytest.raises(InvalidCursorError):
        codec.decode(("changes", "job-x", "TaskPreview", None), token)
    with pytest.raises(InvalidCursorError):
        CursorCodec("another key").decode(scope, token)
    body, signature = token.split(".")
    with pytest.raises(InvalidCursorError):
        codec.decode(scope, body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + signature)
    with pytest.raises(InvalidCursorError):
        codec.decode(scope, "garbage")


def test_output_event_subjects_filter_by_job_task_and_kind() -> None:
    task = feed_change("deep/a b.png", "1")
    assert output_subject("render-42", "job-render-42", task) == "/jobs/render-42/tasks/t1/kinds/TaskOutput/outputs/deep/a b.png"
    job = FeedChange("created", "1", None, "JobOutput", "movie.mp4", "$JobOutput/movie.mp4")
    assert output_subject("render-42", "job-render-42", job) == "/jobs/render-42/kinds/JobOutput/outputs/movie.mp4"
    assert output_subject(None, "job-abc", job) == "/containers/job-abc/kinds/JobOutput/outputs/movie.mp4"


def test_a_reads_index_by_kind_and_task_keeps_what_each_filter_keeps() -> None:
    """``Tail.kept`` (every change of a read indexed once, for a thousand filtered waiters) gives
    each filter exactly the changes ``Filter.keeps`` would, in order: any case of a task ID, job
    outputs (no task), kind only, task only, none; and for a change set not of the read too."""
    rng = random.Random(21)
    tasks, kinds = [None, "t1", "T1", "t2", "Render-7"], ["TaskOutput", "TaskLog", "JobOutput"]

    def changes(n: int) -> tuple[FeedChange, ...]:
        return tuple(FeedChange("created", f"{i:04d}", rng.choice(tasks), rng.choice(kinds), f"p{i}", f"b{i}")
                     for i in range(n))

    rows = [ChangeSet(f"d{i}", T0, changes(rng.randint(0, 30)), seq=i) for i in range(6)]
    pending = [ChangeSet(f"p{i}", T0, changes(rng.randint(0, 30))) for i in range(6)]
    tail = Tail(6, 0, pending, rows, 0, True)
    stranger = ChangeSet("x", T0, changes(25))
    for where in [Filter(k, t) for k in (None, *kinds, "Other") for t in (None, "t1", "T1", "render-7", "t9")]:
        for item in (*rows, *pending, stranger):
            assert tail.kept(item, where) == tuple(n for n, c in enumerate(item.changes) if where.keeps(c)), (where, item.delta_id)


# -- a waiter with nothing in a shared read (``Tail.nothing_for``) ------------------------------

TASKS = ("t1", "T2", "t3")
KINDS = ("TaskOutput", "TaskLog")
FILTERS = [Filter(), *(Filter(kind) for kind in KINDS), *(Filter(task_id=t) for t in TASKS),
           *(Filter(kind, t) for kind in KINDS for t in TASKS)]


def random_read(rng: random.Random) -> tuple[Tail, list[str]]:
    """A read as ``FeedReader.read_tail`` returns them: feed rows from ``start`` (sometimes with a
    row not visible yet, sometimes cut at the read's limit), pending deltas (some also among the
    rows: folded between the read's two queries), or none (not one snapshot)."""
    def changes() -> tuple[FeedChange, ...]:
        return tuple(FeedChange("created", f"{rng.randrange(99):04d}", rng.choice(TASKS), rng.choice(KINDS), f"p{n}", f"b{n}")
                     for n in range(rng.randint(1, 3)))
    start = rng.randint(0, 6)
    oldest = rng.randint(0, start + 2)  # above start: a purge overtook the read
    seqs = list(range(max(start, oldest), start + rng.randint(0, 6)))
    if seqs and rng.random() < 0.2:
        del seqs[rng.randrange(len(seqs))]  # a row not visible yet
    rows = [ChangeSet(f"S|d|r{seq}", T0, changes(), seq) for seq in seqs]
    pending = [ChangeSet(f"S|d|p{n}", T0 + timedelta(seconds=n), changes()) for n in range(rng.randint(0, 4))]
    if rows and pending and rng.random() < 0.3:
        pending.append(ChangeSet(rows[-1].delta_id, T0, rows[-1].changes))  # folded between the queries
    next_seq = max(start + len(seqs), oldest) + rng.choice((0, 0, 1))
    tail = Tail(next_seq, oldest, None if rng.random() < 0.15 else pending, rows, start, rng.random() < 0.85)
    return tail, [p.delta_id for p in pending]


def random_cursor(rng: random.Random, tail: Tail, pending: list[str]) -> FeedCursor:
    seq = rng.randint(max(0, min(tail.start, tail.oldest) - 1), tail.start + len(tail.rows) + 1)
    delivered = [d for d in pending if rng.random() < 0.5]
    partial = rng.choice(pending) if pending and rng.random() < 0.1 else None
    return FeedCursor(seq, 1 if rng.random() < 0.1 else 0, delivered, 0, partial, 1 if partial else 0)


@pytest.mark.parametrize("seed", range(40))
def test_a_waiter_told_nothing_is_there_would_have_got_an_empty_page(seed: int) -> None:
    """``nothing_for`` spares a woken waiter its page only when that page is empty and final:
    over random reads (gaps, cut reads, deltas folded between the two queries, reads without
    pending deltas), cursors (received deltas, offsets, partial deltas, expired or ahead) and
    filters, never once does it say nothing where the page has a change, a next page, or an
    expired cursor; and it does say it for most waiters (else it spares nothing)."""
    rng = random.Random(seed)
    told = 0
    for _ in range(200):
        tail, pending = random_read(rng)
        cursor = random_cursor(rng, tail, pending)
        for where in FILTERS:
            if not tail.nothing_for(cursor, where):
                continue
            told += 1
            page = FeedReader.page(tail, cursor, where, 1000)  # raises if the cursor had expired
            assert page.changes == [] and page.more is False, (tail, cursor, where)
    assert told > 200 * len(FILTERS) // 20


def test_a_thousand_waiters_each_for_one_task_find_nothing_in_another_tasks_read_without_walking_it() -> None:
    rows = [ChangeSet(f"S|d|r{seq}", T0, (FeedChange("created", "0001", "t1", "TaskOutput", f"p{seq}", f"b{seq}"),), seq)
            for seq in range(500)]
    tail = Tail(500, 0, [], rows, 0, True)
    cursor = FeedCursor(0)
    waiting = [Filter(kind, f"t{n}") for n in range(2, 252) for kind in ("TaskOutput", "TaskLog", "TaskPreview", "TaskIntermediate")]
    assert all(tail.nothing_for(cursor, where) for where in waiting)
    assert not tail.nothing_for(cursor, Filter("TaskOutput", "T1")) and not tail.nothing_for(FeedCursor(499), Filter(task_id="t1"))
    assert tail.nothing_for(FeedCursor(500), Filter(task_id="t1"))  # past the last of its rows
