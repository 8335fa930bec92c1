"""SMS through an SMSC over SMPP 3.4: submit_sm on one bind kept open across batches, delivery receipts
(deliver_sm) pushed back on the same bind.

Account (a `notiflow provider account` block, kind "smpp"): url smpp://host:port, username = system id,
password (at most 8 characters, as SMPP 3.4 allows), sender = default source address. Options:
window (submits outstanding at once, default 10: ask the SMSC's operator), system_type,
enquire_link_seconds (30), response_seconds (10), throttle_pause_seconds (1),
receipt_hold_seconds (300).

Quirks:
- SMPP has no idempotency key: a submit whose answer was lost with the link may have been taken, and
  is reconciled by sending it again (lookup is not possible), so it may arrive twice. Between batches
  nothing is outstanding, so a link that drops there costs nothing.
- Every part of a long text is its own submit_sm with its own SMSC id and its own receipt; the message
  is one message (tasks/delivery/parts.py): its id is the first part's, the others are recorded too.
- A receipt may overtake the submit_sm_resp of its message, or the recording of its id (Kannel lost 81
  of 2,000 that way): receipts not yet matched are held and offered again, for receipt_hold_seconds.
- Receipt ids are taken from the receipted_message_id TLV, else from the text's `id:`; some SMSCs give
  hex ids in submit_sm_resp and decimal ones in receipts: such an SMSC needs an option added here.
- The `done date` of a receipt is in the SMSC's local time, with no zone: the report is dated when it
  arrives instead.
"""
from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import urlsplit

from smpplib import consts

from models.settings import Settings
from models.status import Channel, MessageStatus
from models.tables import utcnow
from providers.base import (
    Acceptance,
    Capabilities,
    LookupUnsupported,
    OutgoingMessage,
    Provider,
    ProviderRejected,
    ProviderUnavailable,
    Reports,
    StatusReport,
)
from providers.sms_parts import user_data
from providers.smpp_link import Link, LinkDown, Submitted, describe

logger = logging.getLogger("notiflow.providers.smpp")

# Receipt state (the text's `stat:`, or the message_state TLV) → (our status, what it means).
# ACCEPTD ("read on the subscriber's behalf by customer service") and ENROUTE are not deliveries, as
# Kannel reads them: the message waits for a final receipt, or ends UNDELIVERED after its last poll.
RECEIPT_STATES: dict[str, tuple[MessageStatus, str]] = {
    "DELIVRD": (MessageStatus.DELIVERED, "delivered"),
    "ENROUTE": (MessageStatus.PENDING, "en route to the handset"),
    "ACCEPTD": (MessageStatus.PENDING, "accepted by the SMSC on the subscriber's behalf"),
    "BUFFRED": (MessageStatus.PENDING, "buffered by the SMSC"),
    "EXPIRED": (MessageStatus.EXPIRED, "its validity period passed at the SMSC"),
    "DELETED": (MessageStatus.UNDELIVERED, "deleted by the SMSC"),
    "UNDELIV": (MessageStatus.UNDELIVERED, "undeliverable"),
    "UNKNOWN": (MessageStatus.UNDELIVERED, "in an unknown state at the SMSC"),
    "REJECTD": (MessageStatus.UNDELIVERED, "rejected by the network"),
}
# The message_state TLV's values (SMPP 3.4 §5.2.28), as the receipt text spells them.
MESSAGE_STATES = {1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIV", 6: "ACCEPTD", 7: "UNKNOWN",
                  8: "REJECTD"}

# submit_sm_resp command_status values that mean "not now" rather than "never": the message was not
# taken and goes again later. Every other error refuses that message alone (invalid destination,
# invalid source address, submit failed...), with the SMSC's code as its reason.
TEMPORARY = frozenset({
    consts.SMPP_ESME_RTHROTTLED,  # 0x58: over the account's rate
    consts.SMPP_ESME_RMSGQFUL,  # 0x14: the SMSC's queue is full
    consts.SMPP_ESME_RSYSERR,  # 0x08: the SMSC's own trouble
    consts.SMPP_ESME_RX_T_APPN,  # 0x64: temporary application error
    consts.SMPP_ESME_RINVBNDSTS,  # 0x04: the SMSC does not take the bind as bound (it is bound again)
})

# esm_class message types (bits 2–5) of a deliver_sm that is a receipt, not a message from a handset.
_RECEIPT_TYPES = (0x04, 0x20)  # SMSC delivery receipt, intermediate delivery notification
_RECEIPT_FIELD = re.compile(r"\b(id|stat|err):(\S*)", re.IGNORECASE)
# A multipart message's parts that were taken are not sent again: its missing parts get this many more tries.
_PART_ROUNDS = 3


