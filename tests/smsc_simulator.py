"""An SMSC for tests: smpp34's Server (a Rust-backed SMPP 3.4 server) in a background thread on 127.0.0.1,
answering submit_sm as its `behaviour` says and sending delivery receipts back on the bind.

Clients connect through a small TCP relay in front of the server, so a test can drop every link at once
as a network fault would (smpp34 itself can only unbind politely, and its stop() leaves sessions open).
smpp34 binds any system id with any password: the simulator records the system ids it saw.
"""
from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import smpp34

DELIVERED = "DELIVRD"
UNDELIVERED = "UNDELIV"
_STATES = {"ENROUTE": 1, "DELIVRD": 2, "EXPIRED": 3, "DELETED": 4, "UNDELIV": 5, "ACCEPTD": 6, "UNKNOWN": 7, "REJECTD": 8}


@dataclass
class Behaviour:
    """How the SMSC answers; change it between (or during) tests."""

    outcome: str = DELIVERED  # every receipt's stat, unless `outcomes` names the destination
    outcomes: dict[str, str] = field(default_factory=dict)
    receipts: bool = True
    receipt_delay: float = 0.1  # seconds after submit_sm_resp (a receipt sent at once overtakes slow clients)
    receipt_first: bool = False  # the receipt goes out before its submit_sm_resp
    report_parts: str = "all"  # "all", or "first": only a multipart message's first part gets a receipt
    refuse: dict[str, int] = field(default_factory=dict)  # destination → command_status of its submit_sm_resp
    refuse_all: int | None = None  # every submit refused with this command_status (throttling: 0x58)
    answer_delay: float = 0.0  # how long each submit waits for its submit_sm_resp


@dataclass(frozen=True)
class Submit:
    """One submit_sm as the SMSC received it, and its answer."""

    system_id: str
    destination: str
    source: str
    data_coding: int
    esm_class: int
    registered_delivery: int
    short_message: bytes
    status: int
    message_id: str | None

    @property
    def udh(self) -> tuple[int, int, int] | None:
        """(reference, total parts, this part's number) from a concatenation header, if there is one."""
        if not self.esm_class & 0x40:
            return None
        header = self.short_message[1 : 1 + self.short_message[0]]
        position = 0
        while position + 2 <= len(header):
            iei, length = header[position], header[position + 1]
            value = header[position + 2 : position + 2 + length]
            if iei == 0x00 and length == 3:
                return value[0], value[1], value[2]
            if iei == 0x08 and length == 4:
                return (value[0] << 8) | value[1], value[2], value[3]
            position += 2 + length
        return None

    @property
    def payload(self) -> bytes:
        return self.short_message[1 + self.short_message[0] :] if self.esm_class & 0x40 else self.short_message

    @property
    def text(self) -> str:
        return self.payload.decode("utf-16-be") if self.data_coding == 8 else self.payload.decode("latin-1")

    @property
    def key(self) -> tuple[str, int, bytes]:
        """What makes a submit the same message's part again: its destination, part number and text."""
        return self.destination, (self.udh or (0, 1, 1))[2], self.payload


