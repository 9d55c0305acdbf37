"""The OpenAPI document: complete, and every live answer conforms to it (schemathesis)."""

from __future__ import annotations

import httpx
import hypothesis
import schemathesis
from azure.data.tables import TableClient
from azure.storage.blob import BlobServiceClient
from hypothesis import HealthCheck
from schemathesis import checks

from shared.conventions import container_name

from ..helpers import blob_event
from ..support.stack import EVENTS_KEY, TEST_KEY, RunningApp

#: Bounded: the whole run stays well under a minute on Azurite.
EXAMPLES_PER_OPERATION = 12

SPEC_ROUTES = {
    ("get", "/api/jobs"),
    ("put", "/api/jobs/{job_id}"),
    ("get", "/api/jobs/{job_id}"),
    ("get", "/api/jobs/{job_id}/outputs"),
    ("get", "/api/jobs/{job_id}/outputs/{kind}/{path}"),
    ("get", "/api/jobs/{job_id}/tasks"),
    ("get", "/api/jobs/{job_id}/tasks/{task_id}/outputs"),
    ("get", "/api/jobs/{job_id}/tasks/{task_id}/outputs/{kind}/{path}"),
    ("get", "/api/jobs/{job_id}/task-outputs"),
    ("get", "/api/jobs/{job_id}/rejections"),
    ("get", "/api/jobs/{job_id}/quota"),
    ("put", "/api/jobs/{job_id}/quota"),
    ("post", "/api/jobs/{job_id}/reindex"),
    ("post", "/api/events"),
    ("options", "/api/events"),
    ("get", "/api/health"),
    # beyond SPEC §6: the last lines of a log, for the output browser (docs/ui.md)
    ("get", "/api/jobs/{job_id}/tail/{kind}/{path}"),
    ("get", "/api/jobs/{job_id}/tasks/{task_id}/tail/{kind}/{path}"),
    # SPEC §11: the change feed (docs/change-feed.md)
    ("get", "/api/jobs/{job_id}/changes"),
    # beyond SPEC §6: operations (issue 15, docs/operations.md)
    ("post", "/api/admin/replay-deadletters"),
    ("get", "/api/admin/health"),
    # SPEC §11: a long reindex's status monitor (Operation-Location)
    ("get", "/api/operations/{operation_id}"),
    # issue 24: a hot job's index spread over several partitions (docs/api.md)
    ("get", "/api/jobs/{job_id}/layout"),
    ("put", "/api/jobs/{job_id}/layout"),
}


