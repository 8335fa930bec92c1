"""The served deployments are prefect.yaml's: one list for `notiflow server` and for work pools."""
from __future__ import annotations

from deployments import declared, served_deployments, served_names
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
        declared_schedules = [(s["cron"], s["parameters"], s["slug"]) for s in entry.get("schedules", [])]
        assert [(s.schedule.cron, s.parameters, s.slug) for s in deployment.schedules or []] == declared_schedules


def test_scheduled_deployments_run_in_the_account_time_zone() -> None:
    history = next(d for d in served_deployments() if d.schedules)
    assert {s.schedule.timezone for s in history.schedules} == {get_settings().timezone}


def test_the_deployments_the_code_starts_runs_of_are_served() -> None:
    assert {NOTIFICATION_TASK, TRACK_DELIVERY} <= set(served_names())
