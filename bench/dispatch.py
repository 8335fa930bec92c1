"""Dispatch throughput: SMS through a notification-task deployment run to the sandbox carrier over HTTP,
against the raw ceiling and a naive design, measured in the same run on the same carrier.

    .venv/bin/python bench/dispatch.py [--messages 100000] [--accept-ms 0] [--database sqlite|postgres]

- flow: a real `notiflow server` serves the notification-task deployment; a task file of N messages is
  run through it. Measured from the first message accepted to the last (sent_at in the database).
- raw ceiling: the same adapter (one httpx client) posting the same batches with the same requests in
  flight, with no database and no Prefect.
- naive: one Prefect task per message (each posting that message alone) in a flow on the same Prefect
  server, on 2,000 messages, extrapolated.
`--accept-ms` makes the carrier answer each request that late (a carrier with real latency).
`--report-seconds` is when the carrier's final delivery report comes after it accepted a message (default
0.4 s: the notiflow API takes every report over its webhook while the dispatch runs, on the same two cores);
with a report later than the dispatch lasts, the flow's run is cancelled once every message is accepted.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from controls import free_port, start_server, stop_server  # noqa: E402

# One task per message at the carrier's latency: 2,000 of them take 400 s with a 200 ms carrier, 200 say as much.
NAIVE_MESSAGES = 2000
NAIVE_MESSAGES_SLOW = 200


def configure(accept_ms: int, database: str, report_seconds: float) -> Path:
    home = Path(tempfile.mkdtemp(prefix="notiflow-bench-"))
    prefect, sandbox, api = free_port(), free_port(), free_port()
    url = f"sqlite:///{home}/bench.db"
    if database == "postgres":
        name = f"bench_{uuid.uuid4().hex[:8]}"
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc", f"CREATE DATABASE {name}"], check=True)
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    os.environ.update(
        NOTIFLOW_HOME=str(home), NOTIFLOW_PREFECT_PORT=str(prefect), NOTIFLOW_DATABASE_URL=url,
        NOTIFLOW_SANDBOX_URL=f"http://127.0.0.1:{sandbox}", NOTIFLOW_API_URL=f"http://127.0.0.1:{api}",
        PREFECT_API_URL=f"http://127.0.0.1:{prefect}/api", PREFECT_HOME=str(home / "prefect"),
        PREFECT_RUNNER_POLL_FREQUENCY="2", NOTIFLOW_UPLOAD_DIR=str(home / "uploads"),
        NOTIFLOW_SANDBOX_CONFIG=(
            f'{{"queued_seconds": {report_seconds / 4}, "sent_seconds": {report_seconds / 4}, '
            f'"pending_seconds": {report_seconds / 2}, "delivered_rate": 1.0, '
            f'"accept_seconds": {accept_ms / 1000}}}'
        ),
    )
    return home


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--accept-ms", type=int, default=0)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--report-seconds", type=float, default=0.4)
    args = parser.parse_args()
    home = configure(args.accept_ms, args.database, args.report_seconds)

    import httpx
    from prefect import flow, task
    from sqlalchemy import func, select
    from sqlmodel import Session

    import notiflow  # noqa: F401
    from deployments.runs import start_run
    from models.db import get_engine
    from models.params import NotificationTaskParams
    from models.settings import get_settings
    from models.status import Channel
    from models.tables import Message, NotificationTask
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling
    from notiflow.stack import deployments_registered
    from providers.base import OutgoingMessage
    from providers.sandbox.adapter import SandboxCarrier
    from tests.files import phones, write_xlsx

    server = start_server(home)
    engine = get_engine()
    settings = get_settings()
    try:
        while not deployments_registered():
            time.sleep(0.5)
        numbers = phones(args.messages, start=uuid.uuid4().int % 9_000_000)
        uploads = home / "uploads"
        uploads.mkdir(mode=0o700, exist_ok=True)
        path = write_xlsx(uploads / "dispatch.xlsx", ["phone", "text"], [[p, f"Your code is {i:06d}"] for i, p in enumerate(numbers)])

        # The flow: a deployment run on the served runner.
        run = start_run(NotificationTaskParams(task_file=str(path), windows=["00:00-24:00"]))
        task_id, sent = None, 0
        deadline = time.monotonic() + 3600
        while sent < args.messages and time.monotonic() < deadline:
            time.sleep(1)
            with Session(engine) as session:
                task_id = session.scalar(select(NotificationTask.id).where(NotificationTask.flow_run_id == str(run.id)))
                sent = session.scalar(select(func.count(Message.sent_at)).where(Message.task_id == task_id)) if task_id else 0
        with Session(engine) as session:
            first, last, sent = session.execute(
                select(func.min(Message.sent_at), func.max(Message.sent_at), func.count(Message.sent_at)).where(Message.task_id == task_id)
            ).one()
        # The run goes on waiting for reports: stop it, so it takes nothing from the measurements below.
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run.id, Cancelling(), force=True)
        time.sleep(3)
        flow_seconds = (last - first).total_seconds()
        flow_rate = sent / flow_seconds

        # The raw ceiling: the same adapter, the same batches, the same requests in flight.
        carrier = SandboxCarrier(settings.sandbox_url, timeout=60)
        per_request = min(settings.dispatch_batch_size, carrier.capabilities.batch_size)
        batches = [[OutgoingMessage(ref=f"raw-{uuid.uuid4().hex[:8]}-{i}", recipient=p, text=f"Your code is {i:06d}", sender="notiflow",
                                    channel=Channel.SMS) for i, p in enumerate(numbers[s : s + per_request], start=s)]
                   for s in range(0, len(numbers), per_request)]
        started = time.perf_counter()
        with ThreadPoolExecutor(carrier.capabilities.in_flight) as pool:
            accepted = sum(sum(1 for a in answers if a.provider_message_id) for answers in pool.map(carrier.send, batches))
        raw_seconds = time.perf_counter() - started
        raw_rate = accepted / raw_seconds

        # The naive design: one Prefect task per message.
        prefix = f"naive-{uuid.uuid4().hex[:8]}"

        @task
        def send_one(index: int) -> str | None:
            message = OutgoingMessage(ref=f"{prefix}-{index}", recipient=numbers[index], text="x", sender="notiflow", channel=Channel.SMS)
            return carrier.send([message])[0].provider_message_id

        @flow
        def naive(count: int) -> int:
            return sum(1 for index in range(count) if send_one(index))

        naive_messages = NAIVE_MESSAGES if args.accept_ms < 50 else NAIVE_MESSAGES_SLOW
        started = time.perf_counter()
        naive(naive_messages)
        naive_rate = naive_messages / (time.perf_counter() - started)

        print(f"{args.messages:,} SMS, carrier answering in {args.accept_ms} ms, reports after {args.report_seconds} s, {args.database}, "
              f"{carrier.capabilities.in_flight} requests of {per_request} in flight")
        print(f"flow:   {sent:,} accepted in {flow_seconds:.1f} s = {flow_rate:,.0f}/s")
        print(f"raw:    {accepted:,} accepted in {raw_seconds:.1f} s = {raw_rate:,.0f}/s")
        print(f"naive:  {naive_rate:,.0f}/s (one task per message, {naive_messages:,} sent; {args.messages / naive_rate:,.0f} s extrapolated)")
        print(f"flow / raw = {flow_rate / raw_rate:.2f}   flow / naive = {flow_rate / naive_rate:.1f}x")
        httpx.get(f"{settings.sandbox_url}/stats", timeout=10)
    finally:
        stop_server(server)


if __name__ == "__main__":
    main()
    # Prefect's log and event workers would retry the server just stopped for minutes before the interpreter exits.
    sys.stdout.flush()
    os._exit(0)
