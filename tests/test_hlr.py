"""Phone checks (HLR) through the CLI and the hlr-check deployment, answered by the sandbox carrier."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook
from prefect.client.orchestration import get_client
from sqlalchemy import func, select
from sqlmodel import Session

from models.tables import PhoneCheckResult
from tasks.delivery.hlr import CHECK_COLUMNS, phones_from
from tests.files import write_xlsx
from tests.sandbox_fixtures import wait_until


def notiflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "notiflow.cli", *args], capture_output=True, text=True, timeout=120, env=os.environ.copy())


def test_phones_come_from_arguments_or_a_task_file(tmp_path: Path) -> None:
    assert phones_from(["+79161234567,+79161234568", "89161234569"]) == ["+79161234567", "+79161234568", "89161234569"]
    path = write_xlsx(tmp_path / "p.xlsx", ["Phone", "text"], [["+79161234567", "a"], [79161234568, "b"]])
    assert phones_from([str(path)]) == ["+79161234567", "79161234568"]


def test_hlr_checks_valid_numbers_and_explains_invalid_ones(stack: Any, engine: Any) -> None:
    result = notiflow("hlr", "+79165550001", "8 (916) 555-00-02", "not a phone", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [c["phone"] for c in data["checked"]] == ["+79165550001", "+79165550002"]
    assert all(c["status"] in ("live", "absent", "unknown") and c["price"] == "0.50" for c in data["checked"])
    assert data["total_price"] == "1.00"
    assert len(data["invalid"]) == 1 and "contains letters" in data["invalid"][0]["reason"]


def test_checks_are_searchable_by_phone_fragment_and_exported_with_the_spec_columns(stack: Any) -> None:
    assert notiflow("hlr", "+79165550101", "+79165550102", "--json").returncode == 0
    found = json.loads(notiflow("checks", "--phone", "555010", "--since", "2020-01-01", "--export", "--json").stdout)
    assert {c["phone"] for c in found["checks"]} >= {"+79165550101", "+79165550102"}
    assert all("555010" in c["phone"] for c in found["checks"])
    rows = list(load_workbook(found["export"], read_only=True)["Phone checks"].iter_rows(values_only=True))
    assert [h.split(" (")[0] for h in rows[0]] == list(CHECK_COLUMNS)
    assert len(rows) - 1 == len(found["checks"])
    nothing = json.loads(notiflow("checks", "--phone", "555010", "--until", "2020-01-01", "--json").stdout)
    assert nothing["checks"] == []


@pytest.mark.e2e
def test_hlr_check_deployment_stores_its_results(stack: Any, engine: Any) -> None:
    from prefect.deployments import run_deployment

    run = run_deployment("hlr-check/hlr-check", parameters={"phones": ["+79165550201", "+79165550202", "oops"]}, timeout=0)
    with get_client(sync_client=True) as client:
        final = wait_until(lambda: (s := client.read_flow_run(run.id).state) is not None and s.is_final() and s, timeout=90, interval=0.5)
    assert final.is_completed(), final.message
    with Session(engine) as session:
        stored = session.scalar(select(func.count()).where(PhoneCheckResult.flow_run_id == str(run.id)))
    assert stored == 2
