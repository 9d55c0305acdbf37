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
from shared.read.feed import Filter, Tail

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
