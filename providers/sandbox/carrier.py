"""A local HTTP server that behaves like a carrier of every channel, so campaigns run end to end with no account.

All state lives in memory: a restart (or POST /reset) forgets every message, report and counter.
"""
from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import random
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import httpx
import phonenumbers
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from phonenumbers import timezone as phone_zones
from pydantic import BaseModel, Field

from models.status import Channel
from providers.sandbox.config import CarrierConfig, WebhookURL

logger = logging.getLogger("notiflow.sandbox")

SILENCE = timedelta(days=3650)
UNDELIVERED_REASONS = (
    "wrong number",
    "roaming",
    "unverified sender",
    "phone off",
    "offline",
    "memory full",
    "device fault",
    "carrier fault",
)
DESCRIPTIONS = {
    "QUEUED": "in queue",
    "SENT": "handed to operator",
    "PENDING": "being delivered",
    "DELIVERED": "delivered",
}
# What a recipient must look like on each channel (pattern, what to tell the sender when it does not).
PHONE = (re.compile(r"\+[0-9]{8,15}"), "a phone number, + followed by 8–15 digits")
RECIPIENTS: dict[Channel, tuple[re.Pattern[str], str]] = {
    Channel.SMS: PHONE,
    Channel.VIBER: PHONE,
    Channel.WHATSAPP: PHONE,
    Channel.TELEGRAM: PHONE,
    Channel.VK: PHONE,
    Channel.OK: PHONE,
    Channel.EMAIL: (re.compile(r"[^@\s]{1,64}@[^@\s.]+(?:\.[^@\s.]+)+"), "an e-mail address like name@example.com"),
    Channel.PUSH: (re.compile(r"\S+"), "a device token (not empty, no spaces)"),
    Channel.CHAT: (re.compile(r"\s*\S.*", re.DOTALL), "a chat id (not empty)"),
}
REPORT_INTERVAL_SECONDS = 0.25
REPORT_ATTEMPTS = 4
REPORT_TIMEOUT_SECONDS = 5.0


class MessageIn(BaseModel):
    ref: str = Field(min_length=1)
    to: str
    sender: str
    text: str
    channel: Channel = Channel.SMS


class SendRequest(BaseModel):
    messages: list[MessageIn] = Field(min_length=1)
    report_url: WebhookURL | None = None


class StatusRequest(BaseModel):
    ids: list[str] = Field(min_length=1)


class LookupRequest(BaseModel):
    refs: list[str] = Field(min_length=1)


class HLRRequest(BaseModel):
    phones: list[str] = Field(min_length=1)


# Phone-check (HLR) answers: a share of numbers is live, some absent (switched off, out of coverage),
# a few unknown to the network; operators and flags are drawn per number, the same every time.
HLR_OPERATORS = ("MTS", "MegaFon", "Beeline", "Tele2", "Yota")
HLR_PRICE = "0.50"


def hlr_answer(phone: str, seed: int) -> dict[str, Any]:
    draw = random.Random(f"hlr:{seed}:{phone}")
    roll = draw.random()
    status, description = (
        ("live", "subscriber is reachable") if roll < 0.8
        else ("absent", "subscriber is switched off or out of coverage") if roll < 0.95
        else ("unknown", "number is not known to the network")
    )
    return {
        "phone": phone, "status": status, "description": description,
        "operator": draw.choice(HLR_OPERATORS) if status != "unknown" else None,
        "roaming": status == "live" and draw.random() < 0.05,
        "ported": status != "unknown" and draw.random() < 0.1,
        "price": HLR_PRICE,
    }