class SmppProvider(Provider):
    """One SMPP account: a bind_transceiver kept across batches, submits windowed, receipts pushed."""

    kind = "smpp"
    capabilities = Capabilities(
        channels=frozenset({Channel.SMS}),
        # A batch is submitted PDU by PDU within one call: 100 messages stay well inside the hand-over deadline.
        batch_size=100,
        # The dispatcher makes one send() call at a time; the adapter keeps the account's window of
        # submits outstanding within it (its `window` option).
        in_flight=1,
        max_parts=255,
        reports=Reports.PUSH,
        lookup=False,
    )

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        system_id: str,
        password: str,
        *,
        sender: str = "notiflow",
        window: int = 10,
        system_type: str = "",
        enquire_link_seconds: float = 30.0,
        response_seconds: float = 10.0,
        throttle_pause_seconds: float = 1.0,
        receipt_hold_seconds: float = 300.0,
    ):
        super().__init__(name)
        if len(password) > 8 or len(system_id) > 15:
            raise ValueError(f"{name}: SMPP 3.4 takes a system id of at most 15 and a password of at most 8 characters")
        if window < 1:
            raise ValueError(f"{name}: the window is at least 1 submit outstanding")
        self.window = window
        self.sender = sender
        self.throttle_pause_seconds = throttle_pause_seconds
        self.link = Link(
            host, port, system_id, password, on_deliver=self._on_deliver, window=window, system_type=system_type,
            enquire_link_seconds=enquire_link_seconds, response_seconds=response_seconds, name=name,
        )
        self._receipts = _ReceiptHolder(self, receipt_hold_seconds)
        self._references = 0
        self._reference_lock = threading.Lock()

    @classmethod
    def from_account(cls, name: str, account: Any, settings: Settings) -> Self:
        url = urlsplit(account.url or "")
        if url.scheme != "smpp" or not url.hostname or not url.port:
            raise ValueError(f"provider account {name!r}: the url of an SMPP account is smpp://host:port, not {account.url!r}")
        if not account.username or account.password is None:
            raise ValueError(f"provider account {name!r}: an SMPP account needs its system id (username) and password")
        options = dict(account.options or {})
        return cls(
            name, url.hostname, url.port, account.username, account.password.get_secret_value(),
            sender=account.sender or settings.sms_sender,
            window=int(options.get("window", 10)),
            system_type=str(options.get("system_type", "")),
            enquire_link_seconds=float(options.get("enquire_link_seconds", 30)),
            response_seconds=float(options.get("response_seconds", 10)),
            throttle_pause_seconds=float(options.get("throttle_pause_seconds", 1)),
            receipt_hold_seconds=float(options.get("receipt_hold_seconds", 300)),
        )

    # -- connection -----------------------------------------------------------------------------------

    def open(self) -> None:
        self._receipts.start()
        try:
            self.link.open()
        except LinkDown as exc:
            # The reader keeps trying; a send meanwhile is told the provider is unavailable.
            logger.warning("%s: %s", self.name, exc)

    def close(self) -> None:
        self.link.close()
        self._receipts.stop()

    # -- sending --------------------------------------------------------------------------------------

    def send(self, batch: Sequence[OutgoingMessage]) -> list[Acceptance]:
        answers: dict[str, Acceptance] = {}
        plans: list[_Plan] = []
        for message in batch:
            try:
                data = user_data(message.text, message.encoding, message.parts, self._next_reference())
            except ValueError as exc:
                answers[message.ref] = Acceptance(message.ref, None, error=str(exc))
                continue
            plans.append(_Plan(message, data.parts, data.data_coding, data.esm_class))
        if not plans:
            return list(answers.values())
        self.requests += 1
        started = time.perf_counter()
        try:
            self.link.ensure_bound()
        except LinkDown as exc:
            raise ProviderUnavailable(f"{self.name}: {exc}", retry_after=self.throttle_pause_seconds,
                                      answered=list(answers.values())) from exc
        self._submit(plans)
        for _round in range(_PART_ROUNDS):
            partial = [plan for plan in plans if plan.partly_taken and plan.missing]
            if not partial:
                break
            # Parts of these messages are with the SMSC already: their missing parts go again, not the message.
            time.sleep(self.throttle_pause_seconds)
            try:
                self.link.ensure_bound()
            except LinkDown:
                break
            self._submit(partial, only_missing=True)
        later: list[_Plan] = []
        unknown: list[_Plan] = []
        for plan in plans:
            outcome = plan.outcome()
            if isinstance(outcome, Acceptance):
                answers[plan.message.ref] = outcome
            elif outcome == "unknown":
                unknown.append(plan)
            else:
                later.append(plan)
        logger.debug("%s: %d messages, %d PDUs in %.3f s", self.name, len(plans),
                     sum(len(p.parts) for p in plans), time.perf_counter() - started)
        if later or unknown:
            reason = (unknown or later)[0].trouble or "the link dropped"
            raise ProviderUnavailable(
                f"{self.name}: {len(later) + len(unknown)} of {len(batch)} messages not taken ({reason})",
                retry_after=self.throttle_pause_seconds, outcome_unknown=bool(unknown), answered=list(answers.values()),
            )
        return list(answers.values())

    def _submit(self, plans: list[_Plan], *, only_missing: bool = False) -> None:
        """Submit the plans' parts through the window, then wait for every answer. New messages stop at the
        first temporary refusal (throttled: the rest go later) or a dropped link; a message whose first part
        went has all its parts sent."""
        submitted: list[Submitted] = []
        for plan in plans:
            if not only_missing and (self._stop_feeding(submitted) or not self.link.bound):
                break
            for number in (plan.missing if only_missing else range(1, len(plan.parts) + 1)):
                try:
                    plan.results[number] = self.link.submit(**plan.fields(number, self.sender))
                except LinkDown as exc:
                    plan.trouble = str(exc)
                    break
                submitted.append(plan.results[number])
        self.link.wait(submitted)

    @staticmethod
    def _stop_feeding(submitted: list[Submitted]) -> bool:
        return any(s.lost or s.status in TEMPORARY for s in submitted if s.done.is_set())

    def _next_reference(self) -> int:
        with self._reference_lock:
            self._references = (self._references + 1) % 256
            return self._references

    def lookup(self, refs: Sequence[str]) -> list[Acceptance]:
        raise LookupUnsupported(f"{self.name}: SMPP cannot ask the SMSC about a message by our reference")

    def parse_webhook(self, payload: Any) -> list[StatusReport]:
        raise ProviderRejected(f"{self.name}: SMPP receipts arrive on the bind, not by webhook")

    # -- receipts -------------------------------------------------------------------------------------

    def _on_deliver(self, pdu: Any) -> int | None:
        """A deliver_sm from the reader thread: a receipt is held for the report sink; a message from a
        handset (MO) is not notiflow's business and is only acknowledged."""
        if (pdu.esm_class or 0) & 0x3C not in _RECEIPT_TYPES:
            logger.debug("%s: a message from a handset, acknowledged and ignored", self.name)
            return None
        report = receipt_report(pdu)
        if report is None:
            logger.warning("%s: a receipt without a message id or state: %r", self.name, pdu.short_message)
            return None
        self._receipts.add(report)
        return None

    def flush_receipts(self, timeout: float = 5.0) -> bool:
        """Wait until every receipt received so far has been written; whether that happened in `timeout`."""
        return self._receipts.drained(timeout)


