"""Sending windows in the subscriber's local time."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tasks.schedule.windows import Window, next_slot, parse_windows, zone_for


def next_send_time(earliest: datetime, windows: list[Window], zone: str) -> datetime:
    return next_slot(earliest, windows, [zone]).start


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_message_inside_window_goes_now() -> None:
    now = utc("2026-11-26 10:00")  # 13:00 in Moscow
    assert next_send_time(now, parse_windows(["09:00-20:00"]), "Europe/Moscow") == now


def test_message_before_window_waits_for_its_start_in_local_time() -> None:
    now = utc("2026-11-26 03:00")  # 06:00 in Moscow
    assert next_send_time(now, parse_windows(["09:00-20:00"]), "Europe/Moscow") == utc("2026-11-26 06:00")


def test_message_after_window_waits_for_next_day() -> None:
    now = utc("2026-11-26 18:00")  # 21:00 in Moscow
    assert next_send_time(now, parse_windows(["09:00-20:00"]), "Europe/Moscow") == utc("2026-11-27 06:00")


def test_window_end_is_exclusive() -> None:
    now = utc("2026-11-26 17:00")  # exactly 20:00 in Moscow
    assert next_send_time(now, parse_windows(["09:00-20:00"]), "Europe/Moscow") == utc("2026-11-27 06:00")


def test_second_window_is_used_when_first_has_passed() -> None:
    now = utc("2026-11-26 10:00")  # 13:00 in Moscow
    windows = parse_windows(["09:00-12:00", "15:00-18:00"])
    assert next_send_time(now, windows, "Europe/Moscow") == utc("2026-11-26 12:00")


def test_new_york_subscriber_is_scheduled_in_new_york_time() -> None:
    now = utc("2026-11-26 10:00")  # 05:00 in New York
    assert next_send_time(now, parse_windows(["09:00-20:00"]), "America/New_York") == utc("2026-11-26 14:00")


def test_all_day_window_accepts_any_time() -> None:
    now = utc("2026-11-26 23:59:30")
    assert next_send_time(now, parse_windows(["00:00-24:00"]), "Asia/Tokyo") == now


@pytest.mark.parametrize(
    ("windows", "message"),
    [(["20:00-09:00"], "ends before it starts"), (["09:00-12:00", "11:00-13:00"], "overlap"),
     (["9-20"], "not HH:MM-HH:MM"), (["09:00-25:00"], "outside 00:00-24:00"), ([], "no window")],
)
def test_bad_windows_are_refused_with_reason(windows: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_windows(windows)


def test_zone_for_single_zone_number_is_that_zone() -> None:
    assert zone_for(["America/Chicago"], "US", "Europe/Moscow") == "America/Chicago"


def test_zone_for_unknown_country_falls_back_to_account_zone() -> None:
    assert zone_for(["Etc/Unknown"], "ZZ", "Europe/Berlin") == "Europe/Berlin"
