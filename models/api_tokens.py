"""API tokens: shown once when created, kept only as a SHA-256 hash, revoked by name."""
from __future__ import annotations

import hashlib
import secrets
import time

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from models.db import session_scope
from models.errors import NotiflowError
from models.tables import ApiToken, utcnow

TOKEN_PREFIX = "nf_"


def _digest(token: str) -> str:
    # A token is 256 random bits, so a plain hash is enough: there is nothing to guess from it.
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(name: str) -> str:
    """A new token called `name`; the caller shows it once, it cannot be read back."""
    name = name.strip()
    if not name:
        raise NotiflowError("a token needs a name, e.g. `notiflow token create ci`")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        with session_scope() as session:
            session.add(ApiToken(name=name, token_hash=_digest(token)))
    except IntegrityError as exc:
        raise NotiflowError(f"a token named {name!r} exists already; choose another name (`notiflow token list`)") from exc
    return token


def list_tokens() -> list[ApiToken]:
    with session_scope() as session:
        tokens = list(session.scalars(select(ApiToken).order_by(ApiToken.id)))
        session.expunge_all()
    return tokens


def revoke_token(name: str) -> None:
    """The token called `name` stops working at once."""
    with session_scope() as session:
        revoked = session.execute(
            update(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None)).values(revoked_at=utcnow())
        ).rowcount
    if not revoked:
        raise NotiflowError(f"no active token named {name!r}; `notiflow token list` shows them")


def token_is_valid(token: str) -> bool:
    return authenticate(token) is not None


# When this process last wrote each token's last_used_at: a request a minute is enough to show a token is in use.
_TOUCH_SECONDS = 60.0
_touched: dict[int, float] = {}


def authenticate(token: str) -> str | None:
    """The name of the active token `token`, or None; notes (at most once a minute) that it was used."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    with session_scope() as session:
        found = session.execute(
            select(ApiToken.id, ApiToken.name).where(ApiToken.token_hash == _digest(token), ApiToken.revoked_at.is_(None))
        ).first()
        if found is None:
            return None
        now = time.monotonic()
        if now - _touched.get(found.id, -_TOUCH_SECONDS) >= _TOUCH_SECONDS:
            _touched[found.id] = now
            session.execute(update(ApiToken).where(ApiToken.id == found.id).values(last_used_at=utcnow()))
    return found.name
