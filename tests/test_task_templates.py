"""The downloadable Excel task templates: written by the CLI and the API, filled in, they pass `notiflow check`."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook
from typer.testing import CliRunner

from notiflow.cli import app
from tasks.intake.columns import BY_NAME
from tasks.intake.task_templates import TASK_TEMPLATES
from tests.test_cli import notiflow

TITLES = ["SMS messages", "Sponsored messages", "Start chat sessions", "Start chat sessions in WhatsApp",
          "Universal (API format)", "Full list of params"]


def fill_in(path: Path, rows: int) -> None:
    """What a customer does: copy the example row for more recipients, each with its own phone and ids."""
    workbook = load_workbook(path)
    sheet = workbook["Messages"]
    header = [c.value for c in sheet[1]]
    example = [c.value for c in sheet[2]]
    for i in range(rows):
        row = list(example)
        for position, name in enumerate(header):
            if name in ("phone", "messenger user id"):
                row[position] = f"8 (916) 555-{i // 100:02d}-{i % 100:02d}"
            elif name == "email":
                row[position] = f"customer{i}@example.com"
            elif name in ("unique message id", "external id", "chat id"):
                row[position] = f"{name.replace(' ', '-')}-{i}"
        sheet.append(row)
    workbook.save(path)


def test_cli_writes_the_six_templates_and_each_filled_in_passes_check(tmp_path: Path) -> None:
    done = notiflow("templates-xlsx", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    written = json.loads(done.stdout)
    assert [w["title"] for w in written] == TITLES
    for item in written:
        path = Path(item["path"])
        fill_in(path, rows=5)
        # In-process: a subprocess per template costs a Prefect import each; the command is the same.
        checked = CliRunner().invoke(app, ["check", str(path), "--json"])
        assert checked.exit_code == 0, checked.output
        result = json.loads(checked.stdout)
        problems = [e["message"] for r in result["rows"] for e in r["errors"]]
        assert (result["accepted"], result["rejected"], result["unknown_columns"], problems) == (6, 0, [], []), path.name


@pytest.mark.parametrize("template", TASK_TEMPLATES, ids=[t.file for t in TASK_TEMPLATES])
def test_second_sheet_describes_each_column_with_its_limits(tmp_path: Path, template: Any) -> None:
    from tasks.intake.task_templates import workbook_bytes

    workbook = load_workbook(io.BytesIO(workbook_bytes(template)))
    assert workbook.sheetnames == ["Messages", "Columns"]
    header = [c.value for c in workbook["Messages"][1]]
    assert header == list(template.columns)
    described = {row[0]: row[3] for row in workbook["Columns"].iter_rows(min_row=2, values_only=True) if row[0] in header}
    assert described == {name: BY_NAME[name].format for name in header}


def test_full_list_has_every_column_of_the_spec() -> None:
    spec = Path(__file__).resolve().parents[2] / "shared" / "spec" / "params.md"
    if not spec.exists():
        pytest.skip("the spec is not next to this checkout")
    names: set[str] = set()
    for line in spec.read_text(encoding="utf-8").splitlines():
        if line.startswith("| ") and not line.startswith(("| column", "|---")):
            names.update(part.strip() for part in line.split("|")[1].split("/"))
    full = next(t for t in TASK_TEMPLATES if t.title == "Full list of params")
    aliases = {alias for name in full.columns for alias in (name, *BY_NAME[name].aliases)}
    assert names <= aliases, f"missing from the full list: {sorted(names - aliases)}"


def test_api_lists_and_serves_the_templates(stack: Any, auth: dict[str, str]) -> None:
    listed = httpx.get(f"{stack.api_url}/v1/task-templates", timeout=30, headers=auth).json()
    assert [t["title"] for t in listed] == TITLES
    response = httpx.get(f"{stack.api_url}{listed[0]['url']}", timeout=30, headers=auth)
    assert response.status_code == 200 and "attachment" in response.headers["content-disposition"]
    workbook = load_workbook(io.BytesIO(response.content))
    assert [c.value for c in workbook["Messages"][1]] == listed[0]["columns"]
    missing = httpx.get(f"{stack.api_url}/v1/task-templates/nope.xlsx", timeout=30, headers=auth)
    assert missing.status_code == 404 and "/v1/task-templates" in missing.json()["error"]["message"]
