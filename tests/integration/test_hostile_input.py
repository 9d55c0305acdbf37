"""Property tests of bad input (hypothesis): malformed, oversized, wrongly typed and hostile.

The webhook and the API answer a clean 4xx or a deliberate skip (200 with the event counted as
skipped), never a 5xx, and never change the index entries of a job the input did not name (the
parser alone, decoding or refusing with ``EventPayloadError``, is in tests/unit/test_hostile_input.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import quote

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from shared.conventions import container_name
from shared.domain.sources import is_azure_sequencer

from ..helpers import LOCAL_ACCOUNT, LOCAL_TOPIC, blob_event
from ..support.hostile import JSON, SENTINEL, SENTINEL_CONTAINER, TARGET, TEXT, hostile_events
from ..support.stack import RunningApp
from ..support.workload import index_state


def seed_sentinel(app: RunningApp) -> tuple:
    events = [blob_event(SENTINEL_CONTAINER, f"t{i}/$TaskOutput/keep-{i}.txt", sequencer=i + 1, size=i) for i in range(5)]
    events.append(blob_event(SENTINEL_CONTAINER, "$JobOutput/x' or '1'='1", sequencer=9, size=3))
    assert app.post_events(events).status_code == 200
    assert app.client.put(f"/api/jobs/{SENTINEL}/quota", json={"maxOutputs": 100}).status_code == 200
    return index_state(app, SENTINEL)


def test_webhook_never_answers_5xx_to_hostile_deliveries(serve: Callable[..., RunningApp], settings) -> None:
    app = serve(settings)
    before = seed_sentinel(app)
    seen: set[int] = set()

    @hsettings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.lists(hostile_events(), min_size=1, max_size=8), hostile_events(), JSON))
    def deliver(payload: object) -> None:
        response = app.client.post("/api/events", content=json.dumps(payload), headers={"content-type": "application/json"})
        seen.add(response.status_code)
        assert response.status_code in (200, 400), response.text
        if response.status_code == 400:
            assert response.json()["error"]["code"] == "InvalidEvents"
        else:
            body = response.json()
            if "received" in body:
                assert body["received"] == body["indexed"] + body["unchanged"] + body["rejected"] + body["skipped"]

    deliver()
    assert seen >= {200, 400}, "the strategies never reached both outcomes"
    for raw in (b"", b"{", b"\xff\xfe", b"[]", b"null", b"1e999999", b"[" * 5000 + b"]" * 5000, b'"' + b"x" * 100 + b'"'):
        response = app.client.post("/api/events", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 400, (raw[:20], response.status_code, response.text)
    for size in (2**63, 2**70, -1, 1.5, "12", True):
        event = blob_event(container_name(TARGET), "$JobOutput/huge.bin", sequencer=7)
        event["data"]["contentLength"] = size
        response = app.post_events([event])
        assert response.status_code == 200, (size, response.text)
        assert response.json()["skipped"] == 1, (size, response.text)
    response = app.client.post("/api/events", content=b"[" + b",".join([b"{}"] * 10_001) + b"]")
    assert response.status_code in (400, 413)
    after = index_state(app, SENTINEL)
    # The subject strategy can name the sentinel's container with a valid convention path,
    # which rightly indexes a *new* blob there; the seeded entries must never change.
    assert {name: size for name, size in after[0].items() if name in before[0]} == before[0]
    assert after[1] == before[1]


def test_api_never_answers_5xx_to_hostile_ids_and_filters(serve: Callable[..., RunningApp], settings) -> None:
    app = serve(settings)
    before = seed_sentinel(app)
    sentinel_names = set(before[0])

    @hsettings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    @given(job=TEXT, task=TEXT, kind=TEXT, prefix=TEXT,
           route=st.sampled_from(["", "/outputs", "/tasks", "/task-outputs", "/rejections", "/quota", "/tasks/{task}/outputs",
                                  "/outputs/{kind}/{prefix}", "/tasks/{task}/outputs/{kind}/{prefix}"]),
           token=st.one_of(st.none(), TEXT))
    def query(job: str, task: str, kind: str, prefix: str, route: str, token: str | None) -> None:
        path = f"/api/jobs/{quote(job, safe='')}" + route.format(task=quote(task, safe=""), kind=quote(kind, safe=""),
                                                                 prefix=quote(prefix, safe=""))
        params = {"kind": kind, "prefix": prefix}
        if token is not None:
            params["continuationToken"] = token
        response = app.client.get(path, params=params)
        assert response.status_code < 500, (path, response.text)
        if response.status_code == 200 and job.lower() != SENTINEL:
            for item in response.json().get("value", []):
                assert item["blobName"] not in sentinel_names or item["container"] != container_name(SENTINEL)
        put = app.client.put(f"/api/jobs/{quote(job, safe='')}/quota", json={"maxOutputs": 1})
        assert put.status_code in (200, 400, 404, 405), put.text

    query()
    assert index_state(app, SENTINEL) == before


ACCOUNTS = st.one_of(st.sampled_from([LOCAL_ACCOUNT, LOCAL_ACCOUNT.upper(), "attacker", f"{LOCAL_ACCOUNT}x", f"x{LOCAL_ACCOUNT}", ""]),
                     st.from_regex(r"[a-zA-Z0-9-]{0,24}", fullmatch=True))
SEQUENCERS = st.one_of(st.integers(min_value=0, max_value=10**20).map(lambda n: f"{n:032d}"), st.just("f" * 32), st.just("~" * 32), TEXT)


def test_only_the_outputs_account_and_azures_sequencers_are_ever_indexed(serve: Callable[..., RunningApp], settings) -> None:
    """Issue 14: hypothesis over the account an event names (topic or URL) and its sequencer."""
    app = serve(settings)
    before = seed_sentinel(app)
    outcomes: set[bool] = set()

    @hsettings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    @given(account=ACCOUNTS, sequencer=SEQUENCERS, where=st.sampled_from(["topic", "url", "both"]))
    def deliver(account: str, sequencer: str, where: str) -> None:
        event = blob_event(container_name(TARGET), "t1/$TaskOutput/x.txt", sequencer=sequencer)
        if where in ("topic", "both"):
            event["topic"] = LOCAL_TOPIC.replace(LOCAL_ACCOUNT, account)
        if where in ("url", "both"):
            event["data"]["url"] = f"https://{account}.blob.core.windows.net/{container_name(TARGET)}/t1/%24TaskOutput/x.txt"
        response = app.post_events([event])
        assert response.status_code == 200, response.text
        body = response.json()
        trusted = account.lower() == LOCAL_ACCOUNT and is_azure_sequencer(sequencer)
        outcomes.add(trusted)
        if trusted:
            assert body["skipped"] == 0, body
        else:
            assert body["indexed"] == body["unchanged"] == 0 and body["skipped"] == 1, body
            if account.lower() != LOCAL_ACCOUNT:
                assert body["skippedByReason"] == {"foreign-account": 1}, body

    deliver()
    assert outcomes == {True, False}, "the strategies never reached both outcomes"
    assert index_state(app, SENTINEL) == before
