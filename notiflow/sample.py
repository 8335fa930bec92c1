"""Writes the demo's sample notification-task file: 1,000 rows, a few of them wrong on purpose, one in
five tried on Viber first with SMS as its fallback."""
from __future__ import annotations

import random
from pathlib import Path

from openpyxl import Workbook

TEXTS = (
    "Your order {n} is ready for pickup until 20:00.",
    "Код подтверждения: {n}. Никому его не сообщайте.",
    "Dear customer, your appointment is confirmed for tomorrow at 10:30. Reply STOP to opt out. "
    "Details and changes: https://example.com/a/{n} — we look forward to seeing you!",
    "Balance reminder: invoice {n} is due in 3 days. Pay in the app to avoid a late fee [ref {n}].",
)

# Each mistake a customer's file really contains, with the row it goes in (every 37th row).
MISTAKES = (
    ("phone", "not a number"),
    ("phone", "+7 912 345"),
    ("text", None),
    ("channel", "pigeon"),
    ("validity period", 5000),
    ("phone", None),
)


def write_sample(path: Path, rows: int = 1000, seed: int = 7) -> Path:
    """A task file like a customer uploads: numbers written every way spreadsheets write them."""
    rng = random.Random(seed)
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("messages")
    sheet.append(["Phone", "Text", "Channel", "Channels", "External ID", "Validity period"])
    for index in range(rows):
        subscriber = 9_000_000_000 + rng.randrange(100_000_000, 999_999_999)
        style = index % 4
        phone: object = (
            f"+7{subscriber}" if style == 0 else 70_000_000_000 + subscriber if style == 1
            else f"8 ({str(subscriber)[:3]}) {str(subscriber)[3:6]}-{str(subscriber)[6:8]}-{str(subscriber)[8:]}" if style == 2
            else f"7{subscriber}"
        )
        cascade = index % 5 == 4  # Viber first; SMS when Viber does not deliver (spec §4)
        row = {"phone": phone, "text": TEXTS[index % len(TEXTS)].format(n=10_000 + index), "channel": None if cascade else "sms",
               "channels": '["viber", "sms"]' if cascade else None, "external id": f"crm-{index + 1}", "validity period": 1440}
        if index % 37 == 36:
            column, value = MISTAKES[(index // 37) % len(MISTAKES)]
            row[column] = value
        sheet.append([row["phone"], row["text"], row["channel"], row["channels"], row["external id"], row["validity period"]])
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook.save(path)
    return path