@dataclass
class Message:
    """An accepted message; its whole timeline and outcome are fixed the moment it is accepted."""

    ref: str
    id: str
    channel: Channel
    to: str
    sender: str
    text: str
    accepted_at: datetime
    sent_at: datetime
    pending_at: datetime
    final_at: datetime
    final_status: Literal["DELIVERED", "UNDELIVERED"]
    final_description: str
    report_url: str | None

    def status_at(self, now: datetime) -> tuple[str, str, datetime]:
        """(status, description, when it began) as seen at `now`."""
        if now >= self.final_at:
            return self.final_status, self.final_description, self.final_at
        if now >= self.pending_at:
            return "PENDING", DESCRIPTIONS["PENDING"], self.pending_at
        if now >= self.sent_at:
            return "SENT", DESCRIPTIONS["SENT"], self.sent_at
        return "QUEUED", DESCRIPTIONS["QUEUED"], self.accepted_at

    def summary(self, now: datetime) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "id": self.id,
            "channel": self.channel.value,
            "to": self.to,
            "sender": self.sender,
            "text": self.text,
            "accepted_at": iso(self.accepted_at),
            # What the handset's clock showed when the message arrived, where the number has one zone.
            "local_time": _local_time(self.to, self.accepted_at),
            "status": self.status_at(now)[0],
        }

    def report(self, now: datetime) -> dict[str, Any]:
        status, description, since = self.status_at(now)
        return {"id": self.id, "ref": self.ref, "status": status, "description": description, "updated_at": iso(since)}


@functools.lru_cache(maxsize=65536)
def _handset_zone(to: str) -> ZoneInfo | None:
    try:
        zones = [z for z in phone_zones.time_zones_for_number(phonenumbers.parse(to)) if z != "Etc/Unknown"]
    except phonenumbers.NumberParseException:
        return None
    return ZoneInfo(zones[0]) if len(zones) == 1 else None


def _local_time(to: str, moment: datetime) -> str | None:
    zone = _handset_zone(to) if to.startswith("+") else None
    return moment.astimezone(zone).isoformat(timespec="milliseconds") if zone is not None else None


@dataclass(eq=False)  # compared by identity: two identical batches are still two pushes
class Delivery:
    """A batch of delivery reports on its way to one webhook."""

    url: str
    reports: list[dict[str, Any]]
    attempts: int = 0
    not_before: float = 0.0


