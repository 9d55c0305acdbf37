"""Planning one batch transaction (shared.domain.planning), in process: the rows a chunk of changes
writes, and what the job's usage reads after it.

``Partition`` stands in for one job's Table partition: it applies a plan the way the store does
(create only when absent, replace only on the ETag that was read, each row once per batch) and
gives the next plan what the ingest loop would read (output rows, the writer's escrow, the tasks'
exact usage and guards), so a test can deliver events one after another and look at the outcome.

Usage is read the way readers do (``JobView``: counters plus unfolded deltas), and checked against
``truth``: what the output rows themselves say, counted without any of the ledger's arithmetic.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from shared.domain import keys
from shared.domain.conventions import parse_blob_path
from shared.domain.events import BlobAction
from shared.domain.ledger import Delta, Escrow, JobView, TaskPart
from shared.domain.planning import (
    MAX_BATCH_OPERATIONS,
    IngestReport,
    Op,
    Operation,
    Plan,
    admission_base,
    chunk_changes,
    guard,
    is_stale,
    plan_chunk,
)
from shared.domain.quotas import Limits, RejectReason
from shared.domain.rows import DELETED, LIVE, REJECTED, ROW_STATE, Change, Entity, Int64, Usage, output_entity

CONTAINER = "job-planning"
WRITER = "writer-a"
ESCROW = keys.escrow_key(WRITER)
COUNTER = keys.counter_key()
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
NOW = T0 + timedelta(hours=1)
NO_LIMITS = Limits()
#: Table storage: a string property holds at most 64 KiB, i.e. 32,768 UTF-16 units.
MAX_STRING_UNITS = 32 * 1024


def change(name: str, seq: int, *, size: int = 100, deleted: bool = False, at: int | None = None) -> Change:
    """The newest event of blob ``name``: a create of ``size`` bytes, or a delete."""
    output = parse_blob_path(name)
    assert output is not None, name
    return Change(
        container=CONTAINER,
        row_key=keys.output_key(output.kind, output.path, output.task_id),
        output=output,
        action=BlobAction.DELETED if deleted else BlobAction.CREATED,
        sequencer=f"{seq:032d}",
        event_time=T0 + timedelta(seconds=seq if at is None else at),
        size=0 if deleted else size,
    )


def truth(rows: dict[str, Entity]) -> tuple[Usage, dict[str, Usage]]:
    """The job's and each task's usage, counted from the output rows alone."""
    job = Usage()
    tasks: dict[str, Usage] = {}
    for key, row in rows.items():
        if not key.startswith((keys.JOB_OUTPUT + "|", keys.TASK_OUTPUT + "|")):
            continue
        size = int(row["Size"])
        counted = [job]
        if row["TaskId"]:
            counted.append(tasks.setdefault(keys.task_usage_key(row["TaskId"]), Usage()))
        for usage in counted:
            if row["State"] == LIVE:
                usage.outputs += 1
                usage.bytes += size
                kind = usage.kinds.setdefault(row["Kind"], [0, 0])
                kind[0] += 1
                kind[1] += size
            elif row["State"] == REJECTED:
                usage.rejected_outputs += 1
                usage.rejected_bytes += size
    job.tasks = sum(1 for usage in tasks.values() if usage.outputs > 0)
    return job, tasks


class Partition:
    """One job's rows, changed only through plans (and test set-up), as the store applies them."""

    def __init__(self) -> None:
        self.rows: dict[str, Entity] = {}
        self._etags = 0
        self._deltas = 0
        self._granted: Limits | None = None

    # -- the store -------------------------------------------------------------------------

    def put(self, entity: Entity) -> None:
        self._etags += 1
        self.rows[entity["RowKey"]] = {**entity, "__etag": f'W/"{self._etags}"'}

    def delete(self, row_key: str) -> None:
        del self.rows[row_key]

    def apply(self, plan: Plan) -> None:
        assert 0 < len(plan.operations) <= MAX_BATCH_OPERATIONS
        keys_written = [op.entity["RowKey"] for op in plan.operations]
        assert len(keys_written) == len(set(keys_written)), "a batch may touch each row once"
        for op in plan.operations:
            key = op.entity["RowKey"]
            if op.op is Op.CREATE:
                assert key not in self.rows, f"create of existing row {key}"
            else:
                assert op.op is Op.REPLACE, op
                assert key in self.rows and self.rows[key]["__etag"] == op.etag, f"replace of {key} on a stale ETag"
        for op in plan.operations:
            self.put(op.entity)

    # -- what the ingest loop reads --------------------------------------------------------

    def grant(self, outputs: int, size: int) -> None:
        """Set this writer's escrow (what a grant would write)."""
        self.put(Escrow(WRITER).entity(outputs, size, NOW))

    def _grant_headroom(self, limits: Limits) -> None:
        """The only writer holds all the headroom: the limit less the usage."""
        usage = self.usage
        self.grant(limits.max_outputs - usage.outputs if limits.max_outputs else 0,
                   limits.max_bytes - usage.bytes if limits.max_bytes else 0)
        self._granted = limits

    def plan(self, changes: Sequence[Change], *, limits: Limits = NO_LIMITS, grant: bool = True) -> Plan:
        allowance: Escrow | None = None
        tasks: dict[str, Usage] | None = None
        guards: list[Operation] = []
        if limits.limits_job:
            if grant and self._granted != limits:
                self._grant_headroom(limits)
            allowance = Escrow.of(self.rows[ESCROW]) if ESCROW in self.rows else Escrow(WRITER)
        else:
            self._granted = None
        if limits.max_outputs_per_task:
            view = self.view()
            task_rows = sorted({c.task_row for c in changes if c.task_row})
            tasks = {t: view.task_usage(t, self.rows.get(t)) for t in task_rows}
            guards = [guard(t, self.rows.get(t)) for t in task_rows]
        self._deltas += 1
        return plan_chunk(
            changes,
            rows={c.row_key: self._row_state(c.row_key) for c in changes if c.row_key in self.rows},
            limits=limits,
            now=NOW,
            delta_key=keys.delta_key(f"{self._deltas:06d}"),
            allowance=allowance,
            tasks=tasks,
            guards=guards,
        )

    def _row_state(self, row_key: str) -> Entity:
        """What the ingest loop selects of an output row (``ROW_STATE``) and its ETag."""
        row = self.rows[row_key]
        return {k: row[k] for k in (*ROW_STATE, "__etag") if k in row}

    def ingest(self, *changes: Change, limits: Limits = NO_LIMITS) -> Plan:
        plan = self.plan(changes, limits=limits)
        if plan.operations:
            self.apply(plan)
        return plan

    # -- what readers see ------------------------------------------------------------------

    def view(self) -> JobView:
        return JobView.of(row for key, row in sorted(self.rows.items()) if key.startswith(keys.shard_prefix()))

    @property
    def usage(self) -> Usage:
        view = self.view()
        return view.usage({t: self.rows[t] for t in view.pending_tasks() if t in self.rows})

    def task(self, task_id: str) -> Usage:
        key = keys.task_usage_key(task_id)
        return self.view().task_usage(key, self.rows.get(key))

    @property
    def escrow(self) -> tuple[int, int]:
        row = self.rows[ESCROW]
        return row["LeftOutputs"], row["LeftBytes"]

    def output(self, name: str) -> Entity:
        output = parse_blob_path(name)
        assert output is not None
        return self.rows[keys.output_key(output.kind, output.path, output.task_id)]

    def live(self) -> dict[str, int]:
        """Blob name -> size of every live output row: what a listing would return."""
        return {r["BlobName"]: int(r["Size"]) for r in self.rows.values() if r.get("State") == LIVE}

    def deltas(self) -> list[Delta]:
        return [Delta.of(r) for k, r in sorted(self.rows.items()) if k.startswith(keys.delta_prefix())]


