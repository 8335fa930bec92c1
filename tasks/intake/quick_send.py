"""Turns a small send from a form into a task file, so it runs as a notification task like any campaign."""
from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path

from models.params import SendNotificationParams
from models.settings import get_settings


def write_send_file(message: SendNotificationParams) -> Path:
    folder = get_settings().uploads_dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"send-{uuid.uuid4().hex}.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "text", "variables"])
        for recipient in message.recipients:
            writer.writerow([recipient, message.text, json.dumps(message.variables, ensure_ascii=False)])
    return path