@dataclass
class CarrierState:
    config: CarrierConfig
    messages: dict[str, Message] = field(default_factory=dict)  # by id
    ids_by_ref: dict[str, str] = field(default_factory=dict)
    # A heap of (final_at timestamp, id, report_url) of messages whose final report is still to be pushed.
    due_reports: list[tuple[float, str, str]] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)

    def reset(self) -> None:
        self.messages.clear()
        self.ids_by_ref.clear()
        self.due_reports.clear()
        self.deliveries.clear()
        self.counters.clear()

    def draw_fault(self, request_number: int) -> str | None:
        """The fault injected into the n-th send request, if any: the same n always gets the same fault."""
        cfg = self.config
        draw = random.Random(f"fault:{cfg.seed}:{request_number}").random()
        for fault, rate in (("500", cfg.fault_500_rate), ("429", cfg.fault_429_rate), ("timeout", cfg.timeout_rate)):
            if draw < rate:
                return fault
            draw -= rate
        return None

    def accept(self, incoming: MessageIn, report_url: str | None, now: datetime) -> dict[str, Any]:
        known = self.ids_by_ref.get(incoming.ref)
        if known is not None:
            self.counters["duplicates"] += 1
            status = self.messages[known].status_at(now)[0]
            return {"ref": incoming.ref, "id": known, "status": status, "duplicate": True}
        pattern, allowed = RECIPIENTS[incoming.channel]
        if not pattern.fullmatch(incoming.to):
            self.counters["rejected"] += 1
            problem = f"invalid recipient: {incoming.channel.value} needs {allowed}, not {incoming.to!r}"
            return {"ref": incoming.ref, "error": problem}
        cfg = self.config
        outcome = random.Random(f"outcome:{cfg.seed}:{incoming.ref}")
        delivered = outcome.random() < cfg.delivered_rates.get(incoming.channel, cfg.delivered_rate)
        reason = outcome.choice(UNDELIVERED_REASONS)
        sent_at = now + timedelta(seconds=cfg.queued_seconds)
        pending_at = sent_at + timedelta(seconds=cfg.sent_seconds)
        silent = incoming.channel in cfg.silent_channels
        message = Message(
            ref=incoming.ref,
            id=f"sbx-{uuid.uuid4().hex}",
            channel=incoming.channel,
            to=incoming.to,
            sender=incoming.sender,
            text=incoming.text,
            accepted_at=now,
            sent_at=sent_at,
            pending_at=pending_at,
            # A silent channel's message never leaves PENDING (a handset that never answers).
            final_at=pending_at + (SILENCE if silent else timedelta(seconds=cfg.pending_seconds)),
            final_status="DELIVERED" if delivered else "UNDELIVERED",
            final_description=DESCRIPTIONS["DELIVERED"] if delivered else reason,
            report_url=report_url or cfg.report_url,
        )
        self.messages[message.id] = message
        self.ids_by_ref[message.ref] = message.id
        if message.report_url and not silent:
            heapq.heappush(self.due_reports, (message.final_at.timestamp(), message.id, message.report_url))
        self.counters["accepted"] += 1
        return {"ref": message.ref, "id": message.id, "status": "QUEUED", "duplicate": False}

    def collect_reports(self, now: datetime, loop_time: float) -> None:
        """Batch, per webhook, the final reports of every message that has reached its outcome."""
        by_url: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        while self.due_reports and self.due_reports[0][0] <= now.timestamp():
            _, message_id, url = heapq.heappop(self.due_reports)
            by_url[url].append(self.messages[message_id].report(now))
        for url, reports in by_url.items():
            for start in range(0, len(reports), self.config.max_batch):
                chunk = reports[start : start + self.config.max_batch]
                self.deliveries.append(Delivery(url, chunk, not_before=loop_time))

    def stats(self, now: datetime) -> dict[str, Any]:
        by_status = Counter(message.status_at(now)[0] for message in self.messages.values())
        return {
            "requests": self.counters["requests"],
            "send_requests": self.counters["send_requests"],
            "accepted": self.counters["accepted"],
            "duplicates": self.counters["duplicates"],
            "rejected": self.counters["rejected"],
            "faults": {fault: self.counters[f"fault_{fault}"] for fault in ("500", "429", "timeout")},
            "by_status": dict(by_status),
        }


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utcnow() -> datetime:
    return datetime.now(UTC)


