"""Wake-up lateness and suspend/resume/cancel latencies of campaigns on a real `notiflow server`.

    .venv/bin/python bench/controls.py [--rounds 3]

Baseline, measured in the same run: how late Prefect itself starts a plain deployment run scheduled
for a given time (`run_deployment(scheduled_time=...)`) on the same served runner. A campaign that
waits for its window reschedules its own run; its lateness is reported beside that baseline.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(home: Path) -> subprocess.Popen[bytes]:
    """`notiflow server` (Prefect server, served deployments, sandbox carrier, API) in a process group of its own,
    its output in home/server.log."""
    log = (home / "server.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "notiflow.cli", "server"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_server(server: subprocess.Popen[bytes]) -> None:
    """Stop the whole group: notiflow server's Prefect server, sandbox carrier and API with it."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def configure() -> Path:
    home = Path(tempfile.mkdtemp(prefix="notiflow-bench-"))
    prefect, sandbox, api = free_port(), free_port(), free_port()
    os.environ.update(
        NOTIFLOW_HOME=str(home), NOTIFLOW_PREFECT_PORT=str(prefect),
        NOTIFLOW_SANDBOX_URL=f"http://127.0.0.1:{sandbox}", NOTIFLOW_API_URL=f"http://127.0.0.1:{api}",
        NOTIFLOW_MAX_INPROCESS_WAIT_SECONDS="5", NOTIFLOW_DISPATCH_BATCH_SIZE="50",
        PREFECT_API_URL=f"http://127.0.0.1:{prefect}/api", PREFECT_HOME=str(home / "prefect"),
        PREFECT_RUNNER_POLL_FREQUENCY="2",
        NOTIFLOW_SANDBOX_CONFIG='{"queued_seconds": 0.2, "sent_seconds": 0.2, "pending_seconds": 0.4, "accept_seconds": 0.5}',
    )
    sys.path.insert(0, str(ROOT))
    return home


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    home = configure()
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from sqlalchemy import func, select
    from sqlmodel import Session

    import notiflow  # noqa: F401
    from deployments.control import cancel, pause, resume
    from deployments.runs import start_run
    from flows.wait import WAITING_FOR_WINDOW
    from models.db import get_engine
    from models.params import NotificationTaskParams
    from models.tables import Message, NotificationTask
    from notiflow.follow import follow
    from notiflow.stack import deployments_registered
    from tests.files import phones, write_xlsx

    server = start_server(home)
    engine = get_engine()
    try:
        while not deployments_registered():
            time.sleep(0.5)
        client = get_client(sync_client=True).__enter__()

        def state_of(run_id):  # type: ignore[no-untyped-def]
            return client.read_flow_run(run_id).state

        def wait(check, limit=180.0):  # type: ignore[no-untyped-def]
            deadline = time.monotonic() + limit
            while not (value := check()):
                if time.monotonic() > deadline:
                    raise TimeoutError("benchmark step did not finish")
                time.sleep(0.1)
            return value

        def task_file(size: int) -> str:
            rows = [[p, f"bench {i}"] for i, p in enumerate(phones(size, start=uuid.uuid4().int % 9_000_000))]
            # Task files must come from the upload folder (issue 11, item 7).
            uploads = home / "uploads"
            uploads.mkdir(mode=0o700, exist_ok=True)
            return str(write_xlsx(uploads / f"b-{uuid.uuid4().hex[:6]}.xlsx", ["phone", "text"], rows))

        def task_of(run_id):  # type: ignore[no-untyped-def]
            with Session(engine) as session:
                return session.scalar(select(NotificationTask).where(NotificationTask.flow_run_id == str(run_id)))

        def sent(task_id: int) -> int:
            with Session(engine) as session:
                return session.scalar(select(func.count()).where(Message.task_id == task_id, Message.provider_message_id.is_not(None))) or 0

        baseline, wakeups = [], []
        moscow = ZoneInfo("Europe/Moscow")
        for _ in range(args.rounds):
            due = datetime.now(timezone.utc) + timedelta(seconds=20)
            run = run_deployment("history-report/history-report", parameters={"period": "current-month"}, scheduled_time=due, timeout=0)
            started = wait(lambda: (s := state_of(run.id)) and s.is_running() and client.read_flow_run(run.id).start_time)
            baseline.append((started - due).total_seconds())

            opens = (datetime.now(moscow) + timedelta(seconds=25)).replace(microsecond=0)
            window = f"{opens:%H:%M:%S}-{opens + timedelta(minutes=10):%H:%M:%S}"
            campaign = start_run(NotificationTaskParams(task_file=task_file(5), windows=[window]))
            wait(lambda: (s := state_of(campaign.id)) and s.name == WAITING_FOR_WINDOW)
            follow(campaign.id, console=None, timeout=180, stop_when_waiting=False)
            with Session(engine) as session:
                first = session.scalar(select(func.min(Message.sent_at)).where(Message.task_id == task_of(campaign.id).id))
            wakeups.append((first - opens).total_seconds())

        httpx.put(f"{os.environ['NOTIFLOW_SANDBOX_URL']}/config", json={**httpx.get(f"{os.environ['NOTIFLOW_SANDBOX_URL']}/config").json(), "accept_seconds": 0.5})
        suspend_s, resume_s, cancel_s = [], [], []
        for _ in range(args.rounds):
            run = start_run(NotificationTaskParams(task_file=task_file(600), windows=["00:00-24:00"]))
            task = wait(lambda: task_of(run.id))
            wait(lambda: sent(task.id) >= 50)
            asked = time.monotonic()
            pause(str(task.id))
            last, still_since = sent(task.id), time.monotonic()
            while time.monotonic() - still_since < 3:  # the last send lands, then nothing for 3 s
                now_sent = sent(task.id)
                if now_sent != last:
                    last, still_since = now_sent, time.monotonic()
                time.sleep(0.05)
            suspend_s.append(still_since - asked)
            asked = time.monotonic()
            resume(str(task.id))
            wait(lambda: sent(task.id) > last)
            resume_s.append(time.monotonic() - asked)
            asked = time.monotonic()
            cancel(str(task.id))
            wait(lambda: (s := state_of(run.id)) and s.is_cancelled())
            cancel_s.append(time.monotonic() - asked)

        def stats(values: list[float]) -> dict[str, float]:
            return {"median_s": round(statistics.median(values), 2), "max_s": round(max(values), 2)}

        print(json.dumps({
            "rounds": args.rounds,
            "baseline_prefect_scheduled_run_start_lateness": stats(baseline),
            "window_wakeup_lateness_first_send": stats(wakeups),
            "wakeup_ratio_vs_baseline": round(statistics.median(wakeups) / max(statistics.median(baseline), 0.01), 2),
            "suspend_until_last_send": stats(suspend_s),
            "resume_until_next_send": stats(resume_s),
            "cancel_until_cancelled": stats(cancel_s),
        }, indent=2))
    finally:
        stop_server(server)


if __name__ == "__main__":
    main()
