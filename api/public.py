"""What strangers may reach: short links and e-mail open pixels (recipients) and health (monitors)."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel
from sqlalchemy import update

from api.errors import ApiError, documented
from models.db import session_scope
from models.tables import ShortLink
from tasks.delivery.opens import count_open

router = APIRouter(tags=["public"])


class Health(BaseModel):
    status: str = "ok"


@router.get("/health", summary="Is the API up", response_model=Health)
def health() -> Health:
    return Health()


@router.get("/s/{code}", summary="Follow a short link", status_code=302, response_class=RedirectResponse,
            responses={302: {"description": "On to the real URL."}, **documented(404)})
def follow_short_link(code: str) -> RedirectResponse:
    """A recipient opened a short link: count the click on its message, send them on to the real URL."""
    with session_scope() as session:
        url = session.scalar(
            update(ShortLink).where(ShortLink.code == code).values(clicks=ShortLink.clicks + 1).returning(ShortLink.url)
        )
    if url is None:
        raise ApiError(404, "not_found", "this short link does not exist")
    return RedirectResponse(url, status_code=302)


# A transparent 1×1 GIF: the smallest image every mail client shows without a complaint.
PIXEL = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"


@router.get("/o/{token}.gif", summary="E-mail open pixel", response_class=Response,
            responses={200: {"content": {"image/gif": {}}, "description": "A transparent 1×1 GIF."}})
def email_opened(token: str) -> Response:
    """A mail client showed an e-mail's open-tracking pixel: count an open on its message. Any token gets the
    pixel (an e-mail must not show a broken image); only one this server signed counts."""
    count_open(token)
    return Response(PIXEL, media_type="image/gif",
                    headers={"Cache-Control": "no-cache, no-store, must-revalidate, max-age=0", "Pragma": "no-cache", "Expires": "0"})
