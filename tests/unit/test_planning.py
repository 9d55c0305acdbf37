"""Planning one batch transaction (shared.domain.planning), in process: the rows a chunk of changes
writes, and what the job's counters say after it.

``Partition`` stands in for one job's Table partition: it applies a plan the way the store does
(create only when absent, replace only on the ETag that was read) and reads back what the next
plan needs, so a test can deliver events one after another and look at the outcome.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from shared.domain import keys
from shared.domain.conventions import parse_blob_path
from shared.domain.events import BlobAction
from shared.domain.planning import (
    MAX_BATCH_OPERATIONS,
    IngestReport,
    Op,
    Plan,
    chunk_changes,
    is_stale,
    plan_chunk,
)
from shared.domain.quotas import Limits, RejectReason
from shared.domain.rows import DELETED, LIVE, REJECTED, Change, Entity, Int64, Usage, output_entity

CONTAINER = "job-planning"
SHARD = keys.shard_key(0)
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
NOW = T0 + timedelta(hours=1)
NO_LIMITS = Limits()


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


class Partition:
    """One job's rows, changed only through plans, as the store applies them."""

    def __init__(self) -> None:
        self.rows: dict[str, Entity] = {}
        self._etags = 0

    def apply(self, plan: Plan) -> None:
        assert len(plan.operations) <= MAX_BATCH_OPERATIONS
        keys_written = [op.entity["RowKey"] for op in plan.operations]
        assert len(keys_written) == len(set(keys_written)), "a batch may touch each row once"
        for op in plan.operations:
            key = op.entity["RowKey"]
            if op.op is Op.CREATE:
                assert key not in self.rows, f"create of existing row {key}"
            else:
                assert op.op is Op.REPLACE
                assert self.rows[key]["__etag"] == op.etag, f"replace of {key} on a stale ETag"
        for op in plan.operations:
            self._etags += 1
            self.rows[op.entity["RowKey"]] = {**op.entity, "__etag": f"W/{self._etags}"}

    def plan(self, changes: Sequence[Change], *, limits: Limits = NO_LIMITS, others: Usage | None = None) -> Plan:
        return plan_chunk(
            changes,
            rows={c.row_key: self.rows[c.row_key] for c in changes if c.row_key in self.rows},
            tasks={c.task_row: self.rows[c.task_row] for c in changes if c.task_row and c.task_row in self.rows},
            shard_key=SHARD,
            shard_row=self.rows.get(SHARD),
            others=others or Usage(),
            limits=limits,
            now=NOW,
        )

    def ingest(self, *changes: Change, limits: Limits = NO_LIMITS, others: Usage | None = None) -> Plan:
        plan = self.plan(changes, limits=limits, others=others)
        self.apply(plan)
        return plan

    @property
    def usage(self) -> Usage:
        return Usage.of(self.rows.get(SHARD))

    def task(self, task_id: str) -> Usage:
        return Usage.of(self.rows.get(keys.task_usage_key(task_id)))

    def output(self, name: str) -> Entity:
        output = parse_blob_path(name)
        assert output is not None
        return self.rows[keys.output_key(output.kind, output.path, output.task_id)]

    def live(self) -> dict[str, int]:
        """Blob name -> size of every live output row: what a listing would return."""
        return {r["BlobName"]: int(r["Size"]) for r in self.rows.values() if r.get("State") == LIVE}


def counts(report: IngestReport) -> tuple[int, int, int]:
    return report.indexed, report.unchanged, report.rejected


# --- one create ------------------------------------------------------------------------------


