"""The API's delivery-report webhook moves messages forward, like a poll would; a task file uploaded over HTTP runs."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlmodel import Session

from models.tables import Message, StatusEvent
from models.signing import webhook_secret
from tasks.intake.intake import intake
from tests.test_steps import make_task

SANDBOX_WEBHOOK = f"/dlr/sandbox?secret={webhook_secret('sandbox')}"


def sent_message_and_its_report(tmp_path: Path, engine: Any) -> tuple[str, dict[str, Any]]:
    """One message the sandbox carrier took (SENT, with a provider id) and the report saying it was delivered."""
    task_id = make_task(tmp_path, good=1)
    intake.fn(task_id)
    provider_id = f"sbx-{uuid.uuid4().hex}"
    with Session(engine) as session:
        session.execute(update(Message).where(Message.task_id == task_id).values(
            status="SENT", provider="sandbox", provider_message_id=provider_id, sent_at=datetime.now(UTC)))
        session.commit()
    report = {"reports": [{"id": provider_id, "ref": "x", "status": "DELIVERED", "description": "delivered",
                           "updated_at": "2026-11-26T10:00:00.000Z"}]}
    return provider_id, report


def test_pushed_delivery_report_updates_the_message_once(api_client: Any, tmp_path: Path, engine: Any) -> None:
    provider_id, report = sent_message_and_its_report(tmp_path, engine)
    first = api_client.post(SANDBOX_WEBHOOK, json=report).json()
    again = api_client.post(SANDBOX_WEBHOOK, json=report).json()
    assert (first["applied"], again["applied"]) == (1, 0)
    with Session(engine) as session:
        message = session.scalars(select(Message).where(Message.provider_message_id == provider_id)).one()
        events = session.scalars(select(StatusEvent.source).where(StatusEvent.message_id == message.id, StatusEvent.status == "DELIVERED")).all()
    assert message.status == "DELIVERED" and message.delivered_at == datetime(2026, 11, 26, 10, tzinfo=UTC)
    assert events == ["webhook"]


def test_malformed_delivery_report_is_refused_with_422(api_client: Any) -> None:
    response = api_client.post(SANDBOX_WEBHOOK, json={"nope": 1})
    assert response.status_code == 422
    assert "delivery report" in response.text


@pytest.mark.e2e
def test_a_task_file_uploaded_over_http_runs_as_a_deployment_run(stack: Any, tmp_path: Path, auth: dict[str, str]) -> None:
    from uuid import UUID

    from notiflow.follow import follow, summary
    from tests.files import phones, write_xlsx

    path = write_xlsx(tmp_path / "api.xlsx", ["phone", "text"], [[p, "hi"] for p in phones(5, start=uuid.uuid4().int % 9_000_000)])
    with path.open("rb") as upload:
        started = httpx.post(f"{stack.api_url}/v1/tasks", files={"file": ("november.xlsx", upload)},
                             data={"name": "api campaign", "windows": ["00:00-24:00"]}, timeout=30, headers=auth)
    assert started.status_code == 201, started.text
    run_id = started.json()["flow_run_id"]
    assert started.json()["ui_url"].endswith(run_id) and started.json()["flow_run_name"] == "api campaign"
    result = summary(follow(UUID(run_id), console=None, timeout=120, stop_when_waiting=False))
    assert result["state"] == "COMPLETED"
    listed = httpx.get(f"{stack.api_url}/v1/tasks", params={"flow_run_id": run_id}, headers=auth).json()
    assert [t["id"] for t in listed["items"]] == [result["task_id"]] and listed["next_cursor"] is None
    task = httpx.get(f"{stack.api_url}/v1/tasks/{result['task_id']}", headers=auth).json()
    assert (task["name"], task["state"], sum(task["counts"].values())) == ("api campaign", "completed", 5)
    assert task["report_url"] == f"/v1/tasks/{result['task_id']}/report.xlsx"
    report = httpx.get(f"{stack.api_url}{task['report_url']}", headers=auth)
    assert report.status_code == 200 and report.content[:2] == b"PK"
    completed = httpx.get(f"{stack.api_url}/v1/tasks", params={"category": "completed", "search": str(result["task_id"])}, headers=auth)
    assert result["task_id"] in [t["id"] for t in completed.json()["items"]]
    refused = httpx.post(f"{stack.api_url}/v1/tasks/{result['task_id']}/pause", timeout=30, headers=auth)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "cannot_pause"
    assert "cannot be paused" in refused.json()["error"]["message"]


def test_starting_a_task_with_a_missing_file_is_refused(api_client: Any, tmp_path: Path) -> None:
    response = api_client.post("/v1/tasks", json={"task_file": str(tmp_path / "nope.xlsx")})
    assert response.status_code == 422 and "is not a file in the upload folder" in response.json()["error"]["message"]
    assert api_client.get("/v1/tasks/999999").json()["error"]["code"] == "not_found"


def test_an_upload_that_is_not_a_task_file_is_refused_before_anything_is_stored(api_client: Any, upload_folder: Path) -> None:
    before = set((upload_folder / "api").glob("*")) if (upload_folder / "api").exists() else set()
    response = api_client.post("/v1/tasks", files={"file": ("notes.txt", b"hello")}, data={"windows": ["09:00-20:00"]})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == "body.file"
    bad_window = api_client.post("/v1/tasks", files={"file": ("t.csv", b"phone,text\n")}, data={"windows": ["25:00-26:00"]})
    assert bad_window.status_code == 422 and bad_window.json()["error"]["details"][0]["field"].startswith("body.windows")
    after = set((upload_folder / "api").glob("*")) if (upload_folder / "api").exists() else set()
    assert after == before
