"""Task-file rows that name a stored template, and rows whose sender must be registered."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook
from sqlalchemy import select, update
from sqlmodel import Session

from models.errors import TemplateInUse
from models.tables import Message, NotificationTask, Rejection
from models.template_schema import TemplateIn
from tasks.compose.templates import create_template, delete_template, register_sender
from tasks.intake.intake import intake
from tasks.reporting.report import MESSAGE_COLUMNS, build_report
from tests.files import write_xlsx
from tests.test_steps import make_task_from


@pytest.fixture
def template_id() -> int:
    sender = f"ACME{uuid.uuid4().hex[:6]}"
    register_sender(sender, "sms")
    template = create_template(TemplateIn.model_validate({
        "name": f"reminder {uuid.uuid4().hex[:6]}",
        "channels": [{"channel": "sms", "text": "Hi {name}, your visit is tomorrow", "sender": sender, "lifetime_minutes": 60}],
    }))
    assert template.id is not None
    return template.id


def test_row_naming_a_template_takes_its_text_sender_and_lifetime(tmp_path: Path, engine: Any, template_id: int) -> None:
    path = write_xlsx(tmp_path / "t.xlsx", ["phone", "text", "template id", "variables"], [
        ["+79161234567", "this text is ignored", template_id, '{"name": "Anna"}'],
        ["+79161234568", "", template_id, '{"city": "Omsk"}'],
        ["+79161234569", "hi", 999_999, ""],
    ])
    task_id = make_task_from(path)
    assert intake.fn(task_id).accepted == 1
    with Session(engine) as session:
        message = session.scalars(select(Message).where(Message.task_id == task_id)).one()
        reasons = {r.row: (r.column, r.code) for r in session.scalars(select(Rejection).where(Rejection.task_id == task_id))}
    assert message.text == "Hi Anna, your visit is tomorrow"
    assert (message.template_id, message.validity_period) == (template_id, 60)
    assert message.sender.startswith("ACME")
    assert reasons == {3: ("variables", "missing_variable"), 4: ("template id", "unknown_template")}
    rows = list(load_workbook(build_report.fn(task_id).path, read_only=True)["Messages"].iter_rows(values_only=True))
    assert rows[1][MESSAGE_COLUMNS.index("template id")] == template_id


def test_unregistered_sender_is_rejected_with_the_command_that_registers_it(tmp_path: Path, engine: Any) -> None:
    registered = f"SHOP{uuid.uuid4().hex[:6]}"
    register_sender(registered, "sms")
    path = write_xlsx(tmp_path / "s.xlsx", ["phone", "text", "from"], [
        ["+79161234567", "a", registered], ["+79161234568", "b", "NOBODY"], ["+79161234569", "c", ""]])
    task_id = make_task_from(path)
    assert intake.fn(task_id).accepted == 2
    with Session(engine) as session:
        rejection = session.scalars(select(Rejection).where(Rejection.task_id == task_id)).one()
        senders = sorted(session.scalars(select(Message.sender).where(Message.task_id == task_id)).all())
    assert (rejection.row, rejection.column, rejection.code) == (3, "from", "unknown_sender")
    assert 'notiflow sender add "NOBODY" --channel sms' in rejection.reason
    assert senders == sorted([registered, "notiflow"])  # no sender: the account's default


def test_template_used_by_a_pending_task_cannot_be_deleted(tmp_path: Path, engine: Any, template_id: int) -> None:
    path = write_xlsx(tmp_path / "d.xlsx", ["phone", "template id", "variables"], [["+79161234567", template_id, '{"name": "Ivan"}']])
    task_id = make_task_from(path)
    intake.fn(task_id)
    with pytest.raises(TemplateInUse, match=f"pending notification task\\(s\\) {task_id}"):
        delete_template(template_id)
    with Session(engine) as session:
        session.execute(update(NotificationTask).where(NotificationTask.id == task_id).values(state="completed"))
        session.commit()
    delete_template(template_id)
