"""One SMPP 3.4 bind (bind_transceiver) kept open across batches: its socket, the thread that reads it, the window
of submit_sm awaiting their submit_sm_resp, enquire_link keepalive, and binding again after a dropped link.

smpplib encodes and decodes the PDUs; the socket and the threads are ours. smpplib's Client reads on the
caller's thread, so nothing would read between batches (receipts, the SMSC's enquire_link) and a submit
would wait for its answer before the next could go; and its read timeout drops a half-read PDU.
Here a reader thread owns every read: answers are matched to submits by sequence number, so up to
`window` submits are outstanding at once, and each deliver_sm goes to `on_deliver` and is answered at once.
"""
from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from smpplib import consts
from smpplib.smpp import make_pdu, parse_pdu

logger = logging.getLogger("notiflow.providers.smpp")

_HEADER = struct.Struct(">LLLL")
_GENERIC_NACK = 0x80000000
# The longest PDU we read (SMPP 3.4 PDUs are a few hundred octets; message_payload at most 64 KiB).
_MAX_PDU = 70_000


class LinkDown(Exception):
    """The bind is not up and could not be brought up now (refused connection, failed bind, dropped link)."""


@dataclass
class Submitted:
    """One submit_sm: its answer once the SMSC gave one."""

    sequence: int
    done: threading.Event = field(default_factory=threading.Event)
    status: int | None = None  # the submit_sm_resp's command_status
    message_id: str | None = None
    # No answer will come: the link dropped or the SMSC did not answer in time. The SMSC may have taken it.
    lost: bool = False

    @property
    def accepted(self) -> bool:
        return self.status == consts.SMPP_ESME_ROK