class SmscSimulator:
    """Start with start(); url is smpp://127.0.0.1:PORT. Thread-safe to read from tests."""

    def __init__(self) -> None:
        self.behaviour = Behaviour()
        self.submits: list[Submit] = []
        self.system_ids: list[str] = []
        self.receipts_sent = 0
        self.max_outstanding = 0
        self._outstanding = 0
        self._ids = f"{uuid.uuid4().hex[:6]}"
        self._count = 0
        self._esmes: dict[str, Any] = {}  # session id → bound Esme
        self._links: set[asyncio.StreamWriter] = set()
        self.frozen = False  # the relay swallows everything both ways: a link dead without a word
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="smsc-simulator", daemon=True)
        self.port = _free_port()
        self._server_port = _free_port()
        self._relay: asyncio.base_events.Server | None = None
        self._server: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"smpp://127.0.0.1:{self.port}"

    def start(self) -> SmscSimulator:
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def reset(self) -> None:
        """A fresh behaviour and counts; binds made from now on are counted (those up stay up)."""
        with self._lock:
            self.behaviour = Behaviour()
            self.system_ids = []
            self.submits = []
            self.receipts_sent = 0
            self.max_outstanding = 0

    def drop_links(self) -> None:
        """Cut every client's TCP connection at once, with no unbind, as a network fault does."""
        self._call(self._drop_links())

    def freeze_links(self, frozen: bool = True) -> None:
        """Let every link go silent (or speak again): no PDU passes either way, and no connection is closed."""
        self.frozen = frozen

    def resent(self) -> list[tuple[str, int, bytes]]:
        """Parts the SMSC took more than once (the same destination, part number and text)."""
        with self._lock:
            counts = Counter(s.key for s in self.submits if s.status == 0)
        return [key for key, count in counts.items() if count > 1]

    def taken(self) -> list[Submit]:
        with self._lock:
            return [s for s in self.submits if s.status == 0]

    # -- the loop's side ------------------------------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _start(self) -> None:
        self._server = smpp34.Server("127.0.0.1", self._server_port)
        await self._server.start()
        self._relay = await asyncio.start_server(self._relay_link, "127.0.0.1", self.port)
        self._spawn(self._serve())

    async def _stop(self) -> None:
        await self._drop_links()
        if self._relay is not None:
            self._relay.close()
        for task in list(self._tasks):
            task.cancel()
        await self._server.stop()

    async def _drop_links(self) -> None:
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def _relay_link(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self._server_port)
        self._links.update({client_writer, server_writer})

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, other: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    if self.frozen:
                        continue
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                # One side gone: the other goes too, abruptly, so the server sees its session end.
                for side in (writer, other):
                    side.transport.abort()
                    self._links.discard(side)

        await asyncio.gather(pipe(client_reader, server_writer, client_writer),
                             pipe(server_reader, client_writer, server_writer))

    async def _serve(self) -> None:
        while True:
            event = await self._server.next()
            if isinstance(event, smpp34.Esme):
                self._esmes[event.session_id] = event
                with self._lock:
                    self.system_ids.append(event.system_id)
            elif isinstance(event, smpp34.Unbound):
                self._esmes.pop(event.session_id, None)
            elif isinstance(event, smpp34.SubmitSmEvent):
                with self._lock:
                    self._outstanding += 1
                    self.max_outstanding = max(self.max_outstanding, self._outstanding)
                self._spawn(self._answer(event))

    async def _answer(self, event: Any) -> None:
        behaviour = self.behaviour
        esme = self._esmes.get(event.session_id)
        system_id = esme.system_id if esme is not None else ""
        status = behaviour.refuse.get(event.destination_addr, behaviour.refuse_all or 0)
        message_id = None
        if status == 0:
            with self._lock:
                self._count += 1
                message_id = f"{self._ids}{self._count:06d}"
        submit = Submit(system_id, event.destination_addr, event.source_addr, event.data_coding, event.esm_class,
                        event.registered_delivery, bytes(event.short_message), status, message_id)
        if behaviour.answer_delay:
            await asyncio.sleep(behaviour.answer_delay)
        wants_receipt = (message_id is not None and behaviour.receipts and event.registered_delivery & 1
                         and (behaviour.report_parts == "all" or (submit.udh or (0, 1, 1))[2] == 1))
        if wants_receipt and behaviour.receipt_first:
            await self._receipt(submit, behaviour, delay=0)
        with self._lock:
            self.submits.append(submit)
            self._outstanding -= 1
        if message_id is None:
            event.reject(status)
        else:
            event.accept(message_id)
        if wants_receipt and not behaviour.receipt_first:
            self._spawn(self._receipt(submit, behaviour, delay=behaviour.receipt_delay))

    async def _receipt(self, submit: Submit, behaviour: Behaviour, delay: float) -> None:
        await asyncio.sleep(delay)
        stat = behaviour.outcomes.get(submit.destination, behaviour.outcome)
        stamp = time.strftime("%y%m%d%H%M")
        text = (f"id:{submit.message_id} sub:001 dlvrd:{'001' if stat == DELIVERED else '000'} submit date:{stamp} "
                f"done date:{stamp} stat:{stat} err:{'000' if stat == DELIVERED else '001'} text:").encode()
        tlvs = [smpp34.Tlv(smpp34.TLV_RECEIPTED_MESSAGE_ID, (submit.message_id or "").encode() + b"\x00"),
                smpp34.Tlv(smpp34.TLV_MESSAGE_STATE, bytes([_STATES[stat]]))]
        # As an SMSC does, a receipt whose bind is gone waits for the system id to bind again.
        for _attempt in range(100):
            esme = next((e for e in reversed(list(self._esmes.values())) if e.system_id == submit.system_id), None)
            if esme is not None:
                try:
                    answer = await esme.deliver_sm(submit.source, text, source_addr=submit.destination, esm_class=0x04,
                                                   tlvs=tlvs)
                    if answer.is_success:
                        with self._lock:
                            self.receipts_sent += 1
                        return
                except Exception:  # noqa: BLE001 (the session ended under it: offered again on the next bind)
                    pass
            await asyncio.sleep(0.1)

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