def error(status_code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


async def push_reports(state: CarrierState, client: httpx.AsyncClient) -> None:
    """Forever: gather due reports and POST them; a failed push is retried with backoff, then dropped."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(REPORT_INTERVAL_SECONDS)
        try:
            state.collect_reports(utcnow(), loop.time())
            due = [d for d in state.deliveries if d.not_before <= loop.time()]
            if not due:
                continue
            outcomes = await asyncio.gather(*(post_reports(client, d) for d in due))
            for delivery, delivered in zip(due, outcomes, strict=True):
                # A reset while the push was in flight already dropped it.
                if delivery not in state.deliveries:
                    continue
                delivery.attempts += 1
                if delivered:
                    state.deliveries.remove(delivery)
                elif delivery.attempts >= REPORT_ATTEMPTS:
                    logger.warning(
                        "dropping %d reports for %s after %d attempts",
                        len(delivery.reports), without_query(delivery.url), delivery.attempts,
                    )
                    state.deliveries.remove(delivery)
                else:
                    delivery.not_before = loop.time() + REPORT_INTERVAL_SECONDS * 2**delivery.attempts
        except Exception:
            # The pusher must outlive any bug in a single round, or reports would stop for good.
            logger.exception("delivery report round failed")


async def post_reports(client: httpx.AsyncClient, delivery: Delivery) -> bool:
    try:
        response = await client.post(delivery.url, json={"reports": delivery.reports})
    except httpx.HTTPError as exc:
        logger.warning("delivery reports to %s failed: %s", without_query(delivery.url), exc)
        return False
    if response.is_success:
        return True
    logger.warning("delivery reports to %s answered HTTP %d", without_query(delivery.url), response.status_code)
    return False


def without_query(url: str) -> str:
    """A webhook URL for the log: its query may carry the receiver's secret."""
    return url.split("?", 1)[0]


def create_app(config: CarrierConfig) -> FastAPI:
    state = CarrierState(config=config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=REPORT_TIMEOUT_SECONDS) as client:
            pusher = asyncio.create_task(push_reports(state, client), name="sandbox-report-pusher")
            try:
                yield
            finally:
                pusher.cancel()
                await asyncio.gather(pusher, return_exceptions=True)

    app = FastAPI(title="notiflow sandbox carrier", lifespan=lifespan)
    app.state.carrier = state

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Any) -> Response:
        state.counters["requests"] += 1
        response: Response = await call_next(request)
        return response

    @app.post("/messages")
    async def send(body: SendRequest) -> Any:
        state.counters["send_requests"] += 1
        fault = state.draw_fault(state.counters["send_requests"])
        if fault is not None:
            state.counters[f"fault_{fault}"] += 1
            if fault == "500":
                return error(500, "injected fault")
            if fault == "429":
                return error(429, "injected rate limit", headers={"Retry-After": "1"})
            await asyncio.sleep(state.config.timeout_seconds)
            return error(504, "injected timeout")
        if len(body.messages) > state.config.max_batch:
            limit = state.config.max_batch
            return error(413, f"batch of {len(body.messages)} messages is over the limit of {limit} per request")
        if state.config.accept_seconds:
            await asyncio.sleep(state.config.accept_seconds)
        now = utcnow()
        return {"results": [state.accept(message, body.report_url, now) for message in body.messages]}

    @app.post("/messages/status")
    async def status(body: StatusRequest) -> Any:
        if len(body.ids) > state.config.max_batch:
            return error(413, f"{len(body.ids)} ids is over the limit of {state.config.max_batch} per request")
        now = utcnow()
        statuses = [
            state.messages[i].report(now) if i in state.messages else {"id": i, "status": None, "error": "unknown id"}
            for i in body.ids
        ]
        return {"statuses": statuses}

    @app.post("/messages/lookup")
    async def lookup(body: LookupRequest) -> Any:
        """What became of each ref: its id if it was accepted, null if it never arrived (reconciliation)."""
        if len(body.refs) > state.config.max_batch:
            return error(413, f"{len(body.refs)} refs is over the limit of {state.config.max_batch} per request")
        return {"results": [{"ref": ref, "id": state.ids_by_ref.get(ref)} for ref in body.refs]}

    @app.get("/messages")
    async def messages() -> Any:
        now = utcnow()
        return {"messages": [m.summary(now) for m in state.messages.values()]}

    @app.get("/stats")
    async def stats() -> Any:
        return state.stats(utcnow())

    @app.get("/config")
    async def get_config() -> CarrierConfig:
        return state.config

    @app.put("/config")
    async def put_config(new: CarrierConfig) -> CarrierConfig:
        # Messages already accepted keep the timeline and outcome they were given.
        state.config = new
        logger.info("config replaced: %s", new.model_dump_json())
        return new

    @app.post("/reset")
    async def reset() -> Any:
        state.reset()
        return {"reset": True}

    @app.post("/hlr")
    async def hlr(body: HLRRequest) -> Any:
        """Phone checks: is each number live, and on which network."""
        if len(body.phones) > state.config.max_batch:
            return error(413, f"{len(body.phones)} phones is over the limit of {state.config.max_batch} per request")
        state.counters["hlr_requests"] += 1
        checked_at = iso(utcnow())
        return {"results": [hlr_answer(phone, state.config.seed) | {"checked_at": checked_at} for phone in body.phones]}

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok"}

    return app
