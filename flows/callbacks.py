"""The deliver-callbacks flow: sends the status changes of messages with a `callback url` to their receivers.

Why a scheduled deployment: the callbacks of a campaign go on long after its run ended (a delivery
report may come a day later, and a failed callback is retried for 24 h), so they are sent by a process
of their own. prefect.yaml's `deliver-callbacks` deployment runs every minute, and each run delivers for
about a minute (new changes go out within a second), then ends: `notiflow server` (and so `make demo`)
serves it like every other deployment, a work pool runs it where the workers are, a crashed run is
replaced by the next one within a minute, and every run's log says what it delivered. Runs that overlap
(a late one, or one started by hand) are safe: each callback is claimed by one of them (see
tasks/delivery/callbacks.py).
"""
from __future__ import annotations

from datetime import datetime, timedelta

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from models.tables import utcnow
from tasks.delivery.callbacks import deliver

# The deployment, "flow/deployment" as prefect.yaml declares it.
DELIVER_CALLBACKS = "deliver-callbacks/deliver-callbacks"


@flow(name="deliver-callbacks", log_prints=False)
def deliver_callbacks(seconds: float = 55.0) -> dict[str, int]:
    """Deliver due status callbacks for `seconds` from the run's scheduled start, then end (the schedule starts the next)."""
    logger = get_run_logger()
    scheduled: datetime | None = flow_run.scheduled_start_time
    until = (scheduled or utcnow()) + timedelta(seconds=seconds)
    if until <= utcnow():
        # A run left over from a time the server was down: the runs scheduled since then take over.
        logger.info("this run was due at %s and is late past its %g s: nothing to do", scheduled, seconds)
        return {}
    tally = deliver(until)
    logger.info(
        "callbacks: %s delivered, %s failed and will be retried, %s given up, %s refused (address not allowed)",
        tally.delivered, tally.retrying, tally.given_up, tally.refused,
    )
    return {"delivered": tally.delivered, "retrying": tally.retrying, "given_up": tally.given_up, "refused": tally.refused}
