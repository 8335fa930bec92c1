"""Provider instances by name: which adapter carries each channel, built from a provider account.

An account is a Prefect block (`notiflow provider account`): its kind, endpoint, login and secrets
(SecretStr, shown masked in the UI's Blocks page and never logged), and options of its kind. Two
accounts of one kind coexist under their own names. `NOTIFLOW_ROUTES` maps a channel to the
instance names that carry it; the first is used. The instance `sandbox` needs no account: it is the
sandbox carrier at NOTIFLOW_SANDBOX_URL, the default for every channel, so everything runs with no
account anywhere.

Instances are opened once per process and kept (an SMPP bind, an SMTP connection and an HTTP
client's pool live across batches) until the process ends or the settings change.
"""
from __future__ import annotations

import atexit
import importlib
import threading
from typing import Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from models.errors import NotiflowError
from models.settings import Settings, get_settings
from models.signing import webhook_secret
from models.status import Channel
from providers.base import Provider, ReportSink

SANDBOX = "sandbox"

# Kind → "module:class" of its adapter, imported when an account of that kind is first used.
KINDS: dict[str, str] = {
    "sandbox": "providers.sandbox.adapter:SandboxCarrier",
    "kannel": "providers.kannel:KannelGateway",
    "smtp": "providers.smtp:SmtpProvider",
    "smpp": "providers.smpp:SmppProvider",
    "http": "providers.http_sms:HttpSmsProvider",
    "telegram": "providers.telegram:TelegramBot",
    "viber": "providers.viber:ViberBot",
    "whatsapp": "providers.whatsapp:WhatsAppCloud",
    "fcm": "providers.fcm:FcmProject",
    "chat": "providers.chat:ChatWebhook",
}


class UnknownProvider(NotiflowError):
    """A route or a webhook names a provider instance that has no account, or an account of an unknown kind."""


class ProviderAccount(Block):
    """One account at a provider: what an adapter needs to reach it. Secrets stay SecretStr."""

    _block_type_name: ClassVar[str] = "notiflow provider account"
    _block_type_slug: ClassVar[str] = "notiflow-provider-account"
    _description: ClassVar[str] = (
        "An account at an SMS, e-mail or messenger provider for notiflow. Name the block as the provider "
        "instance (the name NOTIFLOW_ROUTES uses and the path of its delivery-report webhook)."
    )

    kind: str = Field(description=f"The adapter: one of {', '.join(sorted(KINDS))} (and any kind added to providers.registry.KINDS).")
    url: str | None = Field(default=None, description="Endpoint: http(s)://host:port/path, smpp://host:port, smtp://host:port.")
    username: str | None = Field(default=None, description="Login (system id for SMPP).")
    password: SecretStr | None = Field(default=None, description="Password or API key.")
    sender: str | None = Field(default=None, description="Default sender name or address when a message names none.")
    options: dict[str, Any] = Field(default_factory=dict, description="Options of the adapter's kind (see its module).")


def adapter_class(kind: str) -> type[Provider]:
    target = KINDS.get(kind)
    if target is None:
        raise UnknownProvider(f"no provider adapter of kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
    module, _, name = target.partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module), name)
    return cls


def load_account(name: str) -> ProviderAccount:
    """The provider account block called `name`, or UnknownProvider saying how to create one."""
    try:
        account = ProviderAccount.load(name)
    except ValueError as exc:
        raise UnknownProvider(
            f"no provider account {name!r}: create a '{ProviderAccount._block_type_name}' block of that name in the "
            f"Prefect UI (Blocks) or with `notiflow provider add {name} --kind KIND --url URL`"
        ) from exc
    assert isinstance(account, ProviderAccount)
    return account


def build(name: str, settings: Settings) -> Provider:
    """A new, unopened instance of the provider called `name`."""
    if name == SANDBOX:
        from providers.sandbox.adapter import SandboxCarrier

        # The secret in the URL is how the API tells the carrier's reports from forged ones.
        report_url = f"{settings.api_url.rstrip('/')}/dlr/{SANDBOX}?secret={webhook_secret(SANDBOX)}"
        return SandboxCarrier(settings.sandbox_url, name=SANDBOX, report_url=report_url)
    account = load_account(name)
    cls = adapter_class(account.kind)
    from_account = getattr(cls, "from_account", None)
    if from_account is None:
        raise UnknownProvider(f"the {account.kind} adapter cannot be built from an account")
    provider: Provider = from_account(name, account, settings)
    return provider


def instance_for(channel: Channel, settings: Settings | None = None) -> str:
    """The instance name that carries `channel`: the first of its route, else the sandbox."""
    routes = (settings or get_settings()).routes
    names = routes.get(channel.value) or routes.get("*") or [SANDBOX]
    return names[0]


_lock = threading.Lock()
_open: dict[str, Provider] = {}
_opened_with: list[Settings] = []
_report_sink: list[ReportSink] = []


def deliver_reports_to(sink: ReportSink) -> None:
    """Where instances hand the reports that reach them on their own connection (an SMPP receipt).

    The tasks layer names its writer (tasks.delivery does, on import), so this process's instances,
    opened now or later, write their receipts without providers/ knowing the database.
    """
    with _lock:
        _report_sink[:] = [sink]
        for provider in _open.values():
            provider.report_sink = sink


def provider_named(name: str) -> Provider:
    """The open instance called `name`, kept for this process (opened on first use)."""
    settings = get_settings()
    with _lock:
        if _opened_with and _opened_with[0] is not settings:
            _close_all()  # the settings changed (a test, a re-read environment): endpoints may have too
        if not _opened_with:
            _opened_with.append(settings)
        provider = _open.get(name)
        if provider is None:
            provider = build(name, settings)
            provider.report_sink = _report_sink[0] if _report_sink else None
            provider.open()
            _open[name] = provider
        return provider


def provider_for(channel: Channel) -> Provider:
    """The open instance that carries `channel`."""
    return provider_named(instance_for(channel))


def close_providers() -> None:
    """Close every instance this process opened (at exit, and when the settings change)."""
    with _lock:
        _close_all()


def _close_all() -> None:
    for provider in _open.values():
        try:
            provider.close()
        except Exception:  # noqa: BLE001 (closing is best effort: the process is leaving the connection anyway)
            pass
    _open.clear()
    _opened_with.clear()


atexit.register(close_providers)
