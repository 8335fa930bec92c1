"""Status callbacks: each status change of a message whose row has a `callback url` is POSTed there as
signed JSON, in order per message, retried with backoff until the change is 24 h old.

The outbox is the `callback` table, written in the same statement as each status event
(models/history.py). A delivery pass claims a batch of due callbacks, at most one per message (its
earliest change still due, so a message's changes go out in order: the next is claimable only once the
one before it is delivered, given up or refused), sends them concurrently, and records every outcome in
one round trip. A claim is a lease (`claimed_until`) committed before any request is made, so two
delivery processes never send the same callback, and one killed mid-pass leaves its claims to expire
and be taken again. A callback the receiver answered 2xx is never sent again.

Every request is bounded: the host must resolve to addresses that may be reached (tasks/addresses.py;
NOTIFLOW_CALLBACK_PRIVATE_NETWORKS allows chosen private networks) and the request goes to one of those
very addresses, so a second DNS answer cannot send it elsewhere; no redirect is followed; connect, send
and answer each have callback_timeout_seconds; no more than 64 KiB of an answer is read.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import Engine, bindparam, exists, or_, select, update
from sqlalchemy.exc import OperationalError

from models.db import session_scope
from models.errors import HostUnresolved, NotiflowError, UrlRefused
from models.settings import Settings, get_settings
from models.signing import derived_callback_secret
from models.status import CallbackState
from models.tables import Callback, Message, StatusEvent, utcnow
from tasks.addresses import resolve

SIGNATURE_HEADER = "X-Notiflow-Signature"
TIMESTAMP_HEADER = "X-Notiflow-Timestamp"
PRIVATE_NETWORKS_SETTING = "NOTIFLOW_CALLBACK_PRIVATE_NETWORKS"
# A pass holds its callbacks this long, and starts requests only in the first half: each request ends
# (callback_timeout_seconds per step) and is recorded long before another process may take it again.
LEASE = timedelta(seconds=120)
START_WITHIN_SECONDS = LEASE.total_seconds() / 2
MAX_ANSWER_BYTES = 64 * 1024
# A delivery process with nothing due looks again after this long.
IDLE_SECONDS = 1.0

logger = logging.getLogger("notiflow.callbacks")

_CALLBACKS = Callback.__table__
_EVENTS = StatusEvent.__table__
_MESSAGES = Message.__table__


@dataclass
class CallbackTally:
    """What one or more delivery passes did."""

    delivered: int = 0
    retrying: int = 0  # failed attempts that will be tried again
    given_up: int = 0
    refused: int = 0
    released: int = 0  # claimed but not tried (the pass ran out of lease time)

    def __add__(self, other: CallbackTally) -> CallbackTally:
        return CallbackTally(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def claimed(self) -> int:
        return self.delivered + self.retrying + self.given_up + self.refused + self.released


@dataclass(frozen=True)
class _Due:
    """One claimed callback: where it goes and what it says."""

    event_id: int
    attempts: int
    at: datetime
    url: str
    body: bytes


@dataclass(frozen=True)
class _Outcome:
    event_id: int
    tried: bool
    delivered: bool = False
    refused: bool = False
    error: str = ""
    response_status: int | None = None


@task(name="deliver callbacks", cache_policy=NO_CACHE)
def deliver(until: datetime) -> CallbackTally:
    """Deliver due callbacks until `until`, looking for new ones every second when none are due."""
    key = signing_key()
    tally = CallbackTally()
    # The connections to each receiver stay open from one pass to the next.
    with _Clients(get_settings()) as clients:
        while (left := (until - utcnow()).total_seconds()) > 0:
            try:
                done = deliver_due(key, clients=clients)
            except OperationalError:  # the database away for a moment: the claims expire, the next pass retakes them
                logger.exception("callback pass failed; trying again")
                done = CallbackTally()
            tally += done
            if not done.claimed:
                time.sleep(min(IDLE_SECONDS, left))
    return tally


def deliver_due(key: bytes, engine: Engine | None = None, clients: _Clients | None = None) -> CallbackTally:
    """One pass: claim up to callback_batch_size due callbacks, send them, record what happened."""
    if clients is None:
        with _Clients(get_settings()) as own:
            return deliver_due(key, engine, own)
    settings = get_settings()
    started = time.monotonic()
    token = uuid.uuid4().hex
    with session_scope(engine) as session:
        claimed = _claim(session, token, settings.callback_batch_size)
        dues, gone = _load(session, claimed) if claimed else ([], [])
    if not claimed:
        return CallbackTally()
    outcomes = _send_all(dues, key, settings, clients, started + START_WITHIN_SECONDS)
    outcomes += [_Outcome(event_id, tried=True, error="its message or status event no longer exists") for event_id in gone]
    with session_scope(engine) as session:
        tally = _record(session, token, outcomes, {due.event_id: due for due in dues}, settings)
    if tally.given_up:
        logger.warning("%s callbacks given up after %g hours of failed attempts", tally.given_up, settings.callback_give_up_seconds / 3600)
    return tally


def signing_key() -> bytes:
    """The account's callback signing key: NOTIFLOW_CALLBACK_SECRET, else the Prefect Secret block named by
    NOTIFLOW_CALLBACK_SECRET_BLOCK if it exists, else a key derived from the server's secret."""
    settings = get_settings()
    if configured := settings.callback_secret.get_secret_value():
        return configured.encode()
    if settings.callback_secret_block:
        from prefect.blocks.system import Secret

        try:
            return str(Secret.load(settings.callback_secret_block).get()).encode()
        except ValueError:  # no such block: the derived key
            pass
        except httpx.HTTPError as exc:
            # Not the derived key instead: receivers would see signatures made with the wrong key.
            raise NotiflowError(
                f"the callbacks' key could not be read from the Prefect Secret block {settings.callback_secret_block!r}: "
                f"the Prefect API did not answer ({type(exc).__name__}); start `notiflow server` or set NOTIFLOW_CALLBACK_SECRET"
            ) from exc
    return derived_callback_secret().encode()


