"""The deployments `notiflow server` serves: prefect.yaml's entries, so the file work pools deploy from
and the served deployments are one list, with one description, tag list and schedule each."""
from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from prefect import Flow
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron, Interval, Schedule

from models.settings import get_settings

# A link to the checkout's prefect.yaml (where `prefect deploy` looks for it), installed with this package.
PREFECT_YAML = Path(__file__).resolve().parent / "prefect.yaml"


@cache
def declared() -> tuple[dict[str, Any], ...]:
    """prefect.yaml's deployment entries, as written."""
    return tuple(yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))["deployments"])


def flow_of(entry: dict[str, Any]) -> Flow[..., Any]:
    """The flow an entry's entrypoint (`flows/campaign.py:notification_task`) names, imported as a module,
    so a served run finds its flow by module path wherever the server was started."""
    path, name = entry["entrypoint"].split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    found: Flow[..., Any] = getattr(module, name)
    return found


def served_names() -> list[str]:
    """Each deployment's full name, "flow/deployment", as run_deployment and the Prefect API look it up."""
    return [f"{flow_of(entry).name}/{entry['name']}" for entry in declared()]


def served_deployments() -> list[RunnerDeployment]:
    zone = get_settings().timezone
    deployments = []
    for entry in declared():
        options: dict[str, Any] = {}
        if entry.get("schedules"):
            options["schedules"] = [_schedule(s, zone) for s in entry["schedules"]]
        deployments.append(flow_of(entry).to_deployment(
            name=entry["name"], description=entry["description"], tags=entry.get("tags", []),
            entrypoint_type=EntrypointType.MODULE_PATH, **options,
        ))
    return deployments


def _schedule(written: dict[str, Any], zone: str) -> Schedule:
    """A prefect.yaml schedule entry: a cron in the account's zone (NOTIFLOW_TIMEZONE; the file's Europe/Moscow is
    its default: a history report's "previous day" is the account's day, wherever the server runs), or an interval
    in seconds."""
    options: dict[str, Any] = {"parameters": written.get("parameters", {}), "slug": written.get("slug")}
    if "interval" in written:
        return Interval(written["interval"], **options)
    return Cron(written["cron"], timezone=zone, **options)
