"""`notiflow check --json`: each row's plan, in a shape scripts rely on."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.files import write_xlsx


def test_check_json_phone_is_the_e164_phone_or_null(tmp_path: Path) -> None:
    """An e-mail row has no phone: its address is its recipient, not its "phone"."""
    path = write_xlsx(tmp_path / "mixed.xlsx", ["phone", "email", "text", "channel"], [
        ["8 (916) 123-45-67", None, "hi", "sms"],
        [None, "anna@example.com", "hi", "email"],
        ["+79161234568", "bob@example.com", "hi", "email"],
        ["+79161234569", None, "hi", "viber"],
    ])
    result = subprocess.run([sys.executable, "-m", "notiflow.cli", "check", str(path), "--json"],
                            capture_output=True, text=True, timeout=120, env=os.environ.copy(), check=False)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert [(r["row"], r["channel"], r["phone"], r["recipient"]) for r in rows] == [
        (2, "sms", "+79161234567", "+79161234567"),
        (3, "email", None, "anna@example.com"),
        (4, "email", None, "bob@example.com"),
        (5, "viber", "+79161234569", "+79161234569"),
    ]