def counts(report: IngestReport) -> tuple[int, int, int]:
    return report.indexed, report.unchanged, report.rejected


def usage_of(kind: str, outputs: int, size: int, **rest: int) -> Usage:
    return Usage(outputs=outputs, bytes=size, kinds={kind: [outputs, size]} if (outputs, size) != (0, 0) else {}, **rest)


def written(plan: Plan) -> list[tuple[Op, str]]:
    return [(op.op, op.entity["RowKey"]) for op in plan.operations]


def deliver(part: Partition, events: Iterable[Change], *, limits: Limits = NO_LIMITS) -> None:
    """One delivery as the indexer handles it: the newest event per blob, cut into chunks."""
    latest: dict[str, Change] = {}
    for c in events:
        if c.row_key not in latest or c.sequencer > latest[c.row_key].sequencer:
            latest[c.row_key] = c
    for chunk in chunk_changes(list(latest.values()), guard_tasks=bool(limits.max_outputs_per_task)):
        part.ingest(*chunk, limits=limits)


# --- one create ------------------------------------------------------------------------------


def test_a_new_task_output_creates_its_row_and_one_delta_and_no_task_or_counter_row() -> None:
    part = Partition()
    plan = part.ingest(change("t1/$TaskOutput/a.txt", 1, size=100))
    assert counts(plan.report) == (1, 0, 0)
    delta_key = keys.delta_key("000001")
    assert written(plan) == [(Op.CREATE, keys.task_output_key("TaskOutput", "t1", "a.txt")), (Op.CREATE, delta_key)]
    row = part.output("t1/$TaskOutput/a.txt")
    assert (row["State"], row["Seq"], row["Size"], row["TaskId"], row["Kind"], row["Path"], row["IndexedAt"]) == (
        LIVE, f"{1:032d}", 100, "t1", "TaskOutput", "a.txt", NOW)
    assert isinstance(row["Size"], Int64) and "Reason" not in row
    # The delta carries the job's change and the task's part; the task count is not its business.
    assert plan.delta is not None and plan.delta.key == delta_key
    assert plan.delta.job == usage_of("TaskOutput", 1, 100)
    assert plan.delta.tasks == {keys.task_usage_key("t1"): TaskPart("t1", usage_of("TaskOutput", 1, 100))}
    stored = part.rows[delta_key]
    assert (stored["Outputs"], stored["Bytes"], stored["Tasks"], stored["LastIndexedAt"]) == (1, 100, 0, NOW)
    assert isinstance(stored["Bytes"], Int64)
    assert keys.task_usage_key("t1") not in part.rows and COUNTER not in part.rows
    # Readers count the task from the pending part.
    assert part.usage == usage_of("TaskOutput", 1, 100, tasks=1)
    assert part.task("t1") == usage_of("TaskOutput", 1, 100)
    assert plan.crossings == {}


def test_a_job_output_has_no_task_part() -> None:
    part = Partition()
    plan = part.ingest(change("$JobOutput/movie.mp4", 1, size=5000))
    assert written(plan) == [(Op.CREATE, keys.job_output_key("JobOutput", "movie.mp4")), (Op.CREATE, keys.delta_key("000001"))]
    assert plan.delta is not None and plan.delta.tasks == {}
    assert part.usage == usage_of("JobOutput", 1, 5000)
    assert part.output("$JobOutput/movie.mp4")["TaskId"] == ""


def test_the_delta_sums_a_chunks_changes_per_job_and_per_task() -> None:
    part = Partition()
    plan = part.ingest(
        change("t1/$TaskOutput/a", 1, size=10), change("t1/$TaskLog/b", 2, size=20),
        change("t2/$TaskOutput/c", 3, size=40), change("$JobOutput/d", 4, size=80),
    )
    assert plan.delta is not None
    assert plan.delta.job == Usage(outputs=4, bytes=150, kinds={"TaskOutput": [2, 50], "TaskLog": [1, 20], "JobOutput": [1, 80]})
    assert plan.delta.tasks == {
        keys.task_usage_key("t1"): TaskPart("t1", Usage(outputs=2, bytes=30, kinds={"TaskOutput": [1, 10], "TaskLog": [1, 20]})),
        keys.task_usage_key("t2"): TaskPart("t2", usage_of("TaskOutput", 1, 40)),
    }
    assert part.usage.tasks == 2


# --- duplicates and order --------------------------------------------------------------------


def test_a_duplicate_event_is_unchanged_and_writes_nothing() -> None:
    part = Partition()
    part.ingest(change("t1/$TaskOutput/a.txt", 7, size=100))
    before = {k: dict(v) for k, v in part.rows.items()}
    plan = part.ingest(change("t1/$TaskOutput/a.txt", 7, size=100))
    assert counts(plan.report) == (0, 1, 0)
    assert plan.operations == [] and plan.delta is None
    assert part.rows == before


