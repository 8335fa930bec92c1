"""The API's delivery-report webhook moves messages forward, like a poll would."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlmodel import Session

from models.tables import Message, StatusEvent
from tasks.intake import intake
from tests.test_steps import make_task


def test_pushed_delivery_report_updates_the_message_once(stack: Any, tmp_path: Path, engine: Any) -> None:
    task_id = make_task(tmp_path, good=1)
    intake.fn(task_id)
    provider_id = f"sbx-{uuid.uuid4().hex}"
    with Session(engine) as session:
        session.execute(update(Message).where(Message.task_id == task_id).values(
            status="SENT", provider="sandbox", provider_message_id=provider_id, sent_at=datetime.now(timezone.utc)))
        session.commit()
    report = {"reports": [{"id": provider_id, "ref": "x", "status": "DELIVERED", "description": "delivered",
                           "updated_at": "2026-11-26T10:00:00.000Z"}]}
    first = httpx.post(f"{stack.api_url}/webhooks/sandbox", json=report).json()
    again = httpx.post(f"{stack.api_url}/webhooks/sandbox", json=report).json()
    assert (first["applied"], again["applied"]) == (1, 0)
    with Session(engine) as session:
        message = session.scalars(select(Message).where(Message.task_id == task_id)).one()
        events = session.scalars(select(StatusEvent.source).where(StatusEvent.message_id == message.id, StatusEvent.status == "DELIVERED")).all()
    assert message.status == "DELIVERED" and message.delivered_at == datetime(2026, 11, 26, 10, tzinfo=timezone.utc)
    assert events == ["webhook"]


def test_malformed_delivery_report_is_refused_with_422(stack: Any) -> None:
    response = httpx.post(f"{stack.api_url}/webhooks/sandbox", json={"nope": 1})
    assert response.status_code == 422
    assert "delivery report" in response.text