def test_a_new_output_creates_its_row_its_task_row_and_the_shard() -> None:
    part = Partition()
    plan = part.ingest(change("t1/$TaskOutput/a.txt", 1, size=100))
    assert counts(plan.report) == (1, 0, 0)
    assert [(op.op, op.entity["RowKey"]) for op in plan.operations] == [
        (Op.CREATE, keys.task_output_key("TaskOutput", "t1", "a.txt")),
        (Op.CREATE, keys.task_usage_key("t1")),
        (Op.CREATE, SHARD),
    ]
    row = part.output("t1/$TaskOutput/a.txt")
    assert (row["State"], row["Seq"], row["Size"], row["TaskId"], row["Kind"], row["Path"]) == (
        LIVE, f"{1:032d}", 100, "t1", "TaskOutput", "a.txt")
    assert isinstance(row["Size"], Int64) and "Reason" not in row
    assert part.usage == Usage(outputs=1, bytes=100, tasks=1, kinds={"TaskOutput": [1, 100]})
    assert part.task("t1") == Usage(outputs=1, bytes=100, kinds={"TaskOutput": [1, 100]})
    assert part.rows[keys.task_usage_key("t1")]["TaskId"] == "t1"
    assert plan.crossings == {}


def test_a_job_output_touches_no_task_row_and_no_task_count() -> None:
    part = Partition()
    plan = part.ingest(change("$JobOutput/movie.mp4", 1, size=5000))
    assert [op.entity["RowKey"] for op in plan.operations] == [keys.job_output_key("JobOutput", "movie.mp4"), SHARD]
    assert part.usage == Usage(outputs=1, bytes=5000, tasks=0, kinds={"JobOutput": [1, 5000]})
    assert part.output("$JobOutput/movie.mp4")["TaskId"] == ""


# --- duplicates and order --------------------------------------------------------------------


def test_a_duplicate_event_is_unchanged_and_writes_nothing() -> None:
    part = Partition()
    part.ingest(change("t1/$TaskOutput/a.txt", 7, size=100))
    before = {k: dict(v) for k, v in part.rows.items()}
    plan = part.ingest(change("t1/$TaskOutput/a.txt", 7, size=100))
    assert counts(plan.report) == (0, 1, 0)
    assert plan.operations == []
    assert part.rows == before


def test_an_older_sequencer_never_overwrites_a_newer_row() -> None:
    part = Partition()
    part.ingest(change("t1/$TaskOutput/a.txt", 50, size=100))
    late_create = part.ingest(change("t1/$TaskOutput/a.txt", 49, size=999))
    late_delete = part.ingest(change("t1/$TaskOutput/a.txt", 10, deleted=True))
    assert counts(late_create.report) == counts(late_delete.report) == (0, 1, 0)
    assert late_create.operations == late_delete.operations == []
    row = part.output("t1/$TaskOutput/a.txt")
    assert (row["State"], row["Seq"], row["Size"]) == (LIVE, f"{50:032d}", 100)
    assert part.usage == Usage(outputs=1, bytes=100, tasks=1, kinds={"TaskOutput": [1, 100]})


def test_sequencers_compare_as_the_fixed_width_strings_azure_sends() -> None:
    old = {"Seq": "0000000000000000000000000000000a", "State": LIVE}
    newer = replace(change("t1/$TaskOutput/a.txt", 1), sequencer="0000000000000000000000000000000b")
    assert not is_stale(newer, old)
    assert is_stale(newer, {"Seq": "0000000000000000000000000000000c", "State": LIVE})


def test_any_delivery_order_ends_in_the_state_of_the_newest_events() -> None:
    history = [
        change("t1/$TaskOutput/a.txt", 1, size=10),
        change("t1/$TaskOutput/a.txt", 2, size=20),
        change("t1/$TaskOutput/a.txt", 3, deleted=True),
        change("t1/$TaskOutput/a.txt", 4, size=40),
        change("t2/$TaskLog/b.txt", 5, size=5),
        change("t2/$TaskLog/b.txt", 6, deleted=True),
        change("$JobOutput/c.bin", 7, size=70),
    ]
    for seed in range(20):
        deliveries = history * 2
        random.Random(seed).shuffle(deliveries)
        part = Partition()
        for c in deliveries:
            part.ingest(c)
        assert part.live() == {"t1/$TaskOutput/a.txt": 40, "$JobOutput/c.bin": 70}, seed
        assert part.usage == Usage(outputs=2, bytes=110, tasks=1, kinds={"TaskOutput": [1, 40], "JobOutput": [1, 70]}), seed
        assert part.output("t2/$TaskLog/b.txt")["State"] == DELETED


