"""The history-report flow: the scheduled daily and monthly exports, and any export asked for from the UI."""
from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from models.params import HistoryFilter
from models.settings import get_settings
from models.signing import signed_link
from tasks.reporting.history import HistoryExport, export_history
from tasks.reporting.markdown import code_span, escape

Period = Literal["previous-day", "previous-month", "current-month", "custom"]


def period_dates(period: Period, today: date) -> tuple[date | None, date | None]:
    if period == "previous-day":
        yesterday = today - timedelta(days=1)
        return yesterday, yesterday
    if period == "previous-month":
        last = today.replace(day=1) - timedelta(days=1)
        return last.replace(day=1), last
    if period == "current-month":
        return today.replace(day=1), today
    return None, None


@task(name="export history", cache_policy=NO_CACHE)
def export(filters: HistoryFilter) -> HistoryExport:
    return export_history(filters)


@flow(name="history-report")
def history_report(period: Period = "current-month", filters: HistoryFilter | None = None) -> str:
    """Export the message history of a period; `custom` takes the dates from the filters."""
    settings = get_settings()
    filters = filters or HistoryFilter()
    if period != "custom":
        since, until = period_dates(period, datetime.now(ZoneInfo(settings.timezone)).date())
        filters = filters.model_copy(update={"since": since, "until": until})
    result = export(filters)
    get_run_logger().info("history %s – %s: %s messages in %s", result.since, result.until, result.messages, result.path)
    name = result.path.rsplit("/", 1)[-1]
    create_markdown_artifact(
        f"# Message history {result.since} – {result.until}\n\n**{result.messages}** messages.\n\n"
        f"[Download {escape(name)}]({signed_link(f'/v1/reports/{name}')}) · on the server: {code_span(result.path)}",
        key="history-report", description="Latest history export",
    )
    return result.path
