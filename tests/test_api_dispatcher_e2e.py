"""Sends through POST /v1/messages reach the sandbox carrier through the api-dispatcher deployment of a real
`notiflow server`, and a dispatcher killed mid-stream loses and repeats nothing: its replacement (started by the
server's supervisor) takes the lease over and sends each message exactly once."""
from __future__ import annotations

import os
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from models.db import session_scope
from models.tables import NotificationTask
from tests.sandbox_fixtures import wait_until

ALL_DAY = [["00:00:00", "24:00:00"]]


@pytest.fixture
def api(stack: Any, auth: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, headers=auth, timeout=30) as client:
        yield client


def carrier_refs(stack: Any) -> Counter[str]:
    """How often the carrier accepted each message id (the number after the task's uid in its ref)."""
    listed = httpx.get(f"{stack.sandbox_url}/messages", timeout=30).json()["messages"]
    return Counter(m["ref"].rsplit("-", 1)[1] for m in listed)


def received(stack: Any, ids: list[int]) -> int:
    """How many of these messages the carrier accepted."""
    refs = carrier_refs(stack)
    return sum(refs[str(i)] for i in ids)


def send(api: httpx.Client, phones: list[str], marker: str) -> list[int]:
    answer = api.post("/v1/messages", json={"messages": [
        {"phone": phone, "text": f"code {n}", "external_id": marker, "allowed_time_ranges": ALL_DAY} for n, phone in enumerate(phones)
    ]})
    assert answer.status_code == 201, answer.text
    return [notification["message_id"] for notification in answer.json()["messages"]]


def test_a_message_sent_through_the_api_reaches_the_carrier_and_its_history_shows_sent_and_delivered(
        stack: Any, api: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    ids = send(api, [f"+7916777{n:04d}" for n in range(5)], marker)
    # How soon is bench/api_latency.py's to measure: here the carrier may be shared with a campaign of another test.
    wait_until(lambda: received(stack, ids) == len(ids), timeout=60, interval=0.1,
               what=f"the carrier to receive the API's messages; server log:\n{stack.log_tail()}")

    def final() -> list[dict[str, Any]] | None:
        shown = [api.get(f"/v1/messages/{i}").json() for i in ids]
        return shown if all(s["status"] in ("DELIVERED", "UNDELIVERED") for s in shown) else None

    shown = wait_until(final, timeout=60, interval=0.3, what="final statuses")
    for message in shown:
        statuses = [h["status"] for h in message["history"]]
        assert statuses[:3] == ["CREATED", "QUEUED", "SENT"] and statuses[-1] == message["status"], statuses
    assert any(s["status"] == "DELIVERED" for s in shown)


def _dispatcher_pid(task_id: int) -> int | None:
    """The process of the dispatcher holding the task's lease (its owner is host/pid/run/…)."""
    with session_scope() as session:
        owner = session.scalar(select(NotificationTask.lease_owner).where(NotificationTask.id == task_id))
    return int(owner.split("/")[1]) if owner else None


def test_no_message_is_lost_or_sent_twice_when_the_dispatcher_is_killed_mid_stream(stack: Any, api: httpx.Client) -> None:
    config = httpx.get(f"{stack.sandbox_url}/config", timeout=30).json()
    # A carrier that takes 0.5 s per request: the stream lasts a few seconds, long enough to be cut in the middle.
    httpx.put(f"{stack.sandbox_url}/config", json=config | {"accept_seconds": 0.5}, timeout=30).raise_for_status()
    try:
        duplicates_before = httpx.get(f"{stack.sandbox_url}/stats", timeout=30).json()["duplicates"]
        marker = uuid.uuid4().hex
        ids = [i for batch in range(6) for i in send(api, [f"+7916{batch:02d}{n:05d}" for n in range(200)], marker)]
        task_id = api.get(f"/v1/messages/{ids[0]}").json()["task_id"]
        wait_until(lambda: received(stack, ids) >= 100, timeout=60, interval=0.05,
                   what=f"the stream to start; server log:\n{stack.log_tail()}")
        pid = wait_until(lambda: _dispatcher_pid(task_id), timeout=10, what="the dispatcher's lease")
        os.kill(pid, signal.SIGKILL)
        at_kill = received(stack, ids)
        assert at_kill < len(ids), "the stream ended before the dispatcher was killed: nothing was tested"
        wait_until(lambda: received(stack, ids) == len(ids), timeout=120, interval=0.3,
                   what=f"a new dispatcher to send the rest; server log:\n{stack.log_tail()}")
        new_pid = _dispatcher_pid(task_id)
        assert new_pid is not None and new_pid != pid
    finally:
        httpx.put(f"{stack.sandbox_url}/config", json=config, timeout=30).raise_for_status()
    refs = carrier_refs(stack)
    assert {refs[str(i)] for i in ids} == {1}
    assert httpx.get(f"{stack.sandbox_url}/stats", timeout=30).json()["duplicates"] == duplicates_before, "a message was sent twice"
    sent = wait_until(lambda: (items := [api.get(f"/v1/messages/{i}").json() for i in ids[:: 50]])
                      and all(m["sent_at"] for m in items) and items, timeout=60, what="sent_at recorded")
    assert all(m["status"] != "ERROR" for m in sent)
