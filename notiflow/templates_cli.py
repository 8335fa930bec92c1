"""`notiflow template …` and `notiflow sender …`: keep the templates and sender names rows refer to."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from models.errors import TemplateInvalid
from models.tables import Sender, Template
from models.template_schema import TemplateIn, TemplateOut, explain

template_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                           help="Stored templates: text, sender, windows and settings per channel.")
sender_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                         help="Sender names registered per channel; templates may use only these.")
out = Console()


def _emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")


def _view(template: Template) -> dict[str, Any]:
    return TemplateOut.model_validate(template).model_dump(mode="json")


def _sender_view(sender: Sender) -> dict[str, Any]:
    return {"id": sender.id, "name": sender.name, "channel": str(sender.channel), "created_at": sender.created_at.isoformat()}


def read_template_file(path: Path) -> TemplateIn:
    """A template from a .yaml/.yml or .json file, checked field by field."""
    if not path.is_file():
        raise TemplateInvalid(f"template file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    try:
        if suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise TemplateInvalid(f"template file {path.name!r} is neither .yaml, .yml nor .json")
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise TemplateInvalid(f"template file {path.name!r} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise TemplateInvalid(f"template file {path.name!r} must hold one mapping with name, windows and channels")
    try:
        return TemplateIn.model_validate(data)
    except ValidationError as exc:
        raise TemplateInvalid(f"template file {path.name!r}:\n{explain(exc)}") from exc


def _print_template(view: dict[str, Any]) -> None:
    out.print(f"[bold]{view['name']}[/] (id {view['id']}), updated {view['updated_at']}")
    out.print(f"windows: {', '.join(view['windows']) or 'the notification task’s'}")
    for position, config in enumerate(view["channels"], start=1):
        settings = ", ".join(f"{key}={value!r}" for key, value in config.items() if key != "channel" and value not in (None, ""))
        out.print(f"  {position}. {config['channel']}: {settings}", markup=False, highlight=False)


@template_app.command("create")
def create(file: Annotated[Path, typer.Argument(help="The template as .yaml, .yml or .json")],
           as_json: Annotated[bool, typer.Option("--json", help="Print the stored template as JSON")] = False) -> None:
    """Store the template FILE describes (name, windows, channels)."""
    from tasks.compose.templates import create_template

    view = _view(create_template(read_template_file(file)))
    if as_json:
        _emit(view)
    else:
        out.print(f"template {view['id']} created: {view['name']}")


@template_app.command("update")
def update(template_id: Annotated[int, typer.Argument(metavar="ID", help="Template id")],
           file: Annotated[Path, typer.Argument(help="The new template as .yaml, .yml or .json")],
           as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Replace template ID with what FILE describes."""
    from tasks.compose.templates import update_template

    view = _view(update_template(template_id, read_template_file(file)))
    if as_json:
        _emit(view)
    else:
        out.print(f"template {view['id']} updated: {view['name']}")


@template_app.command("list")
def list_templates(search: Annotated[Optional[str], typer.Option(help="Full id or any part of the name")] = None,
                   as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Stored templates, oldest first."""
    from tasks.compose.templates import search_templates

    views = [_view(t) for t in search_templates(search)]
    if as_json:
        _emit(views)
        return
    if not views:
        out.print("no templates" + (f" match {search!r}" if search else "; create one with notiflow template create FILE.yaml"))
        return
    table = Table("id", "name", "channels", "windows", "updated")
    for view in views:
        table.add_row(str(view["id"]), view["name"], ", ".join(c["channel"] for c in view["channels"]),
                      ", ".join(view["windows"]), view["updated_at"])
    out.print(table)


@template_app.command("show")
def show(template_id: Annotated[int, typer.Argument(metavar="ID", help="Template id")],
         as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """One template with every channel's settings."""
    from tasks.compose.templates import get_template

    view = _view(get_template(template_id))
    if as_json:
        _emit(view)
    else:
        _print_template(view)


@template_app.command("delete")
def delete(template_id: Annotated[int, typer.Argument(metavar="ID", help="Template id")]) -> None:
    """Delete template ID."""
    from tasks.compose.templates import delete_template

    delete_template(template_id)
    out.print(f"template {template_id} deleted")


@sender_app.command("add")
def add(name: Annotated[str, typer.Argument(help="Sender name as recipients see it")],
        channel: Annotated[str, typer.Option(help="sms, email, push, viber, whatsapp, telegram, vk, ok or chat")]) -> None:
    """Register sender NAME for one channel."""
    from tasks.compose.templates import register_sender

    sender = register_sender(name, channel)
    out.print(f'sender "{sender.name}" registered for {sender.channel}', markup=False, highlight=False)


@sender_app.command("list")
def list_senders_command(channel: Annotated[Optional[str], typer.Option(help="Only this channel's senders")] = None,
                         as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Registered senders by channel."""
    from tasks.compose.templates import list_senders

    views = [_sender_view(s) for s in list_senders(channel)]
    if as_json:
        _emit(views)
        return
    if not views:
        out.print("no senders registered" + (f" for {channel}" if channel else "") + "; add one with notiflow sender add NAME --channel sms")
        return
    table = Table("channel", "name", "registered")
    for view in views:
        table.add_row(view["channel"], view["name"], view["created_at"])
    out.print(table)
