"""Push through Firebase Cloud Messaging's HTTP v1 API (kind "fcm"): `projects/{project}/messages:send`, one
message a request, with an OAuth2 access token from the project's service account.

The account: `password` is the service account's key file (the whole JSON Firebase gives: project_id,
client_email, private_key, token_uri), `url` the FCM endpoint (default https://fcm.googleapis.com),
`options` below. The access token is obtained with a JWT signed by the key (RS256, `cryptography`), kept
and renewed a minute before it expires; a send answered 401 renews it once.

The recipient is the device's registration token (a `fcm:` prefix, as task files may write it, is dropped).
A message is a notification (title: its sender, body: its text) and, with the `data structure` param (a JSON
object), carries that data too (values as strings, as FCM requires); with no text it is a data message only.

Send answers (`{"error": {"code", "message", "status", "details": [{"@type": "…FcmError", "errorCode": …}]}}`):

| errorCode (HTTP)              | becomes                       | reason recorded                                   |
|-------------------------------|-------------------------------|---------------------------------------------------|
| — (200, `name`)               | SENT (id: the message name)   | accepted by the provider                          |
| UNREGISTERED (404)            | refused → ERROR               | the device token is no longer registered          |
| INVALID_ARGUMENT (400)        | refused → ERROR               | FCM's message (a malformed token or payload)      |
| SENDER_ID_MISMATCH (403)      | refused → ERROR               | the token belongs to another Firebase project     |
| THIRD_PARTY_AUTH_ERROR (401)  | refused → ERROR               | APNs or Web Push refused the project's credentials |
| QUOTA_EXCEEDED (429)          | ProviderUnavailable (Retry-After, else options.retry_after) | —                   |
| UNAVAILABLE (503), INTERNAL (500) | ProviderUnavailable (Retry-After when given) | —                                  |
| UNAUTHENTICATED (401)         | token renewed, sent again once; then login refused | —                            |
| PERMISSION_DENIED (403)       | login refused                 | —                                                 |

Quirks: FCM tells the sender nothing after accepting (no delivery receipts over this API), so an accepted
message ends SENT. Limits: 600,000 messages a minute per project (10,000 a second) and a 4,096-byte message
payload, declared as data; a larger payload is refused before any request.
"""
from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Self

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import Field

from models.settings import Settings
from models.status import Channel
from providers.account_options import FIX, AccountOptions, ProviderAccountError, endpoint, read_options, secret
from providers.base import Acceptance, Capabilities, OutgoingMessage, ProviderRejected, ProviderUnavailable, Reports
from providers.per_message import Outcome, PerMessageProvider, as_mapping, json_object

DEFAULT_URL = "https://fcm.googleapis.com"
DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
PAYLOAD_LIMIT = 4096
TOKEN_LIFETIME = 3600
# A token is renewed this many seconds before it expires, so a request never carries one that lapses in flight.
RENEW_BEFORE = 60

REFUSALS: dict[str, str] = {
    "UNREGISTERED": "the device token is no longer registered (the app was uninstalled, or the token expired)",
    "SENDER_ID_MISMATCH": "the device token belongs to another Firebase project",
    "THIRD_PARTY_AUTH_ERROR": "APNs or Web Push refused the project's credentials for this device",
}
RETRIED = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"})


class FcmOptions(AccountOptions):
    """Options of an fcm account."""

    token_url: str | None = Field(default=None, description="OAuth2 token endpoint; default the key file's token_uri.")
    in_flight: int = Field(default=16, ge=1, le=64, description="Requests at once.")
    per_second: float = Field(default=10_000.0, gt=0, description="Messages a second (FCM's quota: 600,000 a minute).")
    retry_after: float = Field(default=60.0, gt=0, le=3600, description="Seconds to hold the project when throttled with no Retry-After.")
    timeout: float = Field(default=10.0, gt=0, le=60)


