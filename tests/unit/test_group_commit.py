"""Group commit (shared/ingest/group_commit.py) in process: which events share a commit, how many
commits run at once, and that each caller hears of its own commit only."""

from __future__ import annotations

import asyncio

import pytest

from shared.domain.events import BlobEvent, EventBatch
from shared.domain.planning import IngestReport
from shared.ingest.group_commit import GroupCommit
from shared.store.envelopes import parse_event

from ..helpers import blob_event

ACCOUNT = "devstoreaccount1"


def events(count: int, start: int = 0) -> list[BlobEvent]:
    parsed = [parse_event(blob_event("job-g", f"t1/$TaskOutput/f{n}", sequencer=n + 1), ACCOUNT) for n in range(start, start + count)]
    assert all(isinstance(e, BlobEvent) for e in parsed)
    return parsed  # type: ignore[return-value]


class HeldIngest:
    """An ingest that holds every commit until the test lets it go, recording what it was given."""

    def __init__(self) -> None:
        self.groups: list[int] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = asyncio.Event()
        self.fail_next = False

    async def __call__(self, batch: EventBatch) -> IngestReport:
        self.groups.append(len(batch.blob_events))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        failing, self.fail_next = self.fail_next, False
        try:
            await self.release.wait()
            if failing:
                raise ConnectionError("storage went away")
            return IngestReport(received=len(batch.blob_events), indexed=len(batch.blob_events))
        finally:
            self.in_flight -= 1


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


async def one_held_in_flight(*, failing: bool = False) -> tuple[HeldIngest, GroupCommit, asyncio.Task[IngestReport]]:
    """A group commit (groups of 10, 3 at once) with one event's commit in flight, held
    (and failing once let go, when ``failing``)."""
    ingest = HeldIngest()
    ingest.fail_next = failing
    commit = GroupCommit(ingest, max_group=10, max_commits=3)
    first = asyncio.create_task(commit.submit(events(1)[0]))
    await settle()
    assert ingest.groups == [1]
    return ingest, commit, first


def test_a_lone_event_is_committed_at_once() -> None:
    async def run() -> tuple[list[int], int]:
        ingest = HeldIngest()
        ingest.release.set()
        commit = GroupCommit(ingest, max_group=10, max_commits=3)
        report = await commit.submit(events(1)[0])
        return ingest.groups, report.indexed

    assert asyncio.run(run()) == ([1], 1)


def test_full_groups_commit_in_parallel_up_to_the_limit_and_the_rest_waits() -> None:
    async def run() -> HeldIngest:
        ingest, commit, first = await one_held_in_flight()
        waiting = [asyncio.create_task(commit.submit(e)) for e in events(35, start=1)]
        await settle()
        assert ingest.groups == [1, 10, 10] and ingest.in_flight == 3  # two full groups joined it, no more
        ingest.release.set()
        await asyncio.gather(first, *waiting)
        return ingest

    ingest = asyncio.run(run())
    assert sorted(ingest.groups) == [1, 5, 10, 10, 10] and sum(ingest.groups) == 36
    assert ingest.most_in_flight == 3


def test_a_quiet_instance_sends_one_commit_at_a_time() -> None:
    async def run() -> HeldIngest:
        ingest, commit, first = await one_held_in_flight()
        few = [asyncio.create_task(commit.submit(e)) for e in events(4, start=1)]  # less than a group
        await settle()
        assert ingest.in_flight == 1  # they wait for the commit in flight, then go together
        ingest.release.set()
        await asyncio.gather(first, *few)
        return ingest

    assert asyncio.run(run()).groups == [1, 4]


def test_a_failed_commit_fails_its_own_callers_only() -> None:
    async def run() -> tuple[list[IngestReport | BaseException], list[int]]:
        ingest, commit, first = await one_held_in_flight(failing=True)
        others = [asyncio.create_task(commit.submit(e)) for e in events(10, start=1)]
        await settle()
        ingest.release.set()
        outcomes = await asyncio.gather(first, *others, return_exceptions=True)
        return outcomes, ingest.groups

    outcomes, groups = asyncio.run(run())
    assert groups == [1, 10]
    assert isinstance(outcomes[0], ConnectionError)
    assert all(isinstance(o, IngestReport) for o in outcomes[1:])


@pytest.mark.parametrize("max_commits", [1, 2])
def test_the_limit_holds_however_much_waits(max_commits: int) -> None:
    async def run() -> HeldIngest:
        ingest = HeldIngest()
        commit = GroupCommit(ingest, max_group=5, max_commits=max_commits)
        tasks = [asyncio.create_task(commit.submit(e)) for e in events(40)]
        await settle()
        ingest.release.set()
        await asyncio.gather(*tasks)
        return ingest

    ingest = asyncio.run(run())
    assert ingest.most_in_flight == max_commits and sum(ingest.groups) == 40 and max(ingest.groups) == 5