class _Sequences:
    """Sequence numbers for PDUs made on two threads (the sender's submits, the reader's enquire_links)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    @property
    def sequence(self) -> int:
        return self._last

    def next_sequence(self) -> int:
        with self._lock:
            self._last = self._last % 0x7FFFFFFF + 1
            return self._last


_PARSED = _Sequences()


class Link:
    """A bind to one SMSC; thread-safe: several threads may submit through it while its reader runs."""

    def __init__(
        self,
        host: str,
        port: int,
        system_id: str,
        password: str,
        *,
        on_deliver: Callable[[Any], int | None],
        window: int = 10,
        system_type: str = "",
        enquire_link_seconds: float = 30.0,
        response_seconds: float = 10.0,
        name: str = "smpp",
    ):
        self.host, self.port, self.name = host, port, name
        self._credentials = (system_id, password, system_type)
        self._on_deliver = on_deliver
        self.window = window
        self.enquire_link_seconds = enquire_link_seconds
        self.response_seconds = response_seconds
        self._sequences = _Sequences()
        self._slots = threading.BoundedSemaphore(window)
        self._state = threading.Lock()  # guards _sock, _pending and _enquiring
        self._write = threading.Lock()  # one PDU at a time on the wire
        self._binding = threading.Lock()  # one bind attempt at a time
        self._sock: socket.socket | None = None
        self._unread = b""  # what came right behind the bind's answer (a receipt the SMSC held for us)
        self._pending: dict[int, Submitted] = {}
        self._enquiring: float | None = None  # when our unanswered enquire_link went
        self._bound = threading.Event()
        self._closing = threading.Event()
        self._reader: threading.Thread | None = None
        self.binds = 0  # how many times this link was bound (a rebind after a drop counts again)

    # -- life cycle -----------------------------------------------------------------------------------

    def open(self) -> None:
        """Bind now (LinkDown if that fails), and start the reader, which rebinds by itself after a drop."""
        self._closing.clear()
        if self._reader is None or not self._reader.is_alive():
            self._reader = threading.Thread(target=self._read_forever, name=f"smpp-{self.name}", daemon=True)
            self._reader.start()
        self.ensure_bound()

    def close(self) -> None:
        """Unbind politely when the link is up, then let go of the socket; pending submits end lost."""
        self._closing.set()
        sock = self._sock
        if sock is not None and self._bound.is_set():
            try:
                self._send_pdu(sock, make_pdu("unbind", client=self._sequences))
            except OSError:
                pass
        self._drop(sock, "closed")
        if self._reader is not None:
            self._reader.join(timeout=2)

    @property
    def bound(self) -> bool:
        return self._bound.is_set()

    def ensure_bound(self) -> None:
        """Return once the link is bound; bind it on this thread if it is not (LinkDown if that fails)."""
        if self._bound.is_set():
            return
        with self._binding:
            if self._bound.is_set():
                return
            if self._closing.is_set():
                raise LinkDown(f"the bind to {self.host}:{self.port} is closed")
            sock, unread = self._bind()
            if self._closing.is_set():  # closed while this bind was on its way
                sock.close()
                raise LinkDown(f"the bind to {self.host}:{self.port} is closed")
            with self._state:
                self._sock, self._unread = sock, unread
                self._enquiring = None
            self.binds += 1
            self._bound.set()
        logger.info("%s bound to %s:%s", self.name, self.host, self.port)

    def _bind(self) -> tuple[socket.socket, bytes]:
        system_id, password, system_type = self._credentials
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.response_seconds)
        except OSError as exc:
            raise LinkDown(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        try:
            request = make_pdu("bind_transceiver", client=self._sequences, system_id=system_id, password=password,
                               system_type=system_type)
            sock.sendall(request.generate())
            deadline = time.monotonic() + self.response_seconds
            buffer = bytearray()
            while True:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                answer = _next_pdu(sock, buffer)
                if answer is None:
                    raise LinkDown(f"{self.host}:{self.port} closed the connection during the bind")
                if answer.command == "bind_transceiver_resp" or (answer.sequence == request.sequence and answer.is_error()):
                    break
            if answer.is_error():
                # The reason names the code only: a bind failure never repeats the credentials.
                raise LinkDown(f"{self.host}:{self.port} refused the bind of system id {system_id!r}: "
                               f"{describe(answer.status)}; check the account's username and password")
            # Reads wait in select; a write that cannot go out for this long means the link is dead.
            sock.settimeout(self.response_seconds)
            return sock, bytes(buffer)
        except (OSError, ValueError) as exc:
            sock.close()
            raise LinkDown(f"bind to {self.host}:{self.port} failed: {exc}") from exc
        except LinkDown:
            sock.close()
            raise

    # -- sending --------------------------------------------------------------------------------------

    def submit(self, **fields: Any) -> Submitted:
        """Send one submit_sm once the window has room; the answer arrives on the returned Submitted.

        LinkDown if nothing was written (no room in time, link down); a write that failed part-way
        returns a lost Submitted, since the SMSC may have read it.
        """
        if not self._slots.acquire(timeout=self.response_seconds):
            raise LinkDown(f"no submit_sm_resp for {self.response_seconds:g} s with {self.window} submits outstanding")
        with self._state:
            sock = self._sock
        if sock is None or not self._bound.is_set():
            self._slots.release()
            raise LinkDown("the link dropped")
        pdu = make_pdu("submit_sm", client=self._sequences, **fields)
        submitted = Submitted(pdu.sequence)
        with self._state:
            if self._sock is not sock:
                self._slots.release()
                raise LinkDown("the link dropped")
            self._pending[pdu.sequence] = submitted
        try:
            self._send_pdu(sock, pdu)
        except OSError as exc:
            self._drop(sock, f"write failed: {exc}")  # marks `submitted` lost with every other pending submit
        return submitted

    def wait(self, submitted: Sequence[Submitted]) -> None:
        """Wait for the answers to `submitted`; the SMSC gets `response_seconds` after the last one went out.
        Still unanswered then, the link is taken as broken: it is dropped (and bound again), they end lost."""
        deadline = time.monotonic() + self.response_seconds
        for item in submitted:
            if not item.done.wait(max(0.0, deadline - time.monotonic())):
                with self._state:
                    sock = self._sock
                self._drop(sock, f"no submit_sm_resp within {self.response_seconds:g} s")
                break

    # -- reading --------------------------------------------------------------------------------------

    def _read_forever(self) -> None:
        pause = 0.1
        while not self._closing.is_set():
            if not self._bound.is_set():
                try:
                    self.ensure_bound()
                    pause = 0.1
                except LinkDown as exc:
                    if self._closing.is_set():
                        return
                    logger.warning("%s: %s; binding again in %.1f s", self.name, exc, pause)
                    deadline = time.monotonic() + pause
                    # A sender may bind meanwhile: its answers must be read at once, not after the pause.
                    while not (self._closing.is_set() or self._bound.is_set()) and time.monotonic() < deadline:
                        self._bound.wait(0.1)
                    pause = min(pause * 2, 5.0)
                    continue
            with self._state:
                sock, unread, self._unread = self._sock, self._unread, b""
            if sock is None:
                continue
            try:
                reason = self._read(sock, bytearray(unread))
            except (OSError, ValueError) as exc:
                reason = f"read failed: {exc}"
            self._drop(sock, reason)

    def _read(self, sock: socket.socket, buffer: bytearray) -> str:
        """Read and answer PDUs until the link goes down; returns why it did."""
        heard = time.monotonic()
        while (raw := _take_pdu(buffer)) is not None:
            if (reason := self._handle(sock, raw)) is not None:
                return reason
        while not self._closing.is_set():
            readable, _, _ = select.select([sock], [], [], 0.5)
            now = time.monotonic()
            if not readable:
                if self._enquiring is not None and now - self._enquiring > self.response_seconds:
                    return f"no enquire_link_resp within {self.response_seconds:g} s"
                if self._enquiring is None and now - heard > self.enquire_link_seconds:
                    self._enquiring = now  # the keepalive: an idle bind is dropped by SMSCs and NAT alike
                    self._send_pdu(sock, make_pdu("enquire_link", client=self._sequences))
                continue
            chunk = sock.recv(65536)
            if not chunk:
                return "the SMSC closed the connection"
            buffer += chunk
            heard = now
            self._enquiring = None
            while (raw := _take_pdu(buffer)) is not None:
                if (reason := self._handle(sock, raw)) is not None:
                    return reason
        return "closed"

    def _handle(self, sock: socket.socket, raw: bytes) -> str | None:
        """Act on one PDU; returns why the link ends when it does (an unbind)."""
        command_id, status, sequence = _HEADER.unpack_from(raw)[1:]
        if command_id in (0x80000004, _GENERIC_NACK):  # submit_sm_resp, or a generic_nack of a submit
            message_id = None
            if command_id != _GENERIC_NACK and status == consts.SMPP_ESME_ROK:
                message_id = _text(_parse(raw).message_id)
            self._answer(sequence, status, message_id)
            return None
        try:
            pdu = _parse(raw)
        except Exception as exc:  # noqa: BLE001 (a PDU smpplib cannot read is refused, the link goes on)
            logger.warning("%s: unreadable PDU 0x%08X (%s)", self.name, command_id, exc)
            if not command_id & 0x80000000:
                self._reply(sock, "generic_nack", sequence, consts.SMPP_ESME_RINVCMDID)
            return None
        if pdu.command == "deliver_sm":
            try:
                answer = self._on_deliver(pdu)
            except Exception:  # noqa: BLE001 (a temporary error makes the SMSC offer it again later)
                logger.exception("%s: a deliver_sm could not be taken", self.name)
                answer = consts.SMPP_ESME_RX_T_APPN
            self._reply(sock, "deliver_sm_resp", sequence, answer or consts.SMPP_ESME_ROK)
        elif pdu.command == "enquire_link":
            self._reply(sock, "enquire_link_resp", sequence)
        elif pdu.command == "unbind":
            self._reply(sock, "unbind_resp", sequence)
            return "the SMSC unbound"
        elif pdu.command in ("enquire_link_resp", "unbind_resp"):
            pass
        elif not pdu.is_response():
            self._reply(sock, "generic_nack", sequence, consts.SMPP_ESME_RINVCMDID)
        return None

    def _answer(self, sequence: int, status: int, message_id: str | None) -> None:
        with self._state:
            submitted = self._pending.pop(sequence, None)
        if submitted is None:
            logger.warning("%s: an answer to submit %d that is not outstanding", self.name, sequence)
            return
        submitted.status, submitted.message_id = status, message_id
        self._slots.release()
        submitted.done.set()

    def _reply(self, sock: socket.socket, command: str, sequence: int, status: int = consts.SMPP_ESME_ROK) -> None:
        reply = make_pdu(command, client=self._sequences, status=status)
        reply.sequence = sequence
        self._send_pdu(sock, reply)

    def _send_pdu(self, sock: socket.socket, pdu: Any) -> None:
        data = pdu.generate()
        with self._write:
            sock.sendall(data)

    def _drop(self, sock: socket.socket | None, reason: str) -> None:
        """Let go of `sock` if it is still the link's; every submit outstanding on it ends lost."""
        with self._state:
            if sock is None or self._sock is not sock:
                return
            self._sock = None
            self._bound.clear()
            lost, self._pending = list(self._pending.values()), {}
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes the reader's select at once
        except OSError:
            pass
        sock.close()
        for submitted in lost:
            submitted.lost = True
            self._slots.release()
            submitted.done.set()
        if not self._closing.is_set():
            logger.warning("%s: link to %s:%s dropped (%s), %d submits unanswered", self.name, self.host, self.port,
                           reason, len(lost))