def test_an_older_sequencer_never_overwrites_a_newer_row() -> None:
    part = Partition()
    part.ingest(change("t1/$TaskOutput/a.txt", 50, size=100))
    late_create = part.ingest(change("t1/$TaskOutput/a.txt", 49, size=999))
    late_delete = part.ingest(change("t1/$TaskOutput/a.txt", 10, deleted=True))
    assert counts(late_create.report) == counts(late_delete.report) == (0, 1, 0)
    assert late_create.operations == late_delete.operations == []
    assert late_create.delta is None and late_delete.delta is None
    row = part.output("t1/$TaskOutput/a.txt")
    assert (row["State"], row["Seq"], row["Size"]) == (LIVE, f"{50:032d}", 100)
    assert len(part.deltas()) == 1
    assert part.usage == usage_of("TaskOutput", 1, 100, tasks=1)


def test_sequencers_compare_as_the_fixed_width_strings_azure_sends() -> None:
    old = {"Seq": "0000000000000000000000000000000a", "State": LIVE}
    newer = replace(change("t1/$TaskOutput/a.txt", 1), sequencer="0000000000000000000000000000000b")
    assert not is_stale(newer, old)
    assert is_stale(newer, {"Seq": "0000000000000000000000000000000c", "State": LIVE})
    assert is_stale(newer, {"Seq": "0000000000000000000000000000000b", "State": LIVE})


HISTORY = [
    change("t1/$TaskOutput/a.txt", 1, size=10),
    change("t1/$TaskOutput/a.txt", 2, size=20),
    change("t1/$TaskOutput/a.txt", 3, deleted=True),
    change("t1/$TaskOutput/a.txt", 4, size=40),
    change("t2/$TaskLog/b.txt", 5, size=5),
    change("t2/$TaskLog/b.txt", 6, deleted=True),
    change("$JobOutput/c.bin", 7, size=70),
    change("T1/$TaskOutput/d.txt", 8, size=8),  # task t1 again, in another case
]


@hsettings(max_examples=150, deadline=None)
@given(st.permutations(HISTORY * 2), st.lists(st.integers(1, 5), min_size=16, max_size=16))
def test_any_delivery_order_ends_in_the_state_of_the_newest_events(deliveries: list[Change], cuts: list[int]) -> None:
    part = Partition()
    start = 0
    for size in cuts:
        deliver(part, deliveries[start : start + size])
        start += size
        assert part.usage == truth(part.rows)[0]
    deliver(part, deliveries[start:])
    assert part.live() == {"t1/$TaskOutput/a.txt": 40, "$JobOutput/c.bin": 70, "T1/$TaskOutput/d.txt": 8}
    assert part.output("t2/$TaskLog/b.txt")["State"] == DELETED
    assert part.usage == Usage(outputs=3, bytes=118, tasks=1, kinds={"TaskOutput": [2, 48], "JobOutput": [1, 70]})
    assert part.task("t1") == usage_of("TaskOutput", 2, 48)
    assert part.task("t2") == Usage()
    assert all(d.job.tasks == 0 for d in part.deltas())  # planning never moves the task count


# --- deletes ---------------------------------------------------------------------------------


def test_a_delete_leaves_a_tombstone_and_takes_the_output_out_of_the_deltas_job_and_task_parts() -> None:
    part = Partition()
    part.ingest(change("t1/$TaskOutput/a.txt", 1, size=100), change("t1/$TaskOutput/b.txt", 2, size=30))
    assert part.usage == usage_of("TaskOutput", 2, 130, tasks=1)
    row_etag = part.output("t1/$TaskOutput/a.txt")["__etag"]
    plan = part.ingest(change("t1/$TaskOutput/a.txt", 3, deleted=True))
    assert counts(plan.report) == (1, 0, 0)
    assert written(plan) == [(Op.REPLACE, keys.task_output_key("TaskOutput", "t1", "a.txt")), (Op.CREATE, keys.delta_key("000002"))]
    assert plan.operations[0].etag == row_etag
    assert plan.delta is not None
    assert plan.delta.job == Usage(outputs=-1, bytes=-100, kinds={"TaskOutput": [-1, -100]})
    assert plan.delta.tasks == {keys.task_usage_key("t1"): TaskPart("t1", Usage(outputs=-1, bytes=-100, kinds={"TaskOutput": [-1, -100]}))}
    tombstone = part.output("t1/$TaskOutput/a.txt")
    assert (tombstone["State"], tombstone["Seq"], tombstone["Size"]) == (DELETED, f"{3:032d}", 0)
    assert part.live() == {"t1/$TaskOutput/b.txt": 30}
    assert part.usage == usage_of("TaskOutput", 1, 30, tasks=1)
    assert part.task("t1") == usage_of("TaskOutput", 1, 30)
    # The tombstone keeps a late create of the deleted version out.
    assert counts(part.ingest(change("t1/$TaskOutput/a.txt", 2, size=100)).report) == (0, 1, 0)
    assert part.live() == {"t1/$TaskOutput/b.txt": 30}


def test_a_delete_of_a_never_seen_blob_records_a_tombstone_and_counts_nothing() -> None:
    part = Partition()
    plan = part.ingest(change("t1/$TaskOutput/a.txt", 5, deleted=True))
    assert plan.operations[0].op is Op.CREATE
    assert part.output("t1/$TaskOutput/a.txt")["State"] == DELETED
    assert plan.delta is not None and plan.delta.job == Usage()
    assert all(p.usage == Usage() for p in plan.delta.tasks.values())
    assert part.usage == Usage()
    assert part.task("t1") == Usage()
    # The create it overtook arrives late and stays out.
    assert counts(part.ingest(change("t1/$TaskOutput/a.txt", 4, size=10)).report) == (0, 1, 0)
    assert part.live() == {}


def test_deleting_the_last_output_of_a_kind_drops_the_kind() -> None:
    part = Partition()
    part.ingest(change("$JobOutput/a", 1, size=10), change("$JobPreview/b", 2, size=20))
    plan = part.ingest(change("$JobPreview/b", 3, deleted=True))
    assert plan.delta is not None and plan.delta.job.kinds == {"JobPreview": [-1, -20]}
    assert part.usage.kinds == {"JobOutput": [1, 10]}


