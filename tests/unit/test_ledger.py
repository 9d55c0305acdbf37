"""The usage ledger (shared.domain.ledger), in process: what ``JobView`` reads from counters, deltas,
escrows and a fold round, at every step of a fold.

``fold_steps`` plays a fold round the way the compactor runs it (``shared/ingest/compactor.py``),
one transaction per step, on the rows of a ``Partition`` (see test_planning): the round row,
then each task row (stamped ``LastFold`` with the round's task transitions), then ``S|00``
(stamped), then each delta's deletion, then the round row's. A round abandoned half-way is
resumed from its row, as the next fold would. Usage read at any step must equal what the
output rows themselves say (``truth``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from shared.domain import keys
from shared.domain.ledger import Delta, Escrow, FoldRound, JobView, TaskPart
from shared.domain.quotas import Limits
from shared.domain.rows import Entity, Usage

from .test_planning import Partition, change, deliver, truth

T1 = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
T2, T3 = T1 + timedelta(minutes=1), T1 + timedelta(minutes=2)
COUNTER = keys.counter_key()
ROUND = keys.fold_round_key()


def counter(**usage: int | dict[str, list[int]]) -> Entity:
    kinds = usage.pop("kinds", {})
    assert isinstance(kinds, dict)
    return {"RowKey": COUNTER, **Usage(**usage, kinds=kinds).properties()}  # type: ignore[arg-type]


def delta(name: str, job: Usage, parts: dict[str, tuple[str, Usage]] | None = None, at: datetime | None = None) -> Entity:
    tasks = {row: TaskPart(task_id, usage) for row, (task_id, usage) in (parts or {}).items()}
    return Delta(keys.delta_key(name), job, tasks, at=at).entity()


def live(kind: str, outputs: int, size: int) -> Usage:
    return Usage(outputs=outputs, bytes=size, kinds={kind: [outputs, size]})


def fold_round(round_id: str, *deltas: str, tasks_delta: int = 0) -> Entity:
    return FoldRound(round_id, [keys.delta_key(d) for d in deltas], tasks_delta, "w", T3).entity()


# --- reading the ledger ----------------------------------------------------------------------


def test_job_view_sorts_the_ledger_rows_by_what_they_are() -> None:
    rows = [
        counter(outputs=1), {"RowKey": keys.shard_key(7), "Outputs": 2}, delta("a", Usage()),
        Escrow("w1").entity(3, 30, T1), fold_round("r1", "a"), {"RowKey": "S|zz", "Outputs": 99},
    ]
    view = JobView.of(rows)
    assert [r["RowKey"] for r in view.counters] == ["S|00", "S|07"]
    assert [d.key for d in view.deltas] == ["S|d|a"]
    assert {w: (e.outputs, e.bytes) for w, e in view.escrows.items()} == {"w1": (3, 30)}
    assert view.fold is not None and (view.fold.round_id, view.fold.deltas) == ("r1", ["S|d|a"])
    assert view.counter is not None and view.counter["RowKey"] == COUNTER
    assert view.job_usage().outputs == 3  # S|00 and the older shard S|07; S|zz is nothing
    # Without S|00, the limits' carrier is the first counter there is.
    legacy = JobView.of([{"RowKey": keys.shard_key(3), "MaxOutputs": 5}])
    assert legacy.counter is None and legacy.carrier == {"RowKey": "S|03", "MaxOutputs": 5}
    assert JobView.of([]).carrier is None


def test_tasks_without_a_row_and_each_task_s_last_index_time_come_from_unfolded_deltas() -> None:
    t1, t2 = keys.task_usage_key("t1"), keys.task_usage_key("T2")
    d1 = delta("a", live("K", 1, 5), {t1: ("t1", live("K", 1, 5))}, at=T1)
    d2 = delta("b", live("K", 2, 7), {t1: ("t1", live("K", 1, 2)), t2: ("T2", live("K", 1, 5))}, at=T2)
    view = JobView.of([d1, d2, fold_round("r1", "a")])
    folded_t1 = {"RowKey": t1, "TaskId": "t1", "LastIndexedAt": T1, "LastFold": "r1", "Outputs": 1}
    assert view.rowless_tasks({t1: folded_t1}) == {t2: {"RowKey": t2, "TaskId": "T2"}}  # the ID as written
    assert view.rowless_tasks({}) == {t1: {"RowKey": t1, "TaskId": "t1"}, t2: {"RowKey": t2, "TaskId": "T2"}}
    assert view.task_last_indexed(t1, folded_t1) == T2  # the unfolded delta b is later than the row
    assert view.task_last_indexed(t2, None) == T2
    assert view.task_last_indexed(t1, {**folded_t1, "LastIndexedAt": T3}) == T3
    assert JobView.of([d1]).task_last_indexed(t2, None) is None


def test_usage_is_the_counters_plus_every_unfolded_delta() -> None:
    rows = [
        counter(outputs=5, bytes=500, rejected_outputs=1, rejected_bytes=7, tasks=2, kinds={"A": [5, 500]}),
        {"RowKey": keys.shard_key(3), **Usage(outputs=1, bytes=10, tasks=1, kinds={"B": [1, 10]}).properties()},
        delta("d1", live("A", 2, 20), {"U|t9": ("t9", live("A", 2, 20))}),
        delta("d2", Usage(outputs=-1, bytes=-100, rejected_outputs=1, rejected_bytes=3, kinds={"A": [-1, -100]}),
              {"U|t1": ("t1", Usage(outputs=-1, bytes=-100, rejected_outputs=1, rejected_bytes=3, kinds={"A": [-1, -100]}))}),
    ]
    view = JobView.of(rows)
    assert view.job_usage() == Usage(outputs=7, bytes=430, rejected_outputs=2, rejected_bytes=10, tasks=3,
                                     kinds={"A": [6, 420], "B": [1, 10]})
    assert view.pending_tasks() == {"U|t1", "U|t9"}
    t1 = {"RowKey": "U|t1", "TaskId": "t1", **live("A", 1, 100).properties()}
    # t9 gains its first outputs (+1 task), t1 loses its last (-1 task).
    assert view.usage({"U|t1": t1}).tasks == 3
    assert view.task_usage("U|t1", t1) == Usage(rejected_outputs=1, rejected_bytes=3)
    assert view.task_usage("U|t9", None) == live("A", 2, 20)
    assert view.task_usage("U|t5", None) == Usage()
    # A task that still has outputs after its pending parts does not move the count.
    t1_more = {"RowKey": "U|t1", **live("A", 2, 150).properties()}
    assert view.usage({"U|t1": t1_more}).tasks == 4


def test_a_delta_of_the_round_counts_for_the_job_until_s00_carries_the_round() -> None:
    d1 = delta("d1", live("A", 2, 20))
    d2 = delta("d2", live("A", 1, 5))  # written after the round started: not in it
    before = JobView.of([counter(outputs=10, bytes=100, kinds={"A": [10, 100]}), d1, d2, fold_round("r1", "d1")])
    assert before.job_usage() == live("A", 13, 125)
    stamped = {**counter(outputs=12, bytes=120, kinds={"A": [12, 120]}), "LastFold": "r1"}
    after = JobView.of([stamped, d1, d2, fold_round("r1", "d1")])
    assert after.job_usage() == live("A", 13, 125)
    # Another round's stamp does not fold this round's deltas; no round row folds nothing.
    older = JobView.of([{**counter(outputs=10, bytes=100, kinds={"A": [10, 100]}), "LastFold": "r0"}, d1, d2, fold_round("r1", "d1")])
    assert older.job_usage() == live("A", 13, 125)
    assert JobView.of([stamped, d1, d2]).job_usage() == live("A", 15, 145)


def test_a_delta_of_the_round_counts_for_a_task_until_that_tasks_row_carries_the_round() -> None:
    d1 = delta("d1", live("A", 3, 30), {"U|t1": ("t1", live("A", 2, 20)), "U|t2": ("t2", live("A", 1, 10))})
    d2 = delta("d2", live("A", 1, 1), {"U|t1": ("t1", live("A", 1, 1))})
    view = JobView.of([d1, d2, fold_round("r1", "d1")])
    t1_stamped = {"RowKey": "U|t1", **live("A", 2, 20).properties(), "LastFold": "r1"}
    assert view.task_usage("U|t1", t1_stamped) == live("A", 3, 21)  # the row, plus d2 only
    assert view.task_usage("U|t1", None) == live("A", 3, 21)  # nothing folded yet: d1 and d2
    assert view.task_usage("U|t2", None) == live("A", 1, 10)
    t2_other_round = {"RowKey": "U|t2", **live("A", 4, 40).properties(), "LastFold": "r0"}
    assert view.task_usage("U|t2", t2_other_round) == live("A", 5, 50)
    pending = view.task_pending({"U|t1": t1_stamped})
    assert pending == {"U|t1": TaskPart("t1", live("A", 1, 1)), "U|t2": TaskPart("t2", live("A", 1, 10))}


def test_the_rounds_task_transitions_count_until_s00_carries_the_round() -> None:
    d1 = delta("d1", live("A", 3, 30), {"U|t1": ("t1", live("A", 2, 20)), "U|t2": ("t2", live("A", 1, 10))})
    t1 = {"RowKey": "U|t1", **live("A", 2, 20).properties(), "LastFold": "r1"}
    t2 = {"RowKey": "U|t2", **live("A", 1, 10).properties(), "LastFold": "r1"}
    # Both task rows folded (two new tasks in the round row), S|00 not yet.
    midway = JobView.of([counter(tasks=4), d1, fold_round("r1", "d1", tasks_delta=2)])
    assert midway.job_usage().tasks == 6 and midway.usage({"U|t1": t1, "U|t2": t2}).tasks == 6
    done = JobView.of([{**counter(outputs=3, bytes=30, tasks=6, kinds={"A": [3, 30]}), "LastFold": "r1"}, d1,
                       fold_round("r1", "d1", tasks_delta=2)])
    assert done.job_usage() == Usage(outputs=3, bytes=30, tasks=6, kinds={"A": [3, 30]})
    assert done.usage({"U|t1": t1, "U|t2": t2}).tasks == 6


def test_escrowed_sums_every_escrow_but_the_writers() -> None:
    view = JobView.of([Escrow("w1").entity(3, 300, T1), Escrow("w2").entity(4, 50, T1), Escrow("w3").entity(0, 0, T1)])
    assert view.escrowed() == (7, 350)
    assert view.escrowed(except_writer="w1") == (4, 50)
    assert view.escrowed(except_writer="nobody") == (7, 350)
    assert JobView().escrowed() == (0, 0)


def test_last_indexed_is_the_latest_of_counters_and_deltas() -> None:
    rows = [
        {**counter(), "LastIndexedAt": T1}, {"RowKey": keys.shard_key(5), "LastIndexedAt": T3},
        delta("a", Usage(), at=T2), delta("b", Usage()),
    ]
    assert JobView.of(rows).last_indexed() == T3
    assert JobView.of(rows[:1] + rows[2:]).last_indexed() == T2
    assert JobView.of([delta("b", Usage())]).last_indexed() is None
    assert JobView.of([]).last_indexed() is None


def test_escrow_and_fold_round_rows_round_trip() -> None:
    escrow = Escrow.of({**Escrow("writer-7").entity(5, 500, T1), "__etag": "e"})
    assert (escrow.writer, escrow.outputs, escrow.bytes, escrow.key) == ("writer-7", 5, 500, "S|e|writer-7")
    assert escrow.row is not None and escrow.row["__etag"] == "e"
    fold = FoldRound("r9", ["S|d|a", "S|d|b"], 3, "w", T2)
    back = FoldRound.of(fold.entity())
    assert (back.round_id, back.deltas, back.tasks_delta, back.holder, back.expires) == ("r9", ["S|d|a", "S|d|b"], 3, "w", T2)
    assert fold.entity()["RowKey"] == ROUND


# --- folding, step by step -------------------------------------------------------------------


def fold_steps(part: Partition, round_id: str) -> Iterator[str]:
    """One fold round on ``part``'s rows, a transaction per step (see the module docstring)."""
    view = part.view()
    fold = view.fold
    if fold is None:
        if not view.deltas:
            return
        fold = FoldRound(round_id, [d.key for d in view.deltas], 0, "w", T3)
        part.put(fold.entity())
        yield "round"
    deltas = [d for d in view.deltas if d.key in fold.deltas]
    job = view.counter
    if job is None or job.get("LastFold") != fold.round_id:
        parts: dict[str, TaskPart] = {}
        for d in deltas:
            for task_row, task_part in d.tasks.items():
                total = parts.setdefault(task_row, TaskPart(task_part.task_id))
                total.usage = total.usage.plus(task_part.usage)
        for task_row in sorted(parts):
            row = part.rows.get(task_row)
            if (row or {}).get("LastFold") == fold.round_id:
                continue
            before, after = Usage.of(row), Usage.of(row).plus(parts[task_row].usage)
            fold.tasks_delta += (after.outputs > 0) - (before.outputs > 0)
            part.put({**(row or {}), "RowKey": task_row, "TaskId": (row or {}).get("TaskId") or parts[task_row].task_id,
                      **after.properties(), "LastFold": fold.round_id})
            part.put(fold.entity())  # in the same transaction
            yield f"task {task_row}"
        row = part.rows.get(COUNTER)
        usage = Usage.of(row)
        for d in deltas:
            usage = usage.plus(d.job)
        usage.tasks += fold.tasks_delta
        part.put({**(row or {}), "RowKey": COUNTER, **usage.properties(), "LastFold": fold.round_id})
        part.put(fold.entity())
        yield "job"
    for d in deltas:
        part.delete(d.key)
        yield f"delete {d.key}"
    part.delete(ROUND)
    yield "done"