_STATUS_NAMES = {value: name.removeprefix("SMPP_") for name, value in vars(consts).items()
                 if name.startswith("SMPP_ESME_") and isinstance(value, int)}


def describe(status: int) -> str:
    """An SMPP command_status as its name and meaning, e.g. 'ESME_RTHROTTLED 0x00000058 (Throttling error)'."""
    name = _STATUS_NAMES.get(status, "ESME error")
    meaning = consts.DESCRIPTIONS.get(status, "unknown to SMPP 3.4")
    return f"{name} 0x{status:08X} ({meaning})"


def _take_pdu(buffer: bytearray) -> bytes | None:
    """The first whole PDU in `buffer`, removed from it; None while it is still arriving."""
    if len(buffer) < 16:
        return None
    length = struct.unpack_from(">L", buffer)[0]
    if not 16 <= length <= _MAX_PDU:
        raise ValueError(f"a PDU of {length} octets: the stream is not SMPP")
    if len(buffer) < length:
        return None
    raw = bytes(buffer[:length])
    del buffer[:length]
    return raw


def _next_pdu(sock: socket.socket, buffer: bytearray) -> Any:
    """Read until one whole PDU is in, parsed; None if the peer closed the connection."""
    while (raw := _take_pdu(buffer)) is None:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    return _parse(raw)


def _parse(raw: bytes) -> Any:
    # smpplib numbers every PDU it makes, parsed ones too: those numbers come from a counter of their own.
    return parse_pdu(raw, client=_PARSED, allow_unknown_opt_params=True)


def _text(value: Any) -> str | None:
    """An SMPP C-octet string as smpplib parses it (bytes), as text; None when empty."""
    if value is None:
        return None
    text = value.decode("ascii", "replace") if isinstance(value, bytes | bytearray) else str(value)
    return text.rstrip("\x00") or None
