"""SMS through the Kannel adapter against Kannel's own ceiling: the same sendsms requests from a plain httpx loop.

    .venv/bin/python bench/kannel.py [--messages 2000] [--rounds 3] [--in-flight 16]

Both sides send N one-part SMS to one real Kannel (bearerbox, smsbox, the fake SMSC; Debian's
packages, scripts/ensure-kannel.sh), with delivery reports asked for (dlr-mask 31) and taken by a
local receiver that only counts them, `in_flight` requests at once, in batches of the adapter's
batch size. No database, no Prefect: the adapter's own cost (building each request, the dlr-url,
reading the answers) against the bare loop. Rounds alternate adapter and loop; each waits until
Kannel has delivered every report of the round before it (the reports share the machine's two
cores with the sends). Reports the median round's ratio (adapter / loop) beside every round's.
"""
from __future__ import annotations

import argparse
import http.server
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from models.status import Channel  # noqa: E402
from providers.base import OutgoingMessage  # noqa: E402
from providers.kannel import KannelGateway  # noqa: E402
from tests.kannel_fixtures import RunningKannel, running_kannel  # noqa: E402

LOCK = Path("/tmp/bench.lock")


class Reports:
    """A dlr-url receiver that counts what Kannel reports."""

    def __init__(self) -> None:
        self.count = 0
        lock = threading.Lock()
        reports = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                with lock:
                    reports.count += 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dlr?secret=bench"

    def wait_for(self, expected: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count < expected and time.monotonic() < deadline:
            time.sleep(0.1)


def messages(n: int, round_: int, side: str) -> list[OutgoingMessage]:
    return [OutgoingMessage(ref=f"{side}{round_}-{i}", recipient=f"+7916{i % 10_000_000:07d}", text=f"bench message {i}",
                            sender="notiflow", channel=Channel.SMS) for i in range(n)]


def through_adapter(kannel: RunningKannel, reports: Reports, batch: list[OutgoingMessage], in_flight: int) -> tuple[float, int]:
    gateway = KannelGateway("bench", kannel.url, username=kannel.username, password=kannel.password,
                            dlr_url=reports.url, in_flight=in_flight, max_parts=kannel.max_parts)
    size = gateway.capabilities.batch_size
    with gateway:
        started = time.perf_counter()
        accepted = 0
        for start in range(0, len(batch), size):
            accepted += sum(1 for a in gateway.send(batch[start : start + size]) if a.provider_message_id)
        return time.perf_counter() - started, accepted


def bare_loop(kannel: RunningKannel, reports: Reports, batch: list[OutgoingMessage], in_flight: int, size: int) -> tuple[float, int]:
    """The same GET /cgi-bin/sendsms requests, same concurrency and batches, nothing else."""
    def one(client: httpx.Client, m: OutgoingMessage) -> bool:
        answer = client.get("/cgi-bin/sendsms", params={
            "username": kannel.username, "password": kannel.password, "to": m.recipient, "text": m.text, "from": m.sender,
            "charset": "UTF-8", "dlr-mask": 31, "dlr-url": f"{reports.url}&ref={m.ref}&type=%d&reply=%A&smsc=%F&at=%T",
        })
        return answer.status_code == 202

    with httpx.Client(base_url=kannel.url, timeout=5) as client, ThreadPoolExecutor(in_flight) as pool:
        started = time.perf_counter()
        accepted = 0
        for start in range(0, len(batch), size):
            accepted += sum(pool.map(lambda m: one(client, m), batch[start : start + size]))
        return time.perf_counter() - started, accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=16)
    args = parser.parse_args()
    while LOCK.exists():
        print("waiting for another benchmark (/tmp/bench.lock)", flush=True)
        time.sleep(20)
    LOCK.write_text("bench/kannel.py\n")
    try:
        reports = Reports()
        expected = 0
        ratios: list[tuple[float, float, float]] = []
        with running_kannel(Path(tempfile.mkdtemp(prefix="notiflow-bench-kannel-")), max_parts=10) as kannel:
            size = KannelGateway.capabilities.batch_size
            for round_ in range(args.rounds):
                sides: dict[str, float] = {}
                for side in ("loop", "adapter"):
                    reports.wait_for(expected)  # the last round's reports are out of the way
                    batch = messages(args.messages, round_, side)
                    if side == "adapter":
                        elapsed, accepted = through_adapter(kannel, reports, batch, args.in_flight)
                    else:
                        elapsed, accepted = bare_loop(kannel, reports, batch, args.in_flight, size)
                    assert accepted == args.messages, f"{side}: Kannel accepted {accepted} of {args.messages}"
                    expected += 2 * accepted  # the fake SMSC reports each message twice (ack, delivered)
                    sides[side] = args.messages / elapsed
                    print(f"round {round_ + 1} {side:>7}: {args.messages} SMS in {elapsed:.2f} s = {sides[side]:.0f}/s", flush=True)
                ratios.append((sides["adapter"] / sides["loop"], sides["adapter"], sides["loop"]))
            reports.wait_for(expected)
        chosen = sorted(ratios)[len(ratios) // 2]
        median = chosen[0]
        print(f"median round: adapter {chosen[1]:.0f}/s, loop {chosen[2]:.0f}/s, ratio {median:.2f} "
              f"(rounds: {', '.join(f'{r[0]:.2f}' for r in ratios)}); reports received {reports.count} of {expected}")
    finally:
        LOCK.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
