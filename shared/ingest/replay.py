"""Replaying dead letters: the events Event Grid gave up on, indexed after all.

After an outage longer than Event Grid's retries (24 hours), or a misconfiguration fixed late,
the events wait in the dead-letter container. A replay reads each dead-letter blob not marked
yet, re-ingests its events through the same path as a delivery (so the sequencer rules make it
idempotent: an event already applied, or overtaken by a newer one, changes nothing), reports per
dead-letter reason what was indexed, unchanged, rejected or skipped, and marks the blob
(``replayedAt`` metadata) once its events are durable, so the next replay skips it. A blob whose
events could not be indexed (storage busy or misconfigured) is not marked and the replay stops:
run it again once storage is back. The dead-letter blobs themselves are never deleted.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

from shared.domain.deadletters import DeadLetter, DeadLetterFormatError, ReplayReport, dead_lettered_at, read_dead_letters
from shared.domain.events import MAX_EVENTS_PER_REQUEST, EventBatch, SkipReason
from shared.domain.planning import IngestReport
from shared.store.deadletters import DeadLetterBlob, DeadLetterContainer
from shared.store.envelopes import parse_events

log = logging.getLogger(__name__)

#: Blobs one replay call reads at most (the CLI calls again with ``nextMarker``): an HTTP call
#: must end well within the Functions front end's 230 s.
DEFAULT_MAX_BLOBS = 100
MAX_BLOBS = 1000

Ingest = Callable[[EventBatch], Awaitable[IngestReport]]


def _is_event(item: dict[str, object]) -> bool:
    return isinstance(item.get("eventType"), str) or isinstance(item.get("specversion"), str)


class DeadLetterReplayer:
    def __init__(self, container: DeadLetterContainer, ingest: Ingest, account: str | None) -> None:
        self.container = container
        self.ingest = ingest
        #: The outputs account: events naming another are skipped, as on delivery.
        self.account = account

    async def run(self, *, since: datetime | None = None, dry_run: bool = False,
                  max_blobs: int = DEFAULT_MAX_BLOBS, marker: str | None = None) -> ReplayReport:
        """Replay the blobs not replayed yet (dead-lettered at or after ``since``), up to about
        ``max_blobs`` of them; ``report.next_marker`` says where to go on from, when there is more.
        ``dry_run`` reads and counts, and neither indexes nor marks anything."""
        report = ReplayReport(dry_run=dry_run)
        read = 0
        async for page in self.container.pages(marker, page_size=max(1, min(max_blobs, MAX_BLOBS))):
            for blob in page.blobs:
                report.listed += 1
                when = _when(blob)
                if blob.replayed_at is not None:
                    report.already_replayed += 1
                elif since is not None and when is not None and when < since:
                    report.before_since += 1
                else:
                    read += 1
                    await self._replay_blob(blob, report, dry_run)
            report.next_marker = page.next_marker
            if read >= max_blobs:
                break
        log.info("replayed dead letters from %s: %s", self.container.name, report.as_dict())
        return report

    async def _replay_blob(self, blob: DeadLetterBlob, report: ReplayReport, dry_run: bool) -> None:
        try:
            letters = read_dead_letters(await self.container.read(blob.name))
        except DeadLetterFormatError as exc:
            log.warning("dead-letter blob %s is unreadable and left as it is: %s", blob.name, exc)
            report.unreadable += 1
            return
        by_reason: dict[str, list[DeadLetter]] = defaultdict(list)
        for letter in letters:
            by_reason[letter.reason].append(letter)
        for reason, group in sorted(by_reason.items()):
            report.reason(reason).add(await self._replay_events(group, dry_run))
            report.reason(reason).received += len(group)
        report.replayed += 1
        if not dry_run:
            await self.container.mark_replayed(blob, datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"))

    async def _replay_events(self, letters: list[DeadLetter], dry_run: bool) -> IngestReport:
        events = [letter.event for letter in letters if _is_event(letter.event)]
        outcome = IngestReport()
        if len(events) < len(letters):
            outcome.skipped[SkipReason.MALFORMED.value] += len(letters) - len(events)
        if not events:
            return outcome
        # A dead-letter blob may hold more events than one delivery may (parse_events refuses those).
        for start in range(0, len(events), MAX_EVENTS_PER_REQUEST):
            batch = parse_events(events[start : start + MAX_EVENTS_PER_REQUEST], self.account)
            if dry_run:
                outcome.skipped.update(s.reason.value for s in batch.skipped)
            else:
                outcome.add(await self.ingest(batch))
        return outcome


def _when(blob: DeadLetterBlob) -> datetime | None:
    """When the blob's events were dead-lettered: when it was written, else the hour in its name."""
    return blob.created or dead_lettered_at(blob.name)