def test_a_task_losing_its_last_output_leaves_the_task_count() -> None:
    part = Partition()
    part.ingest(change("t1/$TaskOutput/a", 1), change("t2/$TaskOutput/b", 2))
    assert part.usage.tasks == 2
    part.ingest(change("t1/$TaskOutput/a", 3, deleted=True))
    assert part.usage.tasks == 1
    part.ingest(change("t1/$TaskOutput/c", 4, size=0))  # an empty blob is an output too
    assert part.usage.tasks == 2


# --- overwrites ------------------------------------------------------------------------------


@pytest.mark.parametrize(("first", "second"), [(100, 250), (250, 100), (100, 100), (0, 7), (7, 0)])
def test_an_overwrite_changes_bytes_by_the_difference_and_not_the_count(first: int, second: int) -> None:
    part = Partition()
    part.ingest(change("t1/$TaskOutput/a.txt", 1, size=first), change("$JobOutput/other", 2, size=1000))
    etag = part.output("t1/$TaskOutput/a.txt")["__etag"]
    before = part.usage
    plan = part.ingest(change("t1/$TaskOutput/a.txt", 3, size=second))
    assert counts(plan.report) == (1, 0, 0)
    moved = Usage(bytes=second - first, kinds={"TaskOutput": [0, second - first]} if second != first else {})
    assert plan.delta is not None and plan.delta.job == moved
    assert plan.delta.tasks[keys.task_usage_key("t1")].usage == moved
    after = part.usage
    assert after.outputs == before.outputs == 2
    assert after.bytes - before.bytes == second - first
    assert after.tasks == 1
    assert after.kinds["TaskOutput"] == [1, second]
    assert part.task("t1") == usage_of("TaskOutput", 1, second)
    # The output is replaced on the ETag it was read with, not blindly upserted.
    assert (plan.operations[0].op, plan.operations[0].etag) == (Op.REPLACE, etag)


# --- quotas ----------------------------------------------------------------------------------


def test_a_rejected_output_counts_under_rejections_and_records_the_crossing() -> None:
    part = Partition()
    plan = part.ingest(*(change(f"t{i % 2}/$TaskOutput/f{i}", i + 1, size=10) for i in range(5)), limits=Limits(max_outputs=3))
    assert counts(plan.report) == (3, 0, 2)
    # Changes are decided in event-time order: the first three fit, the fourth crossed the limit.
    assert plan.crossings == {RejectReason.MAX_OUTPUTS: "t1/$TaskOutput/f3"}
    assert plan.delta is not None
    assert plan.delta.job == Usage(outputs=3, bytes=30, rejected_outputs=2, rejected_bytes=20, kinds={"TaskOutput": [3, 30]})
    assert part.usage == Usage(outputs=3, bytes=30, rejected_outputs=2, rejected_bytes=20, tasks=2, kinds={"TaskOutput": [3, 30]})
    rejected = part.output("t0/$TaskOutput/f4")
    assert (rejected["State"], rejected["Reason"], rejected["Size"]) == (REJECTED, "maxOutputs", 10)
    assert set(part.live()) == {"t0/$TaskOutput/f0", "t1/$TaskOutput/f1", "t0/$TaskOutput/f2"}
    # A rejected output is not a task's output either.
    assert (part.task("t0").outputs, part.task("t0").rejected_outputs, part.task("t0").rejected_bytes) == (2, 1, 10)
    # The escrow keeps the allowance less the delta, in both dimensions (bytes are unlimited here).
    assert part.escrow == (0, 0)  # bytes are not limited: the escrow holds none


def test_only_the_first_blob_to_cross_each_limit_is_recorded() -> None:
    part = Partition()
    plan = part.ingest(
        change("$JobOutput/a", 1, size=60), change("$JobOutput/b", 2, size=60), change("$JobOutput/b2", 3, size=60),
        change("t1/$TaskOutput/c", 4, size=1), change("t1/$TaskOutput/d", 5, size=1), change("t1/$TaskOutput/e", 6, size=1),
        limits=Limits(max_bytes=100, max_outputs_per_task=1),
    )
    assert plan.crossings == {RejectReason.MAX_BYTES: "$JobOutput/b", RejectReason.MAX_OUTPUTS_PER_TASK: "t1/$TaskOutput/d"}
    assert counts(plan.report) == (2, 0, 4)
    assert part.output("t1/$TaskOutput/e")["Reason"] == "maxOutputsPerTask"


def test_an_overwrite_that_grows_past_max_bytes_is_rejected_and_uncounted_and_its_delete_clears_it() -> None:
    part = Partition()
    limits = Limits(max_bytes=1000)
    part.ingest(change("$JobOutput/log.txt", 1, size=400), limits=limits)
    part.ingest(change("$JobOutput/log.txt", 2, size=900), limits=limits)
    assert (part.usage.outputs, part.usage.bytes, part.escrow[1]) == (1, 900, 100)
    plan = part.ingest(change("$JobOutput/log.txt", 3, size=1200), limits=limits)
    assert counts(plan.report) == (0, 0, 1)
    assert plan.crossings == {RejectReason.MAX_BYTES: "$JobOutput/log.txt"}
    assert part.usage == Usage(rejected_outputs=1, rejected_bytes=1200)
    assert part.escrow[1] == 1000  # the old version's bytes went back to the allowance
    part.ingest(change("$JobOutput/log.txt", 4, deleted=True), limits=limits)
    assert part.usage == Usage()
    assert part.escrow[1] == 1000


def test_an_overwrite_is_admitted_against_usage_without_its_old_version() -> None:
    part = Partition()
    limits = Limits(max_outputs=1, max_bytes=100)
    part.ingest(change("$JobOutput/a", 1, size=100), limits=limits)
    assert part.escrow == (0, 0)
    # Full on both limits (nothing left in the allowance), yet replacing the one output fits.
    plan = part.ingest(change("$JobOutput/a", 2, size=100), limits=limits)
    assert counts(plan.report) == (1, 0, 0)
    assert (part.usage.outputs, part.usage.bytes) == (1, 100)
    assert part.escrow == (0, 0)
    plan = part.ingest(change("$JobOutput/a", 3, size=60), limits=limits)
    assert counts(plan.report) == (1, 0, 0)
    assert part.escrow == (0, 40)