def signature(key: bytes, timestamp: str, body: bytes) -> str:
    """The X-Notiflow-Signature of a body sent at `timestamp` (Unix seconds, the X-Notiflow-Timestamp header)."""
    return "sha256=" + hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _claim(session: Any, token: str, limit: int) -> list[int]:
    """Lease up to `limit` due callbacks, each the earliest still due of its message; returns their event ids."""
    now = utcnow()
    earlier = _CALLBACKS.alias("earlier")
    free = or_(_CALLBACKS.c.claimed_until.is_(None), _CALLBACKS.c.claimed_until < now)
    candidates = (
        select(_CALLBACKS.c.event_id)
        .where(
            _CALLBACKS.c.next_attempt_at <= now,
            free,
            ~exists().where(
                earlier.c.message_id == _CALLBACKS.c.message_id,
                earlier.c.next_attempt_at.is_not(None),
                earlier.c.event_id < _CALLBACKS.c.event_id,
            ),
        )
        .order_by(_CALLBACKS.c.next_attempt_at)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        # Two processes claiming at once each skip the rows the other is taking instead of waiting for them.
        candidates = candidates.with_for_update(skip_locked=True, of=_CALLBACKS)
    # The UPDATE checks `free` again: on SQLite it runs under the write lock, on PostgreSQL on the locked rows.
    claim = (
        update(_CALLBACKS)
        .where(_CALLBACKS.c.event_id.in_(candidates.scalar_subquery()), free)
        .values(claimed_by=token, claimed_until=now + LEASE)
        .returning(_CALLBACKS.c.event_id)
    )
    return list(session.execute(claim).scalars())


def _load(session: Any, event_ids: list[int]) -> tuple[list[_Due], list[int]]:
    """The claimed callbacks with their payloads, and the ids of any whose message or event is gone."""
    rows = session.execute(
        select(
            _CALLBACKS.c.event_id, _CALLBACKS.c.attempts, _EVENTS.c.status, _EVENTS.c.description, _EVENTS.c.at,
            _MESSAGES.c.id, _MESSAGES.c.task_id, _MESSAGES.c.row, _MESSAGES.c.external_id, _MESSAGES.c.channel,
            _MESSAGES.c.recipient, _MESSAGES.c.params,
        )
        .join(_EVENTS, _EVENTS.c.id == _CALLBACKS.c.event_id)
        .join(_MESSAGES, _MESSAGES.c.id == _CALLBACKS.c.message_id)
        .where(_CALLBACKS.c.event_id.in_(event_ids))
    ).all()
    dues = [
        _Due(
            event_id=row.event_id, attempts=row.attempts, at=row.at, url=(row.params or {}).get("callback url", ""),
            body=payload(row),
        )
        for row in rows
    ]
    found = {due.event_id for due in dues}
    return dues, [event_id for event_id in event_ids if event_id not in found]


def payload(row: Any) -> bytes:
    """The JSON body of one callback (README: "Status callbacks")."""
    return orjson.dumps({
        "event_id": row.event_id,
        "message_id": row.id,
        "task_id": row.task_id,
        "row": row.row,
        "external_id": row.external_id,
        "channel": row.channel,
        "recipient": row.recipient,
        "status": row.status,
        "status_description": row.description,
        "at": row.at.isoformat(),
        "callback_data": (row.params or {}).get("callback data"),
    })


def _send_all(dues: list[_Due], key: bytes, settings: Settings, clients: _Clients, start_by: float) -> list[_Outcome]:
    if not dues:
        return []
    with ThreadPoolExecutor(max_workers=min(settings.callback_concurrency, len(dues))) as pool:
        return list(pool.map(lambda due: _send(due, key, settings, clients, start_by), dues))


def _send(due: _Due, key: bytes, settings: Settings, clients: _Clients, start_by: float) -> _Outcome:
    """POST one callback to one of the addresses its host resolves to, all of which must be allowed."""
    if time.monotonic() > start_by:
        return _Outcome(due.event_id, tried=False)
    try:
        url, addresses = resolve(due.url, settings.callback_private_networks, PRIVATE_NETWORKS_SETTING)
    except UrlRefused as exc:
        return _Outcome(due.event_id, tried=False, refused=True, error=str(exc))
    except HostUnresolved as exc:
        return _Outcome(due.event_id, tried=True, error=str(exc))
    timestamp = str(int(time.time()))
    headers = {
        "Host": url.netloc.decode("ascii"),
        "Content-Type": "application/json",
        "User-Agent": "notiflow-callbacks",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(key, timestamp, due.body),
    }
    # TLS still checks the certificate against the host name: it is the name the connection asks for.
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    deadline = time.monotonic() + 3 * settings.callback_timeout_seconds
    try:
        with clients.get(url.host).stream(
            "POST", url.copy_with(host=str(addresses[0])), content=due.body, headers=headers, extensions=extensions
        ) as response:
            _read_some(response, deadline)
            status = response.status_code
    except httpx.TimeoutException:
        return _Outcome(due.event_id, tried=True, error=f"no answer within {settings.callback_timeout_seconds:g} s")
    except httpx.HTTPError as exc:
        # The exception's text may hold the URL with its credentials: only its kind is kept.
        return _Outcome(due.event_id, tried=True, error=f"could not be sent ({type(exc).__name__})")
    if 200 <= status < 300:
        return _Outcome(due.event_id, tried=True, delivered=True, response_status=status)
    # A redirect is not followed (its target would be another URL to check): it fails like any other answer.
    return _Outcome(due.event_id, tried=True, error=f"HTTP {status}", response_status=status)


def _read_some(response: httpx.Response, deadline: float) -> None:
    """Read at most MAX_ANSWER_BYTES of the answer, within the deadline; a short answer frees the connection for the next."""
    received = 0
    for chunk in response.iter_raw():
        received += len(chunk)
        if received >= MAX_ANSWER_BYTES or time.monotonic() > deadline:
            break


class _Clients:
    """One HTTP client per receiving host: a connection checked (TLS) for one host name serves that name only."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._clients: dict[str, httpx.Client] = {}
        self._lock = threading.Lock()

    def get(self, host: str) -> httpx.Client:
        with self._lock:
            if host not in self._clients:
                # trust_env=False: no proxy from the environment, so the address checked is the one connected to.
                self._clients[host] = httpx.Client(
                    follow_redirects=False, trust_env=False, timeout=self._settings.callback_timeout_seconds,
                    limits=httpx.Limits(max_connections=self._settings.callback_concurrency),
                )
            return self._clients[host]

    def __enter__(self) -> _Clients:
        return self

    def __exit__(self, *_exc: object) -> None:
        for client in self._clients.values():
            client.close()


def _record(session: Any, token: str, outcomes: list[_Outcome], dues: dict[int, _Due], settings: Settings) -> CallbackTally:
    """Write every outcome in one executemany (only for callbacks this pass still holds) and release the untried."""
    now = utcnow()
    tally = CallbackTally()
    changes: list[dict[str, Any]] = []
    released: list[int] = []
    for outcome in outcomes:
        due = dues.get(outcome.event_id)
        attempts = (due.attempts if due else 0) + (1 if outcome.tried else 0)
        change = {"b_event_id": outcome.event_id, "b_attempts": attempts, "b_last_error": outcome.error,
                  "b_response_status": outcome.response_status, "b_next_attempt_at": None, "b_finished_at": now}
        if outcome.delivered:
            change["b_state"] = CallbackState.DELIVERED.value
            tally.delivered += 1
        elif outcome.refused:
            change["b_state"] = CallbackState.REFUSED.value
            tally.refused += 1
        elif not outcome.tried:
            released.append(outcome.event_id)
            tally.released += 1
            continue
        elif due is None or (give_up_at := due.at + timedelta(seconds=settings.callback_give_up_seconds)) <= now:
            change["b_state"] = CallbackState.GIVEN_UP.value
            tally.given_up += 1
        else:
            change |= {"b_state": CallbackState.DUE.value, "b_finished_at": None,
                       "b_next_attempt_at": min(now + _backoff(attempts, settings), give_up_at)}
            tally.retrying += 1
        changes.append(change)
    held = _CALLBACKS.c.claimed_by == token
    if changes:
        session.execute(
            update(_CALLBACKS)
            .where(_CALLBACKS.c.event_id == bindparam("b_event_id"), held)
            .values(
                state=bindparam("b_state"), attempts=bindparam("b_attempts"), last_error=bindparam("b_last_error"),
                response_status=bindparam("b_response_status"), next_attempt_at=bindparam("b_next_attempt_at"),
                finished_at=bindparam("b_finished_at"), claimed_by=None, claimed_until=None,
            )
            .execution_options(synchronize_session=False),
            changes,
        )
    if released:
        session.execute(update(_CALLBACKS).where(_CALLBACKS.c.event_id.in_(released), held).values(claimed_by=None, claimed_until=None))
    return tally


def _backoff(attempts: int, settings: Settings) -> timedelta:
    """The wait after the `attempts`-th failure: doubling from the first wait, at most the maximum, a little
    randomised so callbacks that failed together (a receiver down) do not all come back at once."""
    seconds = min(settings.callback_retry_first_seconds * 2 ** min(attempts - 1, 30), settings.callback_retry_max_seconds)
    return timedelta(seconds=seconds * random.uniform(1.0, 1.2))
