"""The notification-task flow: parse file → validate → split into parts → schedule per window →
dispatch → poll status → build report.

Every entry (first start, resume, wake-up, retry) runs from the top; each step derives what is left
from the database, so nothing is sent twice and nothing is lost.
"""
from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import BaseModel

from flows.wait import wait_until
from models.params import NotificationTaskParams
from models.settings import get_settings
from models.status import Channel, TaskState
from models.tables import utcnow
from tasks.channels import open_channels
from tasks.dispatch import DispatchResult, dispatch
from tasks.intake import intake
from tasks.lease import new_owner, release_lease, take_lease
from tasks.lifecycle import is_cancelled, open_task, set_state
from tasks.poll import PollResult, poll
from tasks.progress import publish_progress, publish_summary
from tasks.report import build_report
from tasks.schedule import schedule


class CampaignSummary(BaseModel):
    task_id: int
    accepted: int
    rejected: int
    counts: dict[str, int]
    total_fee: str
    report: str


def _run_name() -> str:
    params = flow_run.parameters.get("params") or {}
    return NotificationTaskParams.model_validate(params).task_name


@flow(name="notification-task", flow_run_name=_run_name, log_prints=False)
def notification_task(params: NotificationTaskParams) -> CampaignSummary:
    """Run one notification task from its file to its report."""
    logger = get_run_logger()
    run_id = str(flow_run.get_id())
    task_id = open_task(params, run_id)
    if is_cancelled(task_id):
        # A cancelled task stays cancelled: a re-run only refreshes its report.
        report = build_report(task_id)
        return CampaignSummary(task_id=task_id, accepted=0, rejected=0, counts=report.counts, total_fee=report.total_fee, report=report.path)

    taken = intake(task_id)
    logger.info("notification task %s: %s rows accepted, %s rejected", task_id, taken.accepted, taken.rejected)
    planned = schedule(task_id)
    if planned.queued or planned.delayed:
        logger.info("scheduled %s messages to send now, %s for later windows", planned.queued, planned.delayed)
    publish_progress(task_id)

    if not params.dry_run:
        _send_and_track(task_id, run_id)

    report = build_report(task_id)
    set_state(task_id, TaskState.COMPLETED)
    publish_progress(task_id, with_counts=True)
    publish_summary(task_id)
    logger.info("report: %s", report.path)
    return CampaignSummary(
        task_id=task_id, accepted=taken.accepted, rejected=taken.rejected,
        counts=report.counts, total_fee=report.total_fee, report=report.path,
    )


def _send_and_track(task_id: int, run_id: str) -> None:
    """Dispatch what is due and poll what is out, on every channel the task uses, until every message has
    its final status."""
    logger = get_run_logger()
    owner = new_owner(run_id)
    take_lease(task_id, owner)
    channels = open_channels(task_id)
    poll_faults = 0
    while True:
        sent = [_dispatch_due(task_id, owner, channel) for channel in channels]
        polled = [poll(task_id, channel) for channel in channels]
        publish_progress(task_id)
        if errors := [p.error for p in polled if p.error]:
            # The polls that failed stay due: back off instead of asking again at once.
            poll_faults += 1
            pause = min(2.0 ** poll_faults, 60.0)
            logger.warning("status poll failed, asking again in %.0f s: %s", pause, "; ".join(errors))
            time.sleep(pause)
            continue
        poll_faults = 0
        next_wait = _next_wait(sent, polled)
        if next_wait is None:
            break
        wake, name, message = next_wait
        if (wake - utcnow()).total_seconds() > get_settings().max_inprocess_wait_seconds:
            # The run is about to leave its process.
            release_lease(task_id, owner)
            set_state(task_id, TaskState.SCHEDULED, f"{name.lower()}: {message}")
            publish_progress(task_id, with_counts=True)
        wait_until(wake, name, message)
    release_lease(task_id, owner)


def _dispatch_due(task_id: int, owner: str, channel: Channel) -> DispatchResult:
    """Send one channel's batches while messages are due; back off while the carrier is failing."""
    logger = get_run_logger()
    faults = 0
    while True:
        result = dispatch(task_id, owner, channel)
        if result.sent or result.refused or result.expired:
            publish_progress(task_id)
            logger.info(
                "batch: %s %s messages sent, %s refused, %s expired; %s left to send",
                result.sent, result.channel, result.refused, result.expired, result.remaining,
            )
        if result.carrier_fault:
            faults += 1
            pause = min(result.retry_after or 2.0 ** faults, 30.0)
            logger.warning("%s carrier fault (%s), trying again in %.0f s: %s", channel.value, faults, pause, result.carrier_fault)
            time.sleep(pause)
            continue
        faults = 0
        if not result.due_now:
            return result


def _next_wait(sent: list[DispatchResult], polled: list[PollResult]) -> tuple[datetime, str, str] | None:
    """When to go on, over every channel: the first window with messages left to send or the first status
    poll, whichever comes sooner, with the state name and message the run shows meanwhile; None when done."""
    next_window = min((r.next_due_at for r in sent if r.remaining and r.next_due_at), default=None)
    next_poll = min((p.next_poll_at for p in polled if p.next_poll_at), default=None)
    due_times = [t for t in (next_window, next_poll) if t]
    if not due_times:
        return None
    wake = min(due_times)
    name = "Waiting for window" if wake == next_window else "Waiting for status poll"
    to_send, outstanding = sum(r.remaining for r in sent), sum(p.outstanding for p in polled)
    return wake, name, f"continues at {_local(wake)} ({to_send} to send, {outstanding} awaiting delivery reports)"


def _local(moment: datetime) -> str:
    zone = get_settings().timezone
    return f"{moment.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M:%S} {zone}"
