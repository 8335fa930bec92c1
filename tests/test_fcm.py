"""FCM HTTP v1 adapter: the service account's signed token request, the token kept and renewed, notification and
data messages, and FCM's per-token errors (respx stands in for Google's token endpoint and fcm.googleapis.com)."""
from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import SecretStr

from models.settings import get_settings
from models.status import Channel
from providers.account_options import ProviderAccountError
from providers.base import OutgoingMessage, ProviderRejected, ProviderUnavailable, Reports
from providers.fcm import SCOPE, FcmOptions, FcmProject, ServiceAccount
from providers.registry import ProviderAccount, adapter_class

TOKEN_URL = "https://oauth2.googleapis.com/token"
SEND = "https://fcm.googleapis.com/v1/projects/notiflow-test/messages:send"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY_FILE = json.dumps({
    "type": "service_account", "project_id": "notiflow-test", "private_key_id": "k1",
    "private_key": KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode(),
    "client_email": "sender@notiflow-test.iam.gserviceaccount.com", "token_uri": TOKEN_URL,
})


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def message(ref: str, token: str = "fcm:dGVzdC10b2tlbg", text: str = "Your order is ready", **params: Any) -> OutgoingMessage:
    return OutgoingMessage(ref=ref, recipient=token, text=text, sender="Shop", channel=Channel.PUSH, params=params)


def fcm_error(status: int, code: str, words: str, canonical: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": status, "message": words, "status": canonical, "details": [
        {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}]}})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def project(clock: Clock) -> Iterator[FcmProject]:
    with FcmProject("push", ServiceAccount.from_key_file("push", KEY_FILE), options=FcmOptions(in_flight=2, retry_after=30),
                    clock=clock) as instance:
        yield instance


@pytest.fixture
def google() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        tokens = iter(f"ya29.token-{n}" for n in range(1, 100))
        router.post(TOKEN_URL, name="token").mock(
            side_effect=lambda request: httpx.Response(200, json={"access_token": next(tokens), "expires_in": 3599, "token_type": "Bearer"}))
        yield router


