"""The `notiflow` command: run and check notification tasks, and run the stack they need."""
from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

import notiflow  # noqa: F401  (sets Prefect's environment before Prefect is imported)
from models.errors import NotiflowError
from models.params import NotificationTaskParams
from models.settings import get_settings
from notiflow.templates_cli import sender_app, template_app

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Multichannel notification campaigns on Prefect.")
out = Console()
err = Console(stderr=True, soft_wrap=True)  # an error line is never cut by the terminal width
app.add_typer(template_app, name="template", help="Templates: create, list, search, show, update, delete.")
app.add_typer(sender_app, name="sender", help="Registered sender names per channel.")
token_app = typer.Typer(no_args_is_help=True)
app.add_typer(token_app, name="token", help="API tokens: create (shown once), list, revoke.")
provider_app = typer.Typer(no_args_is_help=True)
app.add_typer(provider_app, name="provider", help="Provider accounts (Prefect blocks): add, list, remove.")
callbacks_app = typer.Typer(no_args_is_help=True)
app.add_typer(callbacks_app, name="callbacks", help="Status callbacks to the rows' callback url: the key that signs them.")


def _emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="The task file: .xlsx, .xls or .csv")],
    name: Annotated[Optional[str], typer.Option(help="Task name (default: the file name)")] = None,
    window: Annotated[Optional[list[str]], typer.Option("--window", help='Sending window "HH:MM-HH:MM", repeatable (default 09:00-20:00)')] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate, plan and report; send nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
    timeout: Annotated[Optional[float], typer.Option(help="Give up following after this many seconds")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the run through its waits (windows, delivery reports) to its end")] = False,
) -> None:
    """Create a notification task from FILE, run it as a notification-task deployment run, follow it
    until it ends or starts waiting for a later window or delivery reports (--wait: until it ends)."""
    from deployments.runs import start_run, ui_url
    from notiflow.follow import follow, summary
    from tasks.intake.task_file import uploaded
    from tasks.schedule.windows import parse_windows

    if not file.is_file():
        raise NotiflowError(f"task file {str(file)!r} does not exist")
    windows = window or []
    try:
        if windows:
            parse_windows(windows)
    except ValueError as exc:
        raise NotiflowError(f"--window: {exc}") from exc
    # The server reads task files from its upload folder only; the run keeps its own copy once it has started.
    with uploaded(file) as task_file:
        params = NotificationTaskParams(task_file=str(task_file), name=name or "", windows=windows, dry_run=dry_run)
        flow_run = start_run(params)
        if not as_json:
            out.print(f"flow run [bold]{flow_run.name}[/]: {ui_url(flow_run.id)}")
        finished = follow(flow_run.id, console=None if as_json else err, timeout=timeout, stop_when_waiting=not wait)
    result = summary(finished)
    if as_json:
        _emit(result)
    else:
        _print_summary(result)
    if result["state"] not in ("COMPLETED", "SCHEDULED"):
        raise typer.Exit(code=1)


@app.command()
def check(
    file: Annotated[Path, typer.Argument(help="The task file: .xlsx, .xls or .csv")],
    now: Annotated[Optional[str], typer.Option(help="Plan as if it were this time (ISO 8601)")] = None,
    window: Annotated[Optional[list[str]], typer.Option("--window", help='Sending window "HH:MM-HH:MM", repeatable')] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print every row's plan as JSON")] = False,
) -> None:
    """Validate and plan FILE without storing or sending anything."""
    from tasks.intake.check import check_file

    moment = None
    if now:
        try:
            moment = datetime.fromisoformat(now.replace("Z", "+00:00"))
        except ValueError as exc:
            raise NotiflowError(f"--now {now!r} is not an ISO 8601 time such as 2026-11-26T09:00:00+03:00") from exc
        if moment.tzinfo is None:
            from zoneinfo import ZoneInfo

            moment = moment.replace(tzinfo=ZoneInfo(get_settings().timezone))
    try:
        result = check_file(file, now=moment, windows=window or ())
    except ValueError as exc:
        raise NotiflowError(str(exc)) from exc
    if as_json:
        _emit(result)
        return
    out.print(f"{result['accepted']} rows accepted, {result['rejected']} rejected")
    if result["unknown_columns"]:
        out.print(f"unknown columns (ignored): {', '.join(result['unknown_columns'])}")
    for channel, fee in result["estimated_fee"].items():
        out.print(f"estimated fee, {channel}: {fee}")
    for row in result["rows"]:
        for error in row["errors"]:
            out.print(f"  {error['message']}")


