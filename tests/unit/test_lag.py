"""Lag (eventTime to indexed): the histogram a delta carries, the windows ``S|00`` keeps, and what
a reader combines (``shared.domain.lag``, ``shared.domain.ledger``, ``shared.domain.planning``)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from shared.domain import keys
from shared.domain.conventions import parse_blob_path
from shared.domain.events import BlobAction
from shared.domain.lag import RATIO, WINDOW_SECONDS, LagHistogram, LagWindows, bucket_of, summary, upper_bound
from shared.domain.ledger import HANDED_BACK, LAG_WINDOWS, SKIPPED, Delta, FoldRound, JobView
from shared.domain.planning import plan_chunk
from shared.domain.quotas import Limits
from shared.domain.rows import Change

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("seconds", [0.0, 0.004, 0.01, 0.0101, 0.7, 1.0, 59.9, 3600.0, 86_400.0, 7 * 86_400.0])
def test_a_lag_falls_in_the_first_bucket_whose_bound_holds_it(seconds: float) -> None:
    bucket = bucket_of(seconds)
    assert seconds <= upper_bound(bucket) * (1 + 1e-9)
    if bucket > 0:
        assert seconds > upper_bound(bucket - 1)


def test_percentiles_are_at_most_25_percent_above_the_truth_and_never_above_max() -> None:
    rng = random.Random(7)
    values = sorted(rng.uniform(0.05, 5000) for _ in range(2000))
    histogram = LagHistogram()
    for value in values:
        histogram.add(value)
    assert histogram.events == 2000
    assert histogram.max == max(values)
    for q in (0.5, 0.95, 0.99):
        true = values[int(q * len(values)) - 1]
        estimate = histogram.percentile(q)
        assert estimate is not None
        assert true <= estimate <= min(true * RATIO, histogram.max) + 1e-9


def test_negative_lag_from_clock_skew_counts_as_zero() -> None:
    histogram = LagHistogram()
    histogram.add(-3.0)
    assert (histogram.events, histogram.max, histogram.percentile(0.5)) == (1, 0.0, 0.0)


def test_histograms_and_windows_survive_their_stored_text() -> None:
    histogram = LagHistogram()
    for value in (0.2, 0.2, 31.0, 4000.5):
        histogram.add(value)
    again = LagHistogram.parse(histogram.text())
    assert again.counts == histogram.counts and again.max == pytest.approx(histogram.max, abs=1e-3)
    windows = LagWindows()
    windows.add(NOW, histogram)
    windows.add(NOW - timedelta(minutes=20), histogram)
    assert LagWindows.parse(windows.text()).recent(NOW).events == 8


def test_windows_keep_the_last_hour_only() -> None:
    windows = LagWindows()
    one = LagHistogram()
    one.add(5.0)
    for minutes in (0, 30, 59, 70, 300):
        windows.add(NOW - timedelta(minutes=minutes), one)
    trimmed = windows.trimmed(NOW)
    assert trimmed.recent(NOW).events == 3  # 0, 30 and 59 minutes ago
    assert all(start > NOW.timestamp() - 3600 - WINDOW_SECONDS for start in trimmed.windows)
    assert summary(LagHistogram()) == {"windowSeconds": 3600, "events": 0, "p50": None, "p95": None, "max": None}


def change(name: str, seconds_ago: float, *, sequencer: int = 1, readmit: bool = False, timed: bool = True) -> Change:
    output = parse_blob_path(name)
    assert output is not None
    return Change(container="job-x", row_key=keys.output_key(output.kind, output.path, output.task_id), output=output,
                  action=BlobAction.CREATED, sequencer=f"{sequencer:032d}", event_time=NOW - timedelta(seconds=seconds_ago),
                  size=10, readmit=readmit, timed=timed)


def test_a_chunk_s_delta_carries_the_lag_of_its_events_and_not_of_repairs() -> None:
    changes = [change("t1/$TaskOutput/a", 12.0), change("t2/$TaskOutput/b", 300.0, sequencer=2),
               change("t3/$TaskOutput/c", 9999.0, sequencer=3, timed=False)]
    plan = plan_chunk(changes, rows={}, limits=Limits(), now=NOW, delta_key="S|d|1")
    assert plan.delta is not None
    assert plan.delta.lag.events == 2  # the reindex repair (timed=False) is not a delivery's lag
    assert plan.delta.lag.max == 300.0
    stored = Delta.of({**plan.operations[-1].entity, "__etag": "e"})
    assert stored.lag.counts == plan.delta.lag.counts


def test_a_duplicate_writes_no_delta_and_so_no_lag() -> None:
    first = change("t1/$TaskOutput/a", 12.0)
    row = {"RowKey": first.row_key, "State": "live", "Seq": first.sequencer, "Size": 10, "Kind": "TaskOutput"}
    plan = plan_chunk([first], rows={first.row_key: row}, limits=Limits(), now=NOW, delta_key="S|d|1")
    assert plan.delta is None and plan.report.unchanged == 1


def lagged_delta(key: str, seconds: float, at: datetime) -> Delta:
    delta = Delta(key, at=at)
    delta.lag.add(seconds)
    return delta


def test_a_reader_combines_folded_windows_and_unfolded_deltas_without_counting_twice() -> None:
    old = LagHistogram()
    old.add(2.0)
    in_round, pending = lagged_delta("S|d|a", 40.0, NOW), lagged_delta("S|d|b", 600.0, NOW)
    flushed = Delta("S|d|c", skipped=Counter({"not-a-convention-path": 1}), handed_back=4)
    round_ = FoldRound("r1", ["S|d|a", "S|d|c"])
    before = LagWindows()
    before.add(NOW - timedelta(minutes=10), old)
    after = LagWindows.parse(before.text())
    after.add(NOW, in_round.lag)
    # Before the round reaches S|00, and after (S|00 then holds S|d|a and S|d|c): the same figures.
    for counter in (
        {"RowKey": "S|00", LAG_WINDOWS: before.text(), SKIPPED: '{"not-a-convention-path":2}', HANDED_BACK: 3},
        {"RowKey": "S|00", LAG_WINDOWS: after.text(), SKIPPED: '{"not-a-convention-path":3}', HANDED_BACK: 7, "LastFold": "r1"},
    ):
        view = JobView(counters=[counter], deltas=[in_round, pending, flushed], fold=round_)
        recent = view.lag().recent(NOW)
        assert (recent.events, recent.max) == (3, 600.0)
        assert view.skipped() == {"not-a-convention-path": 3}
        assert view.handed_back() == 7


def test_a_flushed_count_delta_indexes_nothing() -> None:
    entity = Delta("S|d|x", skipped=Counter({"unindexable": 2}), handed_back=5).entity()
    assert "LastIndexedAt" not in entity and "Lag" not in entity
    assert entity[SKIPPED] == '{"unindexable":2}' and entity[HANDED_BACK] == 5
    assert JobView(deltas=[Delta.of(entity)]).last_indexed() is None
