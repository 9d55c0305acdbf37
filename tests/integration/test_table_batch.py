"""The fast batch encoding against a real Azurite: same rows, same ETags, same errors as the SDK's."""

from __future__ import annotations

import asyncio

import pytest
from azure.core import MatchConditions
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from devtools.azurite import Azurite
from shared.domain import keys
from shared.store.batch_encoder import Answer, submit_fast
from shared.store.table import ConflictError, Op, Operation, TableStore
from shared.store.throttle import AdaptiveLimiter


def run_with_table(azurite: Azurite, name: str, scenario) -> object:
    async def main() -> object:
        async with TableClient.from_connection_string(azurite.connection_string, name) as client:
            await client.create_table()
            return await scenario(client)

    return asyncio.run(main())


def test_a_fast_batch_writes_what_it_says_and_returns_the_stored_etags(azurite: Azurite) -> None:
    odd = keys.task_output_key("TaskOutput", "t1", "frames/a b%#?/ünï'code.png")

    async def scenario(client: TableClient) -> None:
        answer = await submit_fast(client, [
            ("create", {"PartitionKey": "job-x", "RowKey": odd, "Size": 7}),
            ("upsert", {"PartitionKey": "job-x", "RowKey": "b", "Size": 8}, {"mode": UpdateMode.REPLACE}),
        ])
        assert answer.status == 202 and answer.failure is None
        etags = answer.etags
        stored = await client.get_entity("job-x", odd)
        assert stored["Size"] == 7
        assert etags is not None and etags[0] == stored.metadata["etag"]
        await submit_fast(client, [
            ("update", {"PartitionKey": "job-x", "RowKey": odd, "Size": 9},
             {"mode": UpdateMode.REPLACE, "etag": etags[0], "match_condition": MatchConditions.IfNotModified}),
        ])
        assert (await client.get_entity("job-x", odd))["Size"] == 9

    run_with_table(azurite, "fastbatchok", scenario)


class Counted(SansIOHTTPPolicy):  # the SDK's own pipeline hook: every request it sends
    def __init__(self) -> None:
        self.sent: list[str] = []

    def on_request(self, request: PipelineRequest) -> None:
        self.sent.append(f"{request.http_request.method} {request.http_request.url.rsplit('/', 1)[-1]}")


STALE = 'W/"datetime\'2020-01-01T00%3A00%3A00.0000000Z\'"'


def sdk_operation(op: Op, row: str) -> tuple:
    entity = {"PartitionKey": "job-x", "RowKey": row}
    if op is Op.CREATE:
        return ("create", entity)
    condition = {"etag": STALE, "match_condition": MatchConditions.IfNotModified}
    return ("update", entity, {"mode": UpdateMode.REPLACE, **condition}) if op is Op.REPLACE else ("delete", entity, condition)


@pytest.mark.parametrize(("op", "row", "status", "code"), [
    (Op.CREATE, "taken", 409, "EntityAlreadyExists"),
    (Op.REPLACE, "taken", 412, "UpdateConditionNotSatisfied"),
    (Op.DELETE, "gone", 404, "ResourceNotFound"),
])
def test_a_lost_race_costs_one_request_and_names_the_operation_that_lost(azurite: Azurite, op: Op, row: str, status: int,
                                                                          code: str) -> None:
    counted = Counted()

    async def main() -> tuple[Answer, int | None, list[str], list[str]]:
        async with TableClient.from_connection_string(azurite.connection_string, f"lostrace{status}",
                                                      per_call_policies=[counted]) as client:
            await client.create_table()
            await client.create_entity({"PartitionKey": "job-x", "RowKey": "taken"})
            answer = await submit_fast(client, [("create", {"PartitionKey": "job-x", "RowKey": "new"}), sdk_operation(op, row)])
            counted.sent.clear()
            store = TableStore(client, AdaptiveLimiter(4))
            with pytest.raises(ConflictError) as raised:
                await store.submit("job-x", [Operation(Op.CREATE, {"RowKey": "new"}), Operation(op, {"RowKey": row}, STALE)])
            sent = list(counted.sent)
            return answer, raised.value.index, sent, [e["RowKey"] async for e in client.list_entities()]

    answer, index, sent, stored = asyncio.run(main())
    assert answer.status == 202 and answer.etags is None
    assert answer.failure is not None and (answer.failure.status, answer.failure.code, answer.failure.index) == (status, code, 1)
    assert index == 1  # the store names the operation that lost: the indexer re-reads that row
    assert sent == ["POST $batch"]  # read from the answer: not sent again through the SDK
    assert stored == ["taken"]  # nothing of the transaction was written


