"""Two differently shaped HTTP SMS aggregators, imitated in one Starlette app on a local port, for the http adapter's tests.

- `/a/…` — a JSON batch API with a bearer token (Infobip-like): `POST /a/v1/sms` takes
  `{"messages": [{"to", "text", "from", "callback", "clientRef"}]}` and answers each message in order, an id
  or an error; `POST /a/v1/status` answers `{"results": [{"id", "state", "error"}]}`; `GET /a/v1/by-ref/REF`
  finds a message by the client's reference. A wrong token is answered 401, echoing the token it got (as
  careless APIs do), so a test can see that the adapter keeps it out of what it records.
- `/b/…` — a form API with an `api_id` query parameter, one message a request, answering like SMS.ru:
  `{"status": "OK", "sms": {"79161234567": {"status": "OK", "sms_id": "…"}}}`, a per-number
  `status_text` for a refused number, and HTTP 200 with a top-level `status_text` for a wrong api_id.
  `GET /b/sms/status?sms_id=A,B` answers SMS.ru's status codes (103 delivered, 104 expired…).

Either answers 429 with Retry-After while `throttle[side]` is set, 500 while `fail[side]` is, and waits
`delay[side]` seconds per request.
"""
from __future__ import annotations

import asyncio
import itertools
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.sandbox_fixtures import serve

# SMS.ru's status codes and texts (https://sms.ru/api/status).
SMS_RU_STATUSES = {
    100: "Сообщение находится в нашей очереди",
    101: "Сообщение передается оператору",
    102: "Сообщение отправлено (в пути)",
    103: "Сообщение доставлено",
    104: "Не может быть доставлено: время жизни истекло",
    105: "Не может быть доставлено: удалено оператором",
    106: "Не может быть доставлено: сбой в телефоне",
    107: "Не может быть доставлено: неизвестная причина",
    108: "Не может быть доставлено: отклонено",
}


