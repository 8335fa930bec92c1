"""Types of what clients send in paths and queries: ids the database can hold, text without control characters.

A stranger's input must be refused with a 422, never reach the database as something it cannot store
(PostgreSQL refuses NUL in text and integers past its column's range with an error, not an empty answer).
"""
from __future__ import annotations

import re
from typing import Annotated

from fastapi import Path, Request
from pydantic import AfterValidator

from api.errors import ApiError

# The largest id an INTEGER column holds in PostgreSQL.
MAX_ID = 2**31 - 1

Id = Annotated[int, Path(ge=1, le=MAX_ID, description="The id.", examples=[7])]

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _plain(text: str) -> str:
    if _CONTROL.search(text):
        raise ValueError("control characters are not allowed")
    return text


PlainText = Annotated[str, AfterValidator(_plain)]


def refuse_control_characters(request: Request) -> None:
    """A dependency of every /v1 route: no control character in the path or the query (a NUL reaches no database)."""
    if _CONTROL.search(request.url.path) or any(_CONTROL.search(k) or _CONTROL.search(v) for k, v in request.query_params.multi_items()):
        raise ApiError(422, "invalid_request", "the path or query holds a control character; send plain text")