def check(part: Partition) -> None:
    """What readers see equals what the output rows say, for the job and every task."""
    job, tasks = truth(part.rows)
    view = part.view()
    assert view.usage({t: part.rows[t] for t in view.pending_tasks() if t in part.rows}) == job
    seen = tasks.keys() | {k for k in part.rows if k.startswith(keys.task_usage_prefix())}
    for task_row in seen:
        assert view.task_usage(task_row, part.rows.get(task_row)) == tasks.get(task_row, Usage()), task_row


def fold_all(part: Partition, round_id: str) -> list[str]:
    steps = []
    for step in fold_steps(part, round_id):
        check(part)
        steps.append(step)
    return steps


def test_the_task_count_is_exact_at_every_step_of_a_fold() -> None:
    part = Partition()
    part.ingest(change("t1/$TaskOutput/a", 1), change("t2/$TaskOutput/b", 2), change("t3/$TaskLog/c", 3))
    assert fold_all(part, "r1")[-1] == "done"
    assert part.rows[COUNTER]["Tasks"] == 3 and part.rows[COUNTER]["Outputs"] == 3
    # The next round: t1 loses its last output, t2 keeps one, t4 is new, t3 gains another.
    part.ingest(change("t1/$TaskOutput/a", 4, deleted=True), change("t2/$TaskOutput/b2", 5))
    part.ingest(change("t2/$TaskOutput/b", 6, deleted=True), change("t4/$TaskOutput/d", 7), change("t3/$TaskLog/c2", 8))
    assert part.usage.tasks == 3
    steps = fold_all(part, "r2")
    assert steps == ["round", "task U|t1", "task U|t2", "task U|t3", "task U|t4", "job",
                     "delete S|d|000002", "delete S|d|000003", "done"]
    assert [k for k in part.rows if k.startswith(keys.shard_prefix())] == [COUNTER]
    assert part.rows[COUNTER]["LastFold"] == "r2"
    assert Usage.of(part.rows[COUNTER]) == Usage(outputs=4, bytes=400, tasks=3, kinds={"TaskOutput": [2, 200], "TaskLog": [2, 200]})
    assert Usage.of(part.rows["U|t1"]) == Usage() and part.rows["U|t1"]["TaskId"] == "t1"


