"""The deployments `notiflow server` serves; prefect.yaml declares the same ones for work pools."""
from __future__ import annotations

from prefect.deployments.runner import EntrypointType, RunnerDeployment

from flows.campaign import notification_task

NOTIFICATION_TASK = "notification-task/notification-task"


def served_deployments() -> list[RunnerDeployment]:
    return [
        notification_task.to_deployment(
            name="notification-task",
            description="Run a notification task: parse its file, validate, schedule, send, track delivery, report.",
            tags=["notiflow"],
            entrypoint_type=EntrypointType.MODULE_PATH,
        ),
    ]
