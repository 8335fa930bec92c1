"""Intake: parse the task file, validate every row and split texts into parts, streaming into the database."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from itertools import islice
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import func, insert, select
from sqlmodel import Session

from models.db import get_engine, insert_new, session_scope
from models.history import log_changes_at, unique_stamp
from models.settings import get_settings
from models.status import Channel, MessageStatus
from models.tables import Message, NotificationTask, Rejection, ShortLink, utcnow
from tasks.cost import fee
from tasks.parse import read_task_file
from tasks.segment import count, segment
from tasks.shortlinks import shorten
from tasks.templates import directory
from tasks.validate import Columns, RowError, ValidRow, keep_first_unique, validate_rows

CHUNK_ROWS = 5000


@dataclass(frozen=True)
class IntakeResult:
    accepted: int
    rejected: int
    unknown_columns: list[str]


@task(name="parse and validate", cache_policy=NO_CACHE)
def intake(task_id: int) -> IntakeResult:
    """Store every accepted row as a CREATED message and every refused one as a rejection.

    Safe to run again: a finished intake is not repeated, and a half-finished one (a killed process)
    goes on where it stopped, because rows already stored are skipped by their unique key.
    """
    settings = get_settings()
    engine = get_engine()
    with Session(engine) as session:
        notification_task = session.get(NotificationTask, task_id)
        assert notification_task is not None, f"notification task {task_id} does not exist"
        if notification_task.ingested_at is not None:
            return IntakeResult(notification_task.accepted, notification_task.rejected, notification_task.unknown_columns)
        path, channels = notification_task.file, notification_task.channels

    task_file = read_task_file(path)
    columns = Columns.from_header(task_file.header)
    results = keep_first_unique(validate_rows(
        task_file.rows,
        columns,
        region=settings.default_region,
        account_zone=settings.timezone,
        default_channel=Channel(channels[0]),
        default_sender=settings.sms_sender,
        directory=directory(),
    ))
    link_base = settings.public_url or settings.api_url
    while chunk := list(islice(results, CHUNK_ROWS)):
        now = unique_stamp()
        links: dict[int, list[tuple[str, str]]] = {}
        messages = [
            _message(task_id, r, now, settings.prices, settings.smart_encoding, link_base, links)
            for r in chunk if isinstance(r, ValidRow)
        ]
        rejections = [_rejection(task_id, e) for r in chunk if not isinstance(r, ValidRow) for e in r]
        with session_scope(engine) as session:
            insert_new(session, Message, messages)
            insert_new(session, Rejection, rejections)
            _store_short_links(session, task_id, messages, links)
            log_changes_at(session, now, "intake")

    with session_scope(engine) as session:
        accepted = session.scalar(select(func.count()).select_from(Message).where(Message.task_id == task_id)) or 0
        rejected = session.scalar(
            select(func.count(func.distinct(Rejection.row))).where(Rejection.task_id == task_id)
        ) or 0
        notification_task = session.get(NotificationTask, task_id)
        assert notification_task is not None
        notification_task.accepted, notification_task.rejected = accepted, rejected
        notification_task.unknown_columns = columns.unknown
        notification_task.ingested_at = utcnow()
        session.add(notification_task)
    return IntakeResult(accepted, rejected, columns.unknown)


def _message(
    task_id: int, row: ValidRow, now: Any, prices: Mapping[str, Decimal], smart: bool,
    link_base: str, links: dict[int, list[tuple[str, str]]],
) -> dict[str, Any]:
    text, row_links = sent_text(row, smart=smart, link_base=link_base)
    if row_links:
        links[row.row] = row_links
    encoding, _units, parts = count(text)
    return {
        "task_id": task_id,
        "row": row.row,
        "recipient": row.recipient,
        "channel": row.channel.value,
        "sender": row.sender,
        "text": text,
        "encoding": encoding,
        "parts": parts,
        "fee": fee(row.channel, parts, prices),
        "status": MessageStatus.CREATED.value,
        "status_description": "created, not sent",
        "external_id": row.external_id,
        "bulk_id": row.bulk_id,
        "group_id": row.group_id,
        "flow_id": row.flow_id,
        "variables": row.variables,
        "template_id": row.template_id,
        "template_name": row.template_name,
        "short_links": " ".join(f"{link_base.rstrip('/')}/s/{code}" for code, _url in links.get(row.row, [])) or None,
        "time_zone": row.time_zone,
        "validity_period": row.validity_period,
        "unique_message_id": row.unique_message_id,
        "params": row.params or None,
        "attempts": 0,
        "poll_count": 0,
        "created_at": now,
        "status_updated_at": now,
    }


def sent_text(row: ValidRow, *, smart: bool, link_base: str) -> tuple[str, list[tuple[str, str]]]:
    """The text that is sent (and so stored, counted and reported), with the short links it got."""
    text, links = row.text, []
    if row.use_short_links and row.channel is Channel.SMS:
        # Only SMS shortens links (spec §7); parts are counted on the shortened text.
        text, links = shorten(text, link_base)
    if smart:
        text = "".join(segment(text, smart=True).parts)
    return text, links


def _store_short_links(session: Any, task_id: int, messages: list[dict[str, Any]], links: dict[int, list[tuple[str, str]]]) -> None:
    """Store the links of the messages this chunk really inserted: a re-run's rows are stored already,
    with the codes in their stored text, and get no second set."""
    if not links:
        return
    generated = {m["row"]: m["short_links"] for m in messages if m["row"] in links}
    stored = session.execute(
        select(Message.id, Message.row, Message.short_links).where(Message.task_id == task_id, Message.row.in_(list(generated)))
    ).all()
    rows = [
        {"code": code, "message_id": message_id, "url": url, "clicks": 0, "created_at": utcnow()}
        for message_id, row, short_links in stored if short_links == generated[row]
        for code, url in links[row]
    ]
    if rows:
        session.execute(insert(ShortLink), rows)


def _rejection(task_id: int, error: RowError) -> dict[str, Any]:
    return {"task_id": task_id, "row": error.row, "column": error.column, "code": error.code, "value": error.value, "reason": error.reason}