def test_writes_between_the_steps_of_a_fold_stay_exact() -> None:
    part = Partition()
    part.ingest(change("t1/$TaskOutput/a", 1), change("t2/$TaskOutput/b", 2))
    fold_all(part, "r1")
    part.ingest(change("t1/$TaskOutput/a", 3, deleted=True), change("t3/$TaskOutput/c", 4))
    writes = [
        [change("t1/$TaskOutput/e", 10)],  # t1 back, while the round folds its loss
        [change("t3/$TaskOutput/c", 11, deleted=True)],  # t3's only output goes, its row already stamped
        [change("t2/$TaskOutput/b", 12, deleted=True)],
        [change("t5/$TaskOutput/f", 13)],
        [change("t1/$TaskOutput/e", 14, deleted=True), change("t2/$TaskOutput/g", 15)],
        [change("$JobOutput/x", 16)],
    ]
    for _, batch in zip(fold_steps(part, "r2"), writes, strict=True):
        check(part)
        part.ingest(*batch)
        check(part)
    assert part.usage.tasks == 2  # t2 and t5
    while fold_all(part, "next"):
        pass
    assert [k for k in part.rows if k.startswith(keys.shard_prefix())] == [COUNTER]
    assert Usage.of(part.rows[COUNTER]) == truth(part.rows)[0]


