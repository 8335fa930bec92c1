"""Scheduling rules, checked the way an operator verifies a plan: `notiflow check --now`, then the steps."""
from __future__ import annotations

import time as clock
import uuid
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select

from models.errors import NoWindow
from models.status import Channel, MessageStatus
from models.tables import Message
from tasks.delivery.dispatch import dispatch
from tasks.delivery.lease import take_lease
from tasks.intake.check import check_file
from tasks.intake.intake import intake
from tasks.schedule.schedule import Planner, schedule
from tasks.schedule.windows import Window, next_slot, parse_windows
from tests.files import write_xlsx
from tests.test_steps import make_task_from

NOW = "2026-11-26T10:00:00Z"  # 13:00 in Moscow, 05:00 in New York, 19:00 in Tokyo


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def plan(tmp_path: Path, header: list[str], row: list[Any], *, now: str = NOW, windows: tuple[str, ...] = ()) -> dict[str, Any]:
    path = write_xlsx(tmp_path / f"plan-{uuid.uuid4().hex[:6]}.xlsx", ["phone", "text", *header], [["+79161234567", "hi", *row]])
    checked = check_file(path, now=utc(now), windows=windows)
    (result,) = checked["rows"]
    assert result["accepted"], result["errors"]
    return result


# The table: one case per rule, each with the exact instant (UTC) it must be scheduled at.
CASES: list[tuple[str, list[str], list[Any], str, str]] = [
    ("Moscow: inside the default window, now", [], [], NOW, "2026-11-26T10:00:00Z"),
    ("Russian mobile (eleven zones) uses the country's zone, Moscow", [], [], "2026-11-26T03:00:00Z", "2026-11-26T06:00:00Z"),
    ("New York number: 05:00 local waits for 09:00 EST", ["phone"], ["+12125551234"], NOW, "2026-11-26T14:00:00Z"),
    ("Los Angeles number: waits for 09:00 PST", ["phone"], ["+14155551234"], NOW, "2026-11-26T17:00:00Z"),
    ("Tokyo number: 19:00 local is inside", ["phone"], ["+819012345678"], NOW, NOW),
    ("London number (several UK zones) uses Europe/London", ["phone"], ["+447400123456"], "2026-11-26T07:00:00Z", "2026-11-26T09:00:00Z"),
    ("Kazakh mobile uses Asia/Almaty (UTC+5)", ["phone"], ["+77011234567"], "2026-11-26T02:00:00Z", "2026-11-26T04:00:00Z"),
    ("window passed today: tomorrow's window", ["allowed time ranges"], ['[["09:00:00", "12:00:00"]]'], NOW, "2026-11-27T06:00:00Z"),
    ("two windows: the second one today", ["allowed time ranges"], ['[["09:00:00", "12:00:00"], ["14:00:00", "18:00:00"]]'], NOW,
     "2026-11-26T11:00:00Z"),
    ("the spec's brace form", ["allowed time ranges"], ['{"14:30:00", "18:00:00"}'], NOW, "2026-11-26T11:30:00Z"),
    ("end is exclusive: at 20:00 local the window is over", [], [], "2026-11-26T17:00:00Z", "2026-11-27T06:00:00Z"),
    ("send at, account time zone", ["send at"], ["26-11-26 16:30:00"], NOW, "2026-11-26T13:30:00Z"),
    ("send at with an offset", ["send at"], ["2026-11-26T12:00:00+00:00"], NOW, "2026-11-26T12:00:00Z"),
    ("send at as an Excel date-time cell", ["send at"], [datetime(2026, 11, 26, 15, 0)], NOW, "2026-11-26T12:00:00Z"),
    ("send at outside the window waits for it", ["send at"], ["26-11-26 22:00:00"], NOW, "2026-11-27T06:00:00Z"),
    ("send at in the past is now", ["send at"], ["26-11-20 10:00:00"], NOW, NOW),
    ("start date + start time", ["start date", "start time"], ["26-11-27", "08-00-00"], NOW, "2026-11-27T06:00:00Z"),
    ("start date alone: from that day's first window", ["start date"], ["26-11-28"], NOW, "2026-11-28T06:00:00Z"),
    ("latest of send at and start date+time", ["send at", "start date", "start time"], ["26-11-26 14:00:00", "26-11-26", "15-00-00"], NOW,
     "2026-11-26T12:00:00Z"),
    # DST change days, with zoneinfo: US spring forward (02:00 → 03:00) and fall back, Berlin fall back.
    ("New York, spring forward: 09:00 is EDT (UTC-4)", ["phone"], ["+12125551234"], "2027-03-14T05:00:00Z", "2027-03-14T13:00:00Z"),
    ("New York, the day before: 09:00 is EST (UTC-5)", ["phone"], ["+12125551234"], "2027-03-13T05:00:00Z", "2027-03-13T14:00:00Z"),
    ("New York, 02:30 does not exist that day: at 03:00 EDT", ["phone", "allowed time ranges"],
     ["+12125551234", '[["02:30:00", "06:00:00"]]'], "2027-03-14T05:00:00Z", "2027-03-14T07:00:00Z"),
    ("New York, fall back: 09:00 EST after the change", ["phone"], ["+12125551234"], "2026-11-01T05:00:00Z", "2026-11-01T14:00:00Z"),
    ("Berlin, fall back: 02:30 comes twice, the first counts", ["phone", "allowed time ranges"],
     ["+493012345678", '[["02:30:00", "04:00:00"]]'], "2026-10-24T23:00:00Z", "2026-10-25T00:30:00Z"),
    ("Berlin, spring forward: 02:30 is at 03:00 CEST", ["phone", "allowed time ranges"],
     ["+493012345678", '[["02:30:00", "04:00:00"]]'], "2027-03-27T23:00:00Z", "2027-03-28T01:00:00Z"),
]