@dataclass
class Aggregators:
    """The state both imitations share with the tests: credentials, what they were sent, what they will answer."""

    url: str = ""
    token: str = field(default_factory=lambda: f"tok-{uuid.uuid4().hex}")
    api_id: str = field(default_factory=lambda: uuid.uuid4().hex.upper())
    blocked: set[str] = field(default_factory=set)  # numbers (digits) either refuses
    states: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # A: id → (state, error)
    codes: dict[str, int] = field(default_factory=dict)  # B: sms_id → SMS.ru status code
    throttle: dict[str, float] = field(default_factory=dict)  # side → Retry-After seconds while set
    fail: set[str] = field(default_factory=set)  # sides answering 500
    delay: dict[str, float] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → the message as received
    by_ref: dict[str, str] = field(default_factory=dict)
    in_flight: int = 0
    most_in_flight: int = 0
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/a/v1/sms", self.a_send, methods=["POST"]),
            Route("/a/v1/status", self.a_status, methods=["POST"]),
            Route("/a/v1/by-ref/{ref}", self.a_by_ref, methods=["GET"]),
            Route("/b/sms/send", self.b_send, methods=["POST"]),
            Route("/b/sms/status", self.b_status, methods=["GET"]),
        ])

    def sent_to(self, digits: str) -> list[dict[str, Any]]:
        return [m for m in self.sent.values() if re.sub(r"\D", "", m["to"]) == digits]

    # --- shared ------------------------------------------------------------------------------------------

    async def _enter(self, side: str, request: Request) -> Response | None:
        """Record the request, and answer it here when the side is throttled or failing."""
        body = await request.body()
        with self._lock:
            self.requests.append({"side": side, "method": request.method, "path": request.url.path,
                                  "query": dict(request.query_params), "headers": dict(request.headers),
                                  "body": body.decode()})
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay.get(side):
                await asyncio.sleep(self.delay[side])
        finally:
            with self._lock:
                self.in_flight -= 1
        if side in self.throttle:
            return JSONResponse({"error": "too many requests"}, status_code=429,
                                headers={"Retry-After": f"{self.throttle[side]:g}"})
        if side in self.fail:
            return JSONResponse({"error": "internal error"}, status_code=500)
        return None

    def _new_id(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}{next(self._ids):08d}"

    # --- A: JSON batch, bearer token -------------------------------------------------------------------

    async def a_send(self, request: Request) -> Response:
        early = await self._enter("a", request)
        if early is not None:
            return early
        presented = request.headers.get("authorization", "")
        if presented != f"Bearer {self.token}":
            return JSONResponse({"error": f"unknown token {presented.removeprefix('Bearer ')}"}, status_code=401)
        answers = []
        for message in (await request.json())["messages"]:
            digits = re.sub(r"\D", "", message["to"])
            if digits in self.blocked:
                answers.append({"to": message["to"], "error": {"code": 21, "text": "number blocked by the operator"}})
                continue
            provider_id = self._new_id("A-")
            self.sent[provider_id] = message
            self.by_ref[message.get("clientRef", "")] = provider_id
            self.states[provider_id] = ("ENROUTE", None)
            answers.append({"to": message["to"], "id": provider_id, "status": "ACCEPTED"})
        return JSONResponse({"messages": answers})

    async def a_status(self, request: Request) -> Response:
        early = await self._enter("a", request)
        if early is not None:
            return early
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        ids = (await request.json())["ids"]
        return JSONResponse({"results": [{"id": i, "state": self.states[i][0], "error": self.states[i][1]}
                                         for i in ids if i in self.states]})

    async def a_by_ref(self, request: Request) -> Response:
        early = await self._enter("a", request)
        if early is not None:
            return early
        provider_id = self.by_ref.get(request.path_params["ref"])
        if provider_id is None:
            return JSONResponse({"error": "no such message"}, status_code=404)
        return JSONResponse({"id": provider_id})

    # --- B: SMS.ru-like form API, api_id in the query --------------------------------------------------

    async def b_send(self, request: Request) -> Response:
        early = await self._enter("b", request)
        if early is not None:
            return early
        if request.query_params.get("api_id") != self.api_id:
            return JSONResponse({"status": "ERROR", "status_code": 200, "status_text": "Неправильный api_id"})
        # The form by hand: Starlette's form parser needs python-multipart, which nothing else here does.
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        to = str(form.get("to", ""))
        digits = re.sub(r"\D", "", to)
        if digits in self.blocked:
            result: dict[str, Any] = {"status": "ERROR", "status_code": 207,
                                      "status_text": "На этот номер (или один из номеров) нельзя отправлять сообщения"}
        else:
            sms_id = self._new_id("000000-")
            self.sent[sms_id] = {"to": to, "text": form.get("msg"), "from": form.get("from")}
            self.codes[sms_id] = 100
            result = {"status": "OK", "status_code": 100, "sms_id": sms_id}
        return JSONResponse({"status": "OK", "status_code": 100, "sms": {digits: result}, "balance": 4122.56})

    async def b_status(self, request: Request) -> Response:
        early = await self._enter("b", request)
        if early is not None:
            return early
        if request.query_params.get("api_id") != self.api_id:
            return JSONResponse({"status": "ERROR", "status_code": 200, "status_text": "Неправильный api_id"})
        answers: dict[str, Any] = {}
        for sms_id in request.query_params.get("sms_id", "").split(","):
            code = self.codes.get(sms_id)
            answers[sms_id] = ({"status": "ERROR", "status_code": -1, "status_text": "Сообщение не найдено"} if code is None
                               else {"status": "OK", "status_code": code, "status_text": SMS_RU_STATUSES[code]})
        return JSONResponse({"status": "OK", "status_code": 100, "sms": answers})


@contextmanager
def running_aggregators() -> Iterator[Aggregators]:
    aggregators = Aggregators()
    with serve(aggregators.app()) as url:
        aggregators.url = url
        yield aggregators