def test_a_round_abandoned_half_way_is_resumed_from_its_row() -> None:
    part = Partition()
    part.ingest(*(change(f"t{i}/$TaskOutput/a", i + 1) for i in range(4)))
    steps = fold_steps(part, "r1")
    assert [next(steps) for _ in range(3)] == ["round", "task U|t0", "task U|t1"]  # then the instance dies
    assert part.rows[ROUND]["TasksDelta"] == 2
    check(part)
    resumed = fold_all(part, "ignored: the round in progress is resumed")
    assert resumed == ["task U|t2", "task U|t3", "job", "delete S|d|000001", "done"]
    assert part.rows[COUNTER]["LastFold"] == "r1" and part.rows[COUNTER]["Tasks"] == 4
    # Dying after S|00 is stamped leaves only the deletions to do.
    part.ingest(change("t0/$TaskOutput/a", 9, deleted=True))
    steps = fold_steps(part, "r2")
    assert [next(steps) for _ in range(3)] == ["round", "task U|t0", "job"]
    check(part)
    assert fold_all(part, "r3") == ["delete S|d|000002", "done"]
    assert part.rows[COUNTER]["Tasks"] == 3


ACTIONS = st.lists(
    st.one_of(
        st.lists(st.tuples(st.sampled_from([None, "t1", "t2", "T2", "t3"]), st.integers(0, 2), st.booleans(), st.integers(0, 9)),
                 min_size=1, max_size=5),
        st.just("step"),
        st.just("crash"),
    ),
    max_size=40,
)