def receipt_report(pdu: Any) -> StatusReport | None:
    """The status report a delivery receipt carries: ids and states from its TLVs, else from its text."""
    text = _as_text(pdu.short_message)
    fields = {key.lower(): value for key, value in _RECEIPT_FIELD.findall(text)}
    message_id = _as_text(getattr(pdu, "receipted_message_id", None)).rstrip("\x00") or fields.get("id", "")
    state = MESSAGE_STATES.get(getattr(pdu, "message_state", None) or 0) or fields.get("stat", "").upper()
    if not message_id or state not in RECEIPT_STATES:
        return None
    status, meaning = RECEIPT_STATES[state]
    error = fields.get("err")
    description = meaning if not error or error.strip("0") == "" else f"{meaning} (err:{error})"
    return StatusReport(provider_message_id=message_id, status=status, description=description, at=utcnow())


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode("latin-1") if isinstance(value, bytes | bytearray) else str(value)


@dataclass
class _Plan:
    """One message's parts on their way: what the SMSC answered for each part (numbered from 1)."""

    message: OutgoingMessage
    parts: tuple[bytes, ...]
    data_coding: int
    esm_class: int
    results: dict[int, Submitted] = field(default_factory=dict)
    trouble: str | None = None

    def fields(self, number: int, sender: str) -> dict[str, Any]:
        source = self.message.sender or sender
        alphanumeric = not source.lstrip("+").isdigit()
        return {
            # Alphanumeric senders are TON 5; numbers are sent international (TON 1, NPI E.164).
            "source_addr_ton": 5 if alphanumeric else 1,
            "source_addr_npi": 0 if alphanumeric else 1,
            "source_addr": source.lstrip("+"),
            "dest_addr_ton": 1,
            "dest_addr_npi": 1,
            "destination_addr": self.message.recipient.lstrip("+"),
            "esm_class": self.esm_class,
            "registered_delivery": 1,  # a receipt for every final state
            "data_coding": self.data_coding,
            "short_message": self.parts[number - 1],
        }

    @property
    def taken(self) -> list[int]:
        return sorted(n for n, s in self.results.items() if s.accepted)

    @property
    def missing(self) -> list[int]:
        return [n for n in range(1, len(self.parts) + 1) if n not in self.taken]

    @property
    def partly_taken(self) -> bool:
        """Some parts taken and none refused for good or lost: the missing ones may go again."""
        return bool(self.taken) and not self._refusal() and not any(s.lost for s in self.results.values())

    def _refusal(self, *, temporary: bool = False) -> tuple[int, int] | None:
        """The first part refused for good (with `temporary`: refused at all), and the SMSC's command_status."""
        for number, result in sorted(self.results.items()):
            status = result.status
            if status is not None and status != consts.SMPP_ESME_ROK and (temporary or status not in TEMPORARY):
                return number, status
        return None

    def outcome(self) -> Acceptance | str:
        """An Acceptance (every part taken, or the message cannot be sent), else "unknown" (a part may have
        been taken without our hearing it) or "later" (no part taken: throttled, or never submitted)."""
        ref, total = self.message.ref, len(self.parts)
        taken = self.taken
        if len(taken) == total:
            ids = tuple(self.results[n].message_id or "" for n in range(1, total + 1))
            if not all(ids):
                return Acceptance(ref, None, error="the SMSC took it without a message id: no receipt could be matched to it")
            return Acceptance(ref, ids[0], part_ids=ids if total > 1 else ())
        went = f"; {len(taken)} of its {total} parts had been sent" if taken else ""
        refusal = self._refusal()
        if refusal is not None:
            number, status = refusal
            return Acceptance(ref, None, error=f"{_which(number, total)}{describe(status)}{went}")
        if any(s.lost for s in self.results.values()):
            self.trouble = self.trouble or "the link dropped before the SMSC answered"
            return "unknown"
        if taken:
            # Some parts are with the SMSC and the others could not follow: sending the message again would
            # repeat those parts, so it ends here, saying so.
            number, status = self._refusal(temporary=True) or (self.missing[0], 0)
            reason = describe(status) if status else (self.trouble or "the link dropped")
            return Acceptance(ref, None, error=f"{_which(number, total)}{reason}{went}")
        statuses = [s.status for s in self.results.values() if s.status is not None]
        if statuses and self.trouble is None:
            self.trouble = describe(statuses[0])
        return "later"


