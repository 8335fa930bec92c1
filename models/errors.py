"""notiflow's exceptions: each says what was wrong and what to do next."""
from __future__ import annotations


class NotiflowError(Exception):
    """Base of every error notiflow raises on purpose."""


class TaskFileError(NotiflowError):
    """The task file as a whole cannot be used (unreadable, empty, no header, no recipient column)."""


class LeaseHeld(NotiflowError):
    """Another process is dispatching this notification task right now."""


class TaskNotFound(NotiflowError):
    """No notification task with that id or name."""
