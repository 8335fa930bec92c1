"""Campaign: a task file of 1,000,000 SMS from its upload to every message SENT at the sandbox carrier,
through a real run of the notification-task deployment (target: ≤ 5 minutes on 2 cores, PostgreSQL).

    .venv/bin/python bench/campaign.py [--messages 1000000] [--database postgres|sqlite] [--report-seconds 60]

A real `notiflow server` (Prefect server, served deployments, the API, the sandbox carrier) runs on this
machine; the file is uploaded through `POST /v1/tasks` (multipart) as a customer's system would, and the
clock stops when the last message has its provider id. Each row is a phone and a personal text filled from
its `variables`. The carrier's final delivery reports come `--report-seconds` after it accepted a message,
so those of the first messages arrive (over the API's webhook) while the rest are still being sent.
The task file is written once and cached in bench/.cache.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from controls import start_server, stop_server  # noqa: E402
from dispatch import configure  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
NAMES = ["Anna", "Ivan", "Мария", "Chen", "Olga", "Пётр"]


def task_file(rows: int) -> Path:
    """The campaign's file: a phone (as E.164, the way CRMs export them) and a text with two variables."""
    path = CACHE / f"campaign-v1-{rows}.xlsx"
    if not path.exists():
        from openpyxl import Workbook

        CACHE.mkdir(parents=True, exist_ok=True)
        workbook = Workbook(write_only=True)
        sheet = workbook.create_sheet("messages")
        sheet.append(["phone", "text", "variables"])
        for i in range(rows):
            variables = json.dumps({"name": NAMES[i % len(NAMES)], "code": f"{i % 1_000_000:06d}"}, ensure_ascii=False)
            sheet.append([f"+79{(i * 7919) % 1_000_000_000:09d}", "{name}, your code is {code}", variables])
        tmp = path.with_suffix(".tmp.xlsx")
        workbook.save(tmp)
        tmp.replace(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--report-seconds", type=float, default=60.0)
    args = parser.parse_args()
    path = task_file(args.messages)
    home = configure(0, args.database, args.report_seconds)

    import httpx
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling
    from sqlalchemy import func, select
    from sqlmodel import Session

    from models.api_tokens import create_token
    from models.db import get_engine
    from models.settings import get_settings
    from models.tables import Message, NotificationTask
    from notiflow.stack import deployments_registered

    server = start_server(home)
    engine = get_engine()
    settings = get_settings()
    try:
        while not deployments_registered():
            time.sleep(0.5)
        token = create_token(f"bench-{os.getpid()}")
        api = httpx.Client(base_url=settings.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=600)
        print(f"{args.messages:,} SMS, {path.stat().st_size / 2**20:.0f} MiB task file, {args.database}, "
              f"reports {args.report_seconds:g} s after acceptance", flush=True)

        started = time.monotonic()
        with path.open("rb") as upload:
            answer = api.post("/v1/tasks", files={"file": (path.name, upload)}, data={"windows": "00:00-24:00"})
        answer.raise_for_status()
        run_id = answer.json()["flow_run_id"]
        uploaded = time.monotonic() - started
        print(f"uploaded in {uploaded:.1f} s: flow run {answer.json()['flow_run_name']}", flush=True)

        marks: dict[str, float] = {}
        task_id = None
        sent = accepted = 0
        while time.monotonic() - started < 3600:
            time.sleep(5)  # counting a million rows is work for the database too: not more often
            with Session(engine) as session:
                task = session.scalar(select(NotificationTask).where(NotificationTask.flow_run_id == run_id))
                if task is None:
                    continue
                task_id = task.id
                if task.ingested_at is not None and "stored" not in marks:
                    marks["stored"] = time.monotonic() - started
                    accepted = task.accepted or 0
                    print(f"stored {accepted:,} messages ({task.rejected or 0:,} rejected) at {marks['stored']:.0f} s", flush=True)
                if "stored" not in marks:
                    continue
                sent = session.scalar(select(func.count()).where(
                    Message.provider_message_id.is_not(None), Message.task_id == task_id)) or 0
            if sent and "first sent" not in marks:
                marks["first sent"] = time.monotonic() - started
            print(f"  {time.monotonic() - started:5.0f} s: {sent:,} sent", flush=True)
            if accepted and sent >= accepted:
                break
        with Session(engine) as session:
            first, last = session.execute(
                select(func.min(Message.sent_at), func.max(Message.sent_at)).where(Message.task_id == task_id)
            ).one()
            created = session.scalar(select(NotificationTask.created_at).where(NotificationTask.id == task_id))
        # The run goes on waiting for reports: stop it, it is not measured.
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run_id, Cancelling(), force=True)

        sending = (last - first).total_seconds()
        total = uploaded + (last - created).total_seconds()
        print(f"upload {uploaded:.1f} s; stored at {marks.get('stored', 0):.0f} s; first sent at {marks.get('first sent', 0):.0f} s "
              f"(by the poll); sending {sending:.0f} s = {sent / sending:,.0f}/s")
        print(f"upload to every message SENT: {total:.0f} s ({total / 60:.1f} min) for {sent:,} messages; target ≤ 300 s")
    finally:
        stop_server(server)


if __name__ == "__main__":
    main()
    # Prefect's log and event workers would retry the server just stopped for minutes before the interpreter exits.
    sys.stdout.flush()
    os._exit(0)
