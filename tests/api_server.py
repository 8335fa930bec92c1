"""Start `notiflow api` servers for tests, the way a user starts one (shared by conftest and the API tests)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


class ApiServer:
    """A `notiflow api` process of this session and the address it answers on."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path):
        self.process, self.url, self.log = process, url, log

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_api_server(**settings: str) -> ApiServer:
    """Start `notiflow api` on a free port with this session's environment and these NOTIFLOW_ settings on top."""
    port = _free_port()
    log = Path(os.environ["NOTIFLOW_HOME"]) / f"api-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "notiflow.cli", "api", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, env=os.environ | settings,
        )
    server = ApiServer(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                server.stop()
            raise RuntimeError(f"notiflow api did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
