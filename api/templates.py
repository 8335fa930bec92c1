"""HTTP routes for stored templates and registered senders (spec §1)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, Response

from models.errors import (
    SenderAlreadyRegistered,
    TemplateInUse,
    TemplateNotFound,
    UnknownSender,
)
from models.tables import Sender
from models.template_schema import SenderIn, TemplateIn, TemplateOut
from tasks.compose import templates

router = APIRouter(tags=["templates"])


def _sender_view(sender: Sender) -> dict[str, Any]:
    return {"id": sender.id, "name": sender.name, "channel": str(sender.channel), "created_at": sender.created_at}


@router.post("/templates", status_code=201, response_model=TemplateOut)
def create_template(template: TemplateIn) -> Any:
    """Store a template; every sender it names must be registered for its channel (else 422)."""
    try:
        return templates.create_template(template)
    except UnknownSender as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc


@router.get("/templates", response_model=list[TemplateOut])
def search_templates(search: str | None = Query(default=None, description="Full id or any part of the name")) -> Any:
    """Stored templates, oldest first; with `search`, those whose id is it or whose name contains it."""
    return templates.search_templates(search)


@router.get("/templates/{template_id}", response_model=TemplateOut)
def read_template(template_id: int) -> Any:
    try:
        return templates.get_template(template_id)
    except TemplateNotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc


@router.put("/templates/{template_id}", response_model=TemplateOut)
def replace_template(template_id: int, template: TemplateIn) -> Any:
    """Replace a template's name, windows and channels."""
    try:
        return templates.update_template(template_id, template)
    except TemplateNotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    except UnknownSender as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc


@router.delete("/templates/{template_id}", status_code=204)
def delete_template(template_id: int) -> Response:
    try:
        templates.delete_template(template_id)
    except TemplateNotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    except TemplateInUse as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    return Response(status_code=204)


@router.post("/senders", status_code=201)
def register_sender(sender: SenderIn) -> dict[str, Any]:
    """Register a sender name for one channel; the same name on the same channel twice is a 409."""
    try:
        return _sender_view(templates.register_sender(sender.name, sender.channel))
    except SenderAlreadyRegistered as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc


@router.get("/senders")
def list_senders(channel: str | None = Query(default=None, description="Only this channel's senders")) -> list[dict[str, Any]]:
    return [_sender_view(s) for s in templates.list_senders(channel)]
