"""Where the flow takes a task file from: the upload folder, or a public URL within a size limit and a deadline.

A file server on 127.0.0.1 stands in for a web server; the tests that fetch from it allow 127.0.0.1
alone (NOTIFLOW_TASK_FILE_PRIVATE_NETWORKS), so every other private address stays refused.
"""
from __future__ import annotations

import stat
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import Session

from models.errors import TaskFileError
from models.params import NotificationTaskParams
from models.settings import get_settings
from models.tables import Message, NotificationTask
from tasks.control.lifecycle import open_task
from tasks.intake.intake import intake
from tasks.intake.task_file import uploaded

CSV = b"phone,text\n+79161234567,hello\n+79161234568,hello again\n"
SECRET_BODY = b"TOP-SECRET-INTERNAL-PAGE"


class _Files(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        port = self.server.server_address[1]
        route = self.path.split("?")[0]
        try:
            if route == "/tasks.csv":
                self._send(200, CSV)
            elif route == "/to-loopback.csv":  # 127.0.0.2 is loopback too, but not the allowed 127.0.0.1
                self._send(302, b"", {"Location": f"http://127.0.0.2:{port}/tasks.csv"})
            elif route == "/to-metadata.csv":
                self._send(302, b"", {"Location": "http://169.254.169.254/latest/meta-data/"})
            elif route == "/hop.csv":
                self._send(302, b"", {"Location": "/tasks.csv"})
            elif route == "/secret.csv":
                self._send(500, SECRET_BODY)
            elif route == "/declared-huge.csv":
                self.send_response(200)
                self.send_header("Content-Length", str(10**12))
                self.end_headers()
            elif route == "/endless.csv":  # no length, never ends
                self.send_response(200)
                self.end_headers()
                for _ in range(10_000):
                    self.wfile.write(b"+79161234567,x\n" * 1000)
            elif route == "/slow.csv":  # a byte now and then: no single read ever times out
                self.send_response(200)
                self.end_headers()
                for _ in range(200):
                    self.wfile.write(b"p")
                    self.wfile.flush()
                    time.sleep(0.1)
            else:
                self._send(404, SECRET_BODY)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def file_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set NOTIFLOW_ settings for one test."""
    def apply(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"NOTIFLOW_{name.upper()}", value)
        get_settings.cache_clear()

    yield apply
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def local_server_allowed(settings: Any) -> None:
    settings(task_file_private_networks='["127.0.0.1/32"]', task_file_download_seconds="2", task_file_max_bytes="100000")


def _open(task_file: str) -> int:
    return open_task.fn(NotificationTaskParams(task_file=task_file, windows=["00:00-24:00"]), str(uuid.uuid4()))


def _refusal(task_file: str) -> str:
    with pytest.raises(TaskFileError) as refused:
        _open(task_file)
    return str(refused.value)


def test_a_file_from_a_url_is_stored_privately_and_deleted_once_its_rows_are(
    file_server: str, local_server_allowed: None, engine: Any
) -> None:
    task_id = _open(f"{file_server}/hop.csv")
    with Session(engine) as session:
        stored = Path(session.scalars(select(NotificationTask.file).where(NotificationTask.id == task_id)).one())
    assert stored.read_bytes() == CSV
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert intake.fn(task_id).accepted == 2
    assert not stored.exists()
    again = intake.fn(task_id)  # a re-entry reads the database, not the deleted file
    assert (again.accepted, again.rejected) == (2, 0)
    with Session(engine) as session:
        assert len(session.scalars(select(Message.id).where(Message.task_id == task_id)).all()) == 2


def test_a_setting_keeps_the_stored_copy(file_server: str, local_server_allowed: None, settings: Any, engine: Any) -> None:
    settings(keep_task_files="true")
    task_id = _open(f"{file_server}/tasks.csv")
    intake.fn(task_id)
    with Session(engine) as session:
        assert Path(session.scalars(select(NotificationTask.file).where(NotificationTask.id == task_id)).one()).exists()


def test_a_url_to_this_machine_is_refused_unless_a_setting_allows_it(file_server: str) -> None:
    assert "is not a public address" in _refusal(f"{file_server}/tasks.csv")


@pytest.mark.parametrize("route", ["/to-loopback.csv", "/to-metadata.csv"])
def test_a_redirect_to_a_private_address_is_refused(file_server: str, local_server_allowed: None, route: str) -> None:
    assert "is not a public address" in _refusal(f"{file_server}{route}")


def test_errors_quote_neither_the_fetched_content_nor_the_credentials(
    file_server: str, local_server_allowed: None, engine: Any
) -> None:
    authority = file_server.removeprefix("http://")
    for route in ("/secret.csv", "/missing.csv"):
        error = _refusal(f"http://admin:hunter2@{authority}{route}")
        assert "HTTP" in error and SECRET_BODY.decode() not in error
        assert "hunter2" not in error and "admin" not in error
    task_id = _open(f"http://admin:hunter2@{authority}/tasks.csv")
    with Session(engine) as session:
        assert "hunter2" not in session.scalars(select(NotificationTask.source_file).where(NotificationTask.id == task_id)).one()


@pytest.mark.parametrize("route", ["/declared-huge.csv", "/endless.csv"])
def test_a_body_over_the_size_limit_is_refused(file_server: str, local_server_allowed: None, route: str, home: Path) -> None:
    before = set(get_settings().files_dir.resolve().iterdir())
    assert "larger than 100,000 bytes" in _refusal(f"{file_server}{route}")
    assert set(get_settings().files_dir.resolve().iterdir()) == before  # nothing half-written is left


def test_a_slow_server_is_given_up_on_at_the_deadline(file_server: str, local_server_allowed: None) -> None:
    started = time.monotonic()
    assert "not downloaded within 2 s" in _refusal(f"{file_server}/slow.csv")
    assert time.monotonic() - started < 5


def test_the_cli_copies_a_file_from_elsewhere_into_the_upload_folder(home: Path, upload_folder: Path) -> None:
    original = home / f"elsewhere-{uuid.uuid4().hex[:6]}.csv"
    original.write_bytes(CSV)
    assert not original.resolve().is_relative_to(upload_folder)
    with uploaded(original) as copy:
        assert copy.is_relative_to(upload_folder) and copy.name == original.name and copy.read_bytes() == CSV
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert not copy.exists()
    inside = upload_folder / f"inside-{uuid.uuid4().hex[:6]}.csv"
    inside.write_bytes(CSV)
    with uploaded(inside) as same:
        assert same == inside.resolve()
    assert inside.exists()


def test_the_run_form_draws_the_name_as_a_plain_text_box() -> None:
    from prefect.utilities.callables import parameter_schema

    from flows.campaign import notification_task

    schema = parameter_schema(notification_task).model_dump()
    name = schema["definitions"]["NotificationTaskParams"]["properties"]["name"]
    assert name["type"] == "string" and name["default"] == "" and "anyOf" not in name
    assert NotificationTaskParams(task_file="/x/November promo.xlsx", name=None).task_name == "November promo"  # type: ignore[arg-type]
    assert NotificationTaskParams(task_file="https://admin:hunter2@example.com").task_name == "notification task"
    assert NotificationTaskParams(task_file="https://a:b@example.com/f/promo.csv?x=1").task_name == "promo"
