"""A large task file is checked by worker processes; what the intake stores is the same as when every
row is checked in one process: the same messages, the same rejections, the first of two rows with one
unique message id kept."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from python_calamine import CalamineWorkbook
from sqlalchemy import select
from sqlmodel import Session

import bench.ingest as ingest_bench
import tasks.intake.intake as intake_module
import tasks.intake.sheet_pieces as sheet_pieces
from models.db import insert_new, session_scope
from models.tables import Message, Rejection, ShortLink
from tasks.intake.intake import intake
from tasks.intake.worker import MessageStore, check_in_worker
from tests.files import phones, with_shared_strings, write_xlsx
from tests.test_steps import make_task_from

# Differ between any two tasks (ids, stamps) or between any two runs (short-link codes are random).
NOT_COMPARED = {"id", "task_id", "created_at", "status_updated_at", "short_links", "text"}
HEADER = ["phone", "text", "channel", "external id", "validity period", "unique message id", "variables", "use short links"]


def task_file(tmp_path: Path, rows: int) -> Path:
    numbers = phones(rows, start=uuid.uuid4().int % 8_000_000)
    lines: list[list[Any]] = []
    for i, number in enumerate(numbers):
        lines.append([number, f"Hi {{name}}, order {i} is ready", "sms", f"crm-{i}", 60 + i % 100, f"u-{i}",
                      json.dumps({"name": f"N{i}"}), "false"])
    lines[7][0] = "not a phone"                      # a bad row
    lines[20][5] = lines[3][5]                       # repeats row 5's unique message id
    lines[150][5] = lines[140][5]                    # the same across two jobs
    lines[30][4] = 5000                              # validity period out of range
    lines[41][1] = "Hi {name}, see https://shop.example.com/winter?customer=41"
    lines[41][7] = "true"                            # gets a short link
    lines[60] = [None] * len(HEADER)                 # a blank row is skipped
    return write_xlsx(tmp_path / f"task-{uuid.uuid4().hex[:6]}.xlsx", HEADER, lines)


def stored(engine: Any, task_id: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    with Session(engine) as session:
        messages = [
            {k: v for k, v in row._mapping.items() if k not in NOT_COMPARED}
            for row in session.execute(select(Message.__table__).where(Message.task_id == task_id).order_by(Message.row))
        ]
        rejections = [
            {k: v for k, v in row._mapping.items() if k not in NOT_COMPARED}
            for row in session.execute(
                select(Rejection.__table__).where(Rejection.task_id == task_id).order_by(Rejection.row, Rejection.column))
        ]
        links = session.scalars(select(ShortLink.url).join(Message).where(Message.task_id == task_id)).all()
    return messages, rejections, list(links)


def test_file_checked_by_workers_is_stored_as_when_checked_in_one_process(
    tmp_path: Path, engine: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = task_file(tmp_path, 400)
    monkeypatch.setattr(intake_module, "POOL_MIN_ROWS", 1_000_000)
    here = make_task_from(path)
    assert intake.fn(here) == intake_module.IntakeResult(accepted=395, rejected=4, unknown_columns=[])

    monkeypatch.setattr(intake_module, "POOL_MIN_ROWS", 100)
    monkeypatch.setattr(sheet_pieces, "PIECE_BYTES", 37 * 100)
    monkeypatch.setattr(intake_module, "CHUNK_ROWS", 90)
    monkeypatch.setattr(intake_module, "_cpus", lambda: 2)
    started = []
    real_pool = intake_module.ProcessPoolExecutor
    monkeypatch.setattr(intake_module, "ProcessPoolExecutor", lambda *a, **k: started.append(1) or real_pool(*a, **k))
    by_workers = make_task_from(path)
    assert intake.fn(by_workers) == intake_module.IntakeResult(accepted=395, rejected=4, unknown_columns=[])
    assert started == [1]

    assert stored(engine, by_workers) == stored(engine, here)
    messages, rejections, links = stored(engine, by_workers)
    assert {(r["row"], r["code"]) for r in rejections} == {
        (9, "invalid_phone"), (22, "duplicate_unique_message_id"), (152, "duplicate_unique_message_id"),
        (32, "validity_period_out_of_range"),
    }
    assert [m["row"] for m in messages if m["unique_message_id"] == "u-3"] == [5]
    assert links == ["https://shop.example.com/winter?customer=41"]


def test_a_realistic_file_is_stored_by_the_workers_as_in_one_process(
    tmp_path: Path, engine: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The benchmark's rows: phones in every spreadsheet spelling, e-mail and viber rows, time windows,
    booleans in every spelling, send at as text and as date cells, a share of bad rows."""
    path = write_xlsx(tmp_path / "realistic.xlsx", ingest_bench.HEADER, [ingest_bench._row(i) for i in range(800)])
    monkeypatch.setattr(intake_module, "POOL_MIN_ROWS", 1_000_000)
    here = make_task_from(path)
    in_one = intake.fn(here)
    assert (in_one.accepted, in_one.rejected) == (788, 12)

    monkeypatch.setattr(intake_module, "POOL_MIN_ROWS", 100)
    monkeypatch.setattr(sheet_pieces, "PIECE_BYTES", 53 * 100)
    monkeypatch.setattr(intake_module, "CHUNK_ROWS", 120)
    monkeypatch.setattr(intake_module, "_cpus", lambda: 2)
    by_workers = make_task_from(path)
    assert intake.fn(by_workers) == in_one
    assert stored(engine, by_workers) == stored(engine, here)
    messages, rejections, _links = stored(engine, by_workers)
    assert {m["channel"] for m in messages} == {"sms", "email", "viber"}
    assert sum(m["windows"] is not None for m in messages) > 200


