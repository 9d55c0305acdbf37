"""Event Grid dead letters (pure): the blobs a subscription writes when it gives up on events.

Event Grid writes each dead-lettered batch as one block blob in the subscription's dead-letter
container, named ``{topic}/{SUBSCRIPTION}/{yyyy}/{M}/{d}/{H}/{guid}.json`` (the subscription
name upper-cased; year, month, day and hour of dead-lettering, UTC, not zero-padded). The blob
holds a JSON array of the events as they were published (Event Grid or CloudEvents schema), each
with Event Grid's delivery record added beside the event's own fields:

* ``deadLetterReason``: ``MaxDeliveryAttemptsExceeded``, ``TimeToLiveExceeded``,
  ``UndeliverableDueToHttpBadRequest``, ``UndeliverableDueToClientError``, ...
* ``deliveryAttempts``, ``lastDeliveryOutcome`` (``Busy``, ``GenericError``, ``TimedOut``,
  ``BadRequest``, ``Forbidden``, ...), ``lastHttpStatusCode``, ``publishTime``,
  ``lastDeliveryAttemptTime``.

``read_dead_letters`` splits each item back into the event and its delivery record, so the event
is re-ingested exactly as it was first delivered. ``dead_letter_blob`` and ``dead_lettered``
build the same shape (the local event source of ``make run`` dead-letters with them).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .planning import IngestReport

#: The delivery record Event Grid adds to each dead-lettered event.
DELIVERY_FIELDS = (
    "deadLetterReason", "deliveryAttempts", "lastDeliveryOutcome", "lastHttpStatusCode",
    "publishTime", "lastDeliveryAttemptTime",
)
#: Reasons of an event whose record names none (not written by Event Grid).
UNKNOWN_REASON = "Unknown"
#: The metadata a replay leaves on a dead-letter blob, so the next replay skips it.
REPLAYED_AT = "replayedAt"

_TIME_PATH = re.compile(r"(?:^|/)(\d{4})/(\d{1,2})/(\d{1,2})/(\d{1,2})/[^/]+$")


class DeadLetterFormatError(ValueError):
    """A dead-letter blob that is not a JSON array (or object) of events."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-lettered event: the event as published, and why Event Grid gave up on it."""

    event: dict[str, Any]
    reason: str
    attempts: int | None = None
    outcome: str | None = None
    status: int | None = None


def read_dead_letters(body: bytes) -> list[DeadLetter]:
    """The events of one dead-letter blob, each split from its delivery record."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DeadLetterFormatError(f"not JSON: {type(exc).__name__}") from exc
    items = payload if isinstance(payload, list) else [payload]
    letters = []
    for item in items:
        if not isinstance(item, dict):
            raise DeadLetterFormatError("an item is not a JSON object")
        event = {k: v for k, v in item.items() if k not in DELIVERY_FIELDS}
        reason = item.get("deadLetterReason")
        attempts, status = item.get("deliveryAttempts"), item.get("lastHttpStatusCode")
        outcome = item.get("lastDeliveryOutcome")
        letters.append(DeadLetter(
            event, reason if isinstance(reason, str) and reason else UNKNOWN_REASON,
            attempts if isinstance(attempts, int) else None,
            outcome if isinstance(outcome, str) else None,
            status if isinstance(status, int) else None,
        ))
    return letters


def dead_lettered_at(blob_name: str) -> datetime | None:
    """The hour Event Grid dead-lettered a blob's events, from its name (padded or not)."""
    match = _TIME_PATH.search(blob_name)
    if match is None:
        return None
    year, month, day, hour = (int(g) for g in match.groups())
    try:
        return datetime(year, month, day, hour, tzinfo=timezone.utc)
    except ValueError:
        return None


def dead_letter_blob(topic: str, subscription: str, at: datetime) -> str:
    """A dead-letter blob name as Event Grid makes it."""
    at = at.astimezone(timezone.utc)
    return f"{topic}/{subscription.upper()}/{at.year}/{at.month}/{at.day}/{at.hour}/{uuid.uuid4()}.json"


def dead_lettered(event: Mapping[str, Any], *, reason: str, attempts: int, outcome: str, status: int | None,
                  published: datetime, last_attempt: datetime) -> dict[str, Any]:
    """``event`` with Event Grid's delivery record, as it appears in a dead-letter blob."""

    def iso(at: datetime) -> str:
        return at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")

    record: dict[str, Any] = {"deadLetterReason": reason, "deliveryAttempts": attempts, "lastDeliveryOutcome": outcome}
    if status is not None:
        record["lastHttpStatusCode"] = status
    record.update(publishTime=iso(published), lastDeliveryAttemptTime=iso(last_attempt))
    return {**event, **record}


@dataclass(slots=True)
class ReplayReport:
    """What a replay found and did: blobs by fate, and per dead-letter reason what the events did."""

    dry_run: bool = False
    listed: int = 0
    replayed: int = 0
    already_replayed: int = 0
    before_since: int = 0
    unreadable: int = 0
    by_reason: dict[str, IngestReport] = field(default_factory=dict)
    next_marker: str | None = None

    def reason(self, name: str) -> IngestReport:
        return self.by_reason.setdefault(name, IngestReport())

    def add(self, other: ReplayReport) -> None:
        for name in ("listed", "replayed", "already_replayed", "before_since", "unreadable"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, report in other.by_reason.items():
            mine = self.reason(reason)
            mine.received += report.received
            mine.add(report)
        self.next_marker = other.next_marker

    def as_dict(self) -> dict[str, Any]:
        by_reason = {}
        for reason, report in sorted(self.by_reason.items()):
            entry = report.as_dict()
            entry["events"] = entry.pop("received")
            by_reason[reason] = entry
        answer: dict[str, Any] = {
            "dryRun": self.dry_run,
            "blobs": {"listed": self.listed, "replayed": self.replayed, "alreadyReplayed": self.already_replayed,
                      "beforeSince": self.before_since, "unreadable": self.unreadable},
            "events": sum(r.received for r in self.by_reason.values()),
            "byReason": by_reason,
        }
        if self.next_marker:
            answer["nextMarker"] = self.next_marker
        return answer
