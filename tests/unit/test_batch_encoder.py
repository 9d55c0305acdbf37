"""The fast batch encoding writes, byte for byte, what the SDK's own builder writes."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.core.serialization import AzureJSONEncoder
from azure.data.tables import EdmType, EntityProperty, UpdateMode
from azure.data.tables._serialize import _add_entity_properties
from azure.data.tables._table_batch import TableBatchOperations
from azure.data.tables.aio import TableClient
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from batch_outputs.clients import development_storage
from shared.domain import keys
from shared.store.batch_encoder import Failure, SubRequest, _body, _part, decode, failure, sub_requests

WHEN = datetime(2026, 11, 23, 18, 44, 10, 645047, tzinfo=timezone.utc)


def entity(row: str, **extra: Any) -> dict[str, Any]:
    return {"PartitionKey": "job-x", "RowKey": row, **extra}


OPERATIONS: list[Any] = [
    ("create", entity(keys.task_output_key("TaskOutput", "t1", "frames/a b%#?/ünï'code.png"),
                      Size=EntityProperty(2**40, EdmType.INT64), EventTime=WHEN, Kind="TaskOutput")),
    ("create", entity("o|2", Seq="0000000000000000000000000000070f", Ratio=1.5, Ok=True, Empty="", Gone=None)),
    ("upsert", entity("S|00", Parts0='{"a": [1, 2]}'), {"mode": UpdateMode.REPLACE}),
    ("create", entity("o|3", Blob=b"\x00\xff", Text="line\r\nbreak \u2028 \U0001F600")),
    ("update", entity("U|t1", Outputs=3), {"mode": UpdateMode.REPLACE, "etag": 'W/"datetime\'2026\'"',
                                          "match_condition": MatchConditions.IfNotModified}),
    ("create", entity("o|4", Count=7)),
    ("delete", entity("o|1"), {"etag": 'W/"x"', "match_condition": MatchConditions.IfNotModified}),
]


def sdk_built(client: TableClient, operations: list[Any]) -> list[SubRequest]:
    builder = TableBatchOperations(config=client._client._config,
                                   endpoint=f"{client.scheme}://{client._primary_hostname}",
                                   table_name=client.table_name, is_cosmos_endpoint=client._cosmos_endpoint)
    for operation in operations:
        builder.add_operation(operation)
    return [SubRequest.of(request) for request in builder.requests]


@pytest.fixture
def client() -> TableClient:
    return TableClient.from_connection_string(development_storage("UseDevelopmentStorage=true"), "index")


def test_every_operation_goes_on_the_wire_as_the_sdk_builds_it(client: TableClient) -> None:
    fast, sdk = sub_requests(client, OPERATIONS), sdk_built(client, OPERATIONS)
    assert [(r.method, r.url) for r in fast] == [(r.method, r.url) for r in sdk]
    assert [r.body for r in fast] == [r.body for r in sdk]
    date = "Mon, 23 Nov 2026 18:44:10 GMT"
    assert [_part(i, r, date) for i, r in enumerate(fast)] == [_part(i, r, date) for i, r in enumerate(sdk)]
    assert b'"Size@odata.type": "Edm.Int64"' in fast[0].body and b"Gone" not in fast[1].body


def test_a_create_for_another_partition_is_refused_as_the_sdk_refuses_it(client: TableClient) -> None:
    with pytest.raises(ValueError, match="Partition Keys"):
        sub_requests(client, [("create", entity("a")), ("create", {"PartitionKey": "job-y", "RowKey": "b"})])
    with pytest.raises(ValueError, match="PartitionKey and/or RowKey"):
        sub_requests(client, [("create", entity("a")), ("create", {"PartitionKey": "job-x"})])


def answer(*parts: bytes) -> bytes:
    """A batch response as Table storage writes it, one changeset part per operation."""
    pieces = b"".join(b"--changesetresponse_abc\r\nContent-Type: application/http\r\n"
                      b"Content-Transfer-Encoding: binary\r\n\r\n" + part + b"\r\n\r\n" for part in parts)
    return (b"--batchresponse_1\r\nContent-Type: multipart/mixed; boundary=changesetresponse_abc\r\n\r\n"
            + pieces + b"--changesetresponse_abc--\r\n--batchresponse_1--\r\n")


def test_an_answer_gives_each_operations_etag_in_order_and_a_failure_gives_none() -> None:
    created = b"HTTP/1.1 204 No Content\r\nPreference-Applied: return-no-content\r\nETag: W/\"datetime'1'\" \r\n"
    shouted = b"HTTP/1.1 204 No Content\r\nETAG:W/\"datetime'2'\"\r\n"
    deleted = b"HTTP/1.1 204 No Content\r\nX-Content-Type-Options: nosniff\r\n"
    assert decode(answer(created, deleted, shouted), 3) == ["W/\"datetime'1'\"", None, "W/\"datetime'2'\""]
    refused = b"HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\n\r\n{\"odata.error\": {}}"
    assert decode(answer(created, refused), 2) is None
    assert decode(answer(created), 2) is None
    assert decode(b"not a batch", 1) is None


def refusal(status: str, body: bytes) -> bytes:
    return answer(f"HTTP/1.1 {status}\r\nContent-ID: 2\r\nContent-Type: application/json;odata=minimalmetadata\r\n\r\n".encode()
                  + body)


def test_a_refused_transaction_names_its_failed_operation_status_and_code() -> None:
    exists = b'{"odata.error":{"code":"EntityAlreadyExists","message":{"lang":"en-US","value":"1:The specified entity already exists.\\nRequestId:r"}}}'
    assert failure(refusal("409 Conflict", exists)) == Failure(409, "EntityAlreadyExists",
                                                               "1:The specified entity already exists.\nRequestId:r", 1)
    unnamed = b'{"odata.error":{"code":"InvalidInput","message":{"value":"One of the request inputs is not valid."}}}'
    assert failure(refusal("400 Bad Request", unnamed)) == Failure(400, "InvalidInput", "One of the request inputs is not valid.", None)
    # what this module does not read is left to the SDK
    assert failure(refusal("409 Conflict", b"<html>busy</html>")) is None
    assert failure(refusal("409 Conflict", b'{"odata.error":{"code":1,"message":{"value":"0:x"}}}')) is None
    assert failure(refusal("409 Conflict", b'{"odata.error":{}}')) is None
    ok = b"HTTP/1.1 204 No Content\r\nETag: W/\"1\"\r\n"
    assert failure(answer(ok)) is None
    assert failure(answer(ok, ok)) is None
    assert failure(b"not a batch") is None


VALUES = st.one_of(
    st.text(), st.booleans(), st.none(), st.floats(), st.binary(max_size=8),
    st.integers(min_value=-(2**31) - 2, max_value=2**31 + 1),
    st.datetimes(timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=2))]) | st.none()),
    st.builds(EntityProperty, st.integers(min_value=-(2**63) - 1, max_value=2**63), st.just(EdmType.INT64)),
    st.builds(EntityProperty, st.text(max_size=4), st.just(EdmType.STRING)),
)


@hsettings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=6), VALUES, max_size=6))
def test_a_rows_body_is_the_sdks_for_any_value_or_refused_alike(properties: dict[str, Any]) -> None:
    row = entity("r", **{f"p{name}": value for name, value in properties.items()})
    try:
        expected = json.dumps(_add_entity_properties(row), cls=AzureJSONEncoder).encode("utf-8")
    except (TypeError, ValueError) as refused:
        with pytest.raises(type(refused)):
            _body(row)
    else:
        assert _body(row) == expected
