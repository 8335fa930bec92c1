"""Flow parameters as pydantic models: the Prefect UI draws its run form from them."""
from __future__ import annotations

from datetime import date
from pathlib import PurePosixPath

from pydantic import BaseModel, Field, field_validator

from models.status import Channel, HistoryGroup, MessageStatus


class NotificationTaskParams(BaseModel):
    """A notification task to run: the uploaded file and its time limiter."""

    @property
    def task_name(self) -> str:
        """The name in the task list and on the run: the given one, else the file's name."""
        source = self.task_file.split("?")[0]
        if "://" in source:  # a URL: only its path names the task, its host part may carry credentials
            source = source.split("://", 1)[1].partition("/")[2]
        return self.name or PurePosixPath(source).stem or "notification task"

    task_file: str = Field(
        description="Path of the task file (.xlsx, .xls or .csv) in the server's upload folder (NOTIFLOW_UPLOAD_DIR), "
                    "or a public http(s) URL to download it from.",
    )
    # A plain string with a default: the run form draws a text box (an optional one is a str/None toggle).
    name: str = Field(default="", description="Task name shown in the task list; empty: the file name.")
    windows: list[str] = Field(
        default=[],
        description='Time limiter: sending windows in the subscriber\'s local time, "HH:MM-HH:MM" each (24:00 ends a day). '
                    "Empty: each row's allowed time ranges, else its template's windows, else 09:00-20:00.",
    )
    channels: list[Channel] = Field(
        default=[Channel.SMS],
        description="Default channel order for rows without a channel column.",
    )
    dry_run: bool = Field(default=False, description="Validate and plan only: store and report, send nothing.")
    task_id: int | None = Field(
        default=None,
        description="Continue an existing notification task instead of creating one (nothing already sent is sent again).",
    )

    @field_validator("name", mode="before")
    @classmethod
    def _no_name(cls, value: object) -> object:
        """Runs created before the name became a plain string carry null."""
        return "" if value is None else value


class HistoryFilter(BaseModel):
    """Which messages a history export holds (spec §8); dates are in the account's time zone."""

    since: date | None = Field(default=None, description="First day (default: the first of the current month).")
    until: date | None = Field(default=None, description="Last day, inclusive (default: today).")
    channel: Channel | None = Field(default=None, description="Only this channel.")
    status: MessageStatus | None = Field(default=None, description="Only messages with this status.")
    group: HistoryGroup = Field(default=HistoryGroup.ALL, description="Only this group of the history list (spec §5).")
    phone: str | None = Field(default=None, description="Only recipients whose number contains these digits.")
    task_id: int | None = Field(default=None, description="Only this notification task.")


class SendNotificationParams(BaseModel):
    """A small send from a form: one text to a few recipients."""

    recipients: list[str] = Field(description="Recipients' phone numbers.", min_length=1)
    text: str = Field(description="Message text; {name} placeholders are filled from the variables.", min_length=1)
    variables: dict[str, str] = Field(default={}, description='Values for the text\'s placeholders, e.g. {"name": "Anna"}.')
    name: str | None = Field(default=None, description="Task name shown in the task list.")
    windows: list[str] = Field(default=["09:00-20:00"], description='Sending windows, "HH:MM-HH:MM" in the subscriber\'s local time.')
