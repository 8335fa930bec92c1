"""Builds task files for tests, the way customers write them."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openpyxl import Workbook


def write_xlsx(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(list(header))
    for row in rows:
        sheet.append(list(row))
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook.save(path)
    return path


def phones(count: int, start: int = 0) -> list[str]:
    """Valid Russian mobile numbers, distinct for distinct `start`s."""
    return [f"+7916{start + i:07d}" for i in range(count)]
