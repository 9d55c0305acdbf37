"""A hot job spread over several Table partitions reads like a job of one, page for page.

Two jobs get the same events: one in one partition (the default), one spread over four
(``PUT /api/jobs/{jobId}/layout``). Every listing, walked in small pages, answers the same items
in the same order; a summary is the same; tokens stay bound to their query; a summary read
while the job is being written counts what committed before it and nothing not yet sent.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from urllib.parse import parse_qs, urlparse

import pytest

from shared.conventions import container_name
from shared.service import Service

from ..helpers import blob_event
from ..support.stack import RunningApp
from ..support.workload import rows_by_partition, spread

ONE, SPREAD = "layout-one", "layout-spread"
#: Fields that name the job or its container, or say when: the rest must be equal.
OWN = {"jobId", "container", "url", "etag", "at", "indexedAt", "lastIndexedAt", "lastReconciledAt", "lag"}


def events_for(job: str) -> list[dict]:
    container = container_name(job)
    names = [f"{'Task' if t % 5 == 0 else 'task'}-{t:02d}/${kind}/out-{n}.bin"
             for t in range(30) for kind in ("TaskOutput", "TaskPreview", "TaskLog") for n in range(t % 4 + 1)]
    names += [f"$JobOutput/result-{n}.txt" for n in range(5)]
    events = [blob_event(container, name, sequencer=i + 1, size=10 + i) for i, name in enumerate(names)]
    # some deleted again, some overwritten with a new size
    events += [blob_event(container, names[i], sequencer=1000 + i, deleted=True) for i in range(0, len(names), 17)]
    events += [blob_event(container, names[i], sequencer=2000 + i, size=7) for i in range(3, len(names), 23)]
    return events


def same(items: list[dict]) -> list[dict]:
    """The items without what names their job or says when (a change's output too)."""
    return [{k: (same([v])[0] if isinstance(v, dict) else v) for k, v in item.items() if k not in OWN} for item in items]


@pytest.fixture
def both(app: RunningApp) -> RunningApp:
    spread(app, SPREAD, 4)
    for job in (ONE, SPREAD):
        assert app.post_events(events_for(job)).status_code == 200
    assert len(rows_by_partition(app, container_name(SPREAD))) == 4
    assert len(rows_by_partition(app, container_name(ONE))) == 1
    return app


@pytest.mark.parametrize("path,params", [
    ("task-outputs", {}),
    ("task-outputs", {"kind": "TaskPreview"}),
    ("task-outputs", {"kind": "TaskOutput", "prefix": "out-1"}),
    ("task-outputs", {"prefix": "out-0"}),
    ("tasks", {}),
    ("tasks/task-07/outputs", {}),
    ("tasks/TASK-05/outputs", {"kind": "TaskLog"}),
    ("outputs", {}),
])
@pytest.mark.parametrize("size", [1, 7, 1000])
def test_every_listing_of_a_spread_job_equals_the_one_partition_jobs(both: RunningApp, path: str, params: dict,
                                                                     size: int) -> None:
    one = both.all_pages(f"/api/jobs/{ONE}/{path}", maxpagesize=size, **params)
    spread_items = both.all_pages(f"/api/jobs/{SPREAD}/{path}", maxpagesize=size, **params)
    assert one, "nothing listed: the test proves nothing"
    assert same(spread_items) == same(one)


def test_a_spread_jobs_summary_single_outputs_and_rejections_equal_the_one_partition_jobs(both: RunningApp) -> None:
    one, spread_summary = both.get(f"/api/jobs/{ONE}").json(), both.get(f"/api/jobs/{SPREAD}").json()
    assert {k: v for k, v in spread_summary.items() if k not in OWN} == {k: v for k, v in one.items() if k not in OWN}
    assert spread_summary["tasks"] == 30
    assert both.get(f"/api/jobs/{SPREAD}/layout").json() == {"partitions": 4}
    for task in ("task-07", "TASK-10", "task-29"):
        for job in (ONE, SPREAD):
            response = both.get(f"/api/jobs/{job}/tasks/{task}/outputs/TaskOutput/out-0.bin")
            assert response.status_code == 200, (job, task, response.text)
    # a per-task limit rejects in every partition; lifting it admits them all again
    for job in (ONE, SPREAD):
        assert both.client.put(f"/api/jobs/{job}/quota", json={"maxOutputsPerTask": 1}).status_code == 200
        more = [blob_event(container_name(job), f"task-{t:02d}/$TaskOutput/late.bin", sequencer=5000 + t) for t in range(30)]
        assert both.post_events(more).json()["rejected"] == 30
    rejected = [same(both.all_pages(f"/api/jobs/{job}/rejections", maxpagesize=4)) for job in (ONE, SPREAD)]
    assert rejected[0] == rejected[1] and len(rejected[0]) == 30
    for job in (ONE, SPREAD):
        assert both.client.put(f"/api/jobs/{job}/quota", json={"maxOutputsPerTask": 0}).status_code == 200
    assert both.all_pages(f"/api/jobs/{SPREAD}/rejections") == []
    assert both.get(f"/api/jobs/{SPREAD}").json()["usage"] == both.get(f"/api/jobs/{ONE}").json()["usage"]


def test_a_spread_jobs_tokens_are_bound_to_their_query_and_tamper_evident(both: RunningApp) -> None:
    def first_token(job: str, path: str = "task-outputs") -> str:
        body = both.get(f"/api/jobs/{job}/{path}", params={"maxpagesize": 5}).json()
        return parse_qs(urlparse(body["nextLink"]).query)["continuationToken"][0]

    token = first_token(SPREAD)
    assert both.get(f"/api/jobs/{SPREAD}/task-outputs", params={"maxpagesize": 5, "continuationToken": token}).status_code == 200
    body, signature = token.split(".")
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    for bad, where in ((f"{flipped}.{signature}", SPREAD), (token, ONE), (first_token(ONE), SPREAD),
                       (token, f"{SPREAD}-other"), (first_token(SPREAD, "tasks"), SPREAD)):
        response = both.get(f"/api/jobs/{where}/task-outputs", params={"maxpagesize": 5, "continuationToken": bad})
        assert response.status_code == 400, (where, response.text)
        assert response.json()["error"]["code"] == "InvalidContinuationToken"


def walk(app: RunningApp, job: str, size: int, **params: str) -> tuple[list[dict], str]:
    """Every change from a cursor walk (``from=start`` unless a cursor is given), and the last cursor."""
    body = app.get(f"/api/jobs/{job}/changes", params={"maxpagesize": size, **({"from": "start"} if "cursor" not in params else {}),
                                                       **params}).json()
    changes = list(body["value"])
    while "nextLink" in body:
        body = app.get(body["nextLink"]).json()
        changes += body["value"]
    return changes, body["cursor"]


def per_blob(changes: list[dict]) -> dict[str, list[tuple]]:
    history: dict[str, list[tuple]] = {}
    for change in changes:
        history.setdefault(change["output"]["blobName"], []).append((change["change"], change["output"].get("size")))
    return history


@pytest.mark.parametrize("size", [7, 1000])
def test_the_change_feed_of_a_spread_job_merges_its_partitions(both: RunningApp, size: int) -> None:
    one, _ = walk(both, ONE, size)
    spread_changes, cursor = walk(both, SPREAD, size)
    assert one, "no change: the test proves nothing"
    # every change exactly once, each blob's in its own order (blobs of different partitions
    # have no order to keep)
    assert len(spread_changes) == len(one)
    assert per_blob(spread_changes) == per_blob(one)
    # one task's changes come from its partition alone, equal to the one-partition job's
    for task in ("task-07", "TASK-10"):
        assert same(walk(both, SPREAD, size, taskId=task)[0]) == same(walk(both, ONE, size, taskId=task)[0])
    # a cursor follows what comes next, in whichever partition, and only that
    late = [blob_event(container_name(SPREAD), f"task-{t:02d}/$TaskOutput/later.bin", sequencer=9000 + t, size=3)
            for t in range(12)]
    assert both.post_events(late).status_code == 200
    after, cursor = walk(both, SPREAD, size, cursor=cursor)
    assert sorted(c["output"]["blobName"] for c in after) == sorted(e["subject"].split("/blobs/", 1)[1] for e in late)
    assert walk(both, SPREAD, size, cursor=cursor)[0] == []
    # from now, then a long-poll that a new change answers
    now = both.get(f"/api/jobs/{SPREAD}/changes").json()
    assert now["value"] == []
    poster = threading.Thread(target=lambda: both.post_events(
        [blob_event(container_name(SPREAD), "task-03/$TaskLog/tail.txt", sequencer=9999)]))
    poster.start()
    waited = both.get(f"/api/jobs/{SPREAD}/changes", params={"cursor": now["cursor"], "wait": 30}, timeout=60).json()
    poster.join()
    if not waited["value"]:  # the long-poll began after the change: the next read has it
        waited = both.get(f"/api/jobs/{SPREAD}/changes", params={"cursor": waited["cursor"]}).json()
    assert [c["output"]["blobName"] for c in waited["value"]] == ["task-03/$TaskLog/tail.txt"]
    # a cursor is bound to its job and layout, and tamper-evident
    for bad, job in ((cursor, ONE), (cursor[:-3] + ("AAA" if cursor[-3:] != "AAA" else "BBB"), SPREAD)):
        response = both.get(f"/api/jobs/{job}/changes", params={"cursor": bad})
        assert response.status_code == 400, response.text


def test_a_summary_of_a_spread_job_being_written_counts_what_committed_before_it(
        serve: Callable[..., RunningApp], settings) -> None:
    writer, reader = serve(settings), serve(settings)
    job = "spread-being-written"
    spread(writer, job, 4)
    container = container_name(job)
    acked = 0
    done = threading.Event()

    def write() -> None:
        nonlocal acked
        try:
            for d in range(40):
                batch = [blob_event(container, f"t{(d * 50 + n) % 97}/$TaskOutput/d{d}-{n}.bin", sequencer=1, size=1)
                         for n in range(50)]
                assert writer.post_events(batch).status_code == 200
                acked += 50
        finally:
            done.set()

    thread = threading.Thread(target=write)
    thread.start()
    seen, reads = 0, 0
    while not done.is_set() or reads == 0:
        before = acked
        summary = reader.get(f"/api/jobs/{job}")
        after = acked + 50  # at most one delivery in flight beyond what was acknowledged
        if summary.status_code == 404:
            continue
        outputs = summary.json()["usage"]["outputs"]
        assert before <= outputs <= after, (before, outputs, after)
        assert outputs >= seen  # a later read never counts less (outputs are only created here)
        assert sum(k["outputs"] for k in summary.json()["kinds"].values()) == outputs
        seen, reads = outputs, reads + 1
    thread.join()
    final = reader.get(f"/api/jobs/{job}").json()
    assert final["usage"]["outputs"] == acked == 2000 and final["tasks"] == 97
    assert reads > 1


def test_the_jobs_listing_adds_up_a_spread_jobs_partitions_as_of_their_folds(both: RunningApp) -> None:
    async def fold_all() -> None:
        service = await Service.create(both.settings)
        try:
            for job in (ONE, SPREAD):
                layout = await service.indexer.layouts.get(container_name(job))
                await service.indexer.compactor.fold_job(layout.all(), force=True)
        finally:
            await service.close()

    asyncio.run(fold_all())
    listed = {item["jobId"]: item for item in both.all_pages("/api/jobs")}
    for job in (ONE, SPREAD):
        summary = both.get(f"/api/jobs/{job}").json()
        row = listed[job]
        assert (row["outputs"], row["bytes"], row["tasks"], row["rejections"]) == (
            summary["usage"]["outputs"], summary["usage"]["bytes"], summary["tasks"], summary["rejections"]["outputs"])
    assert {k: v for k, v in listed[SPREAD].items() if k not in OWN} == {k: v for k, v in listed[ONE].items() if k not in OWN}


def test_a_spread_jobs_default_page_holds_1000_rows_per_partition(app: RunningApp) -> None:
    """Without ``maxpagesize``, a page across every task of a job spread over 4 partitions holds up
    to 4,000 outputs (so it still costs about a query per 1,000), a one-partition job's 1,000; an
    explicit ``maxpagesize`` is kept; both walk to the same items in the same order."""
    spread(app, SPREAD, 4)
    for job in (ONE, SPREAD):
        names = [f"task-{t:03d}/$TaskOutput/part-{n:02d}.bin" for t in range(120) for n in range(40)]  # 4,800
        events = [blob_event(container_name(job), name, sequencer=i + 1, size=1) for i, name in enumerate(names)]
        for start in range(0, len(events), 1000):
            assert app.post_events(events[start:start + 1000]).status_code == 200
    first = {job: app.get(f"/api/jobs/{job}/task-outputs").json() for job in (ONE, SPREAD)}
    assert len(first[ONE]["value"]) == 1000
    assert len(first[SPREAD]["value"]) == 4000
    assert "maxpagesize" not in first[SPREAD]["nextLink"]  # the next page keeps the default
    assert len(app.get(f"/api/jobs/{SPREAD}/task-outputs", params={"maxpagesize": 1000}).json()["value"]) == 1000
    walked = {job: app.all_pages(f"/api/jobs/{job}/task-outputs") for job in (ONE, SPREAD)}
    assert len(walked[ONE]) == 4800
    assert same(walked[SPREAD]) == same(walked[ONE])
