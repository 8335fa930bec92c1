"""API send latency: POST /v1/messages → the request at the sandbox carrier, at a steady request rate, on a real
`notiflow server` (its API, its api-dispatcher deployment run, its sandbox carrier).

    .venv/bin/python bench/api_latency.py [--rate 50] [--seconds 60] [--database sqlite|postgres]

Each request carries one SMS to a number of its own, sent open-loop (request i leaves at start + i/rate, however
long earlier answers take). A message's latency is from just before its POST left the client to the carrier's
`accepted_at` for it (same machine, same clock). Target (issue 13): p95 ≤ 2 s at 50 requests/s.
Holds /tmp/bench.lock while it runs (waits while another bench holds it).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from controls import start_server, stop_server  # noqa: E402
from dispatch import configure  # noqa: E402

LOCK = Path("/tmp/bench.lock")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=50.0, help="requests a second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    while LOCK.exists():
        print("waiting for /tmp/bench.lock", flush=True)
        time.sleep(10)
    LOCK.write_text(f"bench/api_latency.py pid {os.getpid()}\n")
    server: subprocess.Popen[bytes] | None = None
    try:
        home = configure(0, args.database, 0.4)
        import httpx

        import notiflow  # noqa: F401
        from models.api_tokens import create_token
        from models.db import get_engine
        from models.settings import get_settings
        from notiflow.stack import deployments_registered

        server = start_server(home)
        get_engine()
        settings = get_settings()
        while not deployments_registered():
            time.sleep(0.5)
        token = create_token(f"bench-{uuid.uuid4().hex[:8]}")
        headers = {"Authorization": f"Bearer {token}"}
        api, carrier = settings.api_url, settings.sandbox_url

        local = threading.local()

        def client() -> httpx.Client:
            if not hasattr(local, "client"):
                local.client = httpx.Client(base_url=api, headers=headers, timeout=30)
            return local.client

        def post(index: int, due: float) -> tuple[int, float, float]:
            """Send notification `index` at `due` (monotonic); its message id, when it left (wall clock) and the answer's time."""
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            left, started = time.time(), time.perf_counter()
            answer = client().post("/v1/messages", json={"messages": [{
                "phone": f"+7916{index:07d}", "text": f"Your code is {index:06d}", "allowed_time_ranges": [["00:00:00", "24:00:00"]],
            }]})
            answered = time.perf_counter() - started
            answer.raise_for_status()
            return answer.json()["messages"][0]["message_id"], left, answered

        # Warm-up: the dispatcher's run is up and the first request's imports are done before the clock starts.
        warm_id, _left, _took = post(9_999_999, time.monotonic())
        deadline = time.monotonic() + 120
        while not any(m["ref"].endswith(f"-{warm_id}") for m in httpx.get(f"{carrier}/messages", timeout=30).json()["messages"]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the warm-up message never reached the carrier; see {home / 'server.log'}")
            time.sleep(0.2)

        count = int(args.rate * args.seconds)
        start = time.monotonic() + 0.5
        with ThreadPoolExecutor(max_workers=32) as pool:
            sent = list(pool.map(lambda i: post(i, start + i / args.rate), range(count)))
        lateness = time.monotonic() - (start + (count - 1) / args.rate)

        left_at = {message_id: left for message_id, left, _took in sent}
        accepted: dict[int, float] = {}
        deadline = time.monotonic() + 120
        while len(accepted) < count and time.monotonic() < deadline:
            for message in httpx.get(f"{carrier}/messages", timeout=60).json()["messages"]:
                message_id = int(message["ref"].rsplit("-", 1)[1])
                if message_id in left_at:
                    accepted[message_id] = datetime.fromisoformat(message["accepted_at"].replace("Z", "+00:00")).timestamp()
            time.sleep(1)
        latencies = [accepted[i] - left_at[i] for i in left_at if i in accepted]
        answers = [took for _id, _left, took in sent]
        print(f"{count:,} requests of one SMS at {args.rate:g}/s for {args.seconds:g} s, {args.database}; "
              f"{len(latencies):,} reached the carrier (the client finished {lateness:+.1f} s from schedule)")
        print(f"POST → carrier: p50 {percentile(latencies, 0.5):.3f} s, p95 {percentile(latencies, 0.95):.3f} s, "
              f"p99 {percentile(latencies, 0.99):.3f} s, max {max(latencies):.3f} s")
        print(f"POST answered:  p50 {percentile(answers, 0.5) * 1000:.0f} ms, p95 {percentile(answers, 0.95) * 1000:.0f} ms, "
              f"max {max(answers) * 1000:.0f} ms")
        if len(latencies) < count:
            print(f"MISSING: {count - len(latencies)} messages never reached the carrier")
    finally:
        if server is not None:
            stop_server(server)
        LOCK.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
    # Prefect's log and event workers would retry the server just stopped for minutes before the interpreter exits.
    sys.stdout.flush()
    os._exit(0)
