"""A message's fee: the sms price per part, a per-message price elsewhere; smart encoding before counting."""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import Session

from models.settings import DEFAULT_PRICES, get_settings
from models.status import Channel
from models.tables import Message
from tasks.compose.cost import fee
from tasks.intake.intake import intake
from tests.files import write_xlsx


def test_sms_costs_its_price_per_part() -> None:
    assert fee(Channel.SMS, 3, DEFAULT_PRICES) == Decimal("7.50")


def test_other_channels_cost_per_message() -> None:
    assert fee(Channel.VIBER, 3, DEFAULT_PRICES) == Decimal("1.20")


def test_a_channel_without_a_price_is_an_error_saying_where_to_add_it() -> None:
    with pytest.raises(LookupError, match="NOTIFLOW_PRICES"):
        fee(Channel.SMS, 1, {})


def test_smart_encoding_sends_the_gsm_text_and_charges_for_its_parts(tmp_path: Path, engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_steps import make_task_from

    curly = "“Sale” — 20 % off everything… " * 5  # 150 characters: 3 UCS-2 parts, 1 GSM-7 part once replaced
    monkeypatch.setattr(get_settings(), "smart_encoding", True)
    task_id = make_task_from(write_xlsx(tmp_path / "smart.xlsx", ["phone", "text"], [["+79161234567", curly]]))
    intake.fn(task_id)
    with Session(engine) as session:
        message = session.scalars(select(Message).where(Message.task_id == task_id)).one()
    assert (message.encoding, message.parts, message.fee) == ("GSM-7", 1, Decimal("2.50"))
    assert message.text == curly.strip().replace("“", '"').replace("”", '"').replace("—", "-").replace("…", "...")
