"""The served deployments are prefect.yaml's: one list for `notiflow server` and for work pools."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from deployments import declared, served_deployments, served_names
from flows.api_dispatcher import API_DISPATCHER
from flows.callbacks import DELIVER_CALLBACKS
from flows.campaign import NOTIFICATION_TASK
from flows.track import TRACK_DELIVERY
from models.settings import get_settings


def test_notiflow_server_serves_every_deployment_of_prefect_yaml_as_declared() -> None:
    entries = {entry["name"]: entry for entry in declared()}
    served = {deployment.name: deployment for deployment in served_deployments()}
    assert set(served) == set(entries)
    for name, deployment in served.items():
        entry = entries[name]
        assert deployment.description == entry["description"]
        assert deployment.tags == entry["tags"]
        path, flow_name = entry["entrypoint"].split(":")
        assert deployment.entrypoint == f"{path.removesuffix('.py').replace('/', '.')}.{flow_name}"
        declared_schedules = [(s.get("cron") or timedelta(seconds=s["interval"]), s.get("parameters", {}), s["slug"]) for s in entry.get("schedules", [])]
        assert [(_when(s.schedule), s.parameters, s.slug) for s in deployment.schedules or []] == declared_schedules


def _when(schedule: Any) -> Any:
    return schedule.cron if hasattr(schedule, "cron") else schedule.interval


def test_scheduled_deployments_run_in_the_account_time_zone() -> None:
    history = next(d for d in served_deployments() if d.name == "history-report")
    assert {s.schedule.timezone for s in history.schedules} == {get_settings().timezone}


def test_the_deployments_the_code_starts_runs_of_are_served() -> None:
    assert {NOTIFICATION_TASK, TRACK_DELIVERY, DELIVER_CALLBACKS, API_DISPATCHER} <= set(served_names())


def test_callbacks_are_delivered_by_a_deployment_that_runs_every_minute() -> None:
    (callbacks,) = [d for d in served_deployments() if f"{d.flow_name}/{d.name}" == DELIVER_CALLBACKS]
    assert [s.schedule.interval for s in callbacks.schedules] == [timedelta(seconds=60)]
