"""Who may use the API: a bearer token on every route but short links, health and provider webhooks;
a signed, expiring link instead of the token for what the run's artifacts show; known Host headers only.

There is no cookie or basic-auth path and no CORS middleware: a web page elsewhere cannot send the
Authorization header without a preflight that nothing here answers, so its POSTs stop at 401.
"""
from __future__ import annotations

import hmac
import httpx
from fastapi import Depends, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from models.api_tokens import token_is_valid
from models.settings import get_settings
from models.signing import signature_valid, webhook_secret

_bearer = HTTPBearer(auto_error=False, description="A token from `notiflow token create NAME`")


def require_token(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:  # noqa: B008
    """A valid bearer token, or (to read a file the artifacts link to) a valid signature of this path."""
    if credentials is not None and token_is_valid(credentials.credentials):
        return
    query = request.query_params
    if request.method in ("GET", "HEAD") and signature_valid(request.url.path, query.get("expires", ""), query.get("signature", "")):
        return
    raise HTTPException(
        status_code=401,
        detail="an API token is required: send `Authorization: Bearer TOKEN` (create one with `notiflow token create NAME`)",
        headers={"WWW-Authenticate": "Bearer"},
    )


def require_webhook_secret(instance: str, secret: str = Query(default="", include_in_schema=False)) -> None:
    """A dependency of /webhooks/{instance}: the request carries that provider instance's webhook secret
    (its `secret` query parameter). Checked before the body is read, so a stranger learns nothing, not
    even which instances exist."""
    if not hmac.compare_digest(secret.encode(), webhook_secret(instance).encode()):
        raise HTTPException(status_code=401, detail=f"not a {instance} delivery report: the webhook secret is missing or wrong")


def trusted_hosts() -> list[str]:
    """Host headers the API answers: NOTIFLOW_TRUSTED_HOSTS, else localhost and the hosts of its own addresses."""
    settings = get_settings()
    if settings.trusted_hosts:
        return list(settings.trusted_hosts)
    hosts = {"localhost", "127.0.0.1"}
    hosts.update(httpx.URL(url).host for url in (settings.api_url, settings.public_url) if url)
    return sorted(hosts)