@pytest.mark.parametrize(("case", "header", "row", "now", "expected"), CASES, ids=[c[0] for c in CASES])
def test_scheduled_at_follows_the_rules(tmp_path: Path, case: str, header: list[str], row: list[Any], now: str, expected: str) -> None:
    if header and header[0] == "phone":
        # the case's own phone replaces the default one
        path = write_xlsx(tmp_path / "plan.xlsx", ["text", *header], [["hi", *row]])
        (result,) = check_file(path, now=utc(now))["rows"]
        assert result["accepted"], result["errors"]
    else:
        result = plan(tmp_path, header, row, now=now)
    assert utc(result["scheduled_at"]) == utc(expected), case
    assert utc(result["expires_at"]) == utc(expected) + timedelta(minutes=1440)


def test_row_windows_beat_the_task_limiter_which_beats_the_default(tmp_path: Path) -> None:
    limited = plan(tmp_path, [], [], windows=("15:00-16:00",))
    assert limited["scheduled_at"] == "2026-11-26T12:00:00Z"
    own = plan(tmp_path, ["allowed time ranges"], ['[["17:00:00", "18:00:00"]]'], windows=("15:00-16:00",))
    assert own["scheduled_at"] == "2026-11-26T14:00:00Z"


def test_template_windows_apply_without_a_limiter_and_lose_to_it() -> None:
    planner = Planner(limiter=(), template_windows={7: ["18:00-19:00"]})
    now = utc(NOW)
    assert planner.slot(now, "Europe/Moscow", None, None, 7, None).start == utc("2026-11-26T15:00:00Z")
    assert planner.slot(now, "Europe/Moscow", None, None, 8, None).start == now  # no template windows: 09:00-20:00
    limited = Planner(limiter=("14:00-15:00",), template_windows={7: ["18:00-19:00"]})
    assert limited.slot(now, "Europe/Moscow", None, None, 7, None).start == utc("2026-11-26T11:00:00Z")


def test_validity_period_sets_the_expiry(tmp_path: Path) -> None:
    result = plan(tmp_path, ["validity period", "send at"], [90, "26-11-26 15:00:00"])
    assert (result["scheduled_at"], result["expires_at"]) == ("2026-11-26T12:00:00Z", "2026-11-26T13:30:00Z")


def test_email_without_a_phone_uses_the_account_zone(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "mail.xlsx", ["email", "text", "channel"], [["anna@example.com", "hi", "email"]])
    (result,) = check_file(path, now=utc("2026-11-26T03:00:00Z"))["rows"]
    assert result["time_zone"] == "Europe/Moscow" and result["scheduled_at"] == "2026-11-26T06:00:00Z"