@dataclass(frozen=True)
class ServiceAccount:
    """What the key file gives: who signs, with which key, for which project."""

    project_id: str
    client_email: str
    private_key: rsa.RSAPrivateKey
    token_uri: str

    @classmethod
    def from_key_file(cls, name: str, text: str) -> ServiceAccount:
        try:
            key = json.loads(text)
            private_key = serialization.load_pem_private_key(str(key["private_key"]).encode(), password=None)
            fields = str(key["project_id"]), str(key["client_email"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderAccountError(
                f"the fcm provider account {name!r} has a password that is not a service account key file "
                f"({type(exc).__name__}): paste the whole JSON Firebase gives (Project settings, Service accounts). {FIX}"
            ) from None
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise ProviderAccountError(f"the fcm provider account {name!r}: the key file's private_key is not an RSA key. {FIX}")
        return cls(fields[0], fields[1], private_key, str(key.get("token_uri") or DEFAULT_TOKEN_URL))

    def assertion(self, audience: str, now: float) -> str:
        """The signed JWT that asks Google's token endpoint for an access token (RFC 7523, RS256)."""
        header = {"alg": "RS256", "typ": "JWT"}
        claims = {"iss": self.client_email, "scope": SCOPE, "aud": audience, "iat": int(now), "exp": int(now) + TOKEN_LIFETIME}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}".encode()
        signature = self.private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input.decode()}.{_b64(signature)}"