def test_admission_base_leaves_exactly_the_allowance() -> None:
    limits = Limits(max_outputs=10, max_bytes=1000)
    assert admission_base(limits, Escrow(WRITER, 3, 200)) == Usage(outputs=7, bytes=800)
    assert admission_base(limits, Escrow(WRITER, 0, 0)) == Usage(outputs=10, bytes=1000)
    assert admission_base(limits, None) == Usage()


def test_an_allowance_of_n_outputs_admits_exactly_n_creates_and_the_escrow_keeps_what_is_left() -> None:
    part = Partition()
    part.grant(3, 1000)  # other writers hold the rest of the job's headroom
    etag = part.rows[ESCROW]["__etag"]
    plan = part.plan([change(f"$JobOutput/f{i}", i + 1, size=10) for i in range(5)],
                     limits=Limits(max_outputs=100, max_bytes=10_000), grant=False)
    assert counts(plan.report) == (3, 0, 2)
    assert plan.crossings == {RejectReason.MAX_OUTPUTS: "$JobOutput/f3"}
    assert [op.entity["Reason"] for op in plan.operations[3:5]] == ["maxOutputs"] * 2
    assert written(plan)[-2:] == [(Op.REPLACE, ESCROW), (Op.CREATE, keys.delta_key("000001"))]
    escrow = plan.operations[-2]
    assert escrow.etag == etag
    assert escrow.entity == {"RowKey": ESCROW, "LeftOutputs": 0, "LeftBytes": 970, "At": NOW}
    part.apply(plan)
    assert part.usage.outputs == 3 and part.escrow == (0, 970)


def test_an_allowance_of_bytes_admits_what_it_covers() -> None:
    part = Partition()
    part.grant(10, 250)
    plan = part.plan([change(f"$JobOutput/f{i}", i + 1, size=100) for i in range(4)],
                     limits=Limits(max_outputs=100, max_bytes=10_000), grant=False)
    assert counts(plan.report) == (2, 0, 2)
    assert plan.crossings == {RejectReason.MAX_BYTES: "$JobOutput/f2"}
    assert plan.operations[-2].entity["LeftOutputs"] == 8 and plan.operations[-2].entity["LeftBytes"] == 50


def test_an_allowance_whose_row_is_absent_is_created() -> None:
    part = Partition()
    plan = plan_chunk([change("$JobOutput/a", 1, size=5)], rows={}, limits=Limits(max_outputs=10), now=NOW,
                      delta_key=keys.delta_key("x"), allowance=Escrow(WRITER, 4, 0))
    assert written(plan)[-2] == (Op.CREATE, ESCROW)
    assert plan.operations[-2].entity["LeftOutputs"] == 3
    part.apply(plan)


def test_a_delete_returns_its_output_to_the_allowance() -> None:
    part = Partition()
    limits = Limits(max_outputs=2, max_bytes=1000)
    part.ingest(change("$JobOutput/a", 1, size=300), change("$JobOutput/b", 2, size=200), limits=limits)
    assert part.escrow == (0, 500)
    assert counts(part.ingest(change("$JobOutput/c", 3), limits=limits).report) == (0, 0, 1)
    part.ingest(change("$JobOutput/a", 4, deleted=True), limits=limits)
    assert part.escrow == (1, 800)
    assert counts(part.ingest(change("$JobOutput/d", 5, size=800), limits=limits).report) == (1, 0, 0)
    assert part.escrow == (0, 0)
    assert part.usage == usage_of("JobOutput", 2, 1000, rejected_outputs=1, rejected_bytes=100)


def test_per_task_limits_never_reject_job_outputs() -> None:
    part = Partition()
    plan = part.ingest(*(change(f"$JobOutput/j{i}", i + 1) for i in range(4)), limits=Limits(max_outputs_per_task=1))
    assert counts(plan.report) == (4, 0, 0)


def test_per_task_limits_admit_against_the_tasks_usage_given_and_leave_it_unchanged() -> None:
    tasks = {keys.task_usage_key("t1"): usage_of("TaskOutput", 2, 20)}
    plan = plan_chunk(
        [change("t1/$TaskOutput/a", 1), change("t1/$TaskOutput/b", 2), change("t2/$TaskOutput/c", 3)],
        rows={}, limits=Limits(max_outputs_per_task=3), now=NOW, delta_key=keys.delta_key("x"), tasks=tasks,
    )
    assert counts(plan.report) == (2, 0, 1)
    assert plan.crossings == {RejectReason.MAX_OUTPUTS_PER_TASK: "t1/$TaskOutput/b"}
    assert tasks == {keys.task_usage_key("t1"): usage_of("TaskOutput", 2, 20)}  # the caller may plan again with it


def test_per_task_limits_count_what_is_already_folded_and_pending() -> None:
    part = Partition()
    limits = Limits(max_outputs_per_task=2)
    part.put({"RowKey": keys.task_usage_key("t1"), "TaskId": "t1", **usage_of("TaskOutput", 1, 5).properties()})
    part.ingest(change("t1/$TaskOutput/a", 1), limits=limits)  # a pending delta, on top of the folded row
    assert part.task("t1").outputs == 2
    plan = part.ingest(change("t1/$TaskOutput/b", 2), limits=limits)
    assert counts(plan.report) == (0, 0, 1)
    # Its overwrite, though, fits.
    assert counts(part.ingest(change("t1/$TaskOutput/a", 3, size=1), limits=limits).report) == (1, 0, 0)


