"""The fast batch encoding against a real Azurite: same rows, same ETags, same errors as the SDK's."""

from __future__ import annotations

import asyncio

import pytest
from azure.core import MatchConditions
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from devtools.azurite import Azurite
from shared.domain import keys
from shared.store.batch_encoder import submit_fast
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
        status, etags = await submit_fast(client, [
            ("create", {"PartitionKey": "job-x", "RowKey": odd, "Size": 7}),
            ("upsert", {"PartitionKey": "job-x", "RowKey": "b", "Size": 8}, {"mode": UpdateMode.REPLACE}),
        ])
        assert status == 202
        stored = await client.get_entity("job-x", odd)
        assert stored["Size"] == 7
        assert etags is not None and etags[0] == stored.metadata["etag"]
        status, etags = await submit_fast(client, [
            ("update", {"PartitionKey": "job-x", "RowKey": odd, "Size": 9},
             {"mode": UpdateMode.REPLACE, "etag": etags[0], "match_condition": MatchConditions.IfNotModified}),
        ])
        assert (await client.get_entity("job-x", odd))["Size"] == 9

    run_with_table(azurite, "fastbatchok", scenario)


def test_a_failed_condition_commits_nothing_and_the_store_names_the_operation(azurite: Azurite) -> None:
    async def scenario(client: TableClient) -> tuple[int, object, int | None, list[str]]:
        await client.create_entity({"PartitionKey": "job-x", "RowKey": "taken"})
        status, etags = await submit_fast(client, [
            ("create", {"PartitionKey": "job-x", "RowKey": "new"}),
            ("create", {"PartitionKey": "job-x", "RowKey": "taken"}),
        ])
        store = TableStore(client, AdaptiveLimiter(4))
        with pytest.raises(ConflictError) as raised:
            await store.submit("job-x", [
                Operation(Op.CREATE, {"RowKey": "new"}), Operation(Op.CREATE, {"RowKey": "taken"}),
            ])
        rows = [e["RowKey"] async for e in client.list_entities()]
        return status, etags, raised.value.index, rows

    status, etags, index, rows = run_with_table(azurite, "fastbatchconflict", scenario)
    assert etags is None and status != 500
    assert index == 1
    assert rows == ["taken"]
