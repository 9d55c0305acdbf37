"""Quota and usage arithmetic (shared.domain.quotas, shared.domain.rows), in process: effective
limits, the admission decision, the wire form of limits, and the counters' sums (SPEC §4)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from shared.domain.quotas import OVERRIDE_PROPERTIES, Limits, QuotaDefaults, RejectReason, admission
from shared.domain.rows import DELETED, KINDS, LIVE, REJECTED, TEXT_PART_CHARS, Int64, Usage, as_int, is_text_part


@dataclass
class Wrapped:
    """How the Table SDK may hand back a typed value (``EntityProperty``-like: ``.value``)."""

    value: int


DEFAULTS = QuotaDefaults(max_outputs_per_job=100, max_bytes_per_job=5000, max_outputs_per_task=10)


# --- effective limits ------------------------------------------------------------------------


def test_without_overrides_the_settings_defaults_apply() -> None:
    expected = Limits(max_outputs=100, max_bytes=5000, max_outputs_per_task=10)
    assert Limits.effective(None, DEFAULTS) == expected
    assert Limits.effective({}, DEFAULTS) == expected
    assert Limits.effective({"Outputs": 3, "Bytes": 9}, DEFAULTS) == expected  # counters are not limits


def test_overrides_win_field_by_field_and_zero_lifts_a_default() -> None:
    row = {"MaxOutputs": 7, "MaxOutputsPerTask": 0}
    assert Limits.effective(row, DEFAULTS) == Limits(max_outputs=7, max_bytes=5000, max_outputs_per_task=0)
    assert Limits.effective({"MaxBytes": None}, DEFAULTS).max_bytes == 5000  # absent and None alike


def test_overrides_read_back_in_any_wrapper() -> None:
    row = {"MaxOutputs": Wrapped(3), "MaxBytes": Int64(2**40), "MaxOutputsPerTask": "4"}
    assert Limits.effective(row, QuotaDefaults()) == Limits(3, 2**40, 4)


def test_defaults_are_no_limits() -> None:
    assert QuotaDefaults() == QuotaDefaults(0, 0, 0)
    assert Limits.effective(None, QuotaDefaults()) == Limits() == Limits(0, 0, 0)


def test_override_properties_are_the_rows_quota_columns() -> None:
    assert OVERRIDE_PROPERTIES == {"max_outputs": "MaxOutputs", "max_bytes": "MaxBytes", "max_outputs_per_task": "MaxOutputsPerTask"}


def test_only_job_wide_limits_need_a_consistent_view_of_the_job() -> None:
    assert not Limits().limits_job
    assert not Limits(max_outputs_per_task=5).limits_job
    assert Limits(max_outputs=1).limits_job
    assert Limits(max_bytes=1).limits_job


def test_as_wire_uses_the_apis_field_names() -> None:
    wire = Limits(max_outputs=50, max_bytes=1000, max_outputs_per_task=3).as_wire()
    assert wire == {"maxOutputs": 50, "maxBytes": 1000, "maxOutputsPerTask": 3}
    assert list(wire) == [reason.value for reason in RejectReason]
    assert Limits().as_wire() == {"maxOutputs": 0, "maxBytes": 0, "maxOutputsPerTask": 0}


# --- admission -------------------------------------------------------------------------------


def admit(limits: Limits, *, outputs: int = 0, bytes_: int = 0, task: int | None = 0, size: int = 0) -> RejectReason | None:
    return admission(limits, job_outputs=outputs, job_bytes=bytes_, task_outputs=task, size=size)


def test_limits_of_zero_mean_no_limit() -> None:
    assert admit(Limits(), outputs=10**12, bytes_=2**62, task=10**9, size=2**62) is None


@pytest.mark.parametrize(("outputs", "expected"), [(0, None), (49, None), (50, RejectReason.MAX_OUTPUTS), (80, RejectReason.MAX_OUTPUTS)])
def test_max_outputs_admits_up_to_the_limit(outputs: int, expected: RejectReason | None) -> None:
    assert admit(Limits(max_outputs=50), outputs=outputs) is expected


@pytest.mark.parametrize(
    ("used", "size", "expected"),
    [(0, 1000, None), (900, 100, None), (900, 101, RejectReason.MAX_BYTES), (0, 1001, RejectReason.MAX_BYTES), (1000, 0, None)],
)
def test_max_bytes_admits_a_blob_that_ends_exactly_at_the_limit(used: int, size: int, expected: RejectReason | None) -> None:
    assert admit(Limits(max_bytes=1000), bytes_=used, size=size) is expected


def test_max_outputs_per_task_counts_the_tasks_outputs_only() -> None:
    limits = Limits(max_outputs_per_task=3)
    assert admit(limits, outputs=1000, task=2) is None
    assert admit(limits, outputs=0, task=3) is RejectReason.MAX_OUTPUTS_PER_TASK
    assert admit(limits, outputs=1000, task=None) is None  # a job output has no task to fill


def test_the_first_limit_crossed_is_named_outputs_then_bytes_then_per_task() -> None:
    full = Limits(max_outputs=1, max_bytes=1, max_outputs_per_task=1)
    assert admit(full, outputs=1, bytes_=1, task=1, size=1) is RejectReason.MAX_OUTPUTS
    assert admit(full, outputs=0, bytes_=1, task=1, size=1) is RejectReason.MAX_BYTES
    assert admit(full, outputs=0, bytes_=0, task=1, size=1) is RejectReason.MAX_OUTPUTS_PER_TASK
    assert admit(full, outputs=0, bytes_=0, task=0, size=1) is None


# --- usage arithmetic ------------------------------------------------------------------------


def test_live_outputs_count_outputs_bytes_and_kinds() -> None:
    usage = Usage()
    usage.count(LIVE, "TaskOutput", 100, +1)
    usage.count(LIVE, "TaskOutput", 50, +1)
    usage.count(LIVE, "TaskLog", 7, +1)
    assert (usage.outputs, usage.bytes) == (3, 157)
    assert usage.kinds == {"TaskOutput": [2, 150], "TaskLog": [1, 7]}
    assert (usage.rejected_outputs, usage.rejected_bytes) == (0, 0)


def test_taking_out_the_last_output_of_a_kind_drops_the_kind() -> None:
    usage = Usage()
    usage.count(LIVE, "TaskOutput", 100, +1)
    usage.count(LIVE, "TaskLog", 7, +1)
    usage.count(LIVE, "TaskOutput", 100, -1)
    assert usage.kinds == {"TaskLog": [1, 7]}
    assert (usage.outputs, usage.bytes) == (1, 7)


def test_rejected_outputs_count_apart_and_deleted_ones_count_nothing() -> None:
    usage = Usage()
    usage.count(REJECTED, "TaskOutput", 300, +1)
    usage.count(DELETED, "TaskOutput", 999, +1)
    usage.count(None, "TaskOutput", 999, +1)
    assert usage == Usage(rejected_outputs=1, rejected_bytes=300)
    usage.count(REJECTED, "TaskOutput", 300, -1)
    assert usage == Usage()


def test_an_overwrite_moves_bytes_by_the_difference() -> None:
    usage = Usage()
    usage.count(LIVE, "JobOutput", 400, +1)
    usage.count(LIVE, "JobOutput", 400, -1)  # the old version out
    usage.count(LIVE, "JobOutput", 900, +1)  # the new one in
    assert usage == Usage(outputs=1, bytes=900, kinds={"JobOutput": [1, 900]})


def test_plus_sums_every_counter_and_merges_kinds_without_touching_its_operands() -> None:
    a = Usage(outputs=2, bytes=30, rejected_outputs=1, rejected_bytes=5, tasks=1, kinds={"TaskOutput": [2, 30]})
    b = Usage(outputs=-2, bytes=-30, rejected_outputs=2, rejected_bytes=6, tasks=3, kinds={"TaskOutput": [-2, -30], "TaskLog": [4, 8]})
    total = a.plus(b)
    assert total == Usage(outputs=0, bytes=0, rejected_outputs=3, rejected_bytes=11, tasks=4, kinds={"TaskLog": [4, 8]})
    assert a.kinds == {"TaskOutput": [2, 30]} and b.kinds == {"TaskOutput": [-2, -30], "TaskLog": [4, 8]}
    assert Usage().plus(Usage()) == Usage()
    total.kinds["TaskLog"][0] = 99
    assert b.kinds["TaskLog"] == [4, 8]  # no list shared with an operand


def test_shards_sum_to_the_job() -> None:
    shards = [Usage(outputs=n, bytes=10 * n, tasks=1, kinds={"K": [n, 10 * n]}) for n in range(16)]
    total = Usage()
    for shard in shards:
        total = total.plus(shard)
    assert total == Usage(outputs=120, bytes=1200, tasks=16, kinds={"K": [120, 1200]})


def test_properties_round_trip_and_store_bytes_as_int64() -> None:
    usage = Usage(outputs=3, bytes=2**40, rejected_outputs=1, rejected_bytes=2**33, tasks=2, kinds={"b": [1, 2], "a": [2, 2**40 - 2]})
    props = usage.properties()
    assert isinstance(props["Bytes"], Int64) and isinstance(props["RejBytes"], Int64)
    assert props["Kinds"] == json.dumps({"a": [2, 2**40 - 2], "b": [1, 2]}, separators=(",", ":"))
    assert Usage.of(props) == usage
    wrapped = {k: Wrapped(v) if isinstance(v, int) else v for k, v in props.items()}
    assert Usage.of(wrapped) == usage


def test_many_long_kinds_are_split_over_properties_table_storage_can_hold() -> None:
    usage = Usage(outputs=98, kinds={f"{i:02d}-" + "k" * 900: [1, i] for i in range(98)})  # ~90K characters of JSON
    props = usage.properties()
    parts = [name for name in props if is_text_part(KINDS, name)]
    assert parts == ["Kinds", "Kinds1", "Kinds2"]
    assert all(len(props[name]) <= TEXT_PART_CHARS for name in parts)
    assert Usage.of(props) == usage and Usage.kinds_of(props) == sorted(usage.kinds)
    assert not is_text_part(KINDS, "KindsX") and not is_text_part(KINDS, "Outputs")


def test_a_usage_row_rewritten_with_fewer_kinds_keeps_none_of_the_old_parts() -> None:
    from shared.ingest.compactor import _kept

    many = {"RowKey": "T|t1", "TaskId": "t1", "__etag": "e", "PartitionKey": "job-x",
            **Usage(outputs=98, kinds={f"{i:02d}-" + "k" * 900: [1, i] for i in range(98)}).properties()}
    few = Usage(outputs=1, kinds={"TaskOutput": [1, 5]})
    rewritten = {**_kept(many), **few.properties()}  # as the compactor writes a folded row
    assert Usage.of(rewritten) == few
    assert [name for name in rewritten if name.startswith(KINDS)] == ["Kinds"]
    assert rewritten["TaskId"] == "t1" and "__etag" not in rewritten


def test_an_absent_row_is_zero_usage() -> None:
    assert Usage.of(None) == Usage.of({}) == Usage()
    assert Usage.of({"Outputs": 1}) == Usage(outputs=1)
    assert Usage.kinds_of(None) == []


def test_kinds_are_listed_sorted() -> None:
    usage = Usage(kinds={"TaskPreview": [1, 6], "JobOutput": [1, 1000], "TaskOutput": [1, 5]})
    assert list(usage.kinds_wire()) == ["JobOutput", "TaskOutput", "TaskPreview"]
    assert usage.kinds_wire()["JobOutput"] == {"outputs": 1, "bytes": 1000}
    assert Usage.kinds_of(usage.properties()) == ["JobOutput", "TaskOutput", "TaskPreview"]


def test_as_int_reads_plain_wrapped_and_absent_values() -> None:
    assert as_int(None) == 0
    assert as_int(5) == 5
    assert as_int(Wrapped(2**40)) == 2**40
    assert as_int(Int64(7)) == 7