def test_workers_read_the_pieces_of_an_excel_file_and_this_process_only_its_header(
    tmp_path: Path, engine: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sheet as Excel saves it (texts in the shared-strings table), cut into pieces: the intake process
    reads the header from a workbook with only the texts it needs; the workers read every piece."""
    inline = write_xlsx(tmp_path / "inline.xlsx", ingest_bench.HEADER, [ingest_bench._row(i) for i in range(800)])
    path = with_shared_strings(inline, tmp_path / "excel.xlsx")
    monkeypatch.setattr(intake_module, "POOL_MIN_ROWS", 1_000_000)
    here = make_task_from(inline)
    in_one = intake.fn(here)

    opened: list[Path] = []

    class Recording:
        @staticmethod
        def from_path(workbook: str) -> Any:
            opened.append(Path(workbook))
            return CalamineWorkbook.from_path(workbook)

    monkeypatch.setattr(sheet_pieces, "CalamineWorkbook", Recording)
    monkeypatch.setattr(intake_module, "POOL_MIN_ROWS", 100)
    monkeypatch.setattr(sheet_pieces, "PIECE_BYTES", 4000)
    monkeypatch.setattr(intake_module, "_cpus", lambda: 2)
    by_workers = make_task_from(path)
    assert intake.fn(by_workers) == in_one
    assert {path.name for path in opened} == {"first.xlsx"}
    assert stored(engine, by_workers) == stored(engine, here)
    assert not opened[0].parent.exists(), "the pieces outlive the intake"


def test_file_below_the_threshold_starts_no_workers(tmp_path: Path, engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake_module, "ProcessPoolExecutor", lambda *a, **k: pytest.fail("workers started for a small file"))
    task_id = make_task_from(task_file(tmp_path, 200))
    assert intake.fn(task_id).accepted == 195


def test_workers_started_for_a_large_file_on_disk_with_few_rows_are_stopped_unused(
    tmp_path: Path, engine: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(intake_module, "POOL_EARLY_BYTES", 0)
    monkeypatch.setattr(intake_module, "_cpus", lambda: 2)
    pools: list[Any] = []

    class RecordedPool(intake_module.ProcessPoolExecutor):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.jobs: list[Any] = []
            pools.append(self)

        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            self.jobs.append(fn)
            return super().submit(fn, *args, **kwargs)

        def shutdown(self, *args: Any, **kwargs: Any) -> None:
            self.jobs.append("shutdown")
            super().shutdown(*args, **kwargs)

    monkeypatch.setattr(intake_module, "ProcessPoolExecutor", RecordedPool)
    task_id = make_task_from(task_file(tmp_path, 200))
    assert intake.fn(task_id).accepted == 195
    (pool,) = pools
    assert check_in_worker not in pool.jobs  # every row was checked in this process
    assert pool.jobs[-1] == "shutdown"  # and the workers were stopped


def test_messages_are_stored_by_the_workers_rows_as_insert_new_stores_them(tmp_path: Path, engine: Any) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("messages travel as sqlite3 rows on SQLite only")
    task_id = make_task_from(write_xlsx(tmp_path / "one.xlsx", ["phone", "text"], [["+79161234567", "x"]]))

    def message(row: int) -> dict[str, Any]:
        values = {
            "task_id": task_id, "row": row, "recipient": "+79161234567", "channel": "sms", "sender": "ACME", "text": "Привет",
            "encoding": "UCS-2", "parts": 1, "fee": Decimal("2.5000"), "status": "CREATED", "status_description": "created, not sent",
            "external_id": "e", "bulk_id": None, "group_id": "g", "flow_id": None, "variables": {"name": "Анна", "n": [1, 2]},
            "template_id": None, "template_name": None, "short_links": None, "time_zone": "Europe/Moscow", "validity_period": 60,
            "unique_message_id": "u", "not_before": datetime(2026, 11, 27, 6, 30, tzinfo=UTC), "params": {"priority": 2},
            "attempts": 0, "poll_count": 0, "created_at": None, "status_updated_at": None,
        }
        return {k: v for k, v in values.items() if k in Message.__table__.c}

    store = MessageStore("sqlite")
    now = datetime(2026, 11, 26, 9, 0, 0, 123456, tzinfo=UTC)
    with session_scope(engine) as session:
        store.insert(session, [store.prepare(message(1000))], now)
        insert_new(session, Message, [{**message(1001), "created_at": now, "status_updated_at": now}])
    with Session(engine) as session:
        result = session.connection().exec_driver_sql(
            "SELECT * FROM message WHERE task_id = ? AND \"row\" >= 1000 ORDER BY \"row\"", (task_id,))
        fast, slow = ({k: v for k, v in row._mapping.items() if k not in ("id", "row")} for row in result.all())
    assert fast == slow
    assert fast["created_at"] == "2026-11-26 09:00:00.123456" and json.loads(fast["variables"]) == {"name": "Анна", "n": [1, 2]}


def test_workers_end_when_the_intake_process_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "intake_process.py"
    script.write_text(
        "import os, sys, time\n"
        "import tasks.intake.intake as intake\n"
        "if __name__ == '__main__':\n"
        "    intake._cpus = lambda: 2\n"
        "    pool = intake.Workers().start()\n"
        "    print(*sorted({pool.submit(os.getpid).result() for _ in range(20)}), flush=True)\n"
        "    time.sleep(600)\n"
    )
    root = Path(__file__).parent.parent
    with (tmp_path / "stderr.txt").open("w") as stderr:  # also the killed process's resource tracker's, which warns
        process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=root,
                                   env={**os.environ, "PYTHONPATH": str(root)})
    try:
        assert process.stdout is not None
        workers = [int(pid) for pid in process.stdout.readline().split()]
        assert workers and process.pid not in workers, (tmp_path / "stderr.txt").read_text()
    finally:
        process.kill()
        process.wait()
    deadline = time.monotonic() + 30
    while any(_running(pid) for pid in workers):
        assert time.monotonic() < deadline, f"workers {workers} outlived the killed intake process"
        time.sleep(0.1)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def test_a_worker_imports_what_checking_rows_needs_not_prefect() -> None:
    # A worker process imports tasks.intake.worker; importing Prefect too would cost each worker seconds.
    root = Path(__file__).parent.parent
    code = "import sys, tasks.intake.worker; print(sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'pandas', 'httpx'}))"
    result = subprocess.run([sys.executable, "-c", code], cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_workers_check_with_the_settings_of_the_intake_that_sends_them_rows(
    tmp_path: Path, engine: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The fork server the workers come from outlives an intake, keeping the environment it started with;
    # an intake run after a settings change must still be checked with the new settings.
    from models.settings import get_settings

    monkeypatch.setattr(intake_module, "POOL_MIN_ROWS", 100)
    monkeypatch.setattr(sheet_pieces, "PIECE_BYTES", 50 * 100)
    monkeypatch.setattr(intake_module, "_cpus", lambda: 2)
    monkeypatch.delenv("NOTIFLOW_STRICT_LOCAL_TIME", raising=False)
    get_settings.cache_clear()
    path = task_file(tmp_path, 200)  # Russian mobile numbers, which may be in any of Russia's zones
    loose = make_task_from(path)
    assert intake.fn(loose).accepted == 195

    monkeypatch.setenv("NOTIFLOW_STRICT_LOCAL_TIME", "1")
    get_settings.cache_clear()
    try:
        strict = make_task_from(path)
        assert intake.fn(strict).accepted == 195
    finally:
        monkeypatch.delenv("NOTIFLOW_STRICT_LOCAL_TIME")
        get_settings.cache_clear()
    with Session(engine) as session:
        zones = {task: set(session.scalars(select(Message.time_zones).where(Message.task_id == task))) for task in (loose, strict)}
    assert zones[loose] == {None}
    assert len(zones[strict]) == 1 and "Asia/Anadyr" in next(iter(zones[strict])).split()


def test_workers_of_a_program_run_as_a_package_module_start_quietly(tmp_path: Path) -> None:
    # A flow run's main module is prefect.engine, a module of a package: each worker runs it again, and
    # runpy would warn in the run's log that the fork server had imported it already.
    package = tmp_path / "program"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "main.py").write_text(
        "import os\n"
        "import tasks.intake.intake as intake\n"
        "if __name__ == '__main__':\n"
        "    intake._cpus = lambda: 2\n"
        "    workers = intake.Workers()\n"
        "    pool = workers.start()\n"
        "    print(len({pool.submit(os.getpid).result() for _ in range(20)}), flush=True)\n"
        "    workers.close()\n"
    )
    root = Path(__file__).parent.parent
    result = subprocess.run([sys.executable, "-m", "program.main"], check=False, cwd=root, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{tmp_path}"})
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 1  # the workers answered
    assert "Warning" not in result.stderr, result.stderr
