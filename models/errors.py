"""notiflow's exceptions: each says what was wrong and what to do next.

One tree under NotiflowError. The provider errors (ProviderError → ProviderUnavailable / ProviderRejected)
belong to it too, and live with the provider interface in providers/base.py.
"""
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


# A cell or a text that breaks a rule. Each stays a ValueError too: the column parsers raise plain
# ValueErrors beside them, and their callers catch ValueError.


class ControlCharacter(NotiflowError, ValueError):
    """A cell holding a control character other than tab and line breaks."""


class OutOfRange(NotiflowError, ValueError):
    """A well-formed value outside the column's limits."""


class CompositionError(NotiflowError, ValueError):
    """The text cannot be filled: an unknown or missing variable, or a stray brace."""

    def __init__(self, message: str, *, variable: str | None = None):
        super().__init__(message)
        self.variable = variable


class NoWindow(NotiflowError):
    """No instant lies inside the windows in every one of the zones (strict local time)."""


class UrlRefused(NotiflowError):
    """A URL from a customer that notiflow will not call: not http(s) with a host, or leading to an address that
    is not public (see tasks/addresses.py); `host` names the host when the address was the reason."""

    def __init__(self, message: str, *, host: str = ""):
        super().__init__(message)
        self.host = host


class HostUnresolved(NotiflowError):
    """A URL's host name did not resolve (it may later: DNS is down, or the name is new)."""

    def __init__(self, host: str):
        super().__init__(f"host {host!r} could not be resolved")
        self.host = host