@app.command("templates-xlsx")
def templates_xlsx(
    folder: Annotated[Path, typer.Argument(help="Folder to write the six Excel task templates into")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Write the downloadable Excel task templates (SMS, sponsored, chat sessions, WhatsApp, universal, full list)."""
    from tasks.intake.task_templates import TASK_TEMPLATES, write_templates

    paths = write_templates(folder)
    if as_json:
        _emit([{"title": t.title, "path": str(p)} for t, p in zip(TASK_TEMPLATES, paths)])
        return
    table = Table("template", "file", "columns")
    for template, path in zip(TASK_TEMPLATES, paths):
        table.add_row(template.title, str(path), str(len(template.columns)))
    out.print(table)
    out.print("Fill one in (the second sheet describes every column), then: notiflow check FILE")


@app.command()
def segments(
    text: Annotated[str, typer.Argument(help="The SMS text")],
    smart: Annotated[Optional[bool], typer.Option("--smart/--no-smart", help="Replace Unicode look-alikes with GSM characters first (default: NOTIFLOW_SMART_ENCODING)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """How TEXT is encoded and into how many SMS parts it splits."""
    from tasks.compose.segment import segment

    result = segment(text, smart=get_settings().smart_encoding if smart is None else smart)
    data = {"encoding": result.encoding, "parts": result.part_count, "units": result.units}
    if smart or (smart is None and get_settings().smart_encoding):
        data["text"] = "".join(result.parts)
    if as_json:
        _emit(data)
    else:
        out.print(f"{data['encoding']}, {data['units']} units, {data['parts']} part(s)")


@app.command()
def server() -> None:
    """Run the Prefect server, sandbox carrier and API (reusing any already up) and serve the deployments."""
    from notiflow.stack import serve_forever

    serve_forever()


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Serve the HTTP API alone (the database from NOTIFLOW_DATABASE_URL); `notiflow server` serves it with the rest."""
    from api.serve import serve_api

    serve_api(host, port, log_level)


@app.command()
def demo(rows: Annotated[int, typer.Option(help="Rows in the sample task file")] = 1000) -> None:
    """Start the stack in the background, run a sample notification task end to end, print what happened."""
    from deployments.runs import start_run, ui_url
    from notiflow.follow import follow, rejections, summary
    from notiflow.sample import write_sample
    from notiflow.stack import ensure_background_server

    settings = get_settings()
    with err.status("starting the Prefect server, sandbox carrier and API (first start takes ~20 s)…"):
        started = ensure_background_server()
    out.print("notiflow server " + ("started in the background" if started else "already running: reusing it"))
    sample = write_sample(settings.uploads_dir.resolve() / "demo" / "sample-task.xlsx", rows=rows)
    out.print(f"sample task file: {sample} ({rows} rows, some wrong on purpose)")
    # An all-day window so the demo finishes at any hour; real campaigns default to 09:00-20:00 local time.
    params = NotificationTaskParams(task_file=str(sample), name="demo campaign", windows=["00:00-24:00"])
    flow_run = start_run(params)
    out.print(f"flow run [bold]{flow_run.name}[/]: {ui_url(flow_run.id)}")
    finished = follow(flow_run.id, console=err, timeout=600)
    result = summary(finished)
    _print_summary(result)
    if result["task_id"] is not None:
        from notiflow.follow import chain_statuses

        chains = Table(title="Rows with a fallback chain: each channel's messages by status (the report's Fallback sheet has every row)")
        for column in ("channel", "status", "messages"):
            chains.add_column(column)
        for (channel, status), number in chain_statuses(result["task_id"]).items():
            chains.add_row(channel, status, str(number))
        if chains.row_count:
            out.print(chains)
        table = Table(title="Rejected rows", show_lines=False)
        for column in ("row", "column", "reason"):
            table.add_column(column)
        for rejection in rejections(result["task_id"]):
            table.add_row(str(rejection.row), rejection.column, rejection.reason)
        out.print(table)
    out.print(f"\nOpen the run in the Prefect UI: {result['ui_url']}")
    out.print("The Prefect server and sandbox carrier keep running in the background; stop them with [bold]make stop[/].")
    if result["state"] != "COMPLETED":
        raise typer.Exit(code=1)


@app.command()
def pause(task: Annotated[str, typer.Argument(help="Task id or name")]) -> None:
    """Suspend a task's run: unsent messages are held until you resume or cancel."""
    from deployments.control import pause as pause_task

    out.print(pause_task(task))


@app.command()
def resume(task: Annotated[str, typer.Argument(help="Task id or name")]) -> None:
    """Resume a paused task: it continues where it stopped, sending nothing twice."""
    from deployments.control import resume as resume_task

    out.print(resume_task(task))


@app.command()
def cancel(task: Annotated[str, typer.Argument(help="Task id or name")]) -> None:
    """Cancel a task: every message not yet handed to a provider becomes CANCELED."""
    from deployments.control import cancel as cancel_task

    out.print(cancel_task(task))


@app.command("tasks")
def list_tasks(
    state: Annotated[Optional[str], typer.Option(help="created, scheduled, in progress, paused, completed, cancelled, failed")] = None,
    category: Annotated[Optional[str], typer.Option(help='The list\'s category: "in progress", created (with scheduled), paused, completed (every ended task)')] = None,
    search: Annotated[Optional[str], typer.Option(help="The task id or part of the task name")] = None,
    since: Annotated[Optional[str], typer.Option(help="Created on or after this date (YYYY-MM-DD)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The task list: search by name or id and creation date, filter by state or category."""
    from deployments.runs import ui_url
    from tasks.reporting.task_list import TaskCategory, TaskFilter, parse_day, task_list

    try:
        chosen = TaskCategory(category) if category else None
    except ValueError as exc:
        raise NotiflowError(f"--category {category!r}: use one of {', '.join(repr(c.value) for c in TaskCategory)}") from exc
    rows = [row | {"ui_url": ui_url(row["flow_run_id"]) if row["flow_run_id"] else None}
            for row in task_list(TaskFilter(state=state, category=chosen, search=search, since=parse_day(since, "--since")))]
    if as_json:
        _emit(rows)
        return
    table = Table(title="notification tasks")
    for column in ("id", "name", "state", "created (UTC)", "accepted", "rejected", "sent", "delivered"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row["id"]), row["name"], row["state"], row["created_at"][:16].replace("T", " "),
                      str(row["accepted"]), str(row["rejected"]), str(row["sent"]), str(row["delivered"]))
    out.print(table)
    for row in rows:
        if row["ui_url"]:
            out.print(f"task {row['id']}: {row['ui_url']}", soft_wrap=True)


@app.command()
def history(
    since: Annotated[Optional[str], typer.Option(help="First day, YYYY-MM-DD (default: first of this month)")] = None,
    until: Annotated[Optional[str], typer.Option(help="Last day, inclusive (default: today)")] = None,
    channel: Annotated[Optional[str], typer.Option(help="Only this channel")] = None,
    status: Annotated[Optional[str], typer.Option(help="Only this status, e.g. DELIVERED")] = None,
    group: Annotated[str, typer.Option(help='Only this group: all, created, pending, delivered, undelivered, canceled, error, delayed, '
                                            '"created, optional" (required channels not sent yet), "omitted, optional" (failed, another channel used)')] = "all",
    phone: Annotated[Optional[str], typer.Option(help="Only numbers containing these digits")] = None,
    task: Annotated[Optional[int], typer.Option(help="Only this notification task")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Export the message history to Excel in the reports folder."""
    from pydantic import ValidationError

    from models.params import HistoryFilter
    from tasks.reporting.history import export_history

    try:
        filters = HistoryFilter(since=since, until=until, channel=channel, status=status.upper() if status else None,
                                group=group.lower(), phone=phone, task_id=task)
        result = export_history(filters)
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise NotiflowError(problems) from exc
    except ValueError as exc:
        raise NotiflowError(str(exc)) from exc
    data = {"path": result.path, "messages": result.messages, "since": result.since.isoformat(), "until": result.until.isoformat()}
    if as_json:
        _emit(data)
    else:
        out.print(f"{result.messages} messages from {result.since} to {result.until}: {result.path}")


@app.command()
def reports(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The reports folder: task reports and history exports, newest first."""
    from tasks.reporting.history import list_reports

    files = list_reports()
    if as_json:
        _emit(files)
        return
    table = Table(title=f"reports in {get_settings().reports_dir.resolve()}")
    for column in ("file", "size", "modified (UTC)"):
        table.add_column(column)
    for item in files:
        table.add_row(item["name"], f"{item['bytes'] / 1024:.0f} KiB", item["modified"][:19].replace("T", " "))
    out.print(table)


@app.command()
def hlr(
    phones: Annotated[list[str], typer.Argument(help="Phone numbers, or one task file whose phone column to check")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Check whether numbers are live and reachable (HLR); results are stored for `notiflow checks`."""
    from tasks.delivery.hlr import check_phones, phones_from

    result = check_phones(phones_from(phones))
    if as_json:
        _emit({"checked": [{k: v for k, v in r.items() if k != "flow_run_id"} for r in result.checked],
               "invalid": result.invalid, "total_price": result.total_price})
        return
    table = Table(title=f"{len(result.checked)} numbers checked, total price {result.total_price}")
    for column in ("phone", "status", "operator", "roaming", "ported", "price"):
        table.add_column(column)
    for r in result.checked:
        table.add_row(r["phone"], r["status"], r["operator"] or "", "yes" if r["roaming"] else "", "yes" if r["ported"] else "", str(r["price"]))
    out.print(table)
    for bad in result.invalid:
        err.print(f"not checked: {bad['reason']}")


@app.command()
def checks(
    phone: Annotated[Optional[str], typer.Option(help="Part of the number")] = None,
    since: Annotated[Optional[str], typer.Option(help="First day, YYYY-MM-DD")] = None,
    until: Annotated[Optional[str], typer.Option(help="Last day, inclusive")] = None,
    export: Annotated[bool, typer.Option("--export", help="Write them to Excel in the reports folder")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Stored phone checks, by phone fragment and period; --export writes the spec's Excel file."""
    from datetime import date

    from tasks.delivery.hlr import export_checks, find_checks

    try:
        first, last = (date.fromisoformat(since) if since else None), (date.fromisoformat(until) if until else None)
    except ValueError as exc:
        raise NotiflowError(f"--since/--until take dates like 2026-11-01 ({exc})") from exc
    found = find_checks(phone, first, last)
    path = str(export_checks(found)) if export else None
    if as_json:
        _emit({"checks": [{"id": c.id, "phone": c.phone, "status": c.status, "status_description": c.status_description,
                           "operator": c.operator, "roaming": c.roaming, "ported": c.ported, "price": str(c.price),
                           "checked_at": c.created_at.isoformat()} for c in found], "export": path})
        return
    table = Table(title=f"{len(found)} phone checks")
    for column in ("id", "phone", "status", "description", "checked (UTC)", "price"):
        table.add_column(column)
    for c in found:
        table.add_row(str(c.id), c.phone, c.status, c.status_description, c.created_at.isoformat()[:19].replace("T", " "), str(c.price))
    out.print(table)
    if path:
        out.print(f"exported: {path}")


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="What the token is for, e.g. ci or grafana")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create an API token; it is printed once and only its hash is stored."""
    from models.api_tokens import create_token

    token = create_token(name)
    if as_json:
        _emit({"name": name, "token": token})
        return
    out.print(f"token [bold]{name}[/] (shown once, keep it now): {token}", soft_wrap=True)
    out.print("send it as the header  Authorization: Bearer TOKEN")


@token_app.command("list")
def token_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The API tokens by name (never the tokens themselves)."""
    from models.api_tokens import list_tokens

    rows = [{"name": t.name, "created_at": t.created_at.isoformat(), "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None}
            for t in list_tokens()]
    if as_json:
        _emit(rows)
        return
    table = Table("name", "created (UTC)", "revoked (UTC)", title="API tokens")
    for row in rows:
        table.add_row(row["name"], row["created_at"][:19].replace("T", " "), (row["revoked_at"] or "")[:19].replace("T", " "))
    out.print(table)


@token_app.command("revoke")
def token_revoke(name: Annotated[str, typer.Argument(help="The token's name")]) -> None:
    """Revoke an API token: requests carrying it are refused from now on."""
    from models.api_tokens import revoke_token

    revoke_token(name)
    out.print(f"token {name} revoked")


@provider_app.command("add")
def provider_add(
    name: Annotated[str, typer.Argument(help="The instance name routes and webhooks use, e.g. kannel-main")],
    kind: Annotated[str, typer.Option(help="The adapter: sandbox, kannel, smpp, smtp, http")],
    url: Annotated[Optional[str], typer.Option(help="Endpoint, e.g. http://host:13013, smpp://host:2775, smtp://host:587")] = None,  # noqa: UP007 (typer)
    username: Annotated[Optional[str], typer.Option()] = None,  # noqa: UP007
    password_env: Annotated[Optional[str], typer.Option(help="Read the password from this environment variable (never from the command line)")] = None,  # noqa: UP007
    sender: Annotated[Optional[str], typer.Option(help="Default sender when a message names none")] = None,  # noqa: UP007
    option: Annotated[Optional[list[str]], typer.Option(help="An option of the adapter's kind, KEY=VALUE (repeatable)")] = None,  # noqa: UP007
) -> None:
    """Save a provider account as a Prefect block (it then shows in the UI's Blocks page), replacing one of that name."""
    import os

    from providers.registry import KINDS, ProviderAccount

    if kind not in KINDS:
        raise typer.BadParameter(f"{kind!r} is not a provider kind; known kinds: {', '.join(sorted(KINDS))}", param_hint="--kind")
    password = None
    if password_env:
        password = os.environ.get(password_env)
        if password is None:
            raise typer.BadParameter(f"the environment variable {password_env} is not set", param_hint="--password-env")
    options: dict[str, Any] = {}
    for item in option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--option")
        options[key] = value
    ProviderAccount.register_type_and_schema()
    ProviderAccount(kind=kind, url=url, username=username, password=password, sender=sender, options=options).save(name, overwrite=True)
    out.print(f"provider account [bold]{name}[/] ({kind}) saved; route channels to it with NOTIFLOW_ROUTES, e.g. "
              f"""'{{"sms": ["{name}"]}}'""", soft_wrap=True)


@provider_app.command("list")
def provider_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The provider accounts and the channels routed to each (passwords never shown)."""
    from prefect.client.orchestration import get_client

    from providers.registry import SANDBOX, ProviderAccount, instance_for
    from models.status import Channel

    with get_client(sync_client=True) as client:
        try:
            documents = client.read_block_documents_by_type(ProviderAccount.get_block_type_slug())
        except Exception:  # noqa: BLE001 (the block type is registered by the first `provider add` or `notiflow server`)
            documents = []
    routed: dict[str, list[str]] = {}
    for channel in Channel:
        routed.setdefault(instance_for(channel), []).append(channel.value)
    rows = [{"name": SANDBOX, "kind": "sandbox", "url": get_settings().sandbox_url, "channels": routed.get(SANDBOX, [])}]
    rows += [{"name": d.name, "kind": d.data.get("kind"), "url": d.data.get("url"), "channels": routed.get(d.name or "", [])}
             for d in documents if d.name]
    if as_json:
        _emit(rows)
        return
    table = Table("name", "kind", "url", "channels routed to it", title="provider accounts")
    for row in rows:
        table.add_row(row["name"], row["kind"] or "", row["url"] or "", ", ".join(row["channels"]))
    out.print(table)


@provider_app.command("remove")
def provider_remove(name: Annotated[str, typer.Argument(help="The account's name")]) -> None:
    """Delete a provider account block."""
    from prefect.exceptions import ObjectNotFound

    from providers.registry import ProviderAccount, load_account

    load_account(name)  # says clearly when there is none
    try:
        ProviderAccount.delete(name)
    except ObjectNotFound as exc:
        raise NotiflowError(f"no provider account {name!r}") from exc
    out.print(f"provider account {name} removed")


@callbacks_app.command("secret")
def callbacks_secret() -> None:
    """Print the key status callbacks are signed with, for the receivers to check X-Notiflow-Signature."""
    from tasks.delivery.callbacks import signing_key

    sys.stdout.write(signing_key().decode() + "\n")


@app.command()
def stop() -> None:
    """Stop the background server `make demo` started (and only what it started)."""
    from notiflow.stack import stop_background_server

    out.print(stop_background_server())


def _print_summary(result: dict[str, Any]) -> None:
    table = Table(title=f"notification task {result['task_id']}: {result['state_name']}")
    table.add_column("status")
    table.add_column("messages", justify="right")
    for status, number in result["counts"].items():
        table.add_row(status, str(number))
    table.add_row("rejected rows", str(result["rejected"]))
    out.print(table)
    if result.get("state_message") and result["state"] != "COMPLETED":
        out.print(f"state: {result['state_name']} — {result['state_message']}")
    if result["report"]:
        out.print(f"report: {result['report']}")
    out.print(f"flow run: {result['ui_url']}")


def main() -> None:
    try:
        app()
    except NotiflowError as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