@hsettings(max_examples=200, deadline=None)
@given(ACTIONS, st.sampled_from([Limits(), Limits(max_outputs_per_task=2), Limits(max_outputs=5, max_outputs_per_task=1)]))
def test_usage_is_exact_whatever_writes_folds_and_crashes_interleave(actions: list, limits: Limits) -> None:
    part = Partition()
    fold: Iterator[str] | None = None
    rounds = seq = 0
    for action in actions:
        if action == "crash":
            fold = None  # the round row stays; the next fold resumes it
        elif action == "step":
            if fold is None:
                rounds += 1
                fold = fold_steps(part, f"r{rounds}")
            if next(fold, None) is None:
                fold = None
        else:
            events = []
            for task, n, deleted, size in action:
                seq += 1
                events.append(change(f"{task}/$TaskOutput/f{n}" if task else f"$JobOutput/f{n}", seq, size=size, deleted=deleted))
            deliver(part, events, limits=limits)
        check(part)
        if limits.max_outputs_per_task:
            assert all(u.outputs <= limits.max_outputs_per_task for u in truth(part.rows)[1].values())
    while fold_all(part, f"final-{rounds}"):
        pass
    # Folded to the end: the counters alone hold the job's usage, the task rows each task's.
    job, tasks = truth(part.rows)
    assert [k for k in part.rows if k.startswith(keys.shard_prefix()) and k != keys.escrow_key("writer-a")] == (
        [COUNTER] if seq else [])
    assert Usage.of(part.rows.get(COUNTER)) == job
    assert all(Usage.of(part.rows.get(t)) == u for t, u in tasks.items())
