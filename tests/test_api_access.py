"""The API lets no stranger in: tokens, webhook secrets, signed links, trusted hosts, safe task-file sources.

Driven the way an attacker would, against the app in this process (no server needed); every route's token
check over real HTTP is in test_api_v1.py.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import Session
from typer.testing import CliRunner

from api.app import app
from models.settings import get_settings
from models.signing import signed_link, webhook_secret
from models.tables import ApiToken, Message
from notiflow.cli import app as cli
from tests.test_api import sent_message_and_its_report

@pytest.fixture
def stranger() -> Iterator[TestClient]:
    """A client without a token."""
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


def test_a_token_from_the_cli_opens_the_api_until_it_is_revoked(stranger: TestClient, engine: Any) -> None:
    runner = CliRunner()
    name = f"ci-{uuid.uuid4().hex[:6]}"
    created = runner.invoke(cli, ["token", "create", name])
    assert created.exit_code == 0, created.output
    token = re.search(r"nf_[A-Za-z0-9_-]{40,}", created.output).group(0)  # type: ignore[union-attr]
    headers = {"Authorization": f"Bearer {token}"}
    assert stranger.get("/v1/tasks/999999", headers=headers).status_code == 404  # in, and the task is missing
    with Session(engine) as session:
        stored = session.scalars(select(ApiToken).where(ApiToken.name == name)).one()
    assert token not in stored.token_hash and len(stored.token_hash) == 64  # only the hash is kept
    listed = runner.invoke(cli, ["token", "list", "--json"])
    assert name in listed.output and token not in listed.output
    assert runner.invoke(cli, ["token", "create", name]).exit_code != 0  # one token per name
    assert runner.invoke(cli, ["token", "revoke", name]).exit_code == 0
    assert stranger.get("/v1/tasks/999999", headers=headers).status_code == 401
    assert runner.invoke(cli, ["token", "revoke", name]).exit_code != 0  # nothing left to revoke
    # No other way in: basic auth or a cookie carrying the token do not count.
    assert stranger.get("/v1/tasks/999999", auth=("x", token)).status_code == 401
    with TestClient(app, base_url="http://127.0.0.1", cookies={"token": token, "session": token}) as browser:
        assert browser.get("/v1/tasks/999999").status_code == 401


def test_a_forged_delivery_report_changes_nothing(stranger: TestClient, tmp_path: Path, engine: Any) -> None:
    provider_id, forged = sent_message_and_its_report(tmp_path, engine)
    assert stranger.post("/dlr/sandbox", json=forged).status_code == 401
    assert stranger.post("/dlr/sandbox?secret=guess", json=forged).status_code == 401
    assert stranger.post(f"/dlr/sandbox?secret={webhook_secret('telegram')}", json=forged).status_code == 401
    with Session(engine) as session:
        assert session.scalar(select(Message.status).where(Message.provider_message_id == provider_id)) == "SENT"
    assert stranger.post(f"/dlr/sandbox?secret={webhook_secret('sandbox')}", json=forged).json()["applied"] == 1


def test_the_carrier_is_told_the_webhook_secret_in_its_report_url() -> None:
    from models.status import Channel
    from providers.registry import provider_for

    carrier = provider_for(Channel.SMS)
    assert carrier.report_url.endswith(f"/dlr/sandbox?secret={webhook_secret('sandbox')}")  # type: ignore[attr-defined]


def test_a_host_header_the_api_does_not_know_is_refused(stranger: TestClient, auth: dict[str, str]) -> None:
    assert stranger.get("/health").status_code == 200
    assert stranger.get("/health", headers={"Host": "evil.com"}).status_code == 400
    assert stranger.get("/v1/tasks/999999", headers={"Host": "evil.com", **auth}).status_code == 400


def test_trusted_hosts_are_localhost_and_the_apis_own_addresses_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from api.auth import trusted_hosts

    monkeypatch.setenv("NOTIFLOW_PUBLIC_URL", "https://go.example.com/")
    get_settings.cache_clear()
    try:
        assert {"localhost", "127.0.0.1", "go.example.com"} <= set(trusted_hosts())
        monkeypatch.setenv("NOTIFLOW_TRUSTED_HOSTS", '["api.example.com"]')
        get_settings.cache_clear()
        assert trusted_hosts() == ["api.example.com"]
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_a_cross_site_post_cannot_pause_or_cancel(stranger: TestClient) -> None:
    """What a web page elsewhere can send: a form POST (no custom header) or a preflight that nothing answers."""
    evil = {"Origin": "https://evil.example", "Content-Type": "application/x-www-form-urlencoded"}
    for action in ("pause", "cancel"):
        assert stranger.post(f"/v1/tasks/1/{action}", headers=evil, content=b"a=1").status_code == 401
        preflight = stranger.options(f"/v1/tasks/1/{action}", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization"})
        assert "access-control-allow-origin" not in preflight.headers
        assert preflight.status_code in (401, 405)


@pytest.mark.parametrize("query", [
    "expires=%C2%B2&signature=x",            # a digit to str.isdigit(), not to int()
    f"expires={'9' * 5000}&signature=x",     # past Python's int-from-text limit
    "expires=99999999999&signature=%C3%A9",  # not ASCII: hmac.compare_digest refuses str
])
def test_a_garbage_signature_is_refused_not_a_server_error(stranger: TestClient, query: str) -> None:
    assert stranger.get(f"/v1/tasks/1/report.xlsx?{query}").status_code == 401


def test_a_garbage_webhook_secret_is_refused_not_a_server_error(stranger: TestClient) -> None:
    assert stranger.post("/dlr/sandbox?secret=%C3%A9", json={"reports": []}).status_code == 401


def test_links_in_the_run_artifacts_open_without_a_token_but_only_signed_and_until_they_expire(
    stranger: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = get_settings().reports_dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    name = f"history-{uuid.uuid4().hex[:6]}.xlsx"
    (folder / name).write_bytes(b"PK fake workbook")
    link = signed_link(f"/v1/reports/{name}")
    assert link.startswith(get_settings().api_url)
    path = link.removeprefix(get_settings().api_url.rstrip("/"))
    assert stranger.get(path).status_code == 200
    assert stranger.get(path.split("?")[0]).status_code == 401
    assert stranger.get(path[:-1] + ("0" if path[-1] != "0" else "1")).status_code == 401  # tampered
    other = f"/v1/reports/other.xlsx?{path.split('?')[1]}"
    assert stranger.get(other).status_code == 401  # a signature opens only its own path
    assert stranger.post(path).status_code in (401, 405)
    later = time.time() + get_settings().signed_link_seconds + 60
    monkeypatch.setattr("models.signing.time.time", lambda: later)
    assert stranger.get(path).status_code == 401  # expired


# --- task files: the run form's path or URL -------------------------------------------------------

def _refused(client: TestClient, task_file: str) -> str:
    """POST /v1/tasks with `task_file`; it must be refused before any run starts (a 422 naming the source)."""
    response = client.post("/v1/tasks", json={"task_file": task_file})
    assert response.status_code == 422, response.text
    return str(response.json()["error"]["message"])


def test_a_task_file_outside_the_upload_folder_is_refused_without_telling_whether_it_exists(
    api_client: TestClient, upload_folder: Path, tmp_path: Path
) -> None:
    passwd = _refused(api_client, "/etc/passwd")
    assert "root:" not in passwd and "not in the upload folder" in passwd
    missing = _refused(api_client, "/etc/no-such-file-here")
    assert passwd.replace("/etc/passwd", "X") == missing.replace("/etc/no-such-file-here", "X")
    assert "not in the upload folder" in _refused(api_client, f"{upload_folder}/../../etc/passwd")
    link = tmp_path / "innocent.csv"
    link.symlink_to("/etc/passwd")
    assert "not in the upload folder" in _refused(api_client, str(link))
    assert "not a file in the upload folder" in _refused(api_client, str(tmp_path / "nope.csv"))


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/tasks.xlsx", "http://localhost/tasks.xlsx", "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/tasks.xlsx", "http://[::1]/tasks.xlsx", "http://[::ffff:127.0.0.1]/tasks.xlsx", "http://224.0.0.1/x.csv",
    "file:///etc/passwd", "ftp://example.com/x.csv",
])
def test_a_task_file_url_to_a_private_address_is_refused(api_client: TestClient, url: str) -> None:
    detail = _refused(api_client, url)
    assert "not a public address" in detail or "only http(s) URLs" in detail


def test_credentials_in_a_task_file_url_are_not_echoed(api_client: TestClient) -> None:
    detail = _refused(api_client, "http://admin:hunter2@127.0.0.1:9/tasks.xlsx")
    assert "hunter2" not in detail and "admin" not in detail and "127.0.0.1:9/tasks.xlsx" in detail


def test_the_openapi_schema_needs_a_token_and_describes_bearer_auth(stranger: TestClient, api_client: TestClient) -> None:
    assert stranger.get("/v1/openapi.json").status_code == 401
    assert stranger.get("/openapi.json").status_code == 404
    assert stranger.get("/docs").status_code in (401, 404)
    schema = api_client.get("/v1/openapi.json").json()
    assert json.dumps(schema).count("HTTPBearer") >= 1
