"""Hostile events against the parser (pure): foreign accounts, forged sequencers, sizes Azure
never sends, over-long fields, a validation event beside blob events (issue 14)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from devtools.event_feed import Sequencer
from shared.domain.events import BlobEvent, NamespaceEvent, SkippedEvent, SkipReason
from shared.domain.sources import MAX_BLOB_BYTES, account_of_resource, account_of_url, is_azure_sequencer, outputs_account
from shared.store.envelopes import parse_event, parse_events

from ..helpers import LOCAL_ACCOUNT, LOCAL_TOPIC, blob_event, from_local_account, load_events

C = "job-abuse"


def event(**data: object) -> dict:
    made = blob_event(C, "t1/$TaskOutput/a.txt", sequencer=7)
    made["data"].update(data)
    return made


def skipped(parsed: object, reason: SkipReason) -> bool:
    return isinstance(parsed, SkippedEvent) and parsed.reason is reason


# -- trusted sources -------------------------------------------------------------------------


def test_events_of_the_outputs_account_pass_in_both_schemas() -> None:
    for schema in ("eventgrid", "cloudevents"):
        made = blob_event(C, "t1/$TaskOutput/a.txt", schema=schema)
        assert isinstance(parse_event(made, LOCAL_ACCOUNT), BlobEvent)
        assert isinstance(parse_event(made, LOCAL_ACCOUNT.upper()), BlobEvent)  # account names are case-insensitive


@pytest.mark.parametrize("where", ["topic", "url", "both"])
def test_an_event_naming_another_account_is_skipped_as_foreign(where: str) -> None:
    made = event()
    if where in ("topic", "both"):
        made["topic"] = LOCAL_TOPIC.replace(LOCAL_ACCOUNT, "attacker")
    if where in ("url", "both"):
        made["data"]["url"] = f"https://attacker.blob.core.windows.net/{C}/t1/%24TaskOutput/a.txt"
    assert skipped(parse_event(made, LOCAL_ACCOUNT), SkipReason.FOREIGN_ACCOUNT)
    assert isinstance(parse_event(made), BlobEvent)  # without an account to check (a test of parsing alone)


@pytest.mark.parametrize("topic", [None, "", "/t", "/subscriptions/s/resourceGroups/r/providers/Microsoft.EventGrid/topics/devstoreaccount1",
                                   LOCAL_TOPIC + "/blobServices/default", 42])
def test_a_topic_that_is_not_the_accounts_resource_id_is_foreign(topic: object) -> None:
    made = event()
    if topic is None:
        del made["topic"]
    else:
        made["topic"] = topic
    assert skipped(parse_event(made, LOCAL_ACCOUNT), SkipReason.FOREIGN_ACCOUNT)


def test_a_rename_from_another_account_is_foreign() -> None:
    rename = {"id": "r1", "topic": LOCAL_TOPIC, "eventType": "Microsoft.Storage.BlobRenamed", "eventTime": "2026-11-23T10:00:00Z",
              "subject": f"/blobServices/default/containers/{C}/blobs/t1/$TaskOutput/new.txt", "dataVersion": "",
              "data": {"sequencer": "0" * 32, "sourceUrl": f"https://other.dfs.core.windows.net/{C}/t1/%24TaskOutput/old.txt",
                       "destinationUrl": f"https://{LOCAL_ACCOUNT}.dfs.core.windows.net/{C}/t1/%24TaskOutput/new.txt"}}
    assert skipped(parse_event(rename, LOCAL_ACCOUNT), SkipReason.FOREIGN_ACCOUNT)
    rename["data"]["sourceUrl"] = rename["data"]["destinationUrl"].replace("new.txt", "old.txt")
    assert isinstance(parse_event(rename, LOCAL_ACCOUNT), NamespaceEvent)


@pytest.mark.parametrize(("url", "account"), [
    ("https://acct.blob.core.windows.net/c/b", "acct"),
    ("https://ACCT.dfs.core.windows.net/c/b", "acct"),
    ("https://acct.z01.blob.storage.azure.net/c/b", "acct"),
    ("https://acct.blob.core.chinacloudapi.cn/c/b", "acct"),
    ("https://acct.privatelink.blob.core.windows.net/c/b", "acct"),
    ("https://acct.evil.blob.core.windows.net/c/b", None),
    ("http://azurite:10000/devstoreaccount1/c/b", "devstoreaccount1"),
    ("http://127.0.0.1:10000/devstoreaccount1/c/b", "devstoreaccount1"),
    ("http://localhost:10000/devstoreaccount1/c/b", "devstoreaccount1"),
    ("http://[::1]:10000/devstoreaccount1/c/b", "devstoreaccount1"),
    ("http://devstoreaccount1.blob.localhost:10000/c/b", "devstoreaccount1"),
    ("https://evil.example.com/acct/c/b", None),
    ("ftp://acct.blob.core.windows.net/c/b", None),
    ("https://[::1/c", None),
])
def test_the_account_a_url_names(url: str, account: str | None) -> None:
    assert account_of_url(url) == account


URL_PIECES = st.sampled_from(["http:", "https:", "ftp:", "", "/", "//", "?", "#", "@", ":", "[", "]", "\t", "\\",
                               "acct", "ACCT.blob.core.windows.net", ".", "127.0.0.1:10000", "devstoreaccount1", "c"])


@hsettings(max_examples=2000, deadline=None)
@given(st.lists(URL_PIECES, max_size=12).map("".join))
def test_the_account_is_the_same_whether_the_url_start_was_parsed_before_or_not(url: str) -> None:
    from shared.domain.sources import _parse_account

    assert account_of_url(url) == _parse_account(url)
    assert account_of_url(url) == _parse_account(url)  # and from the cache


def test_the_outputs_account_is_read_from_its_endpoint() -> None:
    assert outputs_account("http://azurite:10000/devstoreaccount1", None) == "devstoreaccount1"  # the SDK reads no name here
    assert outputs_account("https://acct.privatelink.blob.core.windows.net", "acct.privatelink") == "acct"
    assert outputs_account("https://acct.blob.core.windows.net/", "acct") == "acct"


def test_the_account_a_topic_names() -> None:
    assert account_of_resource(LOCAL_TOPIC) == LOCAL_ACCOUNT
    assert account_of_resource(LOCAL_TOPIC.upper()) == LOCAL_ACCOUNT
    assert account_of_resource("/subscriptions/s/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/a/x") is None


def test_documented_samples_are_from_their_own_account_only() -> None:
    for name in ("eventgrid_blob_created.json", "cloudevents_blob_deleted.json", "adls_create_then_flush.json"):
        for sample in load_events(name):
            assert skipped(parse_event(sample, LOCAL_ACCOUNT), SkipReason.FOREIGN_ACCOUNT)
            assert not skipped(parse_event(sample, "my-storage-account"), SkipReason.FOREIGN_ACCOUNT)
            assert not skipped(parse_event(from_local_account(sample), LOCAL_ACCOUNT), SkipReason.FOREIGN_ACCOUNT)


# -- sequencers ------------------------------------------------------------------------------


@pytest.mark.parametrize("sequencer", [
    "00000000000004420000000000028963",                      # Azure's documented sample (32 hex)
    "0000000000000281000000000002F5CA",                      # Data Lake Gen2 sample
    "0000000000000000000000000000994C000000000000003a",      # 48 hex, mixed case, as Azure sends
])
def test_azure_sequencers_pass(sequencer: str) -> None:
    assert is_azure_sequencer(sequencer)
    assert isinstance(parse_event(event(sequencer=sequencer), LOCAL_ACCOUNT), BlobEvent)


def test_the_local_event_sources_sequencers_pass() -> None:
    sequencer = Sequencer()
    for _ in range(3):
        assert is_azure_sequencer(sequencer.next())


@pytest.mark.parametrize("sequencer", ["~" * 32, "g" * 32, "f" * 65, "0001", "", " " + "0" * 31, "0" * 31 + "\n",
                                       "０" * 32, "ffffffffffffffffffffffffffffffff\u0000", 7, None])
def test_a_sequencer_not_of_azures_shape_is_skipped_never_stored(sequencer: object) -> None:
    made = event(sequencer=sequencer)
    assert skipped(parse_event(made, LOCAL_ACCOUNT), SkipReason.MALFORMED)


@hsettings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_only_hex_sequencers_of_16_to_64_digits_are_ever_indexed(sequencer: str) -> None:
    parsed = parse_event(event(sequencer=sequencer), LOCAL_ACCOUNT)
    expected = 16 <= len(sequencer) <= 64 and all(c in "0123456789abcdefABCDEF" for c in sequencer)
    assert isinstance(parsed, BlobEvent) is expected
    if expected:
        assert isinstance(parsed, BlobEvent) and parsed.sequencer == sequencer


# -- sizes and lengths Azure never sends -----------------------------------------------------


@pytest.mark.parametrize("size", [MAX_BLOB_BYTES + 1, 2**62, 2**62 + 1, 2**63 - 1, 2**63])
def test_sizes_beyond_azures_largest_blob_are_skipped(size: int) -> None:
    assert skipped(parse_event(event(contentLength=size), LOCAL_ACCOUNT), SkipReason.MALFORMED)


def test_azures_largest_blob_is_indexed() -> None:
    parsed = parse_event(event(contentLength=MAX_BLOB_BYTES), LOCAL_ACCOUNT)
    assert isinstance(parsed, BlobEvent) and parsed.size == MAX_BLOB_BYTES
    # Sums of sizes Azure can send stay far inside Int64: 40,000 of the largest blob.
    assert 40_000 * MAX_BLOB_BYTES < 2**63


LONG = "x" * 40_000


@pytest.mark.parametrize("field", ["url", "contentType", "eTag", "blobType", "api"])
def test_a_40000_character_data_field_is_skipped_with_a_short_reason(field: str) -> None:
    made = event(**{field: LONG if field != "url" else f"http://127.0.0.1:10000/{LOCAL_ACCOUNT}/{C}/{LONG}"})
    parsed = parse_event(made, LOCAL_ACCOUNT)
    assert skipped(parsed, SkipReason.MALFORMED)
    assert isinstance(parsed, SkippedEvent) and len(parsed.detail) < 200 and field in parsed.detail


@pytest.mark.parametrize("where", ["id", "subject-blob", "subject-container", "eventType", "topic"])
def test_40000_character_envelope_fields_are_skipped_with_a_short_reason(where: str) -> None:
    made = event()
    if where == "id":
        made["id"] = LONG
    elif where == "subject-blob":
        made["subject"] = f"/blobServices/default/containers/{C}/blobs/t1/$TaskOutput/{LONG}"
    elif where == "subject-container":
        made["subject"] = f"/blobServices/default/containers/job-{LONG}/blobs/t1/$TaskOutput/a"
    elif where == "eventType":
        made["eventType"] = LONG
    else:
        made["topic"] = LONG
    parsed = parse_event(made, LOCAL_ACCOUNT)
    assert isinstance(parsed, SkippedEvent), parsed
    assert len(parsed.detail) < 300 and (parsed.event_id is None or len(parsed.event_id) <= 512)


def test_a_blob_name_of_1024_characters_is_indexed() -> None:
    made = event()
    name = "t1/$TaskOutput/" + "n" * (1024 - len("t1/$TaskOutput/"))
    made["subject"] = f"/blobServices/default/containers/{C}/blobs/{name}"
    parsed = parse_event(made, LOCAL_ACCOUNT)
    assert isinstance(parsed, BlobEvent) and parsed.blob_name == name


# -- validation events beside blob events ----------------------------------------------------


def test_a_validation_event_with_blob_events_answers_both() -> None:
    validation = load_events("subscription_validation.json")[0]
    batch = parse_events([event(), validation, event()], LOCAL_ACCOUNT)
    assert batch.validation_code == validation["data"]["validationCode"]
    assert len(batch.blob_events) == 2 and not batch.skipped
