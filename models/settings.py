"""Settings read from NOTIFLOW_* environment variables; the one place defaults live."""
from __future__ import annotations

import os
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PRICES = {
    "sms": Decimal("2.50"), "email": Decimal("0.10"), "push": Decimal("0.05"), "viber": Decimal("1.20"),
    "whatsapp": Decimal("3.00"), "telegram": Decimal("0.50"), "vk": Decimal("0.80"), "ok": Decimal("0.80"),
    "chat": Decimal("0.50"),
}

# The zone used when a number maps to several (a Russian mobile number maps to eleven): the zone
# most of the country's subscribers live in. A country not listed uses the account's zone.
DEFAULT_COUNTRY_ZONES = {
    "RU": "Europe/Moscow", "KZ": "Asia/Almaty", "US": "America/New_York", "CA": "America/Toronto",
    "BR": "America/Sao_Paulo", "MX": "America/Mexico_City", "AU": "Australia/Sydney", "ID": "Asia/Jakarta",
    "UA": "Europe/Kyiv", "ES": "Europe/Madrid", "PT": "Europe/Lisbon", "AR": "America/Argentina/Buenos_Aires",
    "CL": "America/Santiago", "CD": "Africa/Kinshasa", "MN": "Asia/Ulaanbaatar", "NZ": "Pacific/Auckland",
    "GB": "Europe/London", "GG": "Europe/London", "JE": "Europe/London", "IM": "Europe/London",
}


SETTINGS_PREFIX = "NOTIFLOW_"


