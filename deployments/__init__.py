"""The deployments `notiflow server` serves; prefect.yaml declares the same ones for work pools."""
from __future__ import annotations

from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron

from flows.campaign import notification_task
from flows.history import history_report
from flows.hlr import hlr_check
from flows.send import send_notification
from flows.track import track_delivery
from models.settings import get_settings

NOTIFICATION_TASK = "notification-task/notification-task"
TRACK_DELIVERY = "track-delivery/track-delivery"
SERVED = (
    NOTIFICATION_TASK, TRACK_DELIVERY, "send-notification/send-notification", "history-report/history-report",
    "hlr-check/hlr-check",
)


def served_deployments() -> list[RunnerDeployment]:
    zone = get_settings().timezone
    return [
        notification_task.to_deployment(
            name="notification-task",
            description="Run a notification task: parse its file, validate, schedule, send, track delivery, report.",
            tags=["notiflow"],
            entrypoint_type=EntrypointType.MODULE_PATH,
        ),
        track_delivery.to_deployment(
            name="track-delivery",
            description="Follow a cancelled or crashed task's messages in flight and sent to a final status, then "
            "write its report; started by `notiflow server` for each such task. It never sends.",
            tags=["notiflow"],
            entrypoint_type=EntrypointType.MODULE_PATH,
        ),
        send_notification.to_deployment(
            name="send-notification",
            description="Send one text to a few recipients from a form; it runs as a notification task.",
            tags=["notiflow"],
            entrypoint_type=EntrypointType.MODULE_PATH,
        ),
        history_report.to_deployment(
            name="history-report",
            description="Export the message history to Excel: daily at 06:00 for the previous day, monthly on the 1st for the previous month.",
            tags=["notiflow"],
            entrypoint_type=EntrypointType.MODULE_PATH,
            schedules=[
                Cron("0 6 * * *", timezone=zone, parameters={"period": "previous-day"}, slug="daily"),
                Cron("0 6 1 * *", timezone=zone, parameters={"period": "previous-month"}, slug="monthly"),
            ],
        ),
        hlr_check.to_deployment(
            name="hlr-check",
            description="Phone checks (HLR): is each number live and reachable, on which network, at what price.",
            tags=["notiflow"],
            entrypoint_type=EntrypointType.MODULE_PATH,
        ),
    ]
