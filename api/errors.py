"""Every error the API answers, in one JSON shape: `{"error": {"code", "message", "details"}}`.

The code is for programs (stable, snake_case), the message for people (what went wrong and what to do
next), the details for per-field problems. Nothing a client sent is echoed back in details (a rejected
body may hold a password), and a server error says only that it happened and when to try again.
"""
from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("notiflow.api")

# The code a plain HTTP status gets when the route gave none of its own.
STATUS_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "body_too_large", 415: "unsupported_media_type", 422: "invalid_request",
    429: "rate_limited", 500: "internal_error", 502: "provider_error", 503: "unavailable",
}

# What to do next when a status comes without a message of its own (Starlette's 404 and 405).
STATUS_MESSAGES = {
    404: "no such route; GET /v1/openapi.json lists every route",
    405: "this route does not take this method; the Allow header lists those it takes",
}


class ErrorDetail(BaseModel):
    """One problem with one field of the request."""

    field: str = Field(description="Where the problem is: `body.name`, `query.limit`, `path.task_id`.", examples=["body.windows[0]"])
    message: str = Field(description="What is wrong and what is allowed.", examples=['"25:00-26:00" is not a window like "09:00-20:00"'])
    type: str = Field(description="A machine code for the kind of problem (pydantic's error type).", examples=["value_error"])


class Error(BaseModel):
    code: str = Field(description="A stable machine code, e.g. `not_found`, `invalid_request`, `rate_limited`.", examples=["not_found"])
    message: str = Field(description="What went wrong and what to do next.", examples=["notification task 7 does not exist; GET /v1/tasks lists them"])
    details: list[ErrorDetail] = Field(default_factory=list, description="Per-field problems (422), else empty.")


class ErrorResponse(BaseModel):
    """The body of every error answer."""

    error: Error


class ApiError(StarletteHTTPException):
    """An HTTP error with its own machine code: `raise ApiError(409, "task_not_pausable", "…")`."""

    def __init__(self, status_code: int, code: str, message: str, headers: dict[str, str] | None = None,
                 details: list[dict[str, str]] | None = None):
        super().__init__(status_code=status_code, detail=message, headers=headers)
        self.code = code
        self.details = details or []


def error_body(code: str, message: str, details: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or []}}


def _field(location: tuple[Any, ...]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def validation_details(errors: Any) -> list[dict[str, str]]:
    """pydantic's errors without their `input` (a rejected body may hold a secret)."""
    return [{"field": _field(tuple(e.get("loc", ()))), "message": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in errors]


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = getattr(exc, "code", None) or STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
    message = exc.detail if isinstance(exc.detail, str) and exc.detail and exc.detail != _default_phrase(exc.status_code) \
        else STATUS_MESSAGES.get(exc.status_code, _default_phrase(exc.status_code))
    return JSONResponse(error_body(code, message, getattr(exc, "details", None)), status_code=exc.status_code, headers=exc.headers)


async def _invalid(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = validation_details(exc.errors())
    fields = ", ".join(dict.fromkeys(d["field"] for d in details)) or "the request"
    return JSONResponse(error_body("invalid_request", f"the request is not valid: check {fields} (see details)", details), status_code=422)


async def _crashed(request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the server's log only; the client learns nothing of the internals.
    logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal_error", "the server failed to answer this request; try again, and if it "
                                   "keeps failing, tell the server's operator (its log has the details)"), status_code=500)


def _default_phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


def install(app: FastAPI) -> None:
    """Answer every error of `app` in the one shape."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Exception, _crashed)


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: these error statuses, with the error body's schema."""
    descriptions = {
        401: "No valid API token (send `Authorization: Bearer TOKEN`).",
        404: "Not found.", 409: "The request conflicts with the current state.",
        413: "The request body is larger than the API accepts.",
        422: "The request is not valid; `details` names each field.",
        429: "Too many requests with this token; wait `Retry-After` seconds.",
        500: "The server failed; nothing internal is shown.",
        502: "The provider refused the request.",
        503: "A service the request needs (Prefect server, provider) is not answering.",
    }
    return {status: {"model": ErrorResponse, "description": descriptions.get(status, "Error.")} for status in statuses}
