"""What one client may ask of the API: bodies up to a size, requests per token up to a rate.

The body limit is checked twice: a declared Content-Length over it is refused before anything is
read, and the bytes actually received are counted, so a body sent in chunks (no length) or longer
than it said stops at the limit too. The rate limit is a token bucket per API token kept in this
process: with several API processes each allows the rate (documented in the README).
"""
from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ApiError, error_body
from models.settings import get_settings


def _too_large(limit: int) -> str:
    return (f"the request body is larger than {limit:,} bytes, the most this API takes for this kind of request; "
            "send a smaller file or fewer items (NOTIFLOW_API_MAX_UPLOAD_BYTES / NOTIFLOW_API_MAX_JSON_BYTES set the limits)")


class BodySizeLimit:
    """Refuse (413) request bodies over `upload_bytes` (multipart uploads) or `json_bytes` (everything else)."""

    def __init__(self, app: ASGIApp, *, upload_bytes: int, json_bytes: int):
        self.app = app
        self.upload_bytes = upload_bytes
        self.json_bytes = json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        multipart = headers.get(b"content-type", b"").lower().startswith(b"multipart/")
        limit = self.upload_bytes if multipart else self.json_bytes
        declared = headers.get(b"content-length", b"")
        if declared and (not declared.isdigit() or int(declared) > limit):
            await _refuse(send, limit)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the app, so its error handler answers; FastAPI passes HTTP errors of a body read on.
                    raise ApiError(413, "body_too_large", _too_large(limit))
            return message

        await self.app(scope, counted, send)


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps(error_body("body_too_large", _too_large(limit))).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per key: `rate` requests a second on average, up to `burst` at once."""

    def __init__(self, rate: float, burst: int):
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take one request from `key`'s bucket: 0 when allowed, else the seconds until one is."""
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(tokens=float(self.burst), at=now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0.0
            return (1 - bucket.tokens) / self.rate

    def check(self, key: str) -> None:
        """Raise 429 with Retry-After when `key` has no request left."""
        wait = self.take(key)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise ApiError(429, "rate_limited",
                           f"too many requests with this token (at most {self.rate:g} a second, {self.burst} at once); "
                           f"try again in {seconds} s", headers={"Retry-After": str(seconds)})


@lru_cache
def token_limiter() -> RateLimiter:
    """This process's buckets, one per API token, sized by NOTIFLOW_API_RATE_PER_SECOND and NOTIFLOW_API_RATE_BURST."""
    settings = get_settings()
    return RateLimiter(settings.api_rate_per_second, settings.api_rate_burst)
