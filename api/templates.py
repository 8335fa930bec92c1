"""HTTP routes for stored templates and registered senders (spec §1)."""
from __future__ import annotations

from typing import Any

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from api.errors import ApiError, documented
from api.inputs import Id, PlainText

from models.errors import (
    SenderAlreadyRegistered,
    TemplateInUse,
    TemplateNotFound,
    UnknownSender,
)
from models.tables import Sender
from models.template_schema import SenderIn, TemplateIn, TemplateOut
from tasks.compose import templates

router = APIRouter(tags=["templates and senders"])


class Sender(BaseModel):
    id: int = Field(examples=[3])
    name: str = Field(examples=["MyShop"])
    channel: str = Field(examples=["sms"])
    created_at: datetime = Field(examples=["2026-11-26T09:00:00+00:00"])


def _sender_view(sender: Sender) -> dict[str, Any]:
    return {"id": sender.id, "name": sender.name, "channel": str(sender.channel), "created_at": sender.created_at}


@router.post("/templates", status_code=201, response_model=TemplateOut, summary="Create a template", responses=documented(413, 422))
def create_template(template: TemplateIn) -> Any:
    """Store a template; every sender it names must be registered for its channel (else 422)."""
    try:
        return templates.create_template(template)
    except UnknownSender as exc:
        raise ApiError(422, "unknown_sender", str(exc)) from exc


@router.get("/templates", response_model=list[TemplateOut], summary="Search templates", responses=documented(422))
def search_templates(search: Annotated[PlainText | None, Query(max_length=255, description="Full id or any part of the name")] = None) -> Any:
    """Stored templates, oldest first; with `search`, those whose id is it or whose name contains it."""
    return templates.search_templates(search)


@router.get("/templates/{template_id}", response_model=TemplateOut, summary="Show a template", responses=documented(404, 422))
def read_template(template_id: Id) -> Any:
    """One stored template."""
    try:
        return templates.get_template(template_id)
    except TemplateNotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from exc


@router.put("/templates/{template_id}", response_model=TemplateOut, summary="Replace a template", responses=documented(404, 413, 422))
def replace_template(template_id: Id, template: TemplateIn) -> Any:
    """Replace a template's name, windows and channels."""
    try:
        return templates.update_template(template_id, template)
    except TemplateNotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from exc
    except UnknownSender as exc:
        raise ApiError(422, "unknown_sender", str(exc)) from exc


@router.delete("/templates/{template_id}", status_code=204, response_class=Response, summary="Delete a template", responses=documented(404, 409, 422))
def delete_template(template_id: Id) -> Response:
    """Delete a template; one that a pending task uses is refused (409)."""
    try:
        templates.delete_template(template_id)
    except TemplateNotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from exc
    except TemplateInUse as exc:
        raise ApiError(409, "template_in_use", str(exc)) from exc
    return Response(status_code=204)


@router.post("/senders", status_code=201, response_model=Sender, summary="Register a sender", responses=documented(409, 413, 422))
def register_sender(sender: SenderIn) -> dict[str, Any]:
    """Register a sender name for one channel; the same name on the same channel twice is a 409."""
    try:
        return _sender_view(templates.register_sender(sender.name, sender.channel))
    except SenderAlreadyRegistered as exc:
        raise ApiError(409, "sender_already_registered", str(exc)) from exc


@router.get("/senders", response_model=list[Sender], summary="List registered senders", responses=documented(422))
def list_senders(channel: Annotated[PlainText | None, Query(max_length=16, description="Only this channel's senders")] = None) -> list[dict[str, Any]]:
    """Registered sender names, per channel."""
    return [_sender_view(s) for s in templates.list_senders(channel)]
