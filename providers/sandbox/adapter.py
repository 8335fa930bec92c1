"""Every channel through the sandbox carrier (`python -m providers.sandbox`): the provider to run campaigns with no account."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx

from models.status import Channel, MessageStatus
from providers.base import (
    Acceptance,
    Capabilities,
    HttpProvider,
    OutgoingMessage,
    PhoneCheck,
    ProviderUnavailable,
    Reports,
    StatusReport,
)

logger = logging.getLogger("notiflow.providers.sandbox")

# Carrier status → (our status, what it means).
# Quirks: statuses move only with time since acceptance, so a poll soon after sending still reads
# QUEUED, which ranks below our SENT: the status writer's rule that statuses never move backwards
# keeps it from undoing SENT. UNDELIVERED carries its reason in `description` (wrong number,
# roaming, unverified sender, phone off, offline, memory full, device fault, carrier fault).
# A ref the carrier accepted before is answered with the first id and `duplicate: true`: that is
# how a send whose outcome is unknown is reconciled. Final statuses are also pushed to report_url.
# `POST /messages/lookup` answers the same by ref without sending: a message never received has no id.
# One carrier takes every channel, with the same receipt codes; it checks each recipient against its
# channel (a phone, an e-mail address, a device token or a chat id) and refuses that message alone.
RECEIPT_CODES: dict[str, tuple[MessageStatus, str]] = {
    "QUEUED": (MessageStatus.QUEUED, "in queue"),
    "SENT": (MessageStatus.SENT, "handed to operator"),
    "PENDING": (MessageStatus.PENDING, "being delivered"),
    "DELIVERED": (MessageStatus.DELIVERED, "delivered"),
    "UNDELIVERED": (MessageStatus.UNDELIVERED, "not delivered"),
}


class SandboxCarrier(HttpProvider):
    """The sandbox carrier: every channel through one account, so it stands in for every provider."""

    kind = "sandbox"
    capabilities = Capabilities(
        channels=frozenset(Channel),
        batch_size=1000,
        in_flight=4,
        reports=Reports.PUSH_AND_POLL,
        lookup=True,
        # The sandbox settles in seconds, so ask early; the tail still reaches 24 h like every provider.
        poll_schedule=(2, 5, 10, 30, 60, 300, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600),
    )

    def __init__(
        self,
        base_url: str,
        *,
        name: str = "sandbox",
        report_url: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ):
        super().__init__(name, base_url, timeout=timeout, transport=transport)
        self.report_url = report_url

    def send(self, batch: Sequence[OutgoingMessage]) -> list[Acceptance]:
        mine = list(batch)
        if not mine:
            return []
        body = {
            "messages": [
                {"ref": m.ref, "to": m.recipient, "sender": m.sender, "text": m.text, "channel": m.channel.value}
                for m in mine
            ],
            "report_url": self.report_url,
        }
        response = self._request("POST", "/messages", json=body)
        try:
            results = {item["ref"]: item for item in response.json()["results"]}
        except (ValueError, KeyError, TypeError) as exc:
            # The carrier answered 200, so it may have accepted the batch: reconcile by ref, never resend blind.
            raise ProviderUnavailable(
                f"{self.name}: unreadable answer to POST /messages: {exc}", outcome_unknown=True
            ) from exc
        missing = [m.ref for m in mine if m.ref not in results]
        if missing:
            raise ProviderUnavailable(
                f"{self.name}: answer to POST /messages lacks {len(missing)} refs, e.g. {missing[0]!r}",
                outcome_unknown=True,
            )
        return [
            Acceptance(
                ref=m.ref,
                provider_message_id=results[m.ref].get("id"),
                error=results[m.ref].get("error"),
                duplicate=bool(results[m.ref].get("duplicate", False)),
            )
            for m in mine
        ]

    def lookup(self, refs: Sequence[str]) -> list[Acceptance]:
        found: list[Acceptance] = []
        for start in range(0, len(refs), self.capabilities.batch_size):
            chunk = list(refs[start : start + self.capabilities.batch_size])
            response = self._request("POST", "/messages/lookup", json={"refs": chunk})
            try:
                found += [Acceptance(ref=item["ref"], provider_message_id=item.get("id"), duplicate=True)
                          for item in response.json()["results"]]
            except (ValueError, KeyError, TypeError) as exc:
                raise ProviderUnavailable(f"{self.name}: unreadable answer to POST /messages/lookup: {exc}") from exc
        return found

    def poll(self, provider_message_ids: Sequence[str]) -> list[StatusReport]:
        reports: list[StatusReport] = []
        for start in range(0, len(provider_message_ids), self.capabilities.batch_size):
            chunk = list(provider_message_ids[start : start + self.capabilities.batch_size])
            response = self._request("POST", "/messages/status", json={"ids": chunk})
            try:
                items = response.json()["statuses"]
                # An unknown id (status null) is one the carrier never accepted or forgot in a restart.
                known = [item for item in items if item.get("status") is not None]
                reports.extend(report for report in map(self._report, known) if report is not None)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ProviderUnavailable(f"{self.name}: unreadable answer to POST /messages/status: {exc}") from exc
            if len(known) < len(items):
                logger.warning("%s does not know %d of %d polled ids", self.name, len(items) - len(known), len(items))
        return reports

    def check_phones(self, phones: Sequence[str]) -> list[PhoneCheck]:
        checks: list[PhoneCheck] = []
        for start in range(0, len(phones), self.capabilities.batch_size):
            response = self._request("POST", "/hlr", json={"phones": list(phones[start : start + self.capabilities.batch_size])})
            try:
                checks += [
                    PhoneCheck(
                        phone=item["phone"], status=item["status"], description=item["description"],
                        operator=item.get("operator"), roaming=bool(item["roaming"]), ported=bool(item["ported"]),
                        price=Decimal(item["price"]), at=datetime.fromisoformat(item["checked_at"]),
                    )
                    for item in response.json()["results"]
                ]
            except (ValueError, KeyError, TypeError) as exc:
                raise ProviderUnavailable(f"{self.name}: unreadable phone-check answer ({exc})") from exc
        return checks

    def parse_webhook(self, payload: Any) -> list[StatusReport]:
        """Read a pushed `{"reports": [...]}`; ValueError if it is not one."""
        try:
            reports = [self._report(item) for item in payload["reports"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(
                f'{self.name}: a delivery report is {{"reports": [{{"id", "status", "updated_at", ...}}]}}; '
                f"got {str(payload)[:200]} ({type(exc).__name__}: {exc})"
            ) from exc
        return [report for report in reports if report is not None]

    def _report(self, item: dict[str, Any]) -> StatusReport | None:
        code = item.get("status")
        if code not in RECEIPT_CODES:
            logger.warning("%s sent unknown status %r for message %s", self.name, code, item.get("id"))
            return None
        status, meaning = RECEIPT_CODES[code]
        return StatusReport(
            provider_message_id=item["id"],
            status=status,
            description=item.get("description") or meaning,
            at=datetime.fromisoformat(item["updated_at"]),
            ref=item.get("ref"),
        )
