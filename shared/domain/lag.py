"""Indexing lag (pure): how long events take from their ``eventTime`` to indexed.

Ingest must stay contention-free, so lag is never written per event. Each transaction's delta
row (``shared.domain.ledger``) already carries what the transaction changed; it carries the
lag of its events too, as a compact histogram (``LagHistogram``). A fold merges the deltas'
histograms into ``LagWindows`` on ``S|00``: one histogram per ``WINDOW_SECONDS`` of index time,
trimmed to the last hour, so the row stays small. A reader merges the folded windows with the
unfolded deltas and reads p50, p95 and max off the result.

Buckets are geometric (each ``RATIO`` times the one before, from ``BASE`` seconds): a
percentile is the upper bound of its bucket, at most 25% above the true value and never above
the exact ``max``, which every histogram keeps alongside its buckets.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

#: The first bucket holds lags up to this many seconds (and negative ones: clock skew).
BASE = 0.01
#: Each bucket's upper bound is this many times the previous one's.
RATIO = 1.25
#: The last bucket (0.01 * 1.25**120 s is over a century).
MAX_BUCKET = 120
#: Folded lag is kept per window of index time this long ...
WINDOW_SECONDS = 300
#: ... for this long: the summary's lag is "over the last hour".
HORIZON = timedelta(hours=1)


def bucket_of(seconds: float) -> int:
    """The bucket a lag falls in: the first whose upper bound is at least ``seconds``."""
    if seconds <= BASE:
        return 0
    index = math.ceil(math.log(seconds / BASE) / math.log(RATIO) - 1e-9)
    return min(max(index, 0), MAX_BUCKET)


def lag_seconds(event_time: datetime, indexed_at: datetime) -> float:
    """Seconds from an event's time to its indexing (a naive time is taken as UTC)."""
    if event_time.tzinfo is None:
        event_time = event_time.replace(tzinfo=timezone.utc)
    if indexed_at.tzinfo is None:
        indexed_at = indexed_at.replace(tzinfo=timezone.utc)
    return (indexed_at - event_time).total_seconds()


def upper_bound(bucket: int) -> float:
    return BASE * RATIO**bucket


@dataclass(slots=True)
class LagHistogram:
    """Lags in seconds: counts per bucket and the exact maximum."""

    counts: dict[int, int] = field(default_factory=dict)
    max: float = 0.0

    @property
    def events(self) -> int:
        return sum(self.counts.values())

    def add(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        bucket = bucket_of(seconds)
        self.counts[bucket] = self.counts.get(bucket, 0) + 1
        self.max = max(self.max, seconds)

    def merge(self, other: LagHistogram) -> None:
        for bucket, count in other.counts.items():
            self.counts[bucket] = self.counts.get(bucket, 0) + count
        if other.counts:
            self.max = max(self.max, other.max)

    def percentile(self, q: float) -> float | None:
        """The ``q``-th quantile (0 < q <= 1): its bucket's upper bound, capped at ``max``."""
        total = self.events
        if not total:
            return None
        rank = max(1, math.ceil(q * total))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return min(upper_bound(bucket), self.max)
        return self.max

    def as_json(self) -> dict[str, Any]:
        return {"h": {str(b): n for b, n in sorted(self.counts.items())}, "m": round(self.max, 3)}

    @classmethod
    def of_json(cls, value: Mapping[str, Any] | None) -> LagHistogram:
        if not value:
            return cls()
        counts = {int(b): int(n) for b, n in (value.get("h") or {}).items() if int(n) > 0}
        return cls(counts, float(value.get("m") or 0.0))

    def text(self) -> str:
        return json.dumps(self.as_json(), separators=(",", ":"))

    @classmethod
    def parse(cls, text: str | None) -> LagHistogram:
        return cls.of_json(json.loads(text)) if text else cls()


def _epoch(at: datetime) -> int:
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return int(at.timestamp())


@dataclass(slots=True)
class LagWindows:
    """Histograms by window of index time (``WINDOW_SECONDS``), keyed by the window's start."""

    windows: dict[int, LagHistogram] = field(default_factory=dict)

    def add(self, at: datetime, histogram: LagHistogram) -> None:
        if not histogram.counts:
            return
        start = _epoch(at) // WINDOW_SECONDS * WINDOW_SECONDS
        self.windows.setdefault(start, LagHistogram()).merge(histogram)

    def merge(self, other: LagWindows) -> None:
        for start, histogram in other.windows.items():
            self.windows.setdefault(start, LagHistogram()).merge(histogram)

    def trimmed(self, now: datetime) -> LagWindows:
        """Only the windows that overlap the hour before ``now``."""
        oldest = _epoch(now - HORIZON) - WINDOW_SECONDS
        return LagWindows({s: h for s, h in self.windows.items() if s > oldest})

    def recent(self, now: datetime) -> LagHistogram:
        """Every lag of the windows overlapping the hour before ``now``, as one histogram."""
        total = LagHistogram()
        for histogram in self.trimmed(now).windows.values():
            total.merge(histogram)
        return total

    def text(self) -> str:
        return json.dumps({str(s): h.as_json() for s, h in sorted(self.windows.items())}, separators=(",", ":"))

    @classmethod
    def parse(cls, text: str | None) -> LagWindows:
        if not text:
            return cls()
        return cls({int(s): LagHistogram.of_json(h) for s, h in json.loads(text).items()})


def summary(histogram: LagHistogram) -> dict[str, Any]:
    """The wire form of a job's lag: events measured, p50, p95 and max in seconds (null when none)."""

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {
        "windowSeconds": int(HORIZON.total_seconds()),
        "events": histogram.events,
        "p50": rounded(histogram.percentile(0.5)),
        "p95": rounded(histogram.percentile(0.95)),
        "max": rounded(histogram.max) if histogram.counts else None,
    }


def merged(histograms: Iterable[LagHistogram]) -> LagHistogram:
    total = LagHistogram()
    for histogram in histograms:
        total.merge(histogram)
    return total
