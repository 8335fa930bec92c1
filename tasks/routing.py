"""Which provider adapter carries each channel, built from settings (credentials come from Prefect blocks)."""
from __future__ import annotations

from models.settings import get_settings
from models.status import Channel
from providers.base import Provider
from providers.sandbox.adapter import SandboxSMS


def provider_for(channel: Channel) -> Provider:
    """The adapter for `channel`; the sandbox carrier is the default so everything runs without an account."""
    settings = get_settings()
    if channel is Channel.SMS:
        return SandboxSMS(settings.sandbox_url, report_url=f"{settings.api_url.rstrip('/')}/webhooks/sandbox")
    raise LookupError(f"no provider is connected for channel {channel.value}; connect one before sending on it")