class FcmProject(PerMessageProvider):
    """One Firebase project, sending as its service account."""

    kind = "fcm"
    capabilities = Capabilities(
        channels=frozenset({Channel.PUSH}),
        batch_size=500,
        in_flight=1,  # the adapter spreads a batch over its own requests
        per_second=10_000.0,
        max_body_bytes=PAYLOAD_LIMIT,
        reports=Reports.NONE,
        lookup=False,
    )

    def __init__(self, name: str, service_account: ServiceAccount, *, base_url: str = DEFAULT_URL,
                 options: FcmOptions | None = None, sender: str = "", transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.time):
        options = options or FcmOptions()
        super().__init__(name, base_url, requests_in_flight=options.in_flight, timeout=options.timeout, transport=transport)
        self.service_account = service_account
        self.options = options
        self.sender = sender
        self._token_url = options.token_url or service_account.token_uri
        self._clock = clock
        self._token: tuple[str, float] | None = None  # the access token and when it expires
        self._token_lock = threading.Lock()
        self.capabilities = replace(type(self).capabilities, per_second=options.per_second)  # type: ignore[misc]

    @classmethod
    def from_account(cls, name: str, account: Any, settings: Settings) -> Self:
        options = read_options(cls.kind, name, FcmOptions, account.options)
        key_file = secret(cls.kind, name, account, "the service account key file's JSON (Firebase: Project settings, Service accounts)")
        return cls(name, ServiceAccount.from_key_file(name, key_file), base_url=endpoint(cls.kind, name, account, DEFAULT_URL),
                   options=options, sender=account.sender or "")

    # --- the access token --------------------------------------------------------------------------------

    def access_token(self, *, renew: bool = False) -> str:
        """The kept access token, obtained (or renewed) when it is missing, about to expire, or refused."""
        with self._token_lock:
            now = self._clock()
            if renew or self._token is None or self._token[1] - RENEW_BEFORE <= now:
                self._token = self._fetch_token(now)
            return self._token[0]

    def _fetch_token(self, now: float) -> tuple[str, float]:
        response = self._exchange("POST", self._token_url, data={
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": self.service_account.assertion(self._token_url, now)})
        answer = json_object(response)
        if response.status_code == 429 or response.status_code >= 500:
            raise ProviderUnavailable(f"{self.name}: Google's token endpoint answered HTTP {response.status_code}")
        if response.status_code != 200 or not answer.get("access_token"):
            said = answer.get("error_description") or answer.get("error") or response.text[:200]
            raise ProviderRejected(f"{self.name}: Google refused the service account {self.service_account.client_email} "
                                   f"(HTTP {response.status_code}: {said}); check its key file in the account's password")
        return str(answer["access_token"]), now + float(answer.get("expires_in") or TOKEN_LIFETIME)

    # --- sending ---------------------------------------------------------------------------------------------

    def _refusal(self, message: OutgoingMessage) -> str | None:
        if not _device(message):
            return "no device registration token: give the message's `push registration id`"
        data = message.params.get("data structure")
        if data is not None and not isinstance(data, Mapping):
            return "`data structure` must be a JSON object for a push message (FCM's data is key → value)"
        if not message.text.strip() and not data:
            return "the text is empty and there is no `data structure`: FCM sends no empty message"
        size = len(json.dumps(self._content(message), ensure_ascii=False).encode())
        if size > PAYLOAD_LIMIT:
            return f"the push payload is {size:,} bytes, more than the {PAYLOAD_LIMIT:,} FCM takes"
        return super()._refusal(message)

    def _send_one(self, message: OutgoingMessage) -> Outcome:
        body = {"message": {"token": _device(message), **self._content(message)}}
        path = f"/v1/projects/{self.service_account.project_id}/messages:send"
        try:
            response = self._exchange("POST", path, headers={"Authorization": f"Bearer {self.access_token()}"}, json=body)
            if response.status_code == 401 and _error_code(response) != "THIRD_PARTY_AUTH_ERROR":
                # Revoked or lapsed early: one renewal, then the answer stands.
                response = self._exchange("POST", path, headers={"Authorization": f"Bearer {self.access_token(renew=True)}"},
                                          json=body)
        except ProviderUnavailable as fault:
            return Outcome(fault=fault)
        except ProviderRejected as refused:
            return Outcome(refused_login=refused)
        return self._outcome(message, response)

    def _outcome(self, message: OutgoingMessage, response: httpx.Response) -> Outcome:
        answer = json_object(response)
        if response.status_code == 200 and answer.get("name"):
            return Outcome(Acceptance(ref=message.ref, provider_message_id=str(answer["name"])))
        code = _error_code(response)
        error = as_mapping(answer.get("error"))
        said = f"{code} (HTTP {response.status_code}): {error.get('message') or response.text[:200]}"
        if code in RETRIED or response.status_code == 429 or response.status_code >= 500:
            wait = response.headers.get("Retry-After")
            throttled = code == "QUOTA_EXCEEDED" or response.status_code == 429
            return Outcome(fault=ProviderUnavailable(
                f"{self.name}: FCM could not take it now: {said}",
                retry_after=float(wait) if wait and wait.isdigit() else (self.options.retry_after if throttled else None)))
        if code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            return Outcome(refused_login=ProviderRejected(
                f"{self.name}: FCM refused the service account {self.service_account.client_email}: {said}; it needs the "
                "Firebase Cloud Messaging API enabled and the cloudmessaging.messages.create permission"))
        reason = REFUSALS.get(code) or f"FCM refused it: {said}"
        return Outcome(Acceptance(ref=message.ref, provider_message_id=None, error=reason[:300]))

    def _content(self, message: OutgoingMessage) -> dict[str, Any]:
        content: dict[str, Any] = {}
        if message.text.strip():
            notification = {"body": message.text}
            title = message.params.get("subject") or message.sender or self.sender
            if title:
                notification["title"] = str(title)
            content["notification"] = notification
        data = message.params.get("data structure")
        if isinstance(data, Mapping) and data:
            content["data"] = {str(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in data.items()}
        return content


def _device(message: OutgoingMessage) -> str:
    return message.recipient.strip().removeprefix("fcm:")


def _error_code(response: httpx.Response) -> str:
    """FCM's errorCode from the FcmError detail, else the error's canonical status."""
    error = json_object(response).get("error")
    if not isinstance(error, Mapping):
        return ""
    for detail in error.get("details") or []:
        if isinstance(detail, Mapping) and str(detail.get("@type", "")).endswith("FcmError") and detail.get("errorCode"):
            return str(detail["errorCode"])
    return str(error.get("status") or "")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