def settings_environment() -> dict[str, str]:
    """This process's NOTIFLOW_ variables, spelt in any case (as Settings reads them)."""
    return {name: value for name, value in os.environ.items() if name.upper().startswith(SETTINGS_PREFIX)}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=SETTINGS_PREFIX, extra="ignore")

    home: Path = Field(default=Path(".notiflow"), description="Where the embedded database, files and reports live.")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty means a SQLite file under `home`.")
    default_region: str = "RU"
    timezone: str = "Europe/Moscow"
    # Country → zone for numbers that map to several zones (NOTIFLOW_COUNTRY_ZONES, JSON).
    country_zones: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_COUNTRY_ZONES))
    # With strict local time a message goes out only when its window holds in every zone its number may be in.
    strict_local_time: bool = False
    sandbox_url: str = "http://127.0.0.1:8765"
    # Channel → the provider instances that carry it, the first used (NOTIFLOW_ROUTES, JSON, e.g.
    # {"sms": ["kannel-main"], "email": ["smtp"]}; "*" for every other channel). Unrouted channels use
    # the sandbox carrier. Instances other than "sandbox" are provider account blocks (providers/registry.py).
    routes: dict[str, list[str]] = Field(default_factory=dict)
    api_url: str = "http://127.0.0.1:8000"
    # Where recipients reach the API's short-link redirects; empty means api_url.
    public_url: str = ""
    prefect_port: int = 4200
    sms_sender: str = "notiflow"
    # Price list in the account's currency: per part for sms, per message for every other channel.
    prices: dict[str, Decimal] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    # Replace Unicode look-alikes (curly quotes, long dashes, NBSP, ellipsis) with GSM characters
    # before counting parts, so one stray quote does not halve the part size; the replaced text is sent.
    smart_encoding: bool = False
    # The longest message text a task-file row may have, in characters (255 GSM-7 parts are 39,015).
    max_text_chars: int = Field(default=20_000, ge=1)
    dispatch_batch_size: int = Field(default=500, ge=1, le=1000)
    # How long one dispatch task run sends before it hands back to the flow (progress, polls, other channels):
    # long enough that Prefect's cost per task run is lost in it, short enough to keep the UI current.
    dispatch_span_seconds: float = Field(default=5.0, gt=0, le=60)
    # Longest wait the flow spends asleep in its process; longer waits reschedule the run.
    max_inprocess_wait_seconds: float = 60.0
    # Seconds after sending at which delivery status is asked; empty means the provider's own schedule.
    poll_schedule: list[float] = Field(default_factory=list)
    max_send_attempts: int = 5
    # Longer than the longest in-process wait, since the lease is renewed once per dispatch batch.
    lease_seconds: float = 90.0
    # Carrier trouble and in-flight messages (issue 11, items 2 and 4):
    # a message handed to a provider this long ago without an answer is in no provider call any more
    # (calls time out after 10 s), so any process may reconcile it by its idempotency key.
    handover_deadline_seconds: float = 20.0
    # When more than this share of a channel's last `send_error_window` send requests failed (5xx,
    # 429, timeouts), the campaign suspends itself instead of spending every message's attempts.
    max_send_error_rate: float = Field(default=0.5, ge=0, le=1)
    send_error_window: int = Field(default=10, ge=3)

    # --- Who may use the API, and where task files may come from ---
    # The folder task files given by path must be in (the CLI copies a local file there); empty: `home`/uploads.
    upload_dir: Path | None = None
    # Networks (CIDR) a task-file URL may reach although they are not public, e.g. ["127.0.0.0/8"] for a local
    # file server; loopback, private, link-local, multicast and reserved addresses are refused otherwise.
    task_file_private_networks: list[str] = Field(default_factory=list)
    task_file_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1)
    # The whole download, redirects included, must finish within this many seconds.
    task_file_download_seconds: float = Field(default=60.0, gt=0)
    # Keep each task's stored copy of its file after its rows are in the database (else it is deleted then).
    keep_task_files: bool = False
    # Host names the API answers to; empty: localhost, 127.0.0.1 and the hosts of api_url and public_url.
    trusted_hosts: list[str] = Field(default_factory=list)
    # Request bodies the API takes: a multipart upload (a task file) up to api_max_upload_bytes, any other
    # body (JSON, a provider's delivery report) up to api_max_json_bytes; larger ones are answered 413.
    # Uploads take what a task file may be (task_file_max_bytes): a million-row file is tens of MiB.
    api_max_upload_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    api_max_json_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Requests a second each API token may make on average, and at once (a token bucket per API process).
    api_rate_per_second: float = Field(default=100.0, gt=0)
    api_rate_burst: int = Field(default=200, ge=1)
    # Signs report links and derives the providers' webhook secrets; empty: generated once into `home`/secret.key.
    secret_key: str = ""
    # How long a signed report link in a run's artifacts stays valid.
    signed_link_seconds: int = Field(default=30 * 24 * 3600, ge=60)

    # --- Status callbacks to the rows' `callback url` (tasks/delivery/callbacks.py) ---
    # Networks (CIDR) a callback URL may reach although they are not public, e.g. ["10.20.0.0/16"] for a
    # receiver inside your network; loopback, private, link-local, multicast and reserved addresses are refused otherwise.
    callback_private_networks: list[str] = Field(default_factory=list)
    # The key callbacks are signed with (HMAC-SHA256). Empty: the Prefect Secret block named
    # callback_secret_block if it exists, else a key derived from secret_key (`notiflow callbacks secret` shows it).
    callback_secret: SecretStr = SecretStr("")
    callback_secret_block: str = "notiflow-callback-secret"
    # Connect, send and answer each within this many seconds; a receiver's answer is read up to 64 KiB.
    callback_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # A failed callback is tried again after this many seconds, doubling up to the maximum, until the status
    # change it reports is callback_give_up_seconds old (24 h), when it is given up.
    callback_retry_first_seconds: float = Field(default=10.0, gt=0)
    callback_retry_max_seconds: float = Field(default=3600.0, gt=0)
    callback_give_up_seconds: float = Field(default=24 * 3600.0, gt=0)
    # Callbacks claimed per database round trip, and requests in flight at once.
    callback_batch_size: int = Field(default=200, ge=1, le=5000)
    callback_concurrency: int = Field(default=16, ge=1, le=256)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'notiflow.db').resolve()}"

    @property
    def files_dir(self) -> Path:
        return self.home / "files"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def uploads_dir(self) -> Path:
        return self.upload_dir or self.home / "uploads"


@lru_cache
def get_settings() -> Settings:
    return Settings()