def test_bad_ranges_reject_the_row_with_the_reason(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "bad.xlsx", ["phone", "text", "allowed time ranges"],
                      [["+79161234567", "a", '[["12:00:00", "12:00:00"]]'], ["+79161234568", "b", '[["09:00", "13:00"], ["12:00", "14:00"]]']])
    first, second = check_file(path, now=utc(NOW))["rows"]
    assert first["errors"][0]["code"] == "invalid_allowed_time_ranges" and "ends before it starts" in first["errors"][0]["message"]
    assert "overlap" in second["errors"][0]["message"]


def test_strict_local_time_needs_the_window_in_every_zone() -> None:
    russia = ["Europe/Kaliningrad", "Europe/Moscow", "Asia/Yekaterinburg", "Asia/Vladivostok", "Asia/Kamchatka"]
    slot = Planner((), {}, strict=True).slot(utc("2026-11-26T03:00:00Z"), "Europe/Moscow", " ".join(russia), None, None, None)
    # 09:00 in Kaliningrad (UTC+2) is 07:00 UTC; 20:00 in Kamchatka (UTC+12) is 08:00 UTC.
    assert (slot.start, slot.end) == (utc("2026-11-26T07:00:00Z"), utc("2026-11-26T08:00:00Z"))
    loose = Planner((), {}, strict=False).slot(utc("2026-11-26T03:00:00Z"), "Europe/Moscow", " ".join(russia), None, None, None)
    assert loose.start == utc("2026-11-26T06:00:00Z")
    with pytest.raises(NoWindow):
        next_slot(utc(NOW), parse_windows(["09:00-10:00"]), ["Europe/Moscow", "America/New_York"])


def test_strict_local_time_from_the_setting_plans_a_russian_mobile_for_every_zone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models.settings import get_settings

    monkeypatch.setenv("NOTIFLOW_STRICT_LOCAL_TIME", "1")
    get_settings.cache_clear()
    try:
        strict = plan(tmp_path, [], [], now="2026-11-26T03:00:00Z")
    finally:
        monkeypatch.delenv("NOTIFLOW_STRICT_LOCAL_TIME")
        get_settings.cache_clear()
    assert strict["scheduled_at"] == "2026-11-26T07:00:00Z"  # 09:00 in Kaliningrad, 19:00 in Anadyr
    assert plan(tmp_path, [], [], now="2026-11-26T03:00:00Z")["scheduled_at"] == "2026-11-26T06:00:00Z"


# --- the window closing before a message is handed over -------------------------------------------

def _messages(engine: Any, task_id: int) -> list[Message]:
    with Session(engine) as session:
        return list(session.exec(select(Message).where(Message.task_id == task_id).order_by(Message.row)))


def test_message_whose_window_closes_unsent_waits_for_the_next_or_expires(tmp_path: Path, engine: Any) -> None:
    path = write_xlsx(tmp_path / "late.xlsx", ["phone", "text", "allowed time ranges", "validity period"], [
        ["+79161234567", "short validity", '[["12:00:00", "14:00:00"]]', 60],
        ["+79161234568", "long validity", '[["12:00:00", "14:00:00"]]', 2880],
    ])
    task_id = make_task_from(path, windows=[])
    intake.fn(task_id)
    in_window = utc(NOW)  # 13:00 Moscow
    assert schedule.fn(task_id, now=in_window).queued == 2
    # Nothing was handed over (a paused run, a carrier outage) and the window closed at 14:00 Moscow.
    after = in_window + timedelta(hours=1, minutes=1)
    result = schedule.fn(task_id, now=after)
    short, long = _messages(engine, task_id)
    assert result.expired == 1
    assert short.status == MessageStatus.EXPIRED.value
    assert "validity period ends before the next window opens" in short.status_description
    assert long.status == MessageStatus.DELAYED.value
    assert long.scheduled_at == utc("2026-11-27T09:00:00Z") and long.window_ends_at == utc("2026-11-27T11:00:00Z")
    assert long.expires_at == utc(NOW) + timedelta(minutes=2880)  # the expiry does not move


