"""The api-dispatcher flow: sends what POST /v1/messages writes, within seconds, for as long as it runs.

A flow run per API request would start seconds late (a served run starts 3.8–8 s after it is created) and
Prefect's deferred tasks manage a few runs a second, so the API only writes messages, scheduled, into its
tasks (one per token and day), and this one long-lived run drains them: schedule what a fallback released,
then each open task's channels through the delivery engine's own steps (dispatch, status poll, fallback
chains), the very ones a campaign uses, so pacing, windows, validity, fallback and statuses are the same.
It holds each task's lease while it sends it (a second dispatcher waits, a dead one's lease is taken over at
once), sleeps a fraction of a second when nothing is due, and never ends by itself: `notiflow server`
serves the deployment and its supervisor starts a run whenever none is alive (notiflow/supervisor.py).

The steps are called as plain functions (`.fn`): a task run per step and loop would be dozens a second,
more than a Prefect server on SQLite absorbs. The log has one line per batch that sent something.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from models.errors import LeaseHeld
from models.status import Channel, TaskState
from tasks.control.lifecycle import set_state
from tasks.delivery.api_tasks import api_task_done, has_unscheduled, open_api_tasks
from tasks.delivery.chains import advance_chains
from tasks.delivery.channels import open_channels
from tasks.delivery.dispatch import dispatch
from tasks.delivery.lease import new_owner, release_lease, take_lease
from tasks.delivery.poll import poll, providers_to_poll
from tasks.intake.api_messages import api_day
from tasks.reporting.report import build_report
from tasks.schedule.schedule import schedule

# The deployment, "flow/deployment" as prefect.yaml declares it.
API_DISPATCHER = "api-dispatcher/api-dispatcher"
# A held lease is renewed this often even while a task has nothing to send (dispatch renews it while it sends).
RENEW_SECONDS = 10.0
# Status polls and the check for finished days need not run at every turn of the loop.
POLL_SECONDS = 1.0
HOUSEKEEPING_SECONDS = 60.0


@dataclass
class _Dispatcher:
    owner: str
    logger: logging.Logger | logging.LoggerAdapter  # type: ignore[type-arg]
    held: dict[int, float] = field(default_factory=dict)  # task id → when its lease was last renewed here
    polled: dict[int, float] = field(default_factory=dict)
    # (task, channel) → when it may be sent to again, after a carrier fault or a throttle.
    resting: dict[tuple[int, Channel], float] = field(default_factory=dict)
    faults: dict[tuple[int, Channel], int] = field(default_factory=dict)
    tidied: float = 0.0

    def turn(self) -> bool:
        """One pass over every open API task; True when it did something (so the next pass comes at once)."""
        busy = False
        for task_id in open_api_tasks():
            if not self._lease(task_id):
                continue
            try:
                busy |= self._drain(task_id)
            except LeaseHeld:
                self.logger.warning("task %s: its lease was taken over by another dispatcher; leaving it to it", task_id)
                self.held.pop(task_id, None)
        if time.monotonic() - self.tidied >= HOUSEKEEPING_SECONDS:
            self.tidied = time.monotonic()
            self._complete_past_days()
        return busy

    def _lease(self, task_id: int) -> bool:
        now = time.monotonic()
        if now - self.held.get(task_id, -RENEW_SECONDS) < RENEW_SECONDS:
            return True
        try:
            take_lease.fn(task_id, self.owner, wait_seconds=0)
        except LeaseHeld:
            self.held.pop(task_id, None)
            return False
        self.held[task_id] = now
        return True

    def _drain(self, task_id: int) -> bool:
        busy = False
        if has_unscheduled(task_id):
            schedule.fn(task_id)
        for channel in open_channels(task_id):
            if self.resting.get((task_id, channel), 0.0) > time.monotonic():
                continue
            result = dispatch.fn(task_id, self.owner, channel)
            if result.sent or result.refused or result.expired:
                busy = True
                self.logger.info("task %s: %s %s messages sent, %s refused, %s expired; %s left", task_id, result.sent,
                                 result.channel, result.refused, result.expired, result.remaining)
            if result.carrier_fault or result.retry_after:
                faults = self.faults[(task_id, channel)] = self.faults.get((task_id, channel), 0) + 1
                pause = result.retry_after or min(2.0 ** faults, 30.0)
                self.resting[(task_id, channel)] = time.monotonic() + pause
                self.logger.warning("task %s: %s carrier fault, sending to it again in %.0f s: %s", task_id, channel.value,
                                    pause, result.carrier_fault)
            else:
                self.faults.pop((task_id, channel), None)
        if time.monotonic() - self.polled.get(task_id, 0.0) >= POLL_SECONDS:
            self.polled[task_id] = time.monotonic()
            for name in providers_to_poll(task_id):
                polled = poll.fn(task_id, name)
                if polled.error:
                    self.logger.warning("task %s: status poll of %s failed, asking again later: %s", task_id, name, polled.error)
        chains = advance_chains.fn(task_id)
        if chains.released:
            schedule.fn(task_id)
            busy = True
        return busy

    def _complete_past_days(self) -> None:
        """A past day's task whose every message is final is done: its report is written and it completes."""
        today = api_day()
        for task_id in open_api_tasks():
            if task_id in self.held and api_task_done(task_id, today):
                report = build_report.fn(task_id)
                set_state.fn(task_id, TaskState.COMPLETED, "every message sent through the API that day is final")
                release_lease.fn(task_id, self.owner)
                self.held.pop(task_id, None)
                self.logger.info("task %s completed; report: %s", task_id, report.path)

    def release_all(self) -> None:
        for task_id in list(self.held):
            release_lease.fn(task_id, self.owner)
        self.held.clear()


@flow(name="api-dispatcher", log_prints=False)
def api_dispatcher(idle_seconds: float = 0.3) -> None:
    """Send the messages of the HTTP API's tasks as they come, until the run is cancelled; sleep `idle_seconds`
    whenever nothing is due."""
    logger = get_run_logger()
    dispatcher = _Dispatcher(owner=new_owner(str(flow_run.get_id())), logger=logger)
    logger.info("sending what POST /v1/messages writes (lease owner %s)", dispatcher.owner)
    faults = 0
    try:
        while True:
            try:
                busy = dispatcher.turn()
                faults = 0
            except Exception:  # a database or provider hiccup must not end the dispatcher
                faults += 1
                pause = min(2.0 ** faults, 30.0)
                logger.exception("dispatch pass failed; trying again in %.0f s", pause)
                time.sleep(pause)
                continue
            if not busy:
                time.sleep(idle_seconds)
    finally:
        dispatcher.release_all()
