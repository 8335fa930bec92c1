"""API tokens over HTTP: list them (never their secrets), create one (its secret shown once), revoke one."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from api.errors import ApiError, documented
from models.api_tokens import create_token, list_tokens, revoke_token
from models.errors import NotiflowError

router = APIRouter(prefix="/tokens", tags=["API tokens"])

TokenName = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._@:-]*$",
                                 description="What the token is for: letters, digits, space, . _ @ : -", examples=["crm"])]


class TokenIn(BaseModel):
    name: TokenName


class Token(BaseModel):
    """A token as listed: its name and dates, never the token itself (only its hash is kept)."""

    name: str = Field(examples=["crm"])
    created_at: datetime = Field(examples=["2026-11-26T09:00:00+00:00"])
    last_used_at: datetime | None = Field(description="When a request last carried it (to the minute).", examples=["2026-11-26T09:05:00+00:00"])
    revoked_at: datetime | None = Field(examples=[None])


class CreatedToken(BaseModel):
    name: str = Field(examples=["crm"])
    token: str = Field(description="The token: shown this once, keep it now. Send it as `Authorization: Bearer TOKEN`.",
                       examples=["nf_3q2-8Yw0mXh1c4u8b2zQe4pVd6sRk9tLj0aFg5hN7Wc"])


@router.get("", response_model=list[Token], summary="List API tokens")
def tokens() -> list[Token]:
    """Every token by name, with when it was created, last used and revoked; never the token itself."""
    return [Token(name=t.name, created_at=t.created_at, last_used_at=t.last_used_at, revoked_at=t.revoked_at) for t in list_tokens()]


@router.post("", status_code=201, response_model=CreatedToken, summary="Create an API token", responses=documented(409, 413, 422))
def create(request: TokenIn) -> CreatedToken:
    """A new token; the answer is the only time it is shown (only its hash is stored)."""
    try:
        return CreatedToken(name=request.name.strip(), token=create_token(request.name))
    except NotiflowError as exc:
        raise ApiError(409, "token_name_taken", str(exc)) from exc


@router.delete("/{name}", status_code=204, response_class=Response, summary="Revoke an API token", responses=documented(404, 422))
def revoke(name: Annotated[str, Path(max_length=255)]) -> Response:
    """Requests carrying the token are refused from now on (the token that sends this may revoke itself)."""
    try:
        revoke_token(name)
    except NotiflowError as exc:
        raise ApiError(404, "not_found", f"no active token named {name!r}; GET /v1/tokens lists them") from exc
    return Response(status_code=204)
