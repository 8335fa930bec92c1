"""The CLI's JSON output is a contract users script against."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.files import write_xlsx


def notiflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "notiflow.cli", *args], capture_output=True, text=True, timeout=120, env=os.environ.copy())


def test_segments_json() -> None:
    result = notiflow("segments", "Hello world", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"encoding": "GSM-7", "parts": 1, "units": 11}


def test_segments_json_switches_to_ucs2_for_cyrillic() -> None:
    result = notiflow("segments", "Привет", "--json")
    assert json.loads(result.stdout) == {"encoding": "UCS-2", "parts": 1, "units": 6}


def test_segments_smart_replaces_look_alikes_before_counting() -> None:
    plain = json.loads(notiflow("segments", "“Hi” — it’s me…", "--json").stdout)
    smart = json.loads(notiflow("segments", "“Hi” — it’s me…", "--smart", "--json").stdout)
    assert plain["encoding"] == "UCS-2"
    assert smart == {"encoding": "GSM-7", "parts": 1, "units": 17, "text": '"Hi" - it\'s me...'}


def test_check_json_plans_every_row_without_sending(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "t.xlsx", ["phone", "text", "colour"],
                      [["+79161234567", "hi", "red"], ["letters", "hi", "blue"], [79161234568, "x" * 161, ""]])
    result = notiflow("check", str(path), "--json", "--now", "2026-11-26T12:00:00+03:00")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert (plan["accepted"], plan["rejected"], plan["unknown_columns"]) == (2, 1, ["colour"])
    first, bad, long = plan["rows"]
    assert first == first | {"row": 2, "accepted": True, "phone": "+79161234567", "channel": "sms", "encoding": "GSM-7",
                             "parts": 1, "scheduled_at": "2026-11-26T09:00:00Z", "expires_at": "2026-11-27T09:00:00Z", "errors": []}
    assert bad["row"] == 3 and not bad["accepted"] and bad["errors"][0]["column"] == "phone"
    assert bad["errors"][0]["code"] == "invalid_phone"
    assert long["parts"] == 2


def test_check_plans_a_late_row_for_the_next_morning(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "t.xlsx", ["phone", "text"], [["+79161234567", "hi"]])
    plan = json.loads(notiflow("check", str(path), "--json", "--now", "2026-11-26T22:30:00+03:00").stdout)
    assert plan["rows"][0]["scheduled_at"] == "2026-11-27T06:00:00Z"


def test_check_of_an_unreadable_file_fails_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "t.xlsx"
    path.write_text("nope")
    result = notiflow("check", str(path), "--json")
    assert result.returncode == 1
    assert "not a readable spreadsheet" in result.stderr
