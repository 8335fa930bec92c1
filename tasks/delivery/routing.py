"""Which provider adapter carries each channel, built from settings (credentials come from Prefect blocks)."""
from __future__ import annotations

from models.settings import get_settings
from models.signing import webhook_secret
from models.status import Channel
from providers.base import Provider
from providers.sandbox.adapter import SandboxCarrier


def provider_for(channel: Channel) -> Provider:
    """The adapter for `channel`; the sandbox carrier is the default for every channel, so everything runs
    without an account."""
    settings = get_settings()
    # The secret in the URL is how the API tells the carrier's reports from forged ones.
    report_url = f"{settings.api_url.rstrip('/')}/webhooks/sandbox?secret={webhook_secret(SandboxCarrier.name)}"
    return SandboxCarrier(settings.sandbox_url, channel, report_url=report_url)
