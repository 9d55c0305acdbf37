"""PUT /api/jobs/{jobId}: a hashed container shows its job ID in every answer once registered."""

from __future__ import annotations

from shared.conventions import container_name, job_id_from_container

from ..helpers import blob_event
from ..support.stack import RunningApp

JOB = "Nightly:job-7"  # a job schedule's job: its container name is hashed
C = container_name(JOB)


def job_row(app: RunningApp) -> dict:
    (row,) = [j for j in app.all_pages("/api/jobs") if j["container"] == C]
    return row


def test_registration_names_a_hashed_container_everywhere(app: RunningApp) -> None:
    assert job_id_from_container(C) is None  # cannot be derived from the name
    app.post_events([blob_event(C, "t1/$TaskPreview/thumb.png", sequencer=1, size=3),
                     blob_event(C, "$JobOutput/report.pdf", sequencer=2, size=4)])
    assert job_row(app)["jobId"] is None

    response = app.client.put(f"/api/jobs/{JOB}")
    assert response.status_code == 200, response.text
    assert response.json()["jobId"] == JOB

    assert job_row(app)["jobId"] == JOB
    # the registered spelling, whatever the caller's (Batch IDs are case-insensitive)
    assert app.get("/api/jobs/NIGHTLY:job-7").json()["jobId"] == JOB
    assert app.get("/api/jobs/NIGHTLY:job-7").json()["usage"] == {"outputs": 2, "bytes": 7}
    for path in [f"/api/jobs/{JOB}/task-outputs", f"/api/jobs/{JOB}/outputs", f"/api/jobs/{JOB}/tasks",
                 f"/api/jobs/{JOB}/tasks/t1/outputs"]:
        (item,) = app.all_pages(path)
        assert item["jobId"] == JOB, path
    assert app.get(f"/api/jobs/{JOB}/tasks/t1/outputs/TaskPreview/thumb.png").json()["jobId"] == JOB

    # later events do not forget the registration
    app.post_events([blob_event(C, "t2/$TaskPreview/thumb.png", sequencer=3)])
    assert job_row(app)["jobId"] == JOB


def test_registering_before_any_output_lists_an_empty_job(app: RunningApp) -> None:
    response = app.client.put(f"/api/jobs/{JOB}")
    assert response.status_code == 200
    body = response.json()
    assert (body["jobId"], body["container"], body["usage"], body["tasks"]) == (JOB, C, {"outputs": 0, "bytes": 0}, 0)
    assert app.get(f"/api/jobs/{JOB}").status_code == 200
    assert job_row(app)["jobId"] == JOB
    # registering twice is harmless
    assert app.client.put(f"/api/jobs/{JOB}").status_code == 200
    assert len([j for j in app.all_pages("/api/jobs") if j["container"] == C]) == 1
    assert app.client.put("/api/jobs/bad%20job").status_code == 400
