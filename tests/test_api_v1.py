"""The HTTP API v1 over real HTTP, against `notiflow api` servers: every route's token check, the error shape,
body and rate limits, API tokens, the access log, and schemathesis against the OpenAPI schema."""
from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from api.app import app
from models.api_tokens import create_token
from models.signing import webhook_secret
from tests.api_server import ApiServer, start_api_server

# What strangers may reach: short links and e-mail open pixels (recipients), health (monitors); provider
# webhooks need their own secret instead of a token.
PUBLIC = {"/health", "/s/{code}", "/o/{token}.gif"}
WEBHOOKS = "/dlr/"


@pytest.fixture(scope="module")
def tight() -> Iterator[ApiServer]:
    """A server with small limits: 2 KiB JSON bodies, 4 KiB uploads, one request a second with a burst of three."""
    server = start_api_server(NOTIFLOW_API_MAX_JSON_BYTES="2048", NOTIFLOW_API_MAX_UPLOAD_BYTES="4096",
                              NOTIFLOW_API_RATE_PER_SECOND="1", NOTIFLOW_API_RATE_BURST="3")
    yield server
    server.stop()


def new_token(server: ApiServer, auth: dict[str, str]) -> tuple[str, str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    created = httpx.post(f"{server.url}/v1/tokens", json={"name": name}, headers=auth)
    assert created.status_code == 201, created.text
    return name, created.json()["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_every_v1_route_wants_a_token_and_refuses_a_revoked_one(api_server: ApiServer, auth: dict[str, str]) -> None:
    _name, revoked = new_token(api_server, auth)
    assert httpx.delete(f"{api_server.url}/v1/tokens/{_name}", headers=auth).status_code == 204
    routes = list(iter_route_contexts(app.routes))
    assert all(isinstance(r.route, APIRoute) for r in routes), "every route must be an APIRoute, where this test sees it"
    checked = 0
    with httpx.Client(base_url=api_server.url, timeout=30) as client:
        for route in routes:
            assert route.path is not None and route.methods
            path = re.sub(r"\{[^}]+\}", "1", route.path)
            for method in route.methods:
                answer = client.request(method, path)
                if route.path in PUBLIC:
                    assert answer.status_code != 401, f"{method} {route.path} is public"
                elif route.path.startswith(WEBHOOKS):
                    assert answer.status_code == 401 and answer.json()["error"]["code"] == "webhook_secret_wrong", route.path
                else:
                    assert route.path.startswith("/v1/"), f"{route.path}: every route for API clients is under /v1"
                    old = client.request(method, path, headers=bearer(revoked))
                    wrong = client.request(method, path, headers=bearer("nf_wrong"))
                    assert (answer.status_code, old.status_code, wrong.status_code) == (401, 401, 401), f"{method} {route.path}"
                    assert answer.headers["www-authenticate"] == "Bearer"
                    assert answer.json()["error"]["code"] == "unauthorized"
                checked += 1
    assert checked >= 30


def test_errors_are_json_with_a_code_a_message_and_field_details(api_server: ApiServer, auth: dict[str, str]) -> None:
    with httpx.Client(base_url=api_server.url, headers=auth, timeout=30) as client:
        unknown = client.get("/v1/no-such-thing")
        assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")
        assert "openapi.json" in unknown.json()["error"]["message"]
        wrong_method = client.delete("/v1/tasks")
        assert (wrong_method.status_code, wrong_method.json()["error"]["code"]) == (405, "method_not_allowed")
        invalid = client.get("/v1/tasks", params={"limit": 0, "category": "someday"})
        assert invalid.status_code == 422 and invalid.json()["error"]["code"] == "invalid_request"
        assert {d["field"] for d in invalid.json()["error"]["details"]} == {"query.limit", "query.category"}
        missing = client.get("/v1/tasks/2147483647")
        assert missing.json() == {"error": {"code": "not_found", "details": [],
                                            "message": "notification task 2147483647 does not exist; GET /v1/tasks lists them"}}
        too_big = client.get("/v1/tasks/2147483648")  # past the id column: a 422, not a database error
        assert too_big.status_code == 422
        nul = client.get("/v1/tasks", params={"search": "a\x00b"})
        assert nul.status_code == 422 and "control character" in nul.json()["error"]["message"]
        # A body field's value is never echoed in the details (a rejected body may carry a secret).
        secret = client.post("/v1/tokens", json={"name": "hunter2 \x01"})
        assert secret.status_code == 422 and "hunter2" not in secret.text


def test_a_server_error_says_nothing_of_the_internals() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from api import errors

    broken = FastAPI()
    errors.install(broken)

    @broken.get("/boom")
    def boom() -> None:
        raise RuntimeError("password=hunter2 at /srv/notiflow/models/db.py")

    with TestClient(broken, raise_server_exceptions=False) as client:
        answer = client.get("/boom")
    assert answer.status_code == 500 and answer.json()["error"]["code"] == "internal_error"
    assert "hunter2" not in answer.text and "db.py" not in answer.text


def test_a_body_declared_too_large_is_refused_before_it_is_read(tight: ApiServer, auth: dict[str, str]) -> None:
    host, port = tight.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        # Says 1 GB and sends none of it: the answer comes at once, without waiting for the body.
        connection.sendall(f"POST /v1/reports HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth['Authorization']}\r\n"
                           "Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n".encode())
        answer = b""
        while chunk := connection.recv(4096):  # the server closes the connection after its answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413") and b'"body_too_large"' in answer


def test_a_body_sent_without_its_size_stops_at_the_limit(tight: ApiServer, auth: dict[str, str]) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"phone": "'
        for _ in range(10):
            yield b"1" * 1000
        yield b'"}'

    # A generator body goes out chunked, with no Content-Length: only counting the bytes catches it.
    answer = httpx.post(f"{tight.url}/v1/reports", content=chunks(), headers={**auth, "Content-Type": "application/json"}, timeout=30)
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "body_too_large"
    upload = httpx.post(f"{tight.url}/v1/tasks", files={"file": ("big.csv", b"phone,text\n" + b"79161234567,hi\n" * 400)},
                        headers=bearer(create_token(f"up-{uuid.uuid4().hex[:8]}")), timeout=30)
    assert upload.status_code == 413 and "NOTIFLOW_API_MAX_UPLOAD_BYTES" in upload.json()["error"]["message"]


def test_a_token_past_its_rate_is_answered_429_with_retry_after(tight: ApiServer, auth: dict[str, str]) -> None:
    token, other = create_token(f"rate-{uuid.uuid4().hex[:8]}"), create_token(f"rate-{uuid.uuid4().hex[:8]}")
    with httpx.Client(base_url=tight.url, headers=bearer(token), timeout=30) as client:
        answers = [client.get("/v1/task-templates") for _ in range(6)]
        someone_else = client.get("/v1/task-templates", headers=bearer(other))
    limited = [a for a in answers if a.status_code == 429]
    assert answers[0].status_code == 200 and limited, [a.status_code for a in answers]
    assert int(limited[0].headers["retry-after"]) >= 1 and limited[0].json()["error"]["code"] == "rate_limited"
    assert someone_else.status_code == 200, "each token has its own bucket"
    deadline = time.monotonic() + 10
    while client_answer(tight, token) == 429:
        assert time.monotonic() < deadline, "the bucket never refilled"
        time.sleep(0.3)


def client_answer(server: ApiServer, token: str) -> int:
    return httpx.get(f"{server.url}/v1/task-templates", headers=bearer(token), timeout=30).status_code


def test_tokens_are_listed_without_their_secrets_and_revoked_by_name(api_server: ApiServer, auth: dict[str, str]) -> None:
    name, token = new_token(api_server, auth)
    assert token.startswith("nf_")
    with httpx.Client(base_url=api_server.url, timeout=30) as client:
        assert client.get("/v1/templates", headers=bearer(token)).status_code == 200
        listed = client.get("/v1/tokens", headers=auth)
        mine = [t for t in listed.json() if t["name"] == name]
        assert mine and set(mine[0]) == {"name", "created_at", "last_used_at", "revoked_at"}
        assert mine[0]["last_used_at"] is not None and mine[0]["revoked_at"] is None
        assert token not in listed.text and "hash" not in listed.text
        again = client.post("/v1/tokens", json={"name": name}, headers=auth)
        assert again.status_code == 409 and again.json()["error"]["code"] == "token_name_taken"
        assert client.delete(f"/v1/tokens/{name}", headers=auth).status_code == 204
        assert client.get("/v1/templates", headers=bearer(token)).status_code == 401
        assert client.delete(f"/v1/tokens/{name}", headers=auth).status_code == 404
        revoked = [t for t in client.get("/v1/tokens", headers=auth).json() if t["name"] == name]
        assert revoked[0]["revoked_at"] is not None


def test_the_access_log_never_shows_a_secret(api_server: ApiServer, auth: dict[str, str]) -> None:
    secret = webhook_secret("sandbox")
    marker = uuid.uuid4().hex
    httpx.post(f"{api_server.url}/dlr/sandbox?secret={secret}&m={marker}", json={"reports": []}, timeout=30)
    httpx.get(f"{api_server.url}/v1/reports/x.xlsx?expires=1&signature=deadbeef{marker}", timeout=30)
    deadline = time.monotonic() + 10
    while marker not in (log := api_server.log.read_text(errors="replace")):
        assert time.monotonic() < deadline, "the access log shows no request"
        time.sleep(0.2)
    assert "secret=***" in log and secret not in log and f"deadbeef{marker}" not in log
    assert auth["Authorization"].split()[1] not in log


def test_the_schema_documents_every_route(api_server: ApiServer, auth: dict[str, str]) -> None:
    schema = httpx.get(f"{api_server.url}/v1/openapi.json", headers=auth, timeout=30).json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            assert operation.get("summary"), f"{where} has no summary"
            if path.startswith("/v1/"):
                assert operation["security"] == [{"HTTPBearer": []}], where
                assert {"401", "429", "500"} <= set(operation["responses"]), where
                assert operation["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse"), where
            if "422" in operation["responses"]:
                assert operation["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse"), where
    assert "multipart/form-data" in schema["paths"]["/v1/tasks"]["post"]["requestBody"]["content"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]


# Operations that start flow runs or ask a provider: without a Prefect server and a carrier they answer the
# documented 503, and with them every generated call would start a real run; their own tests cover them.
NOT_FUZZED = {("POST", "/v1/tasks"), ("POST", "/v1/tasks/{task_id}/pause"), ("POST", "/v1/tasks/{task_id}/resume"),
              ("POST", "/v1/tasks/{task_id}/cancel"), ("POST", "/v1/checks")}


def test_schemathesis_finds_no_server_error(api_server: ApiServer, auth: dict[str, str]) -> None:
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings

    schema = schemathesis.openapi.from_url(f"{api_server.url}/v1/openapi.json", headers=auth, timeout=30)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in NOT_FUZZED:
            continue
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def call(case: Any) -> None:
            response = case.call(base_url=api_server.url, headers=auth, timeout=30)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} → {response.status_code}: {response.text[:200]}")

        call()
    assert operations >= 20
    assert failures == [], "\n".join(failures[:10])
