"""What a messenger or push provider account must hold: its options read into a typed model, its secret present,
its endpoint an http(s) URL, each problem said with the block field to fix."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from models.errors import NotiflowError

FIX = "Fix it in its provider account block (Prefect UI, Blocks)."


class ProviderAccountError(NotiflowError):
    """A provider account block cannot be used as it is: it says which field is wrong and what to write."""


class AccountOptions(BaseModel):
    """Base of an adapter's options: unknown options are an error (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Options = TypeVar("Options", bound=AccountOptions)


def read_options(kind: str, name: str, model: type[Options], options: Mapping[str, Any] | None) -> Options:
    """The account's options as `model`, or ProviderAccountError naming each wrong option."""
    try:
        return model.model_validate(dict(options or {}))
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(step) for step in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = f"is not an option of {kind} accounts; known options: {', '.join(model.model_fields)}"
            problems.append(f"options.{where}: {message}" if where else f"options: {message}")
        raise ProviderAccountError(f"the {kind} provider account {name!r} cannot be used: {'; '.join(problems)}. {FIX}") from None


def secret(kind: str, name: str, account: Any, what: str) -> str:
    """The account's password field (its token or key), or ProviderAccountError saying what to put there."""
    value = account.password.get_secret_value() if getattr(account, "password", None) is not None else ""
    if not value:
        raise ProviderAccountError(f"the {kind} provider account {name!r} has no password: set it to {what}. {FIX}")
    return str(value)


def endpoint(kind: str, name: str, account: Any, default: str) -> str:
    """The account's url (the service's address, or a stand-in's), else the real service's."""
    url = str(account.url or default)
    if not url.startswith(("http://", "https://")):
        raise ProviderAccountError(f"the {kind} provider account {name!r} has url {url!r}: write an http(s) address, "
                                   f"or leave it empty for {default}. {FIX}")
    return url.rstrip("/")
