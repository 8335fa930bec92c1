"""The notification-task flow: parse file → validate → split into parts → schedule per window →
dispatch → poll status → build report.

Every entry (first start, resume, wake-up, retry) runs from the top; each step derives what is left
from the database, so nothing is sent twice and nothing is lost. A paused task (its state in the
database, whoever paused it) holds by construction: dispatch sends nothing for it, and the run
suspends itself instead of finishing or waiting into a send; only an entry after a Resume lifts it.
"""
from __future__ import annotations

import time
from collections import deque
from datetime import datetime
from typing import NoReturn

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import BaseModel

from flows.wait import WAITING_FOR_STATUS_POLL, WAITING_FOR_WINDOW, entered_by_resume, local_time, suspend_until_resumed, wait_until
from models.params import NotificationTaskParams
from models.settings import get_settings
from models.status import Channel, TaskState
from models.tables import utcnow
from tasks.control.control import hold_unsent
from tasks.control.lifecycle import open_task, set_state, task_state
from tasks.delivery.chains import advance_chains
from tasks.delivery.channels import open_channels
from tasks.delivery.dispatch import DispatchResult, dispatch
from tasks.delivery.lease import new_owner, release_lease, take_lease
from tasks.delivery.poll import PollResult, poll, providers_to_poll
from tasks.intake.intake import intake
from tasks.reporting.progress import publish_progress, publish_summary
from tasks.reporting.report import build_report
from tasks.schedule.schedule import schedule

# The deployment that runs this flow, "flow/deployment" as prefect.yaml declares it (a test checks they agree).
NOTIFICATION_TASK = "notification-task/notification-task"


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
    state = task_state(task_id)
    if state == TaskState.CANCELLED:
        # A cancelled task stays cancelled: a re-run only refreshes its report.
        report = build_report(task_id)
        return CampaignSummary(task_id=task_id, accepted=0, rejected=0, counts=report.counts, total_fee=report.total_fee, report=report.path)
    if state == TaskState.PAUSED:
        if not entered_by_resume():
            # A wake-up (or a retry) of a paused task: ask about what is out, send nothing, hold again.
            for name in providers_to_poll(task_id):
                poll(task_id, name)
            _hold(task_id, None, f"task {task_id} is paused; resume it to go on")
        set_state(task_id, TaskState.IN_PROGRESS, resume=True)

    taken = intake(task_id)
    logger.info("notification task %s: %s rows accepted, %s rejected", task_id, taken.accepted, taken.rejected)
    planned = schedule(task_id)
    if planned.queued or planned.delayed:
        logger.info("scheduled %s messages to send now, %s for later windows", planned.queued, planned.delayed)
    publish_progress(task_id)

    if not params.dry_run:
        _send_and_track(task_id, run_id)

    report = build_report(task_id)
    if set_state(task_id, TaskState.COMPLETED) == TaskState.PAUSED:
        _hold(task_id, None, f"task {task_id} was paused as it finished; resume it to complete")
    publish_progress(task_id, with_counts=True)
    publish_summary(task_id)
    logger.info("report: %s", report.path)
    return CampaignSummary(
        task_id=task_id, accepted=taken.accepted, rejected=taken.rejected,
        counts=report.counts, total_fee=report.total_fee, report=report.path,
    )