def test_a_failed_condition_commits_nothing_and_the_store_names_the_operation(azurite: Azurite) -> None:
    async def scenario(client: TableClient) -> tuple[int, object, int | None, list[str]]:
        await client.create_entity({"PartitionKey": "job-x", "RowKey": "taken"})
        answer = await submit_fast(client, [
            ("create", {"PartitionKey": "job-x", "RowKey": "new"}),
            ("create", {"PartitionKey": "job-x", "RowKey": "taken"}),
        ])
        store = TableStore(client, AdaptiveLimiter(4))
        with pytest.raises(ConflictError) as raised:
            await store.submit("job-x", [
                Operation(Op.CREATE, {"RowKey": "new"}), Operation(Op.CREATE, {"RowKey": "taken"}),
            ])
        rows = [e["RowKey"] async for e in client.list_entities()]
        return answer.status, answer.etags, raised.value.index, rows

    status, etags, index, rows = run_with_table(azurite, "fastbatchconflict", scenario)
    assert etags is None and status != 500
    assert index == 1
    assert rows == ["taken"]


class ChangedBuilder:
    """What a future azure-data-tables might hold under the private name the encoder uses."""

    def __init__(self, **_: object) -> None:
        raise AttributeError("'TablesBaseClient' object has no attribute '_config'")


def test_a_changed_private_sdk_builder_falls_back_to_the_sdk_once_and_logs_it(
    azurite: Azurite, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from shared.store import batch_encoder

    monkeypatch.setattr(batch_encoder, "TableBatchOperations", ChangedBuilder)
    monkeypatch.setattr(batch_encoder, "FAST_PATH", batch_encoder.FastPath())

    async def scenario(client: TableClient) -> None:
        store = TableStore(client, AdaptiveLimiter(4))  # decided here, at start
        assert not batch_encoder.FAST_PATH.usable
        for n in range(3):  # every batch still commits, through submit_transaction
            await store.submit("job-x", [Operation(Op.CREATE, {"RowKey": f"r{n}", "Size": n})])
        assert (await client.get_entity("job-x", "r2"))["Size"] == 2
        with pytest.raises(ConflictError):
            await store.submit("job-x", [Operation(Op.CREATE, {"RowKey": "r0"})])

    with caplog.at_level("WARNING", logger="shared.store.batch_encoder"):
        run_with_table(azurite, "fastbatchchanged", scenario)
    warnings = [r for r in caplog.records if r.name == "shared.store.batch_encoder"]
    assert len(warnings) == 1 and "AttributeError" in warnings[0].getMessage()


def test_a_builder_that_breaks_after_start_falls_back_too(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.store import batch_encoder

    monkeypatch.setattr(batch_encoder, "FAST_PATH", batch_encoder.FastPath())

    async def scenario(client: TableClient) -> None:
        store = TableStore(client, AdaptiveLimiter(4))
        assert batch_encoder.FAST_PATH.usable
        monkeypatch.setattr(batch_encoder, "TableBatchOperations", ChangedBuilder)
        await store.submit("job-x", [Operation(Op.CREATE, {"RowKey": "late", "Size": 1})])
        assert (await client.get_entity("job-x", "late"))["Size"] == 1
        assert not batch_encoder.FAST_PATH.usable

    run_with_table(azurite, "fastbatchlate", scenario)
