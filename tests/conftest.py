"""Test session set-up: a fresh database (SQLite or PostgreSQL), free ports and, for end-to-end tests,
one real `notiflow server` (Prefect server, sandbox carrier, API, served deployments) per session.

The environment is set at import time: Prefect and notiflow read their settings once.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="notiflow-test-"))
_DATABASE = os.environ.get("NOTIFLOW_TEST_DATABASE", "sqlite")
_PG_URL = os.environ.get("NOTIFLOW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
_PG_NAME = f"notiflow_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
# The test session's Prefect server keeps its own state in PostgreSQL, as production does: under two
# suites at once its SQLite database answered the UI "database is locked" and a click was lost.
_PREFECT_DB = f"prefect_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _admin_pg(statement: str) -> None:
    import psycopg

    dsn = _PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(statement)


_admin_pg(f'CREATE DATABASE "{_PREFECT_DB}"')
if _DATABASE == "postgresql":
    _admin_pg(f'CREATE DATABASE "{_PG_NAME}"')
    os.environ["NOTIFLOW_DATABASE_URL"] = _PG_URL.rsplit("/", 1)[0] + f"/{_PG_NAME}"
else:
    os.environ["NOTIFLOW_DATABASE_URL"] = f"sqlite:///{_HOME / 'notiflow.db'}"

_PREFECT_PORT, _SANDBOX_PORT, _API_PORT = _free_port(), _free_port(), _free_port()
os.environ.update(
    NOTIFLOW_HOME=str(_HOME),
    NOTIFLOW_PREFECT_PORT=str(_PREFECT_PORT),
    NOTIFLOW_SANDBOX_URL=f"http://127.0.0.1:{_SANDBOX_PORT}",
    NOTIFLOW_API_URL=f"http://127.0.0.1:{_API_PORT}",
    NOTIFLOW_POLL_SCHEDULE="[1, 2, 3, 5, 8, 13, 20]",
    NOTIFLOW_MAX_INPROCESS_WAIT_SECONDS="5",
    NOTIFLOW_DISPATCH_BATCH_SIZE="50",
    NOTIFLOW_SANDBOX_CONFIG='{"queued_seconds": 0.2, "sent_seconds": 0.2, "pending_seconds": 0.4, "delivered_rate": 0.8}',
    # The callback tests' receivers listen on 127.0.0.1, for the session's server too; every other private address stays refused.
    NOTIFLOW_CALLBACK_PRIVATE_NETWORKS='["127.0.0.1/32"]',
    PREFECT_API_URL=f"http://127.0.0.1:{_PREFECT_PORT}/api",
    PREFECT_HOME=str(_HOME / "prefect"),
    PREFECT_API_DATABASE_CONNECTION_URL=_PG_URL.replace("+psycopg", "+asyncpg").rsplit("/", 1)[0] + f"/{_PREFECT_DB}",
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    PREFECT_RUNNER_POLL_FREQUENCY="1",
    PREFECT_LOGGING_TO_API_BATCH_INTERVAL="0.5",
)
os.environ.pop("PREFECT_PROFILE", None)

import notiflow  # noqa: F401  (applies the remaining defaults)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from models.db import get_engine

    get_engine.cache_clear()
    for name in ([_PG_NAME] if _DATABASE == "postgresql" else []) + [_PREFECT_DB]:
        try:
            _admin_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception as exc:  # a leftover test database is not worth failing the run for
            print(f"could not drop {name}: {exc}", file=sys.stderr)


@pytest.fixture(scope="session")
def engine():  # type: ignore[no-untyped-def]
    from models.db import get_engine

    return get_engine()


class Stack:
    """The running `notiflow server` and the addresses it answers on."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path):
        self.process = process
        self.log = log
        self.sandbox_url = os.environ["NOTIFLOW_SANDBOX_URL"]
        self.api_url = os.environ["NOTIFLOW_API_URL"]
        self.prefect_api_url = os.environ["PREFECT_API_URL"]

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]


@pytest.fixture(scope="session")
def stack(engine) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    """One real `notiflow server` for the whole session, started the way a user starts it."""
    from notiflow.stack import deployments_registered

    log = _HOME / "server-under-test.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "notiflow.cli", "server"], stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, env=os.environ.copy(),
        )
    running = Stack(process, log)
    deadline = time.monotonic() + 120
    while not deployments_registered():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"notiflow server did not start:\n{running.log_tail()}")
        time.sleep(0.5)
    yield running
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def api_server(engine):  # type: ignore[no-untyped-def]
    """One `notiflow api` for the session's HTTP tests (no Prefect server or deployments needed)."""
    from tests.api_server import start_api_server

    server = start_api_server()
    yield server
    server.stop()


@pytest.fixture
def home() -> Path:
    return _HOME


@pytest.fixture(scope="session", autouse=True)
def upload_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server reads task files from its upload folder only: the tests' temporary folders are it, so the task
    files tests write there are found, as the CLI's copies are (set before any server of the session starts)."""
    from models.settings import get_settings

    folder = tmp_path_factory.getbasetemp().resolve()
    os.environ["NOTIFLOW_UPLOAD_DIR"] = str(folder)
    get_settings.cache_clear()
    return folder


@pytest.fixture(scope="session")
def api_token(engine) -> str:  # type: ignore[no-untyped-def]
    """An API token made the way a user makes one: `notiflow token create NAME`."""
    import json

    from typer.testing import CliRunner

    from notiflow.cli import app

    result = CliRunner().invoke(app, ["token", "create", f"tests-{uuid.uuid4().hex[:8]}", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["token"]


@pytest.fixture(scope="session")
def auth(api_token: str) -> dict[str, str]:
    """The headers an API client sends."""
    return {"Authorization": f"Bearer {api_token}"}


@pytest.fixture
def api_client(auth: dict[str, str]) -> Iterator[object]:
    """The API in this process, at an address it trusts, with a token (no server needed)."""
    from fastapi.testclient import TestClient

    from api.app import app

    with TestClient(app, base_url="http://127.0.0.1", headers=auth) as client:
        yield client


@pytest.fixture
def route_sms(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Point the sms channel at a provider instance for this test's dispatch and poll steps; the instances
    opened meanwhile are closed after it."""
    from models.settings import get_settings
    from providers.registry import close_providers

    def route(instance: str) -> None:
        monkeypatch.setenv("NOTIFLOW_ROUTES", f'{{"sms": ["{instance}"]}}')
        get_settings.cache_clear()

    yield route
    close_providers()
    monkeypatch.undo()
    get_settings.cache_clear()