# --- deletes ---------------------------------------------------------------------------------


def test_a_delete_leaves_a_tombstone_and_takes_the_output_out_of_shard_and_task_counts() -> None:
    part = Partition()
    part.ingest(change("t1/$TaskOutput/a.txt", 1, size=100), change("t1/$TaskOutput/b.txt", 2, size=30))
    assert part.usage == Usage(outputs=2, bytes=130, tasks=1, kinds={"TaskOutput": [2, 130]})
    plan = part.ingest(change("t1/$TaskOutput/a.txt", 3, deleted=True))
    assert counts(plan.report) == (1, 0, 0)
    assert [op.op for op in plan.operations] == [Op.REPLACE, Op.REPLACE, Op.REPLACE]
    tombstone = part.output("t1/$TaskOutput/a.txt")
    assert (tombstone["State"], tombstone["Seq"], tombstone["Size"]) == (DELETED, f"{3:032d}", 0)
    assert part.live() == {"t1/$TaskOutput/b.txt": 30}
    assert part.usage == Usage(outputs=1, bytes=30, tasks=1, kinds={"TaskOutput": [1, 30]})
    assert part.task("t1") == Usage(outputs=1, bytes=30, kinds={"TaskOutput": [1, 30]})
    # The tombstone keeps a late create of the deleted version out.
    assert counts(part.ingest(change("t1/$TaskOutput/a.txt", 2, size=100)).report) == (0, 1, 0)
    assert part.live() == {"t1/$TaskOutput/b.txt": 30}


def test_a_delete_of_a_never_seen_blob_records_a_tombstone_and_counts_nothing() -> None:
    part = Partition()
    part.ingest(change("t1/$TaskOutput/a.txt", 5, deleted=True))
    assert part.output("t1/$TaskOutput/a.txt")["State"] == DELETED
    assert part.usage == Usage()
    assert part.task("t1") == Usage()
    # The create it overtook arrives late and stays out.
    assert counts(part.ingest(change("t1/$TaskOutput/a.txt", 4, size=10)).report) == (0, 1, 0)
    assert part.live() == {}


def test_deleting_the_last_output_of_a_kind_drops_the_kind() -> None:
    part = Partition()
    part.ingest(change("$JobOutput/a", 1, size=10), change("$JobPreview/b", 2, size=20))
    part.ingest(change("$JobPreview/b", 3, deleted=True))
    assert part.usage.kinds == {"JobOutput": [1, 10]}


# --- overwrites ------------------------------------------------------------------------------


@pytest.mark.parametrize(("first", "second"), [(100, 250), (250, 100), (100, 100), (0, 7), (7, 0)])
def test_an_overwrite_changes_bytes_by_the_difference_and_not_the_count(first: int, second: int) -> None:
    part = Partition()
    part.ingest(change("t1/$TaskOutput/a.txt", 1, size=first), change("$JobOutput/other", 2, size=1000))
    before = part.usage
    plan = part.ingest(change("t1/$TaskOutput/a.txt", 3, size=second))
    assert counts(plan.report) == (1, 0, 0)
    after = part.usage
    assert after.outputs == before.outputs == 2
    assert after.bytes - before.bytes == second - first
    assert after.tasks == 1
    assert after.kinds["TaskOutput"] == [1, second]
    assert part.task("t1").bytes == second
    # Each row is replaced on the ETag it was read with, not blindly upserted.
    assert all(op.op is Op.REPLACE and op.etag for op in plan.operations)


# --- quotas ----------------------------------------------------------------------------------


