"""The Prefect UI, clicked in headless Chromium as a campaign operator does: start notification-task from its
form, watch the progress move, Suspend, Resume, and Cancel a second run; then check the messages.

The UI's form labels are not linked to their inputs and its tabs have no ARIA roles, so elements are
found by visible text, and the test waits for state badges rather than for network idle.
"""
from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import Session

from deployments.runs import start_run, ui_url
from models.params import NotificationTaskParams
from models.tables import NotificationTask
from tasks.reporting.counts import status_counts
from tests.files import phones, write_xlsx
from tests.sandbox_fixtures import wait_until

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parent.parent / ".notiflow" / "screenshots" / os.environ.get("NOTIFLOW_TEST_DATABASE", "sqlite")


@pytest.fixture
def slow_carrier(stack: Any) -> Iterator[None]:
    """Each send request takes 1 s, so a person (and this test) can act while batches go out."""
    import httpx

    original = httpx.get(f"{stack.sandbox_url}/config").json()
    httpx.put(f"{stack.sandbox_url}/config", json={**original, "accept_seconds": 1.0}).raise_for_status()
    yield
    httpx.put(f"{stack.sandbox_url}/config", json=original).raise_for_status()


@pytest.fixture(scope="module")
def browser_page(request: pytest.FixtureRequest) -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package (scripts/ensure-chromium.sh)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        yield page
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "last-page.png"))  # what the page showed at the end, pass or fail
        browser.close()


def statuses(engine: Any, task_id: int) -> dict[str, int]:
    with Session(engine) as session:
        return status_counts(session, task_id)


def task_named(engine: Any, name: str) -> NotificationTask | None:
    with Session(engine) as session:
        return session.scalars(select(NotificationTask).where(NotificationTask.name == name)).first()


def badge(page: Any, text: str, timeout: float = 60_000) -> None:
    page.get_by_text(text, exact=True).first.wait_for(timeout=timeout)


def progress_text(page: Any) -> str:
    page.get_by_text("Artifacts", exact=True).first.click()
    card = page.get_by_text(re.compile(r"\d+ of \d+ messages sent")).first
    card.wait_for()
    return str(card.inner_text())


def test_operator_starts_suspends_resumes_and_cancels_campaigns_in_the_prefect_ui(
    stack: Any, engine: Any, tmp_path: Path, browser_page: Any, slow_carrier: None
) -> None:
    page = browser_page
    base = stack.prefect_api_url.removesuffix("/api")

    def field(label: str) -> Any:
        """The text box of the form field whose heading is `label` (the UI does not link labels to inputs)."""
        box = page.locator(f"xpath=//*[normalize-space(text())='{label}']/ancestor::div[.//textarea][1]//textarea").first
        box.wait_for()
        return box
    name = f"ui campaign {uuid.uuid4().hex[:6]}"
    # Each row allows the whole day, so the campaign runs at any hour without a time limiter.
    # 2,800 messages: 14 dispatches of 4 one-second requests of 50, so the UI catches it mid-way.
    rows = [[p, f"Winter sale {i}", '[["00:00:00", "24:00:00"]]'] for i, p in enumerate(phones(2800, start=uuid.uuid4().int % 9_000_000))]
    path = write_xlsx(tmp_path / "ui-campaign.xlsx", ["phone", "text", "allowed time ranges"], rows)

    # Start notification-task from its form.
    page.goto(f"{base}/deployments")
    page.get_by_text("notification-task", exact=True).first.click()
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run", exact=True).click()
    page.get_by_text("Task File", exact=True).wait_for()
    field("Task File").fill(str(path))
    # Name is a plain text box: typed into at once, no None/str toggle first (issue 11, item 12).
    assert page.get_by_text("str", exact=True).count() == 0
    field("Name (Optional)").fill(name)
    page.get_by_role("button", name="Submit").click()
    # The UI returns to the deployment's page once the run is created.
    page.wait_for_url(re.compile(r"/deployments/deployment/[^/?]+(\?.*)?$"))

    task = wait_until(lambda: task_named(engine, name), timeout=120, interval=0.5, what="the run started from the form")
    assert task.windows == []  # no time limiter: the rows' own allowed time ranges apply
    page.goto(ui_url(task.flow_run_id))
    badge(page, "Running")
    page.get_by_text(name).first.wait_for()

    # The progress artifact moves while batches go out.
    first = progress_text(page)
    wait_until(lambda: (page.reload(), progress_text(page))[1] != first, timeout=60, interval=1, what="the progress to move")

    # Suspend, with the dialog's own Timeout.
    page.get_by_role("button", name="Suspend").click()
    page.get_by_text("Suspend Flow Run").wait_for()
    page.get_by_role("button", name="Submit").click()
    badge(page, "Suspended")
    wait_until(lambda: statuses(engine, task.id).get("PAUSED", 0) > 0, timeout=30, interval=0.5, what="unsent messages to be PAUSED")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "suspended-run.png"))

    # Resume: the campaign finishes, every message exactly once.
    page.get_by_role("button", name="Resume").click()
    page.get_by_text("Resume Flow Run").wait_for()
    page.get_by_role("button", name="Submit").click()
    badge(page, "Completed", timeout=180_000)
    counts = statuses(engine, task.id)
    assert sum(counts.values()) == 2800 and set(counts) <= {"DELIVERED", "UNDELIVERED"}, counts
    page.get_by_text("Artifacts", exact=True).first.click()
    page.get_by_text(f"notification-task-{task.id}-summary").first.wait_for()
    page.screenshot(path=str(SCREENSHOTS / "completed-run.png"), full_page=True)

    # A second campaign, cancelled from the UI mid-way.
    # Playwright's sync API keeps an event loop on this thread, where Prefect's sync calls would turn async.
    with ThreadPoolExecutor(1) as pool:
        bigger = write_xlsx(tmp_path / "ui-campaign-2.xlsx", ["phone", "text"],
                            [[p, f"Last chance {i}"] for i, p in enumerate(phones(1500, start=uuid.uuid4().int % 9_000_000))])
        second = pool.submit(start_run, NotificationTaskParams(task_file=str(bigger), name=f"{name} (2)", windows=["00:00-24:00"])).result()
    page.goto(ui_url(second.id))
    badge(page, "Running")
    second_task = wait_until(lambda: task_named(engine, f"{name} (2)"), timeout=30, interval=0.5)
    wait_until(lambda: sum(n for s, n in statuses(engine, second_task.id).items() if s != "QUEUED") > 0,
               timeout=60, interval=0.5, what="the first batch")
    page.get_by_role("button", name="Cancel", exact=True).click()
    page.get_by_text("Cancel Flow Run").wait_for()
    page.get_by_role("button", name="Confirm").click()
    badge(page, "Cancelled")
    wait_until(lambda: statuses(engine, second_task.id).get("CANCELED", 0) > 0, timeout=30, interval=0.5, what="unsent messages to be CANCELED")
    page.screenshot(path=str(SCREENSHOTS / "cancelled-run.png"))
    assert {s for s in statuses(engine, second_task.id)} <= {"CANCELED", "SENT", "PENDING", "DELIVERED", "UNDELIVERED", "QUEUED"}
