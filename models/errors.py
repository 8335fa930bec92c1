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


class TemplateInvalid(NotiflowError):
    """A template's fields break the rules of spec §1 (each problem names its field and what is allowed)."""


class TemplateNotFound(NotiflowError):
    """No template with that id."""


class TemplateInUse(NotiflowError):
    """A template cannot be deleted while a pending notification task uses it."""


class UnknownSender(NotiflowError):
    """A template names a sender that is not registered for its channel."""


class SenderAlreadyRegistered(NotiflowError):
    """That sender name is registered for that channel already."""
