"""Listings read each result once: requests and entities counted at the SDK's pipeline.

A page costs one query per 1,000 rows it returns (the service's page limit) and reads no row
it does not return; whether a next page exists comes from the service's continuation, not from
reading ahead. The tokens stay bound to their query.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import pytest
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.data.tables.aio import TableClient

from devtools.azurite import Azurite
from shared.domain.conventions import container_name
from shared.domain.quotas import QuotaDefaults
from shared.read.paging import InvalidTokenError, TokenCodec
from shared.read.query import Page, QueryService
from shared.store.table import TableStore
from shared.store.throttle import AdaptiveLimiter

from ..helpers import blob_event
from ..support.stack import RunningApp

JOB = "ReadOnceJob"
C = container_name(JOB)
TASK_OUTPUTS = 2_345


@dataclass
class Reads(SansIOHTTPPolicy):
    """Every query the SDK sends and the entities its answers carry."""

    queries: int = 0
    entities: int = 0
    sent: list[str] = field(default_factory=list)

    def on_request(self, request: PipelineRequest) -> None:
        self.sent.append(request.http_request.method)

    def on_response(self, request: PipelineRequest, response: PipelineResponse) -> None:
        if request.http_request.method == "GET" and "()" in request.http_request.url.split("?", 1)[0]:
            self.queries += 1
            self.entities += len(json.loads(response.http_response.body()).get("value", []))


def seed(app: RunningApp) -> set[str]:
    names = [f"task-{n % 37}/$TaskOutput/f{n:05d}.bin" for n in range(TASK_OUTPUTS)]
    others = [f"task-{n % 37}/$TaskLog/l{n:05d}.txt" for n in range(400)]
    others += [f"$JobOutput/j{n:03d}" for n in range(50)]
    events = [blob_event(C, name, sequencer=i + 1) for i, name in enumerate(names + others)]
    for start in range(0, len(events), 500):
        assert app.post_events(events[start : start + 500]).status_code == 200
    return set(names)


def walk(app: RunningApp, reads: Reads, page_size: int, kind: str | None = "TaskOutput") -> list[Page]:
    async def main() -> list[Page]:
        async with TableClient.from_connection_string(app.settings.index_storage.connection_string or "",
                                                      app.settings.index_table, per_call_policies=[reads]) as client:
            query = QueryService(TableStore(client, AdaptiveLimiter(4)), QuotaDefaults(0, 0, 0),
                                 TokenCodec(app.settings.token_signing_key), "http://blobs")
            pages = [await query.all_task_outputs(JOB, kind, "", page_size, None)]
            while pages[-1].next_token:
                pages.append(await query.all_task_outputs(JOB, kind, "", page_size, pages[-1].next_token))
            return pages

    return asyncio.run(main())


@pytest.mark.parametrize("page_size", [1000, 5000, 300, 2_345])
def test_every_task_output_is_read_once_and_pages_cost_one_query_a_thousand(
        app: RunningApp, azurite: Azurite, page_size: int) -> None:
    names = seed(app)
    reads = Reads()
    pages = walk(app, reads, page_size)
    listed = [item["blobName"] for page in pages for item in page.items]
    assert len(listed) == len(set(listed)) and set(listed) == names
    assert all(len(page.items) == page_size for page in pages[:-1])
    assert reads.entities == TASK_OUTPUTS  # nothing read twice, nothing read ahead
    full, rest = divmod(TASK_OUTPUTS, page_size)
    per_page = -(-page_size // 1000)  # the service's page holds at most 1,000 entities
    assert reads.queries == full * per_page + -(-rest // 1000)
    assert len(pages) == full + (1 if rest else 0)  # Azurite's continuation is exact: no empty last page


def test_a_listing_whose_rows_are_checked_one_by_one_reads_each_row_once(app: RunningApp) -> None:
    # A prefix longer than a key can hold is clipped: rows are then checked by their own path.
    long_prefix = "d/" + "x" * 600 + "/"
    names = [f"task-{n}/$TaskOutput/{long_prefix}{n:03d}" for n in range(30)]
    names += [f"task-{n}/$TaskOutput/{long_prefix[:-2]}y/{n:03d}" for n in range(30)]
    assert app.post_events([blob_event(C, name, sequencer=i + 1) for i, name in enumerate(names)]).status_code == 200
    seen: list[str] = []
    response = app.get(f"/api/jobs/{JOB}/task-outputs", params={"kind": "TaskOutput", "prefix": long_prefix, "maxpagesize": 7})
    pages = 0
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        seen.extend(item["blobName"] for item in body["value"])
        if "nextLink" not in body:
            break
        response = app.get(body["nextLink"])
    assert sorted(seen) == sorted(names[:30])
    assert pages == 5  # 30 results, 7 a page: exactly ceil(30 / 7), no empty page at the end


def test_tokens_of_the_read_once_listing_stay_tamper_evident(app: RunningApp) -> None:
    seed(app)
    reads = Reads()
    first = walk(app, reads, 5000)[0]
    assert first.next_token is None
    pages = walk(app, Reads(), 1000)
    token = pages[0].next_token
    assert token is not None
    codec = TokenCodec(app.settings.token_signing_key)
    body, signature = token.split(".")
    forged = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + signature
    with pytest.raises(InvalidTokenError):
        codec.decode(("all-task-outputs", C, "TaskOutput", ""), forged)
    with pytest.raises(InvalidTokenError):
        codec.decode(("all-task-outputs", C, "TaskLog", ""), token)
    response = app.get(f"/api/jobs/{JOB}/task-outputs", params={"kind": "TaskLog", "continuationToken": token})
    assert response.status_code == 400
