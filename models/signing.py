"""The server's secret: signed, expiring links for what the run's artifacts show, the providers' webhook secrets
and the default key of the status callbacks' signatures.

Links in the Prefect UI cannot carry an Authorization header, so they carry an HMAC of their path
and expiry instead; a webhook carries a secret derived from the same key for its provider.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
import uuid
from functools import lru_cache
from pathlib import Path

from models.settings import get_settings

_EXPIRES = re.compile(r"[0-9]{1,12}")


def server_secret() -> bytes:
    settings = get_settings()
    if settings.secret_key:
        return settings.secret_key.encode()
    return _stored_secret(settings.home.resolve() / "secret.key")


@lru_cache
def _stored_secret(path: Path) -> bytes:
    """The secret kept in `path`, generated on first use; every process (API, flow runs) reads the same one."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # A draft of its own per call (threads of one process too), written whole before it is linked.
        draft = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_urlsafe(32))
        try:
            os.link(draft, path)  # atomic: two processes starting at once keep the first one's secret
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    secret = path.read_text().strip().encode()
    if not secret:
        raise RuntimeError(f"the server secret in {path} is empty: delete the file (a new one is made) or set NOTIFLOW_SECRET_KEY")
    return secret


def _signature(path: str, expires: int) -> str:
    return hmac.new(server_secret(), f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()


def signed_link(path: str) -> str:
    """The API address of `path` (e.g. /v1/tasks/5/report.xlsx) that works without a token until it expires."""
    settings = get_settings()
    expires = int(time.time()) + settings.signed_link_seconds
    return f"{settings.api_url.rstrip('/')}{path}?expires={expires}&signature={_signature(path, expires)}"


def signature_valid(path: str, expires: str, signature: str) -> bool:
    # Query values are anything a stranger types: only plain digits and bytes reach int() and the comparison.
    if not _EXPIRES.fullmatch(expires) or int(expires) < time.time():
        return False
    return hmac.compare_digest(signature.encode(), _signature(path, int(expires)).encode())


def webhook_secret(provider: str) -> str:
    """The secret `provider`'s delivery reports must carry."""
    return hmac.new(server_secret(), f"webhook:{provider}".encode(), hashlib.sha256).hexdigest()


# A message's reference as dispatch writes it (task uid, "-", message id): what an open-pixel token names.
_REF = re.compile(r"[0-9a-f]{1,32}-[0-9]{1,20}")


def _open_mac(ref: str) -> str:
    # 128 bits of the HMAC keep the pixel's address short; guessing one is still out of reach.
    return hmac.new(server_secret(), f"open:{ref}".encode(), hashlib.sha256).hexdigest()[:32]


def open_token(ref: str) -> str:
    """The name of the open-tracking pixel of the message `ref`: the ref and its MAC, so nobody counts opens
    of a message they cannot read."""
    return f"{ref}.{_open_mac(ref)}"


def opened_ref(token: str) -> str | None:
    """The message ref an open-pixel token names, or None when the token was not made by this server."""
    ref, dot, mac = token.rpartition(".")
    if not dot or not _REF.fullmatch(ref):
        return None
    return ref if hmac.compare_digest(mac.encode(), _open_mac(ref).encode()) else None


def derived_callback_secret() -> str:
    """The key status callbacks are signed with when neither NOTIFLOW_CALLBACK_SECRET nor a Secret block gives one."""
    return hmac.new(server_secret(), b"callbacks", hashlib.sha256).hexdigest()