def _decoded(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_token_request_is_a_jwt_signed_by_the_service_accounts_key(project: FcmProject, google: respx.MockRouter,
                                                                    clock: Clock) -> None:
    google.post(SEND).mock(return_value=httpx.Response(200, json={"name": "projects/notiflow-test/messages/0:1"}))
    project.send([message("r1")])
    form = parse_qs(google["token"].calls.last.request.content.decode())
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    header, claims, signature = form["assertion"][0].split(".")
    assert json.loads(_decoded(header)) == {"alg": "RS256", "typ": "JWT"}
    assert json.loads(_decoded(claims)) == {"iss": "sender@notiflow-test.iam.gserviceaccount.com", "scope": SCOPE,
                                            "aud": TOKEN_URL, "iat": int(clock.now), "exp": int(clock.now) + 3600}
    KEY.public_key().verify(_decoded(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())


def test_notification_and_data_message_is_the_documented_request(project: FcmProject, google: respx.MockRouter) -> None:
    route = google.post(SEND).mock(return_value=httpx.Response(200, json={"name": "projects/notiflow-test/messages/0:150041"}))
    [acceptance] = project.send([message("r1", **{"data structure": {"order": 1001, "kind": "ready"}})])
    assert acceptance.provider_message_id == "projects/notiflow-test/messages/0:150041"
    request = route.calls.last.request
    assert request.headers["Authorization"] == "Bearer ya29.token-1"
    assert json.loads(request.content) == {"message": {
        "token": "dGVzdC10b2tlbg", "notification": {"body": "Your order is ready", "title": "Shop"},
        "data": {"order": "1001", "kind": "ready"}}}


def test_data_only_message_has_no_notification(project: FcmProject, google: respx.MockRouter) -> None:
    route = google.post(SEND).mock(return_value=httpx.Response(200, json={"name": "n"}))
    project.send([message("r1", text="", **{"data structure": {"sync": "now"}})])
    assert json.loads(route.calls.last.request.content) == {"message": {"token": "dGVzdC10b2tlbg", "data": {"sync": "now"}}}


def test_token_is_kept_then_renewed_before_it_expires(project: FcmProject, google: respx.MockRouter, clock: Clock) -> None:
    route = google.post(SEND).mock(return_value=httpx.Response(200, json={"name": "n"}))
    project.send([message("a"), message("b")])
    clock.now += 3000
    project.send([message("c")])
    assert google["token"].call_count == 1
    clock.now += 560  # 3,560 s: within a minute of its expiry
    project.send([message("d")])
    assert google["token"].call_count == 2
    assert route.calls.last.request.headers["Authorization"] == "Bearer ya29.token-2"


def test_unauthenticated_send_renews_the_token_once(project: FcmProject, google: respx.MockRouter) -> None:
    answers = iter([fcm_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.", "UNAUTHENTICATED"),
                    httpx.Response(200, json={"name": "n2"})])
    google.post(SEND).mock(side_effect=lambda request: next(answers))
    [acceptance] = project.send([message("a")])
    assert acceptance.provider_message_id == "n2" and google["token"].call_count == 2


def test_unregistered_and_invalid_tokens_end_that_attempt_with_the_reason(project: FcmProject, google: respx.MockRouter) -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        token = json.loads(request.content)["message"]["token"]
        return {"gone": fcm_error(404, "UNREGISTERED", "Requested entity was not found.", "NOT_FOUND"),
                "bad": fcm_error(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token",
                                 "INVALID_ARGUMENT"),
                "ok": httpx.Response(200, json={"name": "n"})}[token]
    google.post(SEND).mock(side_effect=reply)
    answers = {a.ref: a for a in project.send([message("a", "gone"), message("b", "bad"), message("c", "ok")])}
    assert answers["a"].error == "the device token is no longer registered (the app was uninstalled, or the token expired)"
    assert answers["b"].error == ("FCM refused it: INVALID_ARGUMENT (HTTP 400): The registration token is not a valid FCM "
                                  "registration token")
    assert answers["c"].provider_message_id == "n"


def test_quota_exceeded_holds_the_project_for_retry_after(project: FcmProject, google: respx.MockRouter) -> None:
    google.post(SEND).mock(return_value=httpx.Response(429, headers={"Retry-After": "42"}, json={"error": {
        "code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED",
        "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "QUOTA_EXCEEDED"}]}}))
    with pytest.raises(ProviderUnavailable) as raised:
        project.send([message("a")])
    assert raised.value.retry_after == 42


def test_refused_service_account_is_a_refused_login(project: FcmProject, google: respx.MockRouter) -> None:
    google.post(TOKEN_URL, name="token").mock(return_value=httpx.Response(400, json={
        "error": "invalid_grant", "error_description": "Invalid JWT Signature."}))
    with pytest.raises(ProviderRejected, match="Invalid JWT Signature"):
        project.send([message("a")])


def test_payload_over_4096_bytes_is_refused_before_any_request(project: FcmProject, google: respx.MockRouter) -> None:
    route = google.post(SEND).mock(return_value=httpx.Response(200, json={"name": "n"}))
    [acceptance] = project.send([message("a", text="я" * 2100)])
    assert not route.called
    assert acceptance.error is not None and "more than the 4,096 FCM takes" in acceptance.error


def test_account_reads_the_key_file_from_its_password() -> None:
    account = ProviderAccount(kind="fcm", password=SecretStr(KEY_FILE))
    project = adapter_class("fcm").from_account("push", account, get_settings())  # type: ignore[attr-defined]
    assert isinstance(project, FcmProject) and project.service_account.project_id == "notiflow-test"
    assert project.capabilities.reports is Reports.NONE and project.capabilities.channels == frozenset({Channel.PUSH})
    project.close()
    with pytest.raises(ProviderAccountError, match="not a service account key file"):
        FcmProject.from_account("push", ProviderAccount(kind="fcm", password=SecretStr("{}")), get_settings())
