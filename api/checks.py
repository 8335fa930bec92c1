"""Phone checks over HTTP (spec §9): check numbers, find stored checks, export them to Excel."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.errors import ApiError, documented
from api.inputs import PlainText
from api.reports import ReportFile, report_file
from providers.base import ProviderError, ProviderRejected
from tasks.delivery.hlr import check_phones, export_checks, find_checks

router = APIRouter(prefix="/checks", tags=["phone checks"])


class PhoneCheckIn(BaseModel):
    phones: list[Annotated[PlainText, Field(max_length=64)]] = Field(
        min_length=1, max_length=1000, description="Phone numbers, in any usual spelling.", examples=[["+79161234567", "8 916 765-43-21"]])


class PhoneCheck(BaseModel):
    id: int = Field(examples=[12])
    phone: str = Field(examples=["79161234567"])
    status: str = Field(description="The number's status (live, absent, unknown, …).", examples=["live"])
    status_description: str = Field(examples=["subscriber is reachable"])
    operator: str | None = Field(examples=["MTS"])
    roaming: bool = Field(examples=[False])
    ported: bool = Field(examples=[False])
    price: Decimal = Field(examples=["0.20"])
    checked_at: datetime = Field(examples=["2026-11-26T09:00:00+00:00"])


class InvalidPhone(BaseModel):
    phone: str = Field(examples=["12"])
    reason: str = Field(examples=["'12' is too short to be a phone number"])


class PhoneCheckRun(BaseModel):
    checked: list[PhoneCheck]
    invalid: list[InvalidPhone] = Field(description="Numbers not checked (and not charged), with why.")
    total_price: Decimal = Field(examples=["0.40"])


class PhoneCheckFilter(BaseModel):
    phone: PlainText | None = Field(default=None, max_length=64, description="Part of the number.")
    since: date | None = Field(default=None, description="First day (account time zone).")
    until: date | None = Field(default=None, description="Last day, inclusive.")


@router.post("", status_code=201, response_model=PhoneCheckRun, summary="Check phone numbers", responses=documented(413, 422, 502, 503))
def check(request: PhoneCheckIn) -> dict[str, Any]:
    """Ask the SMS provider whether each valid number is live and reachable (HLR); the answers are stored for
    GET /v1/checks, as `notiflow hlr` stores them."""
    try:
        run = check_phones(request.phones)
    except ProviderRejected as exc:
        raise ApiError(502, "provider_error", f"{exc}; route sms to a provider that checks phones (NOTIFLOW_ROUTES)") from exc
    except (ProviderError, httpx.HTTPError) as exc:
        raise ApiError(503, "unavailable", f"the phone-check provider is not answering ({type(exc).__name__}); try again later") from exc
    checked = [{k: v for k, v in row.items() if k not in ("flow_run_id", "provider", "created_at")} | {"checked_at": row["created_at"]}
               for row in run.checked]
    return {"checked": checked, "invalid": run.invalid, "total_price": run.total_price}


@router.get("", response_model=list[PhoneCheck], summary="Find phone checks", responses=documented(422))
def list_checks(
    phone: Annotated[PlainText | None, Query(max_length=64, description="Part of the number.")] = None,
    since: Annotated[date | None, Query(description="First day (account time zone).")] = None,
    until: Annotated[date | None, Query(description="Last day, inclusive.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many, newest first.")] = 100,
) -> list[dict[str, Any]]:
    """Stored phone checks, newest first, by phone fragment and period."""
    return [_check(c) for c in find_checks(phone, since, until)[:limit]]


@router.post("/export", status_code=201, response_model=ReportFile, summary="Export phone checks to Excel", responses=documented(413, 422))
def export(filters: PhoneCheckFilter) -> dict[str, Any]:
    """Write the matching checks to the spec's Excel file in the reports folder; download it from its `url`."""
    return report_file(str(export_checks(find_checks(filters.phone, filters.since, filters.until))))


def _check(c: Any) -> dict[str, Any]:
    return {"id": c.id, "phone": c.phone, "status": c.status, "status_description": c.status_description, "operator": c.operator,
            "roaming": c.roaming, "ported": c.ported, "price": c.price, "checked_at": c.created_at}
