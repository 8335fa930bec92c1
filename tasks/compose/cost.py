"""What a message costs: its channel's price per SMS part, or per message on other channels."""
from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from models.status import Channel


def fee(channel: Channel, parts: int, prices: Mapping[str, Decimal]) -> Decimal:
    price = prices.get(channel.value)
    if price is None:
        raise LookupError(f"no price for channel {channel.value}: add it to NOTIFLOW_PRICES")
    return price * parts if channel is Channel.SMS else price
