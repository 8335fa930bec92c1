"""Starts and stops the processes notiflow runs on: Prefect server, sandbox carrier, API, served deployments."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from deployments.runs import answers
from models.errors import NotiflowError
from models.settings import get_settings


@dataclass(frozen=True)
class Service:
    name: str
    health_url: str
    command: list[str]


def services() -> list[Service]:
    settings = get_settings()
    prefect_api = os.environ["PREFECT_API_URL"].rstrip("/")
    sandbox = httpx.URL(settings.sandbox_url)
    api = httpx.URL(settings.api_url)
    return [
        Service(
            "Prefect server", f"{prefect_api}/health",
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(settings.prefect_port)],
        ),
        Service(
            "sandbox carrier", f"{settings.sandbox_url.rstrip('/')}/health",
            [sys.executable, "-m", "providers.sandbox", "--host", sandbox.host, "--port", str(sandbox.port)],
        ),
        Service(
            "notiflow API", f"{settings.api_url.rstrip('/')}/health",
            [sys.executable, "-m", "notiflow.cli", "api", "--host", api.host, "--port", str(api.port), "--log-level", "warning"],
        ),
    ]


def wait_up(url: str, name: str, seconds: float, process: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if answers(url):
            return
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.3)
    hint = f"; see {log}" if log else ""
    raise NotiflowError(f"{name} did not come up at {url} within {seconds:.0f} s{hint}")


def logs_dir() -> Path:
    path = get_settings().home.resolve() / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_missing_services() -> list[subprocess.Popen[bytes]]:
    """Start each service that is not answering yet; reuse the ones that are. Returns what it started."""
    started: list[tuple[Service, subprocess.Popen[bytes], Path]] = []
    for service in services():
        if answers(service.health_url):
            print(f"{service.name}: reusing {service.health_url.rsplit('/', 1)[0]}", flush=True)
            continue
        log = logs_dir() / f"{service.name.lower().replace(' ', '-')}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(service.command, stdout=out, stderr=subprocess.STDOUT)
        started.append((service, process, log))
    for service, process, log in started:
        wait_up(service.health_url, service.name, 90, process, log)
        print(f"{service.name}: started at {service.health_url.rsplit('/', 1)[0]} (log: {log})", flush=True)
    return [process for _service, process, _log in started]


def stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + 15
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()


def serve_forever() -> None:
    """`notiflow server`: start what is missing, migrate the database, serve the deployments until stopped."""
    from prefect import serve

    from deployments import served_deployments
    from models.db import get_engine
    from notiflow.supervisor import start_supervisor
    from providers.registry import ProviderAccount

    get_engine()  # migrate before any flow run or webhook touches the database
    started = start_missing_services()
    # SIGTERM (make stop) must reach the finally below, so the services this process started stop too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    supervisor = start_supervisor()
    # The provider account block type, so accounts can be made in the Prefect UI's Blocks page.
    ProviderAccount.register_type_and_schema()
    try:
        serve(*served_deployments(), print_starting_message=True)
    finally:
        supervisor.set()
        stop_processes(started)


# --- the background stack `make demo` leaves running -------------------------------------------

def _pid_file() -> Path:
    return get_settings().home.resolve() / "server.json"


def ensure_background_server(timeout: float = 120) -> bool:
    """Start `notiflow server` in the background unless it runs already; True if this call started it."""
    process: subprocess.Popen[bytes] | None = None
    if not _pid_alive(_read_pid()):
        log = logs_dir() / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "notiflow.cli", "server"], stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: `make stop` ends it and all it started
            )
        _pid_file().write_text(json.dumps({"pid": process.pid, "log": str(log)}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            _pid_file().unlink(missing_ok=True)
            raise NotiflowError(f"notiflow server stopped while starting; see {logs_dir() / 'server.log'}")
        if deployments_registered():
            return process is not None
        time.sleep(0.5)
    raise NotiflowError(f"notiflow server did not become ready within {timeout:.0f} s; see {logs_dir() / 'server.log'}")


def deployments_registered() -> bool:
    """A run created now will be picked up: every served deployment exists (the runner polls for their runs)."""
    from prefect.client.orchestration import get_client

    from deployments import served_names

    if not answers(f"{os.environ['PREFECT_API_URL'].rstrip('/')}/health"):
        return False
    with get_client(sync_client=True) as client:
        try:
            for name in served_names():
                client.read_deployment_by_name(name)
        except Exception:
            return False
    return True


def _read_pid() -> int | None:
    try:
        return int(json.loads(_pid_file().read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def _pid_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_background_server() -> str:
    """Stop the background server this checkout started (and every process it started); nothing else."""
    pid = _read_pid()
    if not _pid_alive(pid):
        _pid_file().unlink(missing_ok=True)
        return "no notiflow server started by `make demo` is running"
    assert pid is not None
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.2)
    if _pid_alive(pid):
        os.killpg(pid, signal.SIGKILL)
    _pid_file().unlink(missing_ok=True)
    return f"stopped notiflow server (process group {pid}) and the services it started"