def test_guards_are_appended_unchanged_between_the_outputs_and_the_delta() -> None:
    row = {"RowKey": keys.task_usage_key("t2"), "PartitionKey": CONTAINER, "TaskId": "t2", "Outputs": 1, "__etag": 'W/"9"'}
    guards = [guard(keys.task_usage_key("t1"), None), guard(keys.task_usage_key("t2"), row)]
    assert guards[0] == Operation(Op.CREATE, {"RowKey": keys.task_usage_key("t1")})
    assert guards[1] == Operation(Op.REPLACE, {"RowKey": keys.task_usage_key("t2"), "TaskId": "t2", "Outputs": 1}, 'W/"9"')
    assert guard("U|x", None, {"TaskId": "x"}) == Operation(Op.CREATE, {"RowKey": "U|x", "TaskId": "x"})
    plan = plan_chunk(
        [change("t1/$TaskOutput/a", 1), change("t2/$TaskOutput/b", 2)], rows={}, limits=Limits(max_outputs=9, max_outputs_per_task=5),
        now=NOW, delta_key=keys.delta_key("x"), allowance=Escrow(WRITER, 9, 0), tasks={}, guards=guards,
    )
    assert plan.operations[2] is guards[0] and plan.operations[3] is guards[1]
    assert [key for _, key in written(plan)] == [
        keys.task_output_key("TaskOutput", "t1", "a"), keys.task_output_key("TaskOutput", "t2", "b"),
        keys.task_usage_key("t1"), keys.task_usage_key("t2"), ESCROW, keys.delta_key("x"),
    ]


def test_a_chunk_that_changes_nothing_writes_no_delta_no_escrow_and_no_guard() -> None:
    part = Partition()
    limits = Limits(max_outputs=5, max_outputs_per_task=5)
    part.ingest(change("t1/$TaskOutput/a", 3), limits=limits)
    before = {k: dict(v) for k, v in part.rows.items()}
    plan = part.plan([change("t1/$TaskOutput/a", 3), change("t1/$TaskOutput/a", 2)], limits=limits)
    assert counts(plan.report) == (0, 2, 0)
    assert plan.operations == [] and plan.delta is None and plan.crossings == {}
    assert part.rows == before


def test_limits_of_zero_admit_everything() -> None:
    part = Partition()
    plan = part.ingest(*(change(f"t1/$TaskOutput/f{i}", i + 1, size=10**12) for i in range(50)), limits=Limits(0, 0, 0))
    assert counts(plan.report) == (50, 0, 0)
    assert part.usage.bytes == 50 * 10**12
    assert ESCROW not in part.rows and not any(op.entity["RowKey"].startswith("U|") for op in plan.operations)


LIMITS = st.builds(Limits, st.sampled_from([0, 1, 3, 6]), st.sampled_from([0, 50, 150]), st.sampled_from([0, 1, 2]))
EVENTS = st.lists(
    st.tuples(st.sampled_from([None, "t1", "T1", "t2", "t3"]), st.integers(0, 3), st.booleans(), st.integers(0, 60)),
    min_size=1, max_size=12,
)


@hsettings(max_examples=200, deadline=None)
@given(LIMITS, st.lists(EVENTS, min_size=1, max_size=6))
def test_limits_hold_and_usage_plus_escrow_is_the_limit_after_any_deliveries(limits: Limits, deliveries: list[list[tuple]]) -> None:
    part = Partition()
    seq = 0
    for delivery in deliveries:
        events = []
        for task, n, deleted, size in delivery:
            seq += 1
            events.append(change(f"{task}/$TaskOutput/f{n}" if task else f"$JobOutput/f{n}", seq, size=size, deleted=deleted))
        deliver(part, events, limits=limits)
        job, tasks = truth(part.rows)
        assert part.usage == job
        assert all(part.view().task_usage(t, part.rows.get(t)) == usage for t, usage in tasks.items())
        if limits.max_outputs:
            assert job.outputs <= limits.max_outputs and job.outputs + part.escrow[0] == limits.max_outputs
        if limits.max_bytes:
            assert job.bytes <= limits.max_bytes and job.bytes + part.escrow[1] == limits.max_bytes
        if limits.max_outputs_per_task:
            assert all(usage.outputs <= limits.max_outputs_per_task for usage in tasks.values())
    assert all(d.job.tasks == 0 for d in part.deltas())


# --- re-admissions ---------------------------------------------------------------------------


def test_a_readmission_applies_only_while_the_rejected_row_is_the_current_one() -> None:
    part = Partition()
    part.ingest(change("$JobOutput/a", 1, size=10), change("$JobOutput/b", 2, size=20), limits=Limits(max_outputs=1))
    rejected = part.output("$JobOutput/b")
    assert rejected["State"] == REJECTED
    readmit = Change.from_row(CONTAINER, rejected, now=NOW, readmit=True)
    assert (readmit.sequencer, readmit.size, readmit.output.blob_name) == (rejected["Seq"], 20, "$JobOutput/b")
    assert not is_stale(readmit, rejected)
    # Once the limit is lifted, the same sequencer re-admits it: rejections move back to usage.
    plan = part.ingest(readmit, limits=Limits())
    assert counts(plan.report) == (1, 0, 0)
    assert plan.delta is not None and plan.delta.job == Usage(outputs=1, bytes=20, rejected_outputs=-1, rejected_bytes=-20,
                                                              kinds={"JobOutput": [1, 20]})
    assert part.output("$JobOutput/b")["State"] == LIVE and "Reason" not in part.output("$JobOutput/b")
    assert part.usage == usage_of("JobOutput", 2, 30)
    # A second re-admission of the (now live) row, or one of a row that is gone, changes nothing.
    assert is_stale(readmit, part.output("$JobOutput/b"))
    assert is_stale(readmit, None)
    assert counts(part.ingest(readmit).report) == (0, 1, 0)


def test_a_readmission_after_a_raised_limit_takes_from_the_new_allowance() -> None:
    part = Partition()
    part.ingest(change("$JobOutput/a", 1, size=10), change("$JobOutput/b", 2, size=20), change("$JobOutput/c", 3, size=30),
                limits=Limits(max_outputs=1))
    raised = Limits(max_outputs=2)
    plan = part.ingest(*(Change.from_row(CONTAINER, part.output(n), now=NOW, readmit=True) for n in ("$JobOutput/b", "$JobOutput/c")),
                       limits=raised)
    assert counts(plan.report) == (1, 0, 1)  # oldest first: b fits, c still does not
    assert plan.crossings == {RejectReason.MAX_OUTPUTS: "$JobOutput/c"}
    assert part.escrow[0] == 0
    assert part.usage == usage_of("JobOutput", 2, 30, rejected_outputs=1, rejected_bytes=30)