def test_a_rejected_output_counts_under_rejections_and_records_the_crossing() -> None:
    part = Partition()
    plan = part.ingest(*(change(f"t{i % 2}/$TaskOutput/f{i}", i + 1, size=10) for i in range(5)), limits=Limits(max_outputs=3))
    assert counts(plan.report) == (3, 0, 2)
    # Changes are decided in event-time order: the first three fit, the fourth crossed the limit.
    assert plan.crossings == {RejectReason.MAX_OUTPUTS: "t1/$TaskOutput/f3"}
    assert part.usage == Usage(outputs=3, bytes=30, rejected_outputs=2, rejected_bytes=20, tasks=2,
                               kinds={"TaskOutput": [3, 30]})
    rejected = part.output("t0/$TaskOutput/f4")
    assert (rejected["State"], rejected["Reason"], rejected["Size"]) == (REJECTED, "maxOutputs", 10)
    assert set(part.live()) == {"t0/$TaskOutput/f0", "t1/$TaskOutput/f1", "t0/$TaskOutput/f2"}
    # A rejected output is not a task's output either.
    assert (part.task("t0").outputs, part.task("t0").rejected_outputs) == (2, 1)


def test_only_the_first_blob_to_cross_each_limit_is_recorded() -> None:
    part = Partition()
    plan = part.ingest(
        change("$JobOutput/a", 1, size=60), change("$JobOutput/b", 2, size=60),
        change("t1/$TaskOutput/c", 3, size=1), change("t1/$TaskOutput/d", 4, size=1), change("t1/$TaskOutput/e", 5, size=1),
        limits=Limits(max_bytes=100, max_outputs_per_task=1),
    )
    assert plan.crossings == {RejectReason.MAX_BYTES: "$JobOutput/b", RejectReason.MAX_OUTPUTS_PER_TASK: "t1/$TaskOutput/d"}
    assert counts(plan.report) == (2, 0, 3)


def test_an_overwrite_that_grows_past_max_bytes_is_rejected_and_uncounted_and_its_delete_clears_it() -> None:
    part = Partition()
    limits = Limits(max_bytes=1000)
    part.ingest(change("$JobOutput/log.txt", 1, size=400), limits=limits)
    part.ingest(change("$JobOutput/log.txt", 2, size=900), limits=limits)
    assert (part.usage.outputs, part.usage.bytes) == (1, 900)
    plan = part.ingest(change("$JobOutput/log.txt", 3, size=1200), limits=limits)
    assert counts(plan.report) == (0, 0, 1)
    assert (part.usage.outputs, part.usage.bytes, part.usage.rejected_outputs, part.usage.rejected_bytes) == (0, 0, 1, 1200)
    assert part.usage.kinds == {}
    part.ingest(change("$JobOutput/log.txt", 4, deleted=True), limits=limits)
    assert part.usage == Usage()


def test_an_overwrite_is_admitted_against_usage_without_its_old_version() -> None:
    part = Partition()
    limits = Limits(max_outputs=1, max_bytes=100)
    part.ingest(change("$JobOutput/a", 1, size=100), limits=limits)
    # Full on both limits, yet replacing the one output with another of the same size fits.
    plan = part.ingest(change("$JobOutput/a", 2, size=100), limits=limits)
    assert counts(plan.report) == (1, 0, 0)
    assert (part.usage.outputs, part.usage.bytes) == (1, 100)


def test_job_wide_limits_count_the_other_shards() -> None:
    part = Partition()
    plan = part.ingest(change("$JobOutput/a", 1), change("$JobOutput/b", 2), limits=Limits(max_outputs=3),
                       others=Usage(outputs=2, bytes=200))
    assert counts(plan.report) == (1, 0, 1)
    # The shard holds only its own counts; the others are read, never written.
    assert [op.entity["RowKey"] for op in plan.operations][-1] == SHARD
    assert part.usage.outputs == 1