def _which(number: int, total: int) -> str:
    return f"part {number} of {total}: " if total > 1 else ""


class _ReceiptHolder:
    """Receipts on their way to the report sink, on a thread of their own so the bind's reader never waits
    for the database; a receipt the sink cannot place yet (its message's id not recorded) is offered again."""

    _ROUND = 0.2  # seconds between rounds: receipts are written in batches, and unplaced ones retried

    def __init__(self, provider: SmppProvider, hold_seconds: float):
        self.provider = provider
        self.hold_seconds = hold_seconds
        self._incoming: queue.SimpleQueue[StatusReport] = queue.SimpleQueue()
        self._held: list[tuple[float, StatusReport]] = []
        self._busy = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopping.clear()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=f"smpp-{self.provider.name}-receipts", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._round()  # what came in last is written before the process lets go
        if self._held:
            logger.warning("%s: %d receipts could not be matched to a message and are dropped, e.g. for id %s",
                           self.provider.name, len(self._held), self._held[0][1].provider_message_id)
            self._held = []

    def add(self, report: StatusReport) -> None:
        self._incoming.put(report)

    def drained(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._busy:
                if self._incoming.empty() and not self._held:
                    return True
            time.sleep(0.02)
        return False

    def _run(self) -> None:
        while not self._stopping.wait(self._ROUND):
            self._round()

    def _round(self) -> None:
        with self._busy:
            now = time.monotonic()
            fresh: list[tuple[float, StatusReport]] = []
            while True:
                try:
                    fresh.append((now, self._incoming.get_nowait()))
                except queue.Empty:
                    break
            waiting = self._held + fresh
            if not waiting:
                return
            sink = self.provider.report_sink
            if sink is None:
                unplaced_ids = {id(r) for _, r in waiting}
            else:
                try:
                    unplaced = sink(self.provider.name, [r for _, r in waiting])
                except Exception:  # noqa: BLE001 (the database may be away for a moment: try again next round)
                    logger.exception("%s: writing %d receipts failed; trying again", self.provider.name, len(waiting))
                    unplaced = [r for _, r in waiting]
                unplaced_ids = {id(r) for r in unplaced}
            kept = [(since, r) for since, r in waiting if id(r) in unplaced_ids]
            self._held = [(since, r) for since, r in kept if now - since < self.hold_seconds]
            if len(self._held) < len(kept):
                logger.warning("%s: %d receipts matched no message for %g s and are dropped, e.g. for id %s",
                               self.provider.name, len(kept) - len(self._held), self.hold_seconds,
                               kept[0][1].provider_message_id)
