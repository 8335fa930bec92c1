"""Who may use the API: a bearer token on every /v1 route; a signed, expiring link instead of the token
for what the run's artifacts show; a provider's own secret on its delivery-report webhook; known Host
headers only.

There is no cookie or basic-auth path and no CORS middleware: a web page elsewhere cannot send the
Authorization header without a preflight that nothing here answers, so its POSTs stop at 401.
"""
from __future__ import annotations

import hmac
import json

import httpx
from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import ApiError, error_body
from api.limits import token_limiter
from models.api_tokens import authenticate
from models.settings import get_settings
from models.signing import signature_valid, webhook_secret

_bearer = HTTPBearer(auto_error=False, description="A token from `POST /v1/tokens` or `notiflow token create NAME`")


def require_token(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:  # noqa: B008
    """A valid bearer token within its rate, or (to read a file the artifacts link to) a valid signature of this path."""
    name = authenticate(credentials.credentials) if credentials is not None else None
    if name is not None:
        token_limiter().check(name)
        request.state.token_name = name  # whose API task a send goes to, whose Idempotency-Keys it may replay
        return
    query = request.query_params
    if request.method in ("GET", "HEAD") and signature_valid(request.url.path, query.get("expires", ""), query.get("signature", "")):
        return
    raise ApiError(
        401, "unauthorized",
        "an API token is required: send `Authorization: Bearer TOKEN` (create one with `notiflow token create NAME`); "
        "a revoked token no longer works",
        headers={"WWW-Authenticate": "Bearer"},
    )


def require_webhook_secret(instance: str, secret: str = Query(default="", include_in_schema=False)) -> None:
    """A dependency of /dlr/{instance}: the request carries that provider instance's webhook secret (its
    `secret` query parameter). The routes read their body only after it passed, so a stranger learns
    nothing, not even which instances exist."""
    if not hmac.compare_digest(secret.encode(), webhook_secret(instance).encode()):
        raise ApiError(401, "webhook_secret_wrong", f"not a {instance} delivery report: the webhook secret is missing or wrong")


def trusted_hosts() -> list[str]:
    """Host headers the API answers: NOTIFLOW_TRUSTED_HOSTS, else localhost and the hosts of its own addresses."""
    settings = get_settings()
    if settings.trusted_hosts:
        return list(settings.trusted_hosts)
    hosts = {"localhost", "127.0.0.1"}
    hosts.update(httpx.URL(url).host for url in (settings.api_url, settings.public_url) if url)
    return sorted(hosts)


class TrustedHosts:
    """Answer only requests whose Host header names this API (a 400 in the API's error shape otherwise), so a
    forged Host cannot steer the links the API builds."""

    def __init__(self, app: ASGIApp, hosts: list[str]):
        self.app = app
        self.hosts = {h.lower() for h in hosts}
        self.any = "*" in self.hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.any:
            await self.app(scope, receive, send)
            return
        host = Headers(scope=scope).get("host", "").split(":")[0].lower()
        if host in self.hosts:
            await self.app(scope, receive, send)
            return
        body = json.dumps(error_body("host_not_trusted", "this API does not answer for that Host header; "
                                     "its operator lists the allowed ones in NOTIFLOW_TRUSTED_HOSTS")).encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
