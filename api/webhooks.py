"""Delivery reports pushed by provider instances: `/dlr/{instance}`, each instance with its own secret.

The secret is checked by a dependency before the route reads the body (the routes take the request,
not a body parameter, since FastAPI reads body parameters before it runs dependencies).
"""
from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlmodel import Session

from api.auth import require_webhook_secret
from api.errors import ApiError, documented
from models.db import in_transaction
from providers.base import Provider, ProviderRejected, StatusReport
from providers.registry import UnknownProvider, provider_named
from tasks.delivery.track import apply_reports, unknown_ids

router = APIRouter(prefix="/dlr", tags=["provider webhooks"], dependencies=[Depends(require_webhook_secret)],
                   responses=documented(401, 404, 413, 422))


class ReportsApplied(BaseModel):
    received: int = Field(description="Delivery reports in the request.", examples=[1])
    applied: int = Field(description="Those that moved a message forward (a repeated report moves nothing).", examples=[1])


def dlr_path(instance: str) -> str:
    """The path of `instance`'s webhook; its secret goes in the `secret` query parameter."""
    from urllib.parse import quote

    return f"/dlr/{quote(instance, safe='')}"


@router.post("/{instance}", summary="A provider pushes delivery reports", response_model=ReportsApplied,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": {"type": "object", "description": "The provider's own report format."}},
                 "application/x-www-form-urlencoded": {"schema": {"type": "object"}}}}})
async def provider_reports(instance: str, request: Request) -> ReportsApplied:
    """Delivery reports pushed by a provider instance (its own route, its own secret); polling stays the safety net."""
    payload = await _payload(request)
    # In a worker thread, as a sync route would run: Prefect's block loading answers a coroutine inside the event loop.
    return await run_in_threadpool(_apply_pushed, instance, payload)


def _apply_pushed(instance: str, payload: Any) -> ReportsApplied:
    provider, reports = _parse_reports(instance, payload)
    applied = in_transaction(lambda session: apply_reports(session, provider.name, reports, "webhook"))
    return ReportsApplied(received=len(reports), applied=applied)


@router.get("/{instance}", summary="A provider fetches a delivery report as a GET (Kannel's dlr-url)", response_model=ReportsApplied)
def provider_report_in_query(instance: str, request: Request) -> ReportsApplied:
    """A delivery report fetched as a GET whose query is the report (Kannel's dlr-url, with our message reference).

    A report of a message not known yet (it overtook the dispatcher's record of the send) is answered 404 and
    not applied: the provider asks again later (Kannel: smsbox's http-request-retry and http-queue-delay)."""
    payload = {key: value for key, value in request.query_params.items() if key != "secret"}
    provider, reports = _parse_reports(instance, payload)
    def apply(session: Session) -> tuple[set[str], int]:
        # Asked before applying: a message recorded in between is then applied, never answered 200 unapplied.
        unknown = unknown_ids(session, provider.name, [r.provider_message_id for r in reports])
        return unknown, apply_reports(session, provider.name, [r for r in reports if r.provider_message_id not in unknown], "webhook")

    unknown, applied = in_transaction(apply)
    if unknown:
        raise ApiError(404, "message_not_known_yet", f"no {instance} message {sorted(unknown)[0]!r} (yet): ask again later")
    return ReportsApplied(received=len(reports), applied=applied)


async def _payload(request: Request) -> Any:
    """The body as the provider sent it: parsed when it is JSON (or says nothing), else the bytes for the
    provider's parser (aggregators post forms of their own making)."""
    body = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type != "application/json" and not content_type.endswith("+json"):
        return body
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(422, "invalid_delivery_report", "the delivery report is not JSON; send it as the provider's "
                       "webhook documentation says") from exc


def _parse_reports(instance: str, payload: Any) -> tuple[Provider, list[StatusReport]]:
    try:
        provider = provider_named(instance)
    except UnknownProvider as exc:
        raise ApiError(404, "unknown_provider", str(exc)) from exc
    try:
        return provider, provider.parse_webhook(payload)
    except (ProviderRejected, ValueError) as exc:
        raise ApiError(422, "invalid_delivery_report", f"not a {instance} delivery report: {exc}") from exc
