"""Stored templates and registered senders (spec §1): through the task functions, the CLI and the API."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from typer.testing import CliRunner

from api.templates import router
from models.errors import (
    NotiflowError,
    SenderAlreadyRegistered,
    TemplateInvalid,
    TemplateNotFound,
    UnknownSender,
)
from models.template_schema import TemplateIn, explain
from notiflow.templates_cli import sender_app, template_app
from tasks.compose.templates import (
    check_sender,
    create_template,
    delete_template,
    get_template,
    list_senders,
    register_sender,
    search_templates,
    update_template,
)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture
def sender(engine: Any) -> str:
    """A sender name registered for sms and viber."""
    name = unique("ACME")
    register_sender(name, "sms")
    register_sender(name, "viber")
    return name


def template_data(sender: str, name: str = "Autumn promo", **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "windows": ["09:00-13:00", "14:00-20:00"],
        "channels": [
            {"channel": "viber", "text": "Hello {name}", "sender": sender, "image_url": "https://example.com/a.png",
             "button_url": "https://example.com/offer", "button_text": "Open offer", "lifetime_minutes": 60},
            {"channel": "sms", "text": "Hello {name}", "sender": sender},
        ],
    }
    data.update(changes)
    return data


def problems(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        TemplateIn.model_validate(data)
    return explain(caught.value)


# --- validation -------------------------------------------------------------------------------

def test_lifetime_outside_range_names_the_field_and_the_range() -> None:
    data = template_data("A")
    data["channels"][1]["lifetime_minutes"] = 3000
    assert problems(data) == "channels[1].lifetime_minutes (sms): 3000 is outside 1–2880 minutes"


def test_button_text_longer_than_20_characters_is_refused() -> None:
    data = template_data("A")
    data["channels"][0]["button_text"] = "x" * 21
    assert "channels[0].button_text (viber): " in problems(data)
    assert "at most 20 are allowed" in problems(data)


def test_urls_must_be_http_or_https() -> None:
    data = template_data("A")
    data["channels"][0]["image_url"] = "ftp://example.com/a.png"
    assert "channels[0].image_url (viber): 'ftp://example.com/a.png' is not an http(s) URL" in problems(data)


def test_viber_button_needs_both_url_and_text() -> None:
    data = template_data("A")
    del data["channels"][0]["button_url"]
    assert "button_url is missing" in problems(data)


def test_overlapping_windows_are_refused() -> None:
    message = problems(template_data("A", windows=["09:00-13:00", "12:00-20:00"]))
    assert message == "windows: 09:00-13:00 and 12:00-20:00 overlap; give ranges that do not overlap"


def test_window_not_in_hh_mm_form_is_refused() -> None:
    assert problems(template_data("A", windows=["9-20"])) == "windows[0]: '9-20' is not HH:MM-HH:MM (for example 09:00-20:00)"


def test_template_without_channels_is_refused() -> None:
    assert problems(template_data("A", channels=[])) == "channels: is empty; give at least one channel configuration"


def test_unknown_channel_and_unknown_field_say_what_is_allowed() -> None:
    message = problems(template_data("A", channels=[{"channel": "fax", "text": "x"},
                                                    {"channel": "sms", "text": "x", "sender": "A", "colour": "red"}]))
    assert "channels[0]: channel 'fax' is not a template channel; use one of sms, email, push, viber, whatsapp, chat" in message
    assert "channels[1].colour (sms): is not a field here; allowed: text, sender, lifetime_minutes" in message


def test_chat_messenger_must_be_a_listed_one() -> None:
    chat = {"channel": "chat", "chat_id": "42", "bot_id": "welcome", "messenger": "icq", "text": "Hi"}
    message = problems(template_data("A", channels=[chat]))
    assert message.startswith("channels[0].messenger (chat): ")
    assert "'telegram'" in message and "'imessage'" in message


def test_every_channel_of_the_spec_has_its_configuration() -> None:
    channels = [
        {"channel": "sms", "text": "t", "sender": "A", "lifetime_minutes": 10},
        {"channel": "email", "text": "t", "sender": "A", "lifetime_minutes": 10},
        {"channel": "push", "text": "t", "sender": "A", "lifetime_minutes": 10},
        {"channel": "viber", "text": "t", "sender": "A", "image_url": "https://x.org/i.png",
         "button_url": "https://x.org", "button_text": "Go", "lifetime_minutes": 10},
        {"channel": "whatsapp", "sender": "A", "template_name": "order_ready", "template_namespace": "ns-1",
         "template_data": "Anna", "language": "en", "media_url": "https://x.org/m.jpg"},
        {"channel": "chat", "chat_id": "42", "bot_id": "welcome", "messenger": "Telegram", "text": "Hi"},
    ]
    template = TemplateIn.model_validate({"name": "all", "channels": channels})
    assert [c.channel for c in template.channels] == ["sms", "email", "push", "viber", "whatsapp", "chat"]
    assert template.model_dump(mode="json")["channels"][5]["messenger"] == "telegram"


# --- templates and senders on the database -------------------------------------------------------

def test_created_template_keeps_its_channels_in_order(sender: str) -> None:
    stored = create_template(TemplateIn.model_validate(template_data(sender)))
    again = get_template(stored.id)  # type: ignore[arg-type]
    assert [c["channel"] for c in again.channels] == ["viber", "sms"]
    assert again.channels[0]["lifetime_minutes"] == 60
    assert again.channels[1]["lifetime_minutes"] == 1440
    assert again.windows == ["09:00-13:00", "14:00-20:00"]
    assert again.created_at.tzinfo is not None


def test_template_naming_an_unregistered_sender_is_refused(engine: Any) -> None:
    ghost = unique("GHOST")
    with pytest.raises(UnknownSender) as caught:
        create_template(TemplateIn.model_validate(template_data(ghost)))
    assert f'channels[1].sender (sms): sender "{ghost}" is not registered for sms: register it with notiflow sender add {ghost} --channel sms' in str(caught.value)
    assert "channels[0].sender (viber)" in str(caught.value)


def test_check_sender_tells_how_to_register(sender: str) -> None:
    check_sender(sender, "sms")
    with pytest.raises(UnknownSender, match=f'sender "{sender}" is not registered for email: register it with notiflow sender add {sender} --channel email'):
        check_sender(sender, "email")


def test_search_by_full_id_or_part_of_the_name_in_any_case(sender: str) -> None:
    marker = uuid.uuid4().hex[:8]
    first = create_template(TemplateIn.model_validate(template_data(sender, name=f"Осенняя Акция {marker}")))
    second = create_template(TemplateIn.model_validate(template_data(sender, name=f"Winter Sale {marker}")))
    assert [t.id for t in search_templates(f"акция {marker}")] == [first.id]
    assert [t.id for t in search_templates(f"SALE {marker}")] == [second.id]
    assert [t.id for t in search_templates(marker)] == [first.id, second.id]
    assert first.id in [t.id for t in search_templates(str(first.id))]
    assert search_templates(unique("nothing-")) == []
    assert {first.id, second.id} <= {t.id for t in search_templates(None)}


def test_update_replaces_the_template(sender: str) -> None:
    stored = create_template(TemplateIn.model_validate(template_data(sender)))
    changed = template_data(sender, name="Renamed", windows=[])
    changed["channels"] = changed["channels"][1:]
    updated = update_template(stored.id, TemplateIn.model_validate(changed))  # type: ignore[arg-type]
    assert (updated.name, updated.windows, [c["channel"] for c in updated.channels]) == ("Renamed", [], ["sms"])
    assert updated.updated_at > stored.updated_at
    assert get_template(stored.id).name == "Renamed"  # type: ignore[arg-type]


def test_update_of_a_missing_template_says_so(sender: str) -> None:
    with pytest.raises(TemplateNotFound, match="template 987654321 does not exist"):
        update_template(987654321, TemplateIn.model_validate(template_data(sender)))


def test_deleted_template_is_gone(sender: str) -> None:
    stored = create_template(TemplateIn.model_validate(template_data(sender)))
    delete_template(stored.id)  # type: ignore[arg-type]
    with pytest.raises(TemplateNotFound):
        get_template(stored.id)  # type: ignore[arg-type]
    with pytest.raises(TemplateNotFound):
        delete_template(stored.id)  # type: ignore[arg-type]


def test_sender_registered_twice_on_one_channel_is_refused(engine: Any) -> None:
    name = unique("Shop")
    register_sender(name, "sms")
    register_sender(name, "email")  # the same name on another channel is another sender
    with pytest.raises(SenderAlreadyRegistered, match=f'sender "{name}" is registered for sms already'):
        register_sender(name, "sms")
    assert [(s.name, s.channel) for s in list_senders("email") if s.name == name] == [(name, "email")]


def test_sender_on_an_unknown_channel_is_refused(engine: Any) -> None:
    with pytest.raises(NotiflowError, match="channel: "):
        register_sender(unique("Shop"), "pigeon")


# --- CLI ------------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_creates_a_template_from_yaml_and_shows_it(sender: str, tmp_path: Path) -> None:
    path = tmp_path / "promo.yaml"
    path.write_text(yaml.safe_dump(template_data(sender, name=unique("yaml promo "))), encoding="utf-8")
    created = runner.invoke(template_app, ["create", str(path), "--json"])
    assert created.exit_code == 0, created.output
    template_id = json.loads(created.stdout)["id"]
    shown = runner.invoke(template_app, ["show", str(template_id), "--json"])
    assert json.loads(shown.stdout)["channels"][0]["button_text"] == "Open offer"
    assert "viber" in runner.invoke(template_app, ["show", str(template_id)]).stdout


def test_cli_creates_a_template_from_json_and_finds_it(sender: str, tmp_path: Path) -> None:
    name = unique("json promo ")
    path = tmp_path / "promo.json"
    path.write_text(json.dumps(template_data(sender, name=name)), encoding="utf-8")
    created = runner.invoke(template_app, ["create", str(path)])
    assert created.exit_code == 0, created.output
    assert "created" in created.stdout
    found = json.loads(runner.invoke(template_app, ["list", "--search", name.upper(), "--json"]).stdout)
    assert [t["name"] for t in found] == [name]
    listed = runner.invoke(template_app, ["list", "--search", name])
    assert str(found[0]["id"]) in listed.stdout


def test_cli_template_with_a_bad_field_names_it(sender: str, tmp_path: Path) -> None:
    data = template_data(sender)
    data["channels"][1]["lifetime_minutes"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = runner.invoke(template_app, ["create", str(path)])
    assert isinstance(result.exception, TemplateInvalid)
    assert "channels[1].lifetime_minutes (sms): 0 is outside 1–2880 minutes" in str(result.exception)


def test_cli_template_file_that_is_not_yaml_or_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "promo.txt"
    path.write_text("name: x", encoding="utf-8")
    result = runner.invoke(template_app, ["create", str(path)])
    assert isinstance(result.exception, TemplateInvalid)
    assert "neither .yaml, .yml nor .json" in str(result.exception)


def test_cli_deletes_a_template(sender: str) -> None:
    stored = create_template(TemplateIn.model_validate(template_data(sender)))
    result = runner.invoke(template_app, ["delete", str(stored.id)])
    assert result.exit_code == 0 and f"template {stored.id} deleted" in result.stdout
    assert isinstance(runner.invoke(template_app, ["show", str(stored.id)]).exception, TemplateNotFound)


def test_cli_adds_and_lists_senders_and_refuses_a_duplicate(engine: Any) -> None:
    name = unique("Bakery")
    added = runner.invoke(sender_app, ["add", name, "--channel", "sms"])
    assert added.exit_code == 0 and f'sender "{name}" registered for sms' in added.stdout
    again = runner.invoke(sender_app, ["add", name, "--channel", "sms"])
    assert isinstance(again.exception, SenderAlreadyRegistered)
    listed = json.loads(runner.invoke(sender_app, ["list", "--channel", "sms", "--json"]).stdout)
    assert {"name": name, "channel": "sms"}.items() <= next(s for s in listed if s["name"] == name).items()
    assert name in runner.invoke(sender_app, ["list"]).stdout


def test_notiflow_command_prints_an_unregistered_sender_error(engine: Any, tmp_path: Path) -> None:
    """Through `python -m notiflow.cli`, once the template and sender commands are registered there."""
    from notiflow.cli import app

    if "template" not in {group.name for group in app.registered_groups}:
        pytest.skip("notiflow.cli does not register the template commands yet")
    ghost = unique("GHOST")
    path = tmp_path / "promo.json"
    path.write_text(json.dumps(template_data(ghost)), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "notiflow.cli", "template", "create", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert f"register it with notiflow sender add {ghost} --channel sms" in done.stderr


# --- API ------------------------------------------------------------------------------------------

@pytest.fixture
def client(engine: Any) -> TestClient:
    from api import errors

    app = FastAPI()
    errors.install(app)  # the API's error shape, as api/app.py answers
    app.include_router(router)
    return TestClient(app)


def test_api_creates_reads_searches_updates_and_deletes_a_template(client: TestClient, sender: str) -> None:
    name = unique("api promo ")
    created = client.post("/templates", json=template_data(sender, name=name))
    assert created.status_code == 201, created.text
    template_id = created.json()["id"]
    assert client.get(f"/templates/{template_id}").json()["channels"][1]["sender"] == sender
    assert [t["id"] for t in client.get("/templates", params={"search": name.upper()}).json()] == [template_id]
    assert template_id in [t["id"] for t in client.get("/templates", params={"search": str(template_id)}).json()]
    replaced = client.put(f"/templates/{template_id}", json=template_data(sender, name=name + " v2"))
    assert replaced.status_code == 200 and replaced.json()["name"] == name + " v2"
    assert client.delete(f"/templates/{template_id}").status_code == 204
    missing = client.get(f"/templates/{template_id}")
    assert missing.status_code == 404 and f"template {template_id} does not exist" in missing.json()["error"]["message"]
    assert client.delete(f"/templates/{template_id}").status_code == 404
    assert client.put(f"/templates/{template_id}", json=template_data(sender)).status_code == 404


def test_api_invalid_template_is_a_422_naming_the_field(client: TestClient, sender: str) -> None:
    data = template_data(sender)
    data["channels"][0]["button_text"] = "a very long button caption"
    response = client.post("/templates", json=data)
    assert response.status_code == 422
    [problem] = response.json()["error"]["details"]
    assert problem["field"] == "body.channels[0].viber.button_text"
    assert "at most 20 are allowed" in problem["message"]


def test_api_unregistered_sender_is_a_422_telling_how_to_register(client: TestClient, engine: Any) -> None:
    ghost = unique("GHOST")
    response = client.post("/templates", json=template_data(ghost))
    assert response.status_code == 422
    assert f"register it with notiflow sender add {ghost} --channel sms" in response.json()["error"]["message"]


def test_api_registers_and_lists_senders_and_refuses_a_duplicate(client: TestClient, engine: Any) -> None:
    name = unique("Cafe")
    assert client.post("/senders", json={"name": name, "channel": "viber"}).status_code == 201
    duplicate = client.post("/senders", json={"name": name, "channel": "viber"})
    assert duplicate.status_code == 409 and "registered for viber already" in duplicate.json()["error"]["message"]
    assert name in [s["name"] for s in client.get("/senders", params={"channel": "viber"}).json()]
    assert name not in [s["name"] for s in client.get("/senders", params={"channel": "sms"}).json()]
    assert client.post("/senders", json={"name": name, "channel": "pigeon"}).status_code == 422


@pytest.mark.e2e
def test_templates_over_http_on_the_running_api(stack: Any, auth: dict[str, str]) -> None:
    """Create, search, read, replace and delete a template through the real API server."""
    import httpx

    base = stack.api_url
    sender = f"HTTP{uuid.uuid4().hex[:6]}"
    assert httpx.post(f"{base}/v1/senders", json={"name": sender, "channel": "sms"}, headers=auth).status_code in (200, 201)
    body = {"name": f"http template {sender}", "channels": [{"channel": "sms", "text": "Hi {name}", "sender": sender}]}
    created = httpx.post(f"{base}/v1/templates", json=body, headers=auth)
    assert created.status_code in (200, 201), created.text
    template_id = created.json()["id"]
    found = httpx.get(f"{base}/v1/templates", params={"search": sender.lower()}, headers=auth).json()
    assert [t["id"] for t in found] == [template_id]
    body["channels"][0]["text"] = "Hello {name}"
    assert httpx.put(f"{base}/v1/templates/{template_id}", json=body, headers=auth).json()["channels"][0]["text"] == "Hello {name}"
    refused = httpx.post(f"{base}/v1/templates", json={**body, "channels": [{"channel": "sms", "text": "x", "sender": "NOBODY"}]}, headers=auth)
    assert refused.status_code == 422 and "notiflow sender add NOBODY --channel sms" in refused.text
    assert httpx.delete(f"{base}/v1/templates/{template_id}", headers=auth).status_code in (200, 204)
    assert httpx.get(f"{base}/v1/templates/{template_id}", headers=auth).status_code == 404
