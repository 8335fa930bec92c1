"""Run the sandbox carrier, and a webhook inbox for its delivery reports, on free local ports.

A test module imports the fixtures it uses by name: `from tests.sandbox_fixtures import carrier, sandbox_carrier`.
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from providers.sandbox.carrier import create_app
from providers.sandbox.config import CarrierConfig

T = TypeVar("T")

# Latencies small enough that a message settles in a fraction of a second.
FAST = CarrierConfig(queued_seconds=0.05, sent_seconds=0.05, pending_seconds=0.05)


def wait_until(check: Callable[[], T | None], *, timeout: float = 5.0, interval: float = 0.02, what: str = "") -> T:
    """Call `check` until it returns something truthy, and return that; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what or check}")
        time.sleep(interval)


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a background thread; yields its base URL."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and without
    # it every response waits ~40 ms on Nagle's algorithm.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # port 0: the OS picks a free port, with no race against other tests
    port = sock.getsockname()[1]
    # log_config=None leaves pytest's logging set-up alone; a short graceful shutdown cuts hanging requests.
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="on", log_config=None, log_level="warning", timeout_graceful_shutdown=1)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), what="uvicorn to start")
        if not server.started:
            raise RuntimeError("uvicorn did not start; see the log above")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


@dataclass
class RunningCarrier:
    """A sandbox carrier served on a local port, with a client for it and shortcuts to its admin endpoints."""

    url: str
    # One client for all calls: a fresh httpx client per call costs tens of milliseconds of TLS set-up.
    http: httpx.Client

    def configure(self, **changes: Any) -> CarrierConfig:
        """Replace the carrier's config with FAST plus `changes`."""
        config = CarrierConfig.model_validate({**FAST.model_dump(), **changes})
        self.http.put("/config", json=config.model_dump()).raise_for_status()
        return config

    def reset(self) -> None:
        self.http.post("/reset").raise_for_status()

    def stats(self) -> dict[str, Any]:
        response = self.http.get("/stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats


@contextmanager
def running_carrier(config: CarrierConfig = FAST) -> Iterator[RunningCarrier]:
    with serve(create_app(config)) as url, httpx.Client(base_url=url, timeout=10) as http:
        yield RunningCarrier(url, http)


@pytest.fixture(scope="module")
def sandbox_carrier() -> Iterator[RunningCarrier]:
    """One carrier per test module; use `carrier` to get it reset to FAST."""
    with running_carrier() as running:
        yield running


@pytest.fixture
def carrier(sandbox_carrier: RunningCarrier) -> RunningCarrier:
    """The module's carrier with no messages, zeroed counters and the FAST config."""
    sandbox_carrier.reset()
    sandbox_carrier.configure()
    return sandbox_carrier


@dataclass
class ReportInbox:
    """A webhook that keeps every delivery-report payload it receives; it can refuse the first few."""

    url: str = ""
    payloads: list[dict[str, Any]] = field(default_factory=list)
    refuse_first: int = 0
    attempts: int = 0

    @property
    def reports(self) -> list[dict[str, Any]]:
        return [report for payload in self.payloads for report in payload["reports"]]


def inbox_app(inbox: ReportInbox) -> FastAPI:
    app = FastAPI()

    @app.post("/reports")
    async def receive(request: Request) -> JSONResponse:
        inbox.attempts += 1
        if inbox.attempts <= inbox.refuse_first:
            return JSONResponse({"error": "refused on purpose"}, status_code=500)
        inbox.payloads.append(await request.json())
        return JSONResponse({"ok": True})

    return app


@pytest.fixture
def report_inbox() -> Iterator[ReportInbox]:
    inbox = ReportInbox()
    with serve(inbox_app(inbox)) as url:
        inbox.url = f"{url}/reports"
        yield inbox
