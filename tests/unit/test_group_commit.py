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


class SteppedIngest:
    """An ingest that takes ``turns`` turns of the event loop, so the test decides in which turn
    a commit ends relative to the submits it places."""

    def __init__(self, turns: int) -> None:
        self.turns = turns
        self.groups: list[int] = []

    async def __call__(self, batch: EventBatch) -> IngestReport:
        self.groups.append(len(batch.blob_events))
        for _ in range(self.turns):
            await asyncio.sleep(0)
        return IngestReport(received=len(batch.blob_events), indexed=len(batch.blob_events))


async def done_within(task: asyncio.Task[IngestReport], turns: int = 5000) -> bool:
    """Whether ``task`` finishes within ``turns`` turns of the loop (turns, not a clock)."""
    for _ in range(turns):
        if task.done():
            return True
        await asyncio.sleep(0)
    return task.done()


@pytest.mark.parametrize("ingest_turns", [0, 1, 3])
def test_a_submit_in_any_turn_is_committed(ingest_turns: int) -> None:
    """A second event submitted in every turn of the loop from the first's submit until well after
    its flusher has exited, the turn in which that flusher exits included: each is committed."""

    async def run(offset: int) -> tuple[bool, list[int]]:
        ingest = SteppedIngest(ingest_turns)
        commit = GroupCommit(ingest, max_group=10, max_commits=3)
        first_event, second_event = events(2)
        first = asyncio.create_task(commit.submit(first_event))
        for _ in range(offset):
            await asyncio.sleep(0)
        second = asyncio.create_task(commit.submit(second_event))
        committed = await done_within(second)
        await done_within(first)
        for task in (first, second):
            task.cancel()
        return committed, ingest.groups

    for offset in range(40):
        committed, groups = asyncio.run(run(offset))
        assert committed, f"the event submitted {offset} turns after the first was stranded"
        assert sum(groups) == 2


@pytest.mark.parametrize("ingest_turns", [0, 2])
def test_back_to_back_submits_both_return(ingest_turns: int) -> None:
    """Trigger invocations one after the other, each awaited once the previous returned: the
    next submit runs in the very turn the previous commit's flusher exits."""

    async def run() -> tuple[bool, list[int]]:
        ingest = SteppedIngest(ingest_turns)
        commit = GroupCommit(ingest, max_group=10, max_commits=3)

        async def invocations() -> IngestReport:
            report = IngestReport()
            for event in events(5):
                report = await commit.submit(event)
            return report

        driver = asyncio.create_task(invocations())
        returned = await done_within(driver)
        driver.cancel()
        return returned, ingest.groups

    assert asyncio.run(run()) == (True, [1] * 5)
