"""The delivery funnel of a notification task as an SVG bar chart: accepted → sent → delivered."""
from __future__ import annotations

from html import escape

from sqlmodel import Session

from models.db import get_engine
from models.status import DELIVERED_STATUSES, HANDED_STATUSES
from models.tables import NotificationTask
from tasks.reporting.counts import status_counts


def funnel_svg(task_id: int) -> str:
    with Session(get_engine()) as session:
        task = session.get(NotificationTask, task_id)
        if task is None:
            raise LookupError(f"notification task {task_id} does not exist")
        counts = status_counts(session, task_id)
    rows = task.accepted + task.rejected
    stages = [
        ("rows in file", rows, "#94a3b8"),
        ("accepted", task.accepted, "#60a5fa"),
        ("sent", sum(counts.get(s.value, 0) for s in HANDED_STATUSES), "#818cf8"),
        ("delivered", sum(counts.get(s.value, 0) for s in DELIVERED_STATUSES), "#34d399"),
    ]
    width, bar_height, gap, label_width = 560, 28, 10, 110
    top = max(rows, 1)
    height = len(stages) * (bar_height + gap) + gap
    bars = []
    for index, (label, value, colour) in enumerate(stages):
        y = gap + index * (bar_height + gap)
        length = max(1, round((width - label_width - 70) * value / top))
        bars.append(
            f'<text x="{label_width - 8}" y="{y + 19}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{label_width}" y="{y}" width="{length}" height="{bar_height}" rx="3" fill="{colour}"/>'
            f'<text x="{label_width + length + 6}" y="{y + 19}">{value}</text>'
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="13" fill="#94a3b8">{"".join(bars)}</svg>'
    )