def document(app: RunningApp) -> dict:
    response = app.get("/api/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_document_lists_every_route_with_its_answers(app: RunningApp) -> None:
    doc = document(app)
    operations = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert operations == SPEC_ROUTES
    schemas = doc["components"]["schemas"]
    # Health takes no input a 400 could refuse (detail is a boolean the route reads itself).
    for method, path in SPEC_ROUTES - {("options", "/api/events"), ("get", "/api/health"), ("get", "/api/admin/health")}:
        answers = doc["paths"][path][method]["responses"]
        assert "200" in answers and "400" in answers and "401" in answers, (method, path)
        assert answers["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    single = doc["paths"]["/api/jobs/{job_id}/tasks/{task_id}/outputs/{kind}/{path}"]["get"]["responses"]
    assert single["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Output")
    assert "downloadUrl" in schemas["Output"]["required"]
    assert set(schemas["JobSummary"]["required"]) >= {"jobId", "container", "tasks", "kinds", "usage", "quota", "rejections", "lastIndexedAt"}
    assert set(schemas["ReindexResult"]["required"]) >= {"added", "fixed", "removed", "unchanged"}
    # the key: either the header or ?code=, or an Entra token, on every route but health
    schemes = doc["components"]["securitySchemes"]
    assert {(s["in"], s["name"]) for s in schemes.values() if s["type"] == "apiKey"} == {("header", "x-functions-key"), ("query", "code")}
    assert schemes["entraBearer"] == {**schemes["entraBearer"], "type": "http", "scheme": "bearer"}
    assert doc["paths"]["/api/health"]["get"]["security"] == []
    assert len(doc["security"]) == 3
    # a role short of an operation's: 403
    assert "403" in doc["paths"]["/api/jobs/{job_id}/quota"]["put"]["responses"]
    assert "403" not in doc["paths"]["/api/events"]["post"]["responses"]


JOB = "nightly:job-7"
KNOWN = {"job_id": JOB, "task_id": "t1", "kind": "TaskPreview", "path": "thumb.png"}
SEEDED = {"t1/$TaskPreview/thumb.png": b"png", "t1/$TaskOutput/a b.txt": b"text", "$JobOutput/movie.mp4": b"movie"}


def seed(app: RunningApp, blob_service: BlobServiceClient) -> None:
    """Real blobs and their events, so reindex (fuzzed too) finds the index already right."""
    container = blob_service.get_container_client(container_name(JOB))
    if not container.exists():
        container.create_container()
    events = []
    for n, (name, data) in enumerate(SEEDED.items()):
        container.upload_blob(name, data, overwrite=True)
        events.append(blob_event(container.container_name, name, sequencer=n + 1, size=len(data)))
    assert app.post_events(events).status_code == 200
    assert app.client.put(f"/api/jobs/{JOB}").status_code == 200
    # A reindex leaves its operation readable at /api/operations/{id}: the known good ID.
    assert app.client.post(f"/api/jobs/{JOB}/reindex").status_code == 200
    with TableClient.from_connection_string(app.settings.index_storage.connection_string or "",
                                            app.settings.index_table) as table:
        KNOWN["operation_id"] = next(iter(table.query_entities("PartitionKey eq '~operations'")))["RowKey"]


def known_good(operation: schemathesis.APIOperation) -> schemathesis.Case:
    """A request that reaches the seeded outputs (random inputs mostly answer 400 or 404)."""
    params = {p.name: KNOWN[p.name] for p in operation.path_parameters if p.name in KNOWN}
    if operation.path in ("/api/jobs/{job_id}/outputs/{kind}/{path}", "/api/jobs/{job_id}/tail/{kind}/{path}"):
        params.update(kind="JobOutput", path="movie.mp4")
    if operation.path == "/api/events":
        return operation.Case(body=[blob_event(container_name(JOB), "t2/$TaskLog/stdout.txt", sequencer=9)],
                              media_type="application/json")
    if operation.method.upper() == "PUT" and operation.path.endswith("/quota"):
        return operation.Case(path_parameters=params, body={"maxOutputs": 1000}, media_type="application/json")
    if operation.method.upper() == "PUT" and operation.path.endswith("/layout"):  # the layout it has: 200
        return operation.Case(path_parameters=params, body={"partitions": 1}, media_type="application/json")
    return operation.Case(path_parameters=params)


def test_live_answers_conform_to_the_document(app: RunningApp, blob_service: BlobServiceClient) -> None:
    seed(app, blob_service)
    schema = schemathesis.openapi.from_url(f"{app.url}/api/openapi.json", headers={"x-functions-key": TEST_KEY})
    run_checks = [
        checks.not_a_server_error,
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_schema_conformance,
    ]
    failures: list[str] = []
    tested = 0
    answered: set[tuple[str, str, int]] = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.method.upper() == "OPTIONS":
            continue  # a handshake whose answer is headers only
        tested += 1
        good = known_good(operation)
        # Keys by role: the webhook takes an events key, every other route an API key.
        key = {"x-functions-key": EVENTS_KEY if operation.path == "/api/events" else TEST_KEY}
        response = good.call(base_url=app.url, headers=key)
        assert response.status_code == 200, (operation.path, response.text)
        good.validate_response(response, checks=run_checks, headers=key)

        @hypothesis.settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        @hypothesis.given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:  # called at once, inside this iteration
            if isinstance(case.query, dict) and "wait" in case.query:
                case.query["wait"] = 0  # a long-poll of nothing holds the request its full wait
            response = case.call(base_url=app.url, headers=key)  # noqa: B023
            answered.add((operation.method.upper(), operation.path, response.status_code))  # noqa: B023
            case.validate_response(response, checks=run_checks, headers=key)  # noqa: B023

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert tested == len(SPEC_ROUTES) - 1
    assert not failures, "\n\n".join(failures)
    assert any(status == 400 for _, _, status in answered)
    assert httpx.get(app.get(f"/api/jobs/{JOB}/tasks/t1/outputs/TaskPreview/thumb.png").json()["downloadUrl"]).content == b"png"