def test_per_task_limits_never_reject_job_outputs() -> None:
    part = Partition()
    plan = part.ingest(*(change(f"$JobOutput/j{i}", i + 1) for i in range(4)), limits=Limits(max_outputs_per_task=1))
    assert counts(plan.report) == (4, 0, 0)


def test_limits_of_zero_admit_everything() -> None:
    part = Partition()
    plan = part.ingest(*(change(f"t1/$TaskOutput/f{i}", i + 1, size=10**12) for i in range(50)), limits=Limits(0, 0, 0))
    assert counts(plan.report) == (50, 0, 0)
    assert part.usage.bytes == 50 * 10**12


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
    assert part.output("$JobOutput/b")["State"] == LIVE and "Reason" not in part.output("$JobOutput/b")
    assert part.usage == Usage(outputs=2, bytes=30, kinds={"JobOutput": [2, 30]})
    # A second re-admission of the (now live) row, or one of a row that is gone, changes nothing.
    assert is_stale(readmit, part.output("$JobOutput/b"))
    assert is_stale(readmit, None)
    assert counts(part.ingest(readmit).report) == (0, 1, 0)


def test_a_readmission_of_a_row_overwritten_meanwhile_is_stale() -> None:
    part = Partition()
    part.ingest(change("$JobOutput/a", 1), change("$JobOutput/b", 2), limits=Limits(max_outputs=1))
    readmit = Change.from_row(CONTAINER, part.output("$JobOutput/b"), now=NOW, readmit=True)
    part.ingest(change("$JobOutput/b", 3, deleted=True))
    assert is_stale(readmit, part.output("$JobOutput/b"))


def test_a_plain_event_with_the_rejected_rows_sequencer_is_a_duplicate() -> None:
    part = Partition()
    part.ingest(change("$JobOutput/a", 1), change("$JobOutput/b", 2), limits=Limits(max_outputs=1))
    assert counts(part.ingest(change("$JobOutput/b", 2)).report) == (0, 1, 0)
    assert part.output("$JobOutput/b")["State"] == REJECTED


# --- the task count --------------------------------------------------------------------------


def test_the_task_count_moves_when_a_task_gains_its_first_or_loses_its_last_output() -> None:
    part = Partition()
    part.ingest(change("t1/$TaskOutput/a", 1), change("t1/$TaskLog/b", 2))
    assert part.usage.tasks == 1
    part.ingest(change("t1/$TaskOutput/c", 3))  # a task's further output: no new task
    assert part.usage.tasks == 1
    part.ingest(change("t2/$TaskOutput/a", 4))  # another task's first
    assert part.usage.tasks == 2
    part.ingest(change("t1/$TaskOutput/a", 5, deleted=True), change("t1/$TaskLog/b", 6, deleted=True))
    assert part.usage.tasks == 2  # t1 still has c
    part.ingest(change("t1/$TaskOutput/c", 7, deleted=True))  # t1's last
    assert part.usage.tasks == 1
    assert part.task("t1") == Usage()
    part.ingest(change("t1/$TaskOutput/c", 8))  # t1 is back
    assert part.usage.tasks == 2


def test_task_ids_differing_in_case_are_one_task() -> None:
    part = Partition()
    part.ingest(change("Task-1/$TaskOutput/a", 1), change("task-1/$TaskOutput/b", 2))
    assert part.usage.tasks == 1
    assert part.task("TASK-1").outputs == 2


# --- the shard row ---------------------------------------------------------------------------


def test_the_shard_write_keeps_the_jobs_limit_overrides() -> None:
    part = Partition()
    part.rows[SHARD] = {"RowKey": SHARD, "MaxOutputs": 5, "MaxBytes": 0, "__etag": "W/0", **Usage().properties()}
    plan = part.ingest(change("$JobOutput/a", 1))
    shard = plan.operations[-1]
    assert (shard.op, shard.etag) == (Op.REPLACE, "W/0")
    assert (shard.entity["MaxOutputs"], shard.entity["MaxBytes"]) == (5, 0)
    assert "MaxOutputsPerTask" not in shard.entity
    assert shard.entity["LastIndexedAt"] == NOW


