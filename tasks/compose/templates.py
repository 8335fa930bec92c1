"""Stored templates and registered senders (spec §1): create, search, edit and delete them."""
from __future__ import annotations

import shlex
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from models.db import session_scope
from models.errors import (
    NotiflowError,
    SenderAlreadyRegistered,
    TemplateInUse,
    TemplateNotFound,
    UnknownSender,
)
from models.status import Channel, TaskState
from models.tables import Message, NotificationTask, Sender, Template, utcnow
from models.template_schema import SenderIn, TemplateIn, explain
from tasks.intake.validate import Directory, TemplateView


def _unregistered(name: str, channel: str) -> str:
    return (f'sender "{name}" is not registered for {channel}: '
            f"register it with notiflow sender add {shlex.quote(name)} --channel {channel}")


def check_sender(name: str, channel: str) -> None:
    """Raise UnknownSender unless `name` is registered for `channel`."""
    with session_scope() as session:
        found = session.scalar(select(Sender.id).where(Sender.name == name, Sender.channel == channel))
    if found is None:
        raise UnknownSender(_unregistered(name, channel))


def _check_senders(template: TemplateIn) -> None:
    """Every channel configuration that names a sender must name a registered one; all problems at once."""
    wanted = [(i, config.channel, config.sender) for i, config in enumerate(template.channels) if hasattr(config, "sender")]
    if not wanted:
        return
    with session_scope() as session:
        registered = {tuple(row) for row in session.execute(
            select(Sender.name, Sender.channel).where(col(Sender.name).in_({name for _, _, name in wanted}))
        ).all()}
    problems = [f"channels[{i}].sender ({channel}): {_unregistered(name, channel)}"
                for i, channel, name in wanted if (name, channel) not in registered]
    if problems:
        raise UnknownSender("\n".join(problems))


def _stored(template: TemplateIn) -> dict[str, Any]:
    return template.model_dump(mode="json")


def create_template(template: TemplateIn) -> Template:
    """Store a new template; every sender it names must be registered for its channel."""
    _check_senders(template)
    row = Template(**_stored(template))
    with session_scope() as session:
        session.add(row)
        session.flush()
        session.refresh(row)
    return row


def update_template(template_id: int, template: TemplateIn) -> Template:
    """Replace a stored template's name, windows and channels."""
    _check_senders(template)
    with session_scope() as session:
        row = session.get(Template, template_id)
        if row is None:
            raise _not_found(template_id)
        for field, value in _stored(template).items():
            setattr(row, field, value)
        row.updated_at = utcnow()
        session.add(row)
        session.flush()
        session.refresh(row)
    return row


def get_template(template_id: int) -> Template:
    with session_scope() as session:
        row = session.get(Template, template_id)
    if row is None:
        raise _not_found(template_id)
    return row


def search_templates(text: str | None = None) -> list[Template]:
    """Templates whose id is `text` or whose name contains it (any case, any alphabet), oldest first; all without `text`.

    Names are matched in Python: SQLite's lower() folds ASCII only, and a template list is short.
    """
    with session_scope() as session:
        if not text or not text.strip():
            return list(session.scalars(select(Template).order_by(Template.id)))
        wanted = text.strip().casefold()
        names = session.execute(select(Template.id, Template.name)).all()
        ids = [i for i, name in names if str(i) == wanted or wanted in name.casefold()]
        if not ids:
            return []
        return list(session.scalars(select(Template).where(col(Template.id).in_(ids)).order_by(col(Template.id))))


def delete_template(template_id: int) -> None:
    """Delete a stored template; refused while a pending notification task has messages made from it."""
    pending = [TaskState.CREATED.value, TaskState.SCHEDULED.value, TaskState.IN_PROGRESS.value, TaskState.PAUSED.value]
    with session_scope() as session:
        row = session.get(Template, template_id)
        if row is None:
            raise _not_found(template_id)
        users = session.scalars(
            select(NotificationTask.id).where(
                NotificationTask.state.in_(pending),
                NotificationTask.id.in_(select(Message.task_id).where(Message.template_id == template_id).distinct()),
            )
        ).all()
        if users:
            raise TemplateInUse(
                f"template {template_id} is used by pending notification task(s) {', '.join(map(str, users))}; "
                "delete it once they have completed or been cancelled"
            )
        session.delete(row)


def directory() -> Directory:
    """Every stored template and registered sender, as row validation needs them."""
    with session_scope() as session:
        templates = {
            t.id: TemplateView(id=t.id, name=t.name, channels={c["channel"]: c for c in t.channels}, windows=tuple(t.windows))
            for t in session.scalars(select(Template))
            if t.id is not None
        }
        senders = frozenset((name, channel) for name, channel in session.execute(select(Sender.name, Sender.channel)).all())
    return Directory(templates=templates, senders=senders)


def _not_found(template_id: int) -> TemplateNotFound:
    return TemplateNotFound(f"template {template_id} does not exist; find templates with notiflow template list --search TEXT")


def register_sender(name: str, channel: str | Channel) -> Sender:
    """Register a sender name for one channel; the same name on the same channel twice is refused."""
    try:
        sender = SenderIn.model_validate({"name": name, "channel": str(channel)})
    except ValidationError as exc:
        raise NotiflowError(explain(exc)) from exc
    with session_scope() as session:
        exists = session.scalar(select(Sender.id).where(Sender.name == sender.name, Sender.channel == sender.channel))
    if exists is not None:
        raise _already(sender)
    row = Sender(name=sender.name, channel=Channel(sender.channel))
    try:
        with session_scope() as session:
            session.add(row)
            session.flush()
            session.refresh(row)
    except IntegrityError as exc:  # registered by someone else between the check and the insert
        raise _already(sender) from exc
    return row


def _already(sender: SenderIn) -> SenderAlreadyRegistered:
    return SenderAlreadyRegistered(f'sender "{sender.name}" is registered for {sender.channel} already')


def list_senders(channel: str | Channel | None = None) -> list[Sender]:
    """Registered senders, by channel then name; only one channel's with `channel`."""
    query = select(Sender).order_by(Sender.channel, Sender.name)
    if channel is not None:
        query = query.where(Sender.channel == str(channel).strip().lower())
    with session_scope() as session:
        return list(session.scalars(query))