def test_a_readmission_of_a_row_overwritten_meanwhile_is_stale() -> None:
    part = Partition()
    part.ingest(change("$JobOutput/a", 1), change("$JobOutput/b", 2), limits=Limits(max_outputs=1))
    readmit = Change.from_row(CONTAINER, part.output("$JobOutput/b"), now=NOW, readmit=True)
    part.ingest(change("$JobOutput/b", 3, deleted=True))
    assert is_stale(readmit, part.output("$JobOutput/b"))
    assert part.ingest(readmit).operations == []


def test_a_plain_event_with_the_rejected_rows_sequencer_is_a_duplicate() -> None:
    part = Partition()
    part.ingest(change("$JobOutput/a", 1), change("$JobOutput/b", 2), limits=Limits(max_outputs=1))
    assert counts(part.ingest(change("$JobOutput/b", 2)).report) == (0, 1, 0)
    assert part.output("$JobOutput/b")["State"] == REJECTED


# --- task IDs --------------------------------------------------------------------------------


def test_task_ids_differing_in_case_are_one_task_but_never_share_an_output_row() -> None:
    assert keys.task_key("Task-1") == keys.task_key("TASK-1") == "task-1"
    assert len({keys.task_output_key("TaskOutput", t, "a") for t in ("Task-1", "TASK-1", "task-1")}) == 3
    part = Partition()
    plan = part.ingest(change("Task-1/$TaskOutput/a", 1), change("task-1/$TaskOutput/b", 2))
    assert plan.delta is not None
    # One part, under the lower-cased row, named by the first change's task ID.
    assert plan.delta.tasks == {"U|task-1": TaskPart("Task-1", usage_of("TaskOutput", 2, 200))}
    assert part.usage.tasks == 1
    assert part.task("TASK-1").outputs == 2
    # The same path under another case is another blob, so another output row.
    plan = part.ingest(change("TASK-1/$TaskOutput/a", 3))
    assert written(plan)[0] == (Op.CREATE, keys.task_output_key("TaskOutput", "TASK-1", "a"))
    assert (part.usage.outputs, part.usage.tasks) == (3, 1)
    # Deleting one of them leaves the other.
    part.ingest(change("TASK-1/$TaskOutput/a", 4, deleted=True))
    assert part.live() == {"Task-1/$TaskOutput/a": 100, "task-1/$TaskOutput/b": 100}
    assert (part.usage.outputs, part.usage.tasks) == (2, 1)


# --- the delta row ---------------------------------------------------------------------------


def test_the_delta_row_round_trips_through_delta_of() -> None:
    part = Partition()
    part.ingest(change("t1/$TaskOutput/a", 1, size=7))
    plan = part.ingest(change("t1/$TaskOutput/a", 2, deleted=True), change("t2/$TaskLog/b", 3, size=9), change("$JobOutput/c", 4, size=11))
    assert plan.delta is not None
    stored = part.rows[plan.delta.key]
    back = Delta.of(stored)
    assert back == replace(plan.delta, etag=stored["__etag"])
    assert back.tasks["U|t1"] == TaskPart("t1", Usage(outputs=-1, bytes=-7, kinds={"TaskOutput": [-1, -7]}))
    assert back.job == Usage(outputs=1, bytes=13, kinds={"TaskOutput": [-1, -7], "TaskLog": [1, 9], "JobOutput": [1, 11]})
    assert back.at == NOW
    assert "Parts0" in stored and "Parts1" not in stored


def test_a_delta_of_job_outputs_only_round_trips_with_no_task_part() -> None:
    delta = Delta(keys.delta_key("j"), usage_of("JobOutput", 1, 3), at=NOW)
    entity = delta.entity()
    assert [name for name in entity if name.startswith("Parts")] == ["Parts0"]
    assert Delta.of(entity) == delta and Delta.of(entity).tasks == {}
    assert Delta.of({k: v for k, v in entity.items() if k != "Parts0"}) == delta


def test_a_large_deltas_parts_are_split_over_parts0_to_n_and_read_back_whole() -> None:
    kind = "Kind-\U0001f39e" * 60  # 12 JSON characters per emoji: ~800 characters per task part
    changes = [change(f"task-{i:03d}/${kind}/out-{i}.bin", i + 1, size=10 * i) for i in range(98)]
    assert len(chunk_changes(changes)) == 1
    plan = Partition().plan(changes)
    assert plan.delta is not None and len(plan.delta.tasks) == 98
    entity = plan.operations[-1].entity
    parts = sorted((name for name in entity if name.startswith("Parts")), key=lambda n: int(n[5:]))
    assert parts == [f"Parts{i}" for i in range(len(parts))] and len(parts) >= 3
    assert all(len(entity[p]) <= 30_000 and keys.utf16_units(entity[p]) <= MAX_STRING_UNITS for p in parts)
    assert len(json.loads("".join(entity[p] for p in parts))) == 98
    back = Delta.of(entity)
    assert back == plan.delta
    assert back.tasks[keys.task_usage_key("task-097")] == TaskPart("task-097", usage_of(kind, 1, 970))


def test_a_delta_of_many_parts_round_trips() -> None:
    delta = Delta(keys.delta_key("big"), Usage(outputs=600, bytes=6000), at=NOW)
    for i in range(600):
        delta.task(f"U|task-{i:04d}", f"Task-{i:04d}").count(LIVE, f"kind-{i % 7}", i, +1)
    entity = delta.entity()
    assert sum(name.startswith("Parts") for name in entity) >= 2
    assert Delta.of(entity) == delta


def test_every_string_property_of_a_delta_row_fits_table_storage() -> None:
    kinds = [f"{i:02d}-" + "k" * 400 for i in range(98)]  # 98 distinct long kinds: ~40K characters of Kinds
    plan = Partition().plan([change(f"${kind}/f", i + 1) for i, kind in enumerate(kinds)])
    entity = plan.operations[-1].entity
    too_long = {name: keys.utf16_units(v) for name, v in entity.items() if isinstance(v, str) and keys.utf16_units(v) > MAX_STRING_UNITS}
    assert too_long == {}


# --- rows and reports ------------------------------------------------------------------------


