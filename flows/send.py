"""The send-notification flow: a small send from the Prefect UI's form, run as a notification task."""
from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.deployments import run_deployment

from flows.campaign import NOTIFICATION_TASK
from models.params import NotificationTaskParams, SendNotificationParams
from tasks.intake.quick_send import write_send_file
from tasks.reporting.markdown import escape


@flow(name="send-notification")
def send_notification(message: SendNotificationParams) -> str:
    """Start a notification-task run for these recipients (so it can be paused and cancelled like any
    campaign) and link it; returns that run's id."""
    path = write_send_file(message)
    params = NotificationTaskParams(
        task_file=str(path), name=message.name or f"send to {len(message.recipients)} recipients", windows=message.windows,
    )
    campaign = run_deployment(NOTIFICATION_TASK, parameters={"params": params.model_dump(mode="json")},
                              flow_run_name=params.name, timeout=0)
    get_run_logger().info("started notification task run %s for %s recipients", campaign.id, len(message.recipients))
    create_markdown_artifact(
        f"Started the notification task **{escape(params.name)}** for {len(message.recipients)} recipients: "
        f"[its run](/runs/flow-run/{campaign.id}).",
        key="send-notification", description="The campaign this send started",
    )
    return str(campaign.id)