def _send_and_track(task_id: int, run_id: str) -> None:
    """Dispatch what is due and poll what is out, on every channel the task uses, until every message has
    its final status; suspend the run whenever the task is paused."""
    logger = get_run_logger()
    owner = new_owner(run_id)
    take_lease(task_id, owner)
    channels = open_channels(task_id)
    window = get_settings().send_error_window
    recent = {channel: deque[bool](maxlen=window) for channel in channels}
    poll_faults = 0
    while True:
        sent = [_dispatch_due(task_id, owner, channel, recent[channel]) for channel in channels]
        if any(r.paused for r in sent):
            _hold(task_id, owner, f"task {task_id} is paused; resume it to go on")
        polled = [poll(task_id, name) for name in providers_to_poll(task_id)]
        publish_progress(task_id)
        if errors := [p.error for p in polled if p.error]:
            # The polls that failed stay due: back off instead of asking again at once.
            poll_faults += 1
            pause = min(2.0 ** poll_faults, 60.0)
            logger.warning("status poll failed, asking again in %.0f s: %s", pause, "; ".join(errors))
            time.sleep(pause)
            continue
        poll_faults = 0
        chains = advance_chains(task_id)
        if chains.released:
            schedule(task_id)
            continue  # a channel failed: the next of its chain goes now
        next_wait = _next_wait(sent, polled, chains.next_deadline)
        if next_wait is None:
            break
        wake, name, message = next_wait
        if (wake - utcnow()).total_seconds() > get_settings().max_inprocess_wait_seconds:
            # The run is about to leave its process (a pause meanwhile is kept: set_state never lifts it).
            release_lease(task_id, owner)
            if set_state(task_id, TaskState.SCHEDULED, f"{name.lower()}: {message}") == TaskState.PAUSED:
                _hold(task_id, None, f"task {task_id} is paused; resume it to go on")
            publish_progress(task_id, with_counts=True)
        wait_until(wake, name, message)
    release_lease(task_id, owner)


def _dispatch_due(task_id: int, owner: str, channel: Channel, recent: deque[bool]) -> DispatchResult:
    """Send one channel's batches while messages are due; back off while the carrier is failing, and
    suspend the campaign when too many of the channel's recent requests failed."""
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
        if result.retry_after is not None:
            # Throttled (429): the provider is held until it said, spending no attempt; not a failure,
            # and the other channels go on meanwhile (its next_due_at is when it may be sent to again).
            logger.info("%s provider asked to slow down: nothing goes to it for %.0f s", channel.value, result.retry_after)
            return result
        if result.requests:
            recent.extend([False] * (result.requests - result.failed_requests) + [True] * result.failed_requests)
            failed = sum(recent)
            # Judged from the third request on, so a failing carrier suspends the campaign before any
            # message has spent its attempts (five by default).
            if len(recent) >= 3 and failed / len(recent) > get_settings().max_send_error_rate:
                reason = (
                    f"suspended: {failed} of the last {len(recent)} requests to the {channel.value} carrier failed "
                    f"(last: {result.carrier_fault}); resume when it works again"
                )
                logger.warning("%s", reason)
                hold_unsent(task_id, reason)
                _hold(task_id, owner, reason)
        if result.carrier_fault:
            faults += 1
            pause = min(2.0 ** faults, 30.0)
            logger.warning("%s carrier fault (%s), trying again in %.0f s: %s", channel.value, faults, pause, result.carrier_fault)
            time.sleep(pause)
            continue
        faults = 0
        if result.paused or not result.due_now:
            return result


def _hold(task_id: int, owner: str | None, reason: str) -> NoReturn:
    """The task is paused: give up the lease, show the counts, and leave the run Suspended until a resume."""
    get_run_logger().info("%s", reason)
    if owner is not None:
        release_lease(task_id, owner)
    publish_progress(task_id, with_counts=True)
    suspend_until_resumed(reason)


def _next_wait(sent: list[DispatchResult], polled: list[PollResult], chain_deadline: datetime | None) -> tuple[datetime, str, str] | None:
    """When to go on, over every channel: the first window with messages left to send, the first status
    poll or the first silent channel's lifetime end (its chain then falls back), whichever comes sooner,
    with the state name and message the run shows meanwhile; None when done."""
    next_window = min((r.next_due_at for r in sent if r.remaining and r.next_due_at), default=None)
    next_poll = min([p.next_poll_at for p in polled if p.next_poll_at] + ([chain_deadline] if chain_deadline else []), default=None)
    due_times = [t for t in (next_window, next_poll) if t]
    if not due_times:
        return None
    wake = min(due_times)
    name = WAITING_FOR_WINDOW if wake == next_window else WAITING_FOR_STATUS_POLL
    to_send, outstanding = sum(r.remaining for r in sent), sum(p.outstanding for p in polled)
    return wake, name, f"continues at {local_time(wake)} ({to_send} to send, {outstanding} awaiting delivery reports)"
