"""The track-delivery flow: after a campaign's run is cancelled (or crashed), follow what it handed to
providers until every message has its final status, then write the task's report. It never sends.

`notiflow server`'s supervisor (and `notiflow cancel`) start one run per cancelled task, because the
campaign's own run ends Cancelled — often killed mid-batch — and runs none of our code afterwards.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from prefect import flow, get_run_logger

from flows.wait import WAITING_FOR_STATUS_POLL, local_time, wait_until
from models.tables import utcnow
from tasks.control.control import describe_cancelled
from tasks.delivery.channels import open_channels
from tasks.delivery.poll import poll, providers_to_poll
from tasks.delivery.reconcile import reconcile_channel
from tasks.reporting.progress import publish_progress, publish_summary
from tasks.reporting.report import build_report

# The deployment that runs this flow, "flow/deployment" as prefect.yaml declares it (a test checks they agree).
TRACK_DELIVERY = "track-delivery/track-delivery"

# How long to wait before asking a provider again that failed to answer a lookup or a poll.
RETRY_SECONDS = 5.0


@flow(name="track-delivery", flow_run_name="track delivery of task {task_id}", log_prints=False)
def track_delivery(task_id: int) -> dict[str, int]:
    """Reconcile the task's messages in flight, poll its sent ones to a final status, then report."""
    logger = get_run_logger()
    while True:
        channels = open_channels(task_id)
        settled = [reconcile_channel(task_id, channel) for channel in channels]
        polled = [poll(task_id, name) for name in providers_to_poll(task_id)]
        publish_progress(task_id)
        due: list[datetime] = [t for t in [*(r.next_at for r in settled), *(p.next_poll_at for p in polled)] if t]
        if any(r.error for r in settled) or any(p.error for p in polled):
            due.append(utcnow() + timedelta(seconds=RETRY_SECONDS))
        if not due:
            break
        wake = min(due)
        in_flight, outstanding = sum(r.waiting for r in settled), sum(p.outstanding for p in polled)
        wait_until(wake, WAITING_FOR_STATUS_POLL,
                   f"continues at {local_time(wake)} ({in_flight} in flight, {outstanding} awaiting delivery reports)")
    report = build_report(task_id)
    if description := describe_cancelled(task_id):
        logger.info("task %s %s", task_id, description)
    publish_progress(task_id, with_counts=True)
    publish_summary(task_id)
    logger.info("report: %s", report.path)
    return report.counts