def test_failed_row_names_the_operation_a_failed_transaction_points_at() -> None:
    plan = Partition().plan([change("t1/$TaskOutput/a", 1)])
    assert plan.failed_row(0) == keys.task_output_key("TaskOutput", "t1", "a")
    assert plan.failed_row(2) == SHARD
    assert plan.failed_row(3) is None and plan.failed_row(-1) is None and plan.failed_row(None) is None


def test_output_entity_round_trips_through_change_from_row() -> None:
    original = change("t9/$My Kind/deep/er/x y.bin", 12, size=12345)
    row = output_entity(original, LIVE, None, NOW)
    back = Change.from_row(CONTAINER, row, now=NOW)
    assert (back.row_key, back.output, back.sequencer, back.size, back.event_time) == (
        original.row_key, original.output, original.sequencer, 12345, original.event_time)
    assert back.task_row == keys.task_usage_key("t9") and not back.readmit
    assert output_entity(original, REJECTED, RejectReason.MAX_BYTES, NOW)["Reason"] == "maxBytes"


# --- the report ------------------------------------------------------------------------------


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


def operations_of(chunk: Sequence[Change]) -> int:
    """What a chunk of first-time creates writes: each output, each task row once, the shard."""
    return len(chunk) + len({c.task_row for c in chunk if c.task_row}) + 1


@pytest.mark.parametrize(
    ("names", "sizes"),
    [
        ([f"$JobOutput/f{i}" for i in range(250)], [99, 99, 52]),  # job outputs: 99 + the shard
        ([f"t1/$TaskOutput/f{i}" for i in range(200)], [98, 98, 4]),  # + one task row
        ([f"t{i}/$TaskOutput/f" for i in range(150)], [49, 49, 49, 3]),  # each output brings its task row
        ([f"$JobOutput/f{i}" for i in range(99)], [99]),
        ([], []),
    ],
)
def test_chunks_fit_a_batch_with_their_task_rows_and_the_shard(names: list[str], sizes: list[int]) -> None:
    changes = [change(n, i + 1) for i, n in enumerate(names)]
    chunks = chunk_changes(changes)
    assert [len(c) for c in chunks] == sizes
    assert all(operations_of(c) <= MAX_BATCH_OPERATIONS for c in chunks)
    assert [c for chunk in chunks for c in chunk] == changes


@hsettings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 120)), st.integers(0, 400)), max_size=600))
def test_chunk_changes_never_exceeds_100_operations_and_keeps_every_change_once(blobs: list[tuple[int | None, int]]) -> None:
    names = list(dict.fromkeys(f"t{t}/$TaskOutput/f{n}" if t is not None else f"$JobOutput/f{n}" for t, n in blobs))
    changes = [change(n, i + 1) for i, n in enumerate(names)]
    chunks = chunk_changes(changes)
    assert all(chunk and operations_of(chunk) <= MAX_BATCH_OPERATIONS for chunk in chunks)
    assert sorted((c for chunk in chunks for c in chunk), key=lambda c: c.sequencer) == changes


def test_every_chunk_of_a_large_delivery_plans_at_most_100_operations() -> None:
    changes = [change(f"t{i % 37}/$TaskOutput/f{i}", i + 1, size=i) for i in range(1000)]
    changes += [change(f"$JobOutput/j{i}", 2000 + i, size=1) for i in range(130)]
    part = Partition()
    for chunk in chunk_changes(changes):
        plan = part.plan(chunk)
        assert len(plan.operations) <= MAX_BATCH_OPERATIONS
        part.apply(plan)
    assert part.usage.outputs == 1130
    assert part.usage.bytes == sum(range(1000)) + 130
    assert part.usage.tasks == 37
