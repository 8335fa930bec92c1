"""Run a real Kannel (Debian's bearerbox, smsbox and the fake SMSC of kannel-extras) on free local ports.

A test module imports the fixture by name: `from tests.kannel_fixtures import kannel`. The boxes are
installed by scripts/ensure-kannel.sh (`make test` runs it). The fake SMSC takes every message and
reports each one delivered (an SMSC ack, then a delivery report: one pair per message, whatever
its part count); it prints every part it gets, which is how a test sees what went out.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_to_bytes

import httpx
import pytest

BEARERBOX = "/usr/sbin/bearerbox"
SMSBOX = "/usr/sbin/smsbox"
FAKESMSC = "/usr/lib/kannel/test/fakesmsc"

# A part as fakesmsc prints it: `Got message N: <from to text|data|ucs-2 payload>` or `<from to udh UDH data payload>`.
_PART = re.compile(r"Got message \d+: <(\S+) (\S+) (text|data|ucs-2|udh) (.*)>$")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Part:
    """One SMS part the fake SMSC got: its receiver, UDH (empty for a single SMS) and payload bytes."""

    receiver: str
    udh: bytes
    data: bytes

    @property
    def ucs2(self) -> str:
        return self.data.decode("utf-16-be")


@dataclass
class RunningKannel:
    """A Kannel whose sendsms-user `username`/`password` sends up to `max_parts` parts a message."""

    url: str  # the smsbox's sendsms address
    admin_url: str
    admin_password: str
    username: str
    password: str
    max_parts: int
    folder: Path

    def parts_to(self, receiver: str) -> list[Part]:
        """Every part the fake SMSC got for `receiver`, in order."""
        found: list[Part] = []
        for line in (self.folder / "fakesmsc.out").read_text(errors="replace").splitlines():
            match = _PART.search(line)
            if not match or match.group(2) != receiver:
                continue
            kind, rest = match.group(3), match.group(4)
            udh, data = "", rest
            if kind == "udh":
                udh, _, data = rest.partition(" data ")
            found.append(Part(receiver, _bytes(udh), _bytes(data) if kind != "text" else data.encode()))
        return found

    def status(self) -> str:
        return httpx.get(f"{self.admin_url}/status.txt", params={"password": self.admin_password}, timeout=5).text


def _bytes(printed: str) -> bytes:
    """fakesmsc prints bytes URL-encoded, a 0x20 byte as `+`."""
    return unquote_to_bytes(printed.replace("+", " "))


def _config(folder: Path, ports: dict[str, int], admin_password: str, username: str, password: str, max_parts: int) -> str:
    """The minimal set-up of shared/spec/delivery.md, all on loopback, with DLR retries as the adapter wants them."""
    return f"""
group = core
admin-port = {ports['admin']}
admin-interface = 127.0.0.1
admin-password = {admin_password}
smsbox-port = {ports['smsbox']}
smsbox-interface = 127.0.0.1
dlr-storage = internal
log-level = 1
log-file = "{folder}/bearerbox.log"
access-log = "{folder}/access.log"

group = smsc
smsc = fake
smsc-id = fake
port = {ports['smsc']}
our-host = 127.0.0.1
connect-allow-ip = 127.0.0.1

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {ports['smsbox']}
sendsms-port = {ports['sendsms']}
sendsms-interface = 127.0.0.1
log-level = 1
log-file = "{folder}/smsbox.log"
access-log = "{folder}/smsbox-access.log"
# A delivery report that overtakes our record of its send is answered 404: ask again a second later.
http-request-retry = 10
http-queue-delay = 1

group = sendsms-user
username = {username}
password = {password}
concatenation = true
max-messages = {max_parts}

group = sms-service
keyword = default
text = "ok"
catch-all = true
"""


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 3 s (bearerbox takes ~2.7 s to let go of its boxes)."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(3)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(3)


def _wait(check: object, what: str, processes: list[subprocess.Popen[bytes]], folder: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except httpx.HTTPError:
            pass
        dead = [p for p in processes if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            logs = "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-1500:]}" for f in sorted(folder.glob("*.out")))
            raise RuntimeError(f"Kannel did not get ready ({what}; exited: {[p.args[0] for p in dead]}):\n{logs}")
        time.sleep(0.05)


@contextmanager
def running_kannel(folder: Path, *, max_parts: int = 10) -> Iterator[RunningKannel]:
    """Start bearerbox, the fake SMSC and smsbox in `folder` on free ports; stop them by PID on the way out."""
    for binary in (BEARERBOX, SMSBOX, FAKESMSC):
        if not os.access(binary, os.X_OK):
            raise RuntimeError(f"{binary} is missing: run scripts/ensure-kannel.sh (apt-get install kannel kannel-extras)")
    ports = {name: _free_port() for name in ("admin", "smsbox", "smsc", "sendsms")}
    admin_password, username, password = uuid.uuid4().hex, "notiflow", uuid.uuid4().hex
    config = folder / "kannel.conf"
    config.write_text(_config(folder, ports, admin_password, username, password, max_parts))
    running = RunningKannel(
        url=f"http://127.0.0.1:{ports['sendsms']}", admin_url=f"http://127.0.0.1:{ports['admin']}",
        admin_password=admin_password, username=username, password=password, max_parts=max_parts, folder=folder,
    )
    processes: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> None:
        with (folder / f"{name}.out").open("wb") as out:
            processes.append(subprocess.Popen(list(args), stdout=out, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True))

    try:
        start("bearerbox", BEARERBOX, str(config))
        _wait(lambda: "Status: running" in running.status(), "bearerbox's admin port", processes, folder)
        # -m 0: the fake SMSC sends no messages of its own; it only takes ours and reports on them.
        start("fakesmsc", FAKESMSC, "-H", "127.0.0.1", "-r", str(ports["smsc"]), "-i", "1", "-m", "0", "123 456 text nop")
        _wait(lambda: "(online" in running.status(), "the fake SMSC online", processes, folder)
        start("smsbox", SMSBOX, str(config))
        # A wrong password is answered 403 once smsbox is up and connected to bearerbox.
        _wait(lambda: httpx.get(f"{running.url}/cgi-bin/sendsms", params={"username": "x", "password": "y", "to": "1"},
                                timeout=2).status_code == 403, "smsbox's sendsms port", processes, folder)
        yield running
    finally:
        for process in reversed(processes):
            _stop(process)


@pytest.fixture(scope="session")
def kannel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningKannel]:
    """One Kannel for the test session (a 10-part sendsms-user), ready in under a second."""
    with running_kannel(tmp_path_factory.mktemp("kannel")) as running:
        yield running
