"""Where a notification task's file may come from, and the task's private copy of it.

A path must lie inside the upload folder (symlinks and `..` resolved first); a URL must reach public
addresses only, checked after DNS resolution, on every redirect and on the connection itself, within a
size limit and an overall deadline. Errors name the source without its credentials and never quote
what was fetched, so an error tells a stranger nothing about the server's files or network.
"""
from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit, urlunsplit

import httpx

from models.errors import HostUnresolved, TaskFileError, UrlRefused
from models.settings import get_settings
from tasks.addresses import check_address, resolve

MAX_REDIRECTS = 5
# A server that sends nothing for this long fails the download even before the overall deadline.
STALL_SECONDS = 10.0
TASK_FILE_SUFFIXES = (".xlsx", ".xls", ".csv")
_SETTING = "NOTIFLOW_TASK_FILE_PRIVATE_NETWORKS"


def is_url(source: str) -> bool:
    return source.strip().lower().startswith(("http://", "https://"))


def redact(url: str) -> str:
    """`url` without the user name and password written in it, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unreadable URL)"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def check_source(source: str) -> None:
    """Refuse a source the flow would refuse, before a run is started for it (the API's form check)."""
    if is_url(source):
        _check_address(source, redact(source))
    else:
        local_path(source)


def local_path(source: str) -> Path:
    """The file `source` names, which must be inside the upload folder."""
    if "://" in source:
        raise TaskFileError(f"task file {redact(source)}: only http(s) URLs and files of the upload folder are allowed")
    folder = get_settings().uploads_dir.resolve()
    path = Path(source).expanduser()
    resolved = (path if path.is_absolute() else folder / path).resolve()
    # The same answer whether or not the file exists: the error must not tell which files the server has.
    if not resolved.is_relative_to(folder):
        raise TaskFileError(
            f"task file {source!r} is not in the upload folder {folder}; put the file there "
            "(`notiflow run FILE` copies it for you) or give an http(s) URL"
        )
    if not resolved.is_file():
        raise TaskFileError(f"task file {source!r} is not a file in the upload folder {folder}; check the name")
    return resolved


def store(source: str, uid: str) -> Path:
    """Copy the task file to the files folder under the task's uid, readable by this user only."""
    files = get_settings().files_dir.resolve()
    files.mkdir(parents=True, exist_ok=True, mode=0o700)
    if is_url(source):
        target = files / f"{uid}{_suffix(urlsplit(source).path) or '.xlsx'}"
        download(source, target)
        return target
    path = local_path(source)
    target = files / f"{uid}{path.suffix.lower()}"
    with path.open("rb") as original, _private_file(target) as copy:
        shutil.copyfileobj(original, copy)
    return target


def discard_stored_file(path: str) -> None:
    """Delete a task's stored copy once its rows are in the database, unless NOTIFLOW_KEEP_TASK_FILES is set."""
    if not get_settings().keep_task_files:
        Path(path).unlink(missing_ok=True)


@contextmanager
def uploaded(path: Path) -> Iterator[Path]:
    """`path` as a file of the upload folder: copied there for the block (a private copy), unless it is there already."""
    folder = get_settings().uploads_dir.resolve()
    resolved = path.resolve()
    if resolved.is_relative_to(folder):
        yield resolved
        return
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    holder = folder / uuid.uuid4().hex
    holder.mkdir(mode=0o700)
    copy = holder / path.name
    with path.open("rb") as original, _private_file(copy) as out:
        shutil.copyfileobj(original, out)
    yield copy
    # Only after the block ends normally: a run still starting may yet need the copy.
    shutil.rmtree(holder, ignore_errors=True)


def download(url: str, target: Path) -> None:
    """Download `url` into `target` (0600), following at most MAX_REDIRECTS redirects, each checked anew."""
    settings = get_settings()
    shown = redact(url)
    deadline = time.monotonic() + settings.task_file_download_seconds
    current = url
    try:
        # trust_env=False: no proxy from the environment, so the connection checked is the server's own.
        with httpx.Client(follow_redirects=False, trust_env=False) as client:
            for _hop in range(MAX_REDIRECTS + 1):
                _check_address(current, shown)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise httpx.TimeoutException("deadline")
                with client.stream("GET", current, timeout=min(remaining, STALL_SECONDS)) as response:
                    _check_peer(response, shown)
                    if response.is_redirect and "location" in response.headers:
                        current = str(response.url.join(response.headers["location"]))
                        continue
                    if response.status_code != 200:
                        raise TaskFileError(f"task file {shown}: the server answered HTTP {response.status_code}; check the URL")
                    _save(response, target, deadline, shown)
                    return
    except httpx.TimeoutException as exc:
        target.unlink(missing_ok=True)
        raise TaskFileError(
            f"task file {shown} was not downloaded within {settings.task_file_download_seconds:g} s "
            "(NOTIFLOW_TASK_FILE_DOWNLOAD_SECONDS); try a faster server or upload the file"
        ) from exc
    except httpx.HTTPError as exc:
        target.unlink(missing_ok=True)
        # The exception's text may hold the URL with its credentials: only its kind is named.
        raise TaskFileError(f"task file {shown} could not be downloaded ({type(exc).__name__}); check the URL") from exc
    except TaskFileError:
        target.unlink(missing_ok=True)
        raise
    raise TaskFileError(f"task file {shown} redirects more than {MAX_REDIRECTS} times; give the file's final URL")


def _save(response: httpx.Response, target: Path, deadline: float, shown: str) -> None:
    limit = get_settings().task_file_max_bytes
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TaskFileError(_too_big(shown, limit))
    written = 0
    with _private_file(target) as out:
        for block in response.iter_bytes():
            written += len(block)
            if written > limit:
                raise TaskFileError(_too_big(shown, limit))
            if time.monotonic() > deadline:
                raise httpx.TimeoutException("deadline")
            out.write(block)


def _too_big(shown: str, limit: int) -> str:
    return f"task file {shown} is larger than {limit:,} bytes (NOTIFLOW_TASK_FILE_MAX_BYTES); split it or raise the limit"


def _check_address(url: str, shown: str) -> None:
    """The URL is http(s) and every address its host resolves to may be reached."""
    try:
        resolve(url, get_settings().task_file_private_networks, _SETTING)
    except HostUnresolved as exc:
        raise TaskFileError(f"task file {shown}: {exc}; check the URL") from exc
    except UrlRefused as exc:
        raise TaskFileError(f"task file {shown}: {exc}") from exc


def _check_peer(response: httpx.Response, shown: str) -> None:
    """The address actually connected to may be reached (DNS may answer differently the second time)."""
    stream = response.extensions.get("network_stream")
    peer = stream.get_extra_info("server_addr") if stream is not None else None
    if peer:
        try:
            check_address(peer[0], response.url.host, get_settings().task_file_private_networks, _SETTING)
        except UrlRefused as exc:
            raise TaskFileError(f"task file {shown}: {exc}") from exc


def _suffix(path: str) -> str:
    suffix = Path(path).suffix.lower()
    return suffix if suffix in TASK_FILE_SUFFIXES else ""


@contextmanager
def _private_file(target: Path) -> Iterator[BinaryIO]:
    """A new file only this user can read; removed again if writing it fails."""
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as out:
            yield out
    except BaseException:
        target.unlink(missing_ok=True)
        raise
