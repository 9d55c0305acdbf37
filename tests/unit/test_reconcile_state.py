"""What the reconciler and long reindexes keep between runs: positions and progress, read back."""

from __future__ import annotations

from datetime import datetime, timezone

from shared.ingest.operations import OperationStatus, ReindexOperation, is_operation_id
from shared.ingest.reconcile import Checkpoint
from shared.ingest.sweep import SweepReport


def test_a_checkpoint_reads_back_what_it_saved() -> None:
    at = datetime(2026, 12, 5, 10, 0, tzinfo=timezone.utc)
    saved = Checkpoint("task-7/$TaskLog/stdout.txt", "T|TaskOutput|task-7|f.bin", 3, at)
    assert Checkpoint.of(saved.entity("job-x")) == saved
    assert Checkpoint.of(Checkpoint().entity("job-x")) == Checkpoint()  # no position: the start
    assert Checkpoint.of(None) == Checkpoint()
    # The tombstone purge's feed position and a quiet job's pass read back too.
    purging = Checkpoint(None, "T|TaskOutput|task-7|f.bin", 3, at, tombstones_from=(("job-x", 41), ("job-x~1", 7)), quiet_of=at, quiet_done=True)
    assert Checkpoint.of(purging.entity("job-x")) == purging
    assert (purging.position("job-x~1"), purging.position("job-x~2")) == (7, 0)


def test_an_operation_reads_back_and_reports_progress_capped_until_it_succeeds() -> None:
    operation = ReindexOperation("a" * 32, "Job-1", "job-job-1", expected=1000,
                                 found=SweepReport(added=2, blobs_listed=1000, rows_checked=900))
    row = {**operation.entity(), "__etag": "W/1"}
    again = ReindexOperation.of(row)
    assert (again.found, again.expected, again.status, again.etag) == (operation.found, 1000, OperationStatus.RUNNING, "W/1")
    wire = again.as_wire()
    assert wire["status"] == "running" and wire["progress"]["percentComplete"] == 95
    assert "result" not in wire and "error" not in wire
    again.found.rows_checked = 5000  # more rows than the estimate: still not 100 until done
    assert again.as_wire()["progress"]["percentComplete"] == 99
    again.status = OperationStatus.SUCCEEDED
    done = again.as_wire()
    assert done["progress"]["percentComplete"] == 100
    assert done["result"] == {"jobId": "Job-1", "container": "job-job-1", "added": 2, "fixed": 0, "removed": 0, "unchanged": 0}
    again.status, again.error = OperationStatus.FAILED, "boom"
    assert again.as_wire()["error"] == {"code": "ReindexFailed", "message": "boom"}


def test_operation_ids_are_32_lower_case_hex_digits() -> None:
    assert is_operation_id("0123456789abcdef" * 2)
    assert not is_operation_id("0123456789ABCDEF" * 2)
    assert not is_operation_id("../../etc")
    assert not is_operation_id("a" * 33)
