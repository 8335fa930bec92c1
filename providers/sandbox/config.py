"""How the sandbox carrier behaves: its latencies, delivery rate, injected faults and seed.

Read from a JSON file (`--config`) or from the `NOTIFLOW_SANDBOX_CONFIG` environment variable.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from models.status import Channel

CONFIG_ENV_VAR = "NOTIFLOW_SANDBOX_CONFIG"


def _is_http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{value!r} is not a webhook URL: it must start with http:// or https://")
    return value


# Where delivery reports are pushed; checked up front because a bad one would only fail later, in the log.
WebhookURL = Annotated[str, AfterValidator(_is_http_url)]


class CarrierConfig(BaseModel):
    """Every knob of the sandbox carrier; the defaults make a quick, mostly-delivering carrier."""

    # A misspelt knob would otherwise be ignored silently and the sandbox would not do what was asked.
    model_config = ConfigDict(extra="forbid")

    queued_seconds: float = Field(default=0.5, ge=0, description="Time a message stays QUEUED after acceptance.")
    sent_seconds: float = Field(default=0.5, ge=0, description="Time a message stays SENT.")
    pending_seconds: float = Field(default=1.0, ge=0, description="Time in PENDING before the final outcome.")
    delivered_rate: float = Field(
        default=0.9, ge=0, le=1, description="Share of messages DELIVERED; the rest end UNDELIVERED with a reason."
    )
    fault_500_rate: float = Field(default=0.0, ge=0, le=1, description="Share of send requests answered HTTP 500.")
    fault_429_rate: float = Field(default=0.0, ge=0, le=1, description="Share of send requests answered HTTP 429.")
    timeout_rate: float = Field(
        default=0.0, ge=0, le=1, description="Share of send requests that hang timeout_seconds, then answer 504."
    )
    timeout_seconds: float = Field(default=30.0, ge=0, description="How long a 'timeout' fault hangs.")
    accept_seconds: float = Field(
        default=0.0, ge=0, le=60, description="How long every send request takes before it is answered (a slow carrier)."
    )
    delivered_rates: dict[Channel, float] = Field(
        default_factory=dict, description="delivered_rate per channel, for the channels that differ (a failing viber, say)."
    )
    silent_channels: list[Channel] = Field(
        default_factory=list, description="Channels whose messages stay PENDING for ever: no final status, no report."
    )
    seed: int = Field(default=1, description="Outcomes follow from seed and ref, faults from seed and request number.")
    report_url: WebhookURL | None = Field(
        default=None, description="Where delivery reports go when a send request names none."
    )
    max_batch: int = Field(default=1000, ge=1, description="Most messages (or ids) one request may carry.")

    @model_validator(mode="after")
    def _rates_are_shares(self) -> CarrierConfig:
        for channel, rate in self.delivered_rates.items():
            if not 0 <= rate <= 1:
                raise ValueError(f"delivered_rates[{channel.value}] is {rate:g}; a share between 0 and 1 is needed")
        return self

    @model_validator(mode="after")
    def _fault_rates_fit_in_one(self) -> CarrierConfig:
        # One draw per request picks at most one fault, so the three shares must fit in 1.
        total = self.fault_500_rate + self.fault_429_rate + self.timeout_rate
        if total > 1:
            raise ValueError(f"fault_500_rate + fault_429_rate + timeout_rate is {total:g}; at most 1 is allowed")
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> CarrierConfig:
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CarrierConfig:
        """The config in NOTIFLOW_SANDBOX_CONFIG (a JSON object), or the defaults when it is unset."""
        raw = (os.environ if environ is None else environ).get(CONFIG_ENV_VAR, "").strip()
        if not raw:
            return cls()
        try:
            json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{CONFIG_ENV_VAR} is not valid JSON: {exc}") from exc
        return cls.model_validate_json(raw)