def test_failed_row_names_the_operation_a_failed_transaction_points_at() -> None:
    plan = Partition().plan([change("t1/$TaskOutput/a", 1)])
    assert plan.failed_row(0) == keys.task_output_key("TaskOutput", "t1", "a")
    assert plan.failed_row(1) == keys.delta_key("000001")
    assert plan.failed_row(2) is None and plan.failed_row(-1) is None and plan.failed_row(None) is None
    limited = Partition().plan([change("t1/$TaskOutput/a", 1)], limits=Limits(max_outputs=5, max_outputs_per_task=5))
    assert [limited.failed_row(i) for i in range(4)] == [
        keys.task_output_key("TaskOutput", "t1", "a"), keys.task_usage_key("t1"), ESCROW, keys.delta_key("000001")]


def test_output_entity_round_trips_through_change_from_row() -> None:
    original = change("t9/$My Kind/deep/er/x y.bin", 12, size=12345)
    row = output_entity(original, LIVE, None, NOW)
    back = Change.from_row(CONTAINER, row, now=NOW)
    assert (back.row_key, back.output, back.sequencer, back.size, back.event_time) == (
        original.row_key, original.output, original.sequencer, 12345, original.event_time)
    assert back.task_row == keys.task_usage_key("t9") and not back.readmit
    assert output_entity(original, REJECTED, RejectReason.MAX_BYTES, NOW)["Reason"] == "maxBytes"


def test_ingest_report_adds_outcomes_and_sums_skips() -> None:
    total = IngestReport(received=10)
    total.add(IngestReport(received=99, indexed=3, unchanged=1, rejected=2))
    part = IngestReport(indexed=1)
    part.skipped.update({"malformed-event": 2, "not-a-job-container": 1})
    total.add(part)
    total.skipped.update({"malformed-event": 1})
    assert total.as_dict() == {
        "received": 10,  # what the delivery held; a part's own count is not added
        "indexed": 4,
        "unchanged": 1,
        "rejected": 2,
        "skipped": 4,
        "skippedByReason": {"malformed-event": 3, "not-a-job-container": 1},
    }
    assert IngestReport().as_dict()["skippedByReason"] == {}


# --- chunking --------------------------------------------------------------------------------


def rows_of(chunk: Sequence[Change], *, guard_tasks: bool) -> int:
    """The most a chunk writes: each output, its delta and escrow, and (guarded) each task row once."""
    return len(chunk) + 2 + (len({c.task_row for c in chunk if c.task_row}) if guard_tasks else 0)


@pytest.mark.parametrize(
    ("names", "guard_tasks", "sizes"),
    [
        ([f"$JobOutput/f{i}" for i in range(250)], False, [98, 98, 54]),
        ([f"$JobOutput/f{i}" for i in range(250)], True, [98, 98, 54]),  # job outputs guard no task row
        ([f"t1/$TaskOutput/f{i}" for i in range(200)], False, [98, 98, 4]),
        ([f"t1/$TaskOutput/f{i}" for i in range(200)], True, [97, 97, 6]),  # + the task row, in each chunk
        ([f"t{i}/$TaskOutput/f" for i in range(150)], False, [98, 52]),
        ([f"t{i}/$TaskOutput/f" for i in range(150)], True, [49, 49, 49, 3]),  # each output brings its task row
        ([f"$JobOutput/f{i}" for i in range(98)], False, [98]),
        ([], True, []),
    ],
)
def test_chunks_fit_a_batch_with_their_delta_escrow_and_guarded_task_rows(names: list[str], guard_tasks: bool, sizes: list[int]) -> None:
    changes = [change(n, i + 1) for i, n in enumerate(names)]
    chunks = chunk_changes(changes, guard_tasks=guard_tasks)
    assert [len(c) for c in chunks] == sizes
    assert all(rows_of(c, guard_tasks=guard_tasks) <= MAX_BATCH_OPERATIONS for c in chunks)
    assert [c for chunk in chunks for c in chunk] == changes


@hsettings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 120)), st.integers(0, 400)), max_size=600), st.booleans())
def test_chunk_changes_never_exceeds_100_operations_and_keeps_each_tasks_changes_together(
    blobs: list[tuple[int | None, int]], guard_tasks: bool
) -> None:
    names = list(dict.fromkeys(f"t{t}/$TaskOutput/f{n}" if t is not None else f"$JobOutput/f{n}" for t, n in blobs))
    changes = [change(n, i + 1) for i, n in enumerate(names)]
    chunks = chunk_changes(changes, guard_tasks=guard_tasks)
    assert all(chunk and rows_of(chunk, guard_tasks=guard_tasks) <= MAX_BATCH_OPERATIONS for chunk in chunks)
    # Every change once, grouped by task in the order tasks first appear (a task's changes stay together).
    order = list(dict.fromkeys(c.task_row for c in changes))
    assert [c for chunk in chunks for c in chunk] == sorted(changes, key=lambda c: order.index(c.task_row))
    # Only the last chunk may be cut short of a full batch by less than a task row's worth.
    assert all(rows_of(chunk, guard_tasks=guard_tasks) >= MAX_BATCH_OPERATIONS - 1 for chunk in chunks[:-1])


@pytest.mark.parametrize("limits", [NO_LIMITS, Limits(max_outputs=10**6, max_bytes=10**12, max_outputs_per_task=10**6)])
def test_every_chunk_of_a_large_delivery_plans_at_most_100_operations(limits: Limits) -> None:
    changes = [change(f"t{i % 37}/$TaskOutput/f{i}", i + 1, size=i) for i in range(1000)]
    changes += [change(f"$JobOutput/j{i}", 2000 + i, size=1) for i in range(130)]
    part = Partition()
    guard_tasks = bool(limits.max_outputs_per_task)
    for chunk in chunk_changes(changes, guard_tasks=guard_tasks):
        plan = part.plan(chunk, limits=limits)
        assert len(plan.operations) <= MAX_BATCH_OPERATIONS
        if limits.limits_job:
            assert len(plan.operations) == rows_of(chunk, guard_tasks=guard_tasks)
        part.apply(plan)
    assert part.usage == Usage(outputs=1130, bytes=sum(range(1000)) + 130, tasks=37,
                               kinds={"TaskOutput": [1000, sum(range(1000))], "JobOutput": [130, 130]})
    assert part.usage == truth(part.rows)[0]