def test_dispatch_never_hands_over_a_message_whose_window_just_closed(stack: Any, tmp_path: Path, engine: Any) -> None:
    moscow = datetime.now(ZoneInfo("Europe/Moscow")).replace(microsecond=0)
    closes = moscow + timedelta(seconds=3)
    if moscow.hour == 0 or closes.date() != moscow.date():
        pytest.skip("the window would cross local midnight")
    window = f'[["00:00:00", "{closes:%H:%M:%S}"]]'
    path = write_xlsx(tmp_path / "closing.xlsx", ["phone", "text", "allowed time ranges"], [["+79161234567", "hurry", window]])
    task_id = make_task_from(path, windows=[])
    intake.fn(task_id)
    assert schedule.fn(task_id).queued == 1
    owner = f"test-{uuid.uuid4().hex[:6]}"
    take_lease.fn(task_id, owner)
    clock.sleep((closes.astimezone(UTC) - datetime.now(UTC)).total_seconds() + 0.5)  # the run was slow to get here
    result = dispatch.fn(task_id, owner, Channel.SMS)
    (message,) = _messages(engine, task_id)
    assert result.sent == 0 and message.status == MessageStatus.DELAYED.value
    assert message.scheduled_at.astimezone(ZoneInfo("Europe/Moscow")).time() == time(0)  # tomorrow's window


# --- property: a scheduled time is inside a window in the subscriber's zone -----------------------

ZONES = ["Europe/Moscow", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kolkata", "America/Santiago",
         "Pacific/Chatham", "Asia/Tokyo", "America/St_Johns", "Europe/London"]


@st.composite
def window_sets(draw: st.DrawFn) -> list[Window]:
    cuts = sorted(set(draw(st.lists(st.integers(0, 24 * 3600), min_size=2, max_size=6))))
    if len(cuts) % 2:
        cuts = cuts[:-1]
    assume(len(cuts) >= 2)
    texts = []
    for start, end in zip(cuts[::2], cuts[1::2]):
        texts.append(f"{_clock(start)}-{_clock(end)}")
    return parse_windows(texts)


def _clock(seconds: int) -> str:
    if seconds == 24 * 3600:
        return "24:00"
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _inside(moment: datetime, windows: list[Window], zone: str) -> bool:
    local = moment.astimezone(ZoneInfo(zone)).time()
    return any(w.start <= local and (w.end is None or local < w.end) for w in windows)


instants = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2028, 12, 31)).map(lambda d: d.replace(microsecond=0, tzinfo=UTC))


@settings(max_examples=300, deadline=None)
@given(instants, window_sets(), st.sampled_from(ZONES))
def test_scheduled_time_is_inside_a_window_and_never_early(earliest: datetime, windows: list[Window], zone: str) -> None:
    slot = next_slot(earliest, windows, [zone])
    assert slot.start >= earliest
    assert _inside(slot.start, windows, zone), f"{slot.start.astimezone(ZoneInfo(zone))} is outside {windows}"
    assert slot.end > slot.start and _inside(slot.end - timedelta(seconds=1), windows, zone)
    before = slot.start - timedelta(seconds=1)
    assert before < earliest or not _inside(before, windows, zone), "an earlier instant was inside a window"


@settings(max_examples=100, deadline=None)
@given(instants, st.lists(st.sampled_from(ZONES), min_size=2, max_size=3, unique=True))
def test_strict_slot_is_inside_the_window_in_every_zone(earliest: datetime, zones: list[str]) -> None:
    windows = parse_windows(["08:00-22:00"])
    try:
        slot = next_slot(earliest, windows, zones)
    except NoWindow:
        return  # far-apart zones may never share a moment of the window: such messages are EXPIRED, never sent
    assert slot.start >= earliest
    assert all(_inside(slot.start, windows, z) for z in zones)


def test_times_of_day_with_seconds_round_trip() -> None:
    assert str(parse_windows(["09:30:15-12:00"])[0]) == "09:30:15-12:00"
    assert parse_windows(["00:00-24:00"])[0].end is None and time(0) == parse_windows(["00:00-24:00"])[0].start
