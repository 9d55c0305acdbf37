"""The client's pure rules (issue 13): destination paths as .NET's GetDestinationBlobPath, the
storage paths of GetOutputStoragePath, and when Batch's environment asks for one file per node."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from batch_outputs.clients import split_container_url
from batch_outputs.conventions import ConventionError, destination_path, is_rooted, kind_prefix, node_path
from batch_outputs.environment import NodeIdMissingError, node_for, shares_task_id


@pytest.mark.parametrize(("given", "expected"), [
    ("stdout.txt", "stdout.txt"),
    ("sub\\f.txt", "sub/f.txt"),  # backslashes become /
    ("..\\logs\\a.txt", "logs/a.txt"),  # leading .. dropped, the folders below kept
    ("../stdout.txt", "stdout.txt"),
    ("../../x/y.txt", "x/y.txt"),
    ("./frames//a.png", "frames/a.png"),
    ("temp/../../stdout.txt", "stdout.txt"),  # cannot climb out of the kind's folder
    ("a b#1 ü.txt", "a b#1 ü.txt"),
])
def test_destination_paths_follow_the_net_library(given: str, expected: str) -> None:
    assert destination_path(given) == expected


@pytest.mark.parametrize("rooted", ["/tmp/a.txt", "\\share\\a.txt", "C:\\work\\a.txt", "c:a.txt"])
def test_rooted_paths_are_refused(rooted: str) -> None:
    assert is_rooted(rooted)
    with pytest.raises(ConventionError, match="rooted"):
        destination_path(rooted)


@pytest.mark.parametrize("empty", ["", "..", "../..", "."])
def test_paths_that_name_no_file_are_refused(empty: str) -> None:
    with pytest.raises(ConventionError):
        destination_path(empty)


def test_output_storage_paths_are_those_of_get_output_storage_path() -> None:
    assert kind_prefix("TaskPreview", "task-7") == "task-7/$TaskPreview"
    assert kind_prefix("JobOutput") == "$JobOutput"
    with pytest.raises(ConventionError):
        kind_prefix("a/b", "t1")
    with pytest.raises(ConventionError):
        kind_prefix("TaskLog", "bad task")
    assert node_path("tvm-1392786932_1-20161012t192519z", "logs.txt") == "tvm-1392786932_1-20161012t192519z/logs.txt"
    for bad in ("", "a/b", "..", "x\x1b"):
        with pytest.raises(ConventionError):
            node_path(bad, "logs.txt")


NODE = {"AZ_BATCH_NODE_ID": "tvm-1"}
MULTI = {**NODE, "AZ_BATCH_IS_CURRENT_NODE_MASTER": "true", "AZ_BATCH_HOST_LIST": "10.0.0.4,10.0.0.5",
         "AZ_BATCH_MASTER_NODE": "10.0.0.4:6000"}


@pytest.mark.parametrize(("task_id", "environ", "per_node", "expected"), [
    ("jobrelease", NODE, None, "tvm-1"),
    ("jobpreparation", NODE, None, "tvm-1"),
    ("render-1", NODE, None, None),
    ("render-1", MULTI, None, "tvm-1"),
    ("render-1", {**NODE, "AZ_BATCH_MASTER_NODE": "10.0.0.4:6000"}, None, "tvm-1"),
    ("jobrelease", NODE, False, None),  # --no-per-node
    ("render-1", NODE, True, "tvm-1"),  # --per-node
    (None, MULTI, None, None),  # job outputs have no task
    ("JobRelease", NODE, None, None),  # task IDs are compared as Batch sets them
])
def test_one_file_per_node_where_batch_shares_the_task_id(task_id: str | None, environ: dict[str, str], per_node: bool | None,
                                                          expected: str | None) -> None:
    assert node_for(task_id, per_node, environ) == expected


def test_one_file_per_node_needs_the_node_id() -> None:
    assert shares_task_id("jobrelease", {})
    with pytest.raises(NodeIdMissingError, match="AZ_BATCH_NODE_ID"):
        node_for("jobrelease", None, {})
    with pytest.raises(NodeIdMissingError):
        node_for("t1", True, {"AZ_BATCH_NODE_ID": ""})
    assert node_for("jobrelease", False, {}) is None


@pytest.mark.parametrize(("url", "split"), [
    ("https://acct.blob.core.windows.net/job-x?sv=1&sig=s", ("https://acct.blob.core.windows.net", "job-x", "sv=1&sig=s")),
    ("https://acct.blob.core.windows.net", None),
    ("https://outputs.contoso.com/job-x", ("https://outputs.contoso.com", "job-x", "")),  # a custom domain: host style
    ("http://127.0.0.1:10000/devstoreaccount1/job-x", ("http://127.0.0.1:10000/devstoreaccount1", "job-x", "")),
    ("http://[::1]:10000/devstoreaccount1/job-x", ("http://[::1]:10000/devstoreaccount1", "job-x", "")),
    ("http://localhost:10000/devstoreaccount1", None),
    ("http://azurite:10000/devstoreaccount1/job-x", ("http://azurite:10000/devstoreaccount1", "job-x", "")),  # compose
    ("http://host.docker.internal:10000/devstoreaccount1/job-x",
     ("http://host.docker.internal:10000/devstoreaccount1", "job-x", "")),
    ("http://azurite.localhost:10000/devstoreaccount1/job-x", ("http://azurite.localhost:10000/devstoreaccount1", "job-x", "")),
    # Azurite's production-style URL names the account in the host, as Azure does
    ("http://devstoreaccount1.blob.localhost:10000/job-x", ("http://devstoreaccount1.blob.localhost:10000", "job-x", "")),
    ("http://devstoreaccount1.blob.localhost:10000", None),
])
def test_a_container_url_is_split_where_its_host_puts_the_account(url: str, split: tuple[str, str, str] | None) -> None:
    assert split_container_url(url) == split


@pytest.mark.parametrize("url", ["https://acct.blob.core.windows.net/job-x/t1/$TaskOutput/a.txt",
                                 "http://127.0.0.1:10000/devstoreaccount1/job-x/folder"])
def test_a_blob_url_is_not_a_container_url(url: str) -> None:
    with pytest.raises(ConventionError, match="not a container URL"):
        split_container_url(url)


@pytest.mark.parametrize(("container_url", "account"), [
    ("https://acct.blob.core.windows.net/c", "acct"),
    ("http://127.0.0.1:10000/devstoreaccount1/c", "devstoreaccount1"),
    ("http://azurite:10000/devstoreaccount1/c", "devstoreaccount1"),
    ("http://host.docker.internal:10000/devstoreaccount1/c", "devstoreaccount1"),
    ("http://azurite.localhost:10000/devstoreaccount1/c", "devstoreaccount1"),
    ("http://devstoreaccount1.blob.localhost:10000/c", "devstoreaccount1"),
])
def test_the_client_and_the_event_checks_find_the_same_account_in_a_url(container_url: str, account: str) -> None:
    from shared.domain.sources import account_of_url

    split = split_container_url(container_url)
    assert split is not None
    account_url = urlsplit(split[0])
    assert account in (account_url.path.strip("/"), (account_url.hostname or "").split(".")[0])  # where the client put it
    assert account_of_url(f"{container_url}/t1/$TaskOutput/a.txt") == account  # where the indexer reads it
